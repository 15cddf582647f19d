//! Where the demo ends: every node still running leaves and closes at once, and each must then
//! report that it has stopped.

use super::Demo;
use anyhow::Result;
use std::time::{Duration, Instant};
use tokio::time::timeout;

impl Demo {
    /// Shuts every still-running node down at once (graceful leave and close), bounded.
    pub(super) async fn shutdown_all(&mut self) -> Result<()> {
        let live = self.live();
        if live.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for n in &live {
            let n = n.clone();
            set.spawn(async move { timeout(Duration::from_secs(15), n.shutdown()).await.is_ok() });
        }
        let mut clean = 0;
        while let Some(r) = set.join_next().await {
            if matches!(r, Ok(true)) {
                clean += 1;
            }
        }
        for a in self.alive.iter_mut() {
            *a = false;
        }
        // A stopped node answers no more commands.
        let mut stopped = 0;
        for n in &live {
            if timeout(Duration::from_secs(2), n.status())
                .await
                .is_ok_and(|r| r.is_err())
            {
                stopped += 1;
            }
        }
        let ok = clean == live.len() && stopped == live.len();
        self.check(
            "clean shutdown",
            ok,
            t.elapsed(),
            format!(
                "{clean} of {} nodes left and closed within 15 s; {stopped} report stopped",
                live.len()
            ),
        );
        Ok(())
    }
}
