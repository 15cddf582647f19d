//! Where the demo checks that the ring forms: every node's successor and predecessor are the
//! true ones, then its whole lists.

use super::ring_check::{wait_for_ring, RingReport};
use super::Demo;
use anyhow::Result;
use p2ps::{Node, NodeId};
use p2ps_overlay::TrueRing;
use std::time::{Duration, Instant};

impl Demo {
    /// Waits for the ring of `live` (`n` nodes started at `t_start`) to form as `truth` says,
    /// then for every neighbour list to be exact.
    pub(super) async fn check_formation(
        &mut self,
        live: &[Node],
        truth: &TrueRing<NodeId>,
        n: usize,
        t_start: Instant,
    ) -> Result<()> {
        let (ok, _, r) = wait_for_ring(
            live,
            truth,
            self.list_len,
            &[],
            Duration::from_secs(30),
            RingReport::neighbours_ok,
        )
        .await?;
        let formed = t_start.elapsed();
        self.summary_formation = Some(formed.as_secs_f64());
        self.check(
            "ring formed",
            ok,
            formed,
            if ok {
                format!(
                    "every node's successor and predecessor are the true ones, {:.1} s after the \
                     first start",
                    formed.as_secs_f64()
                )
            } else {
                r.describe()
            },
        );
        let t = Instant::now();
        let (ok, _, r) = wait_for_ring(
            live,
            truth,
            self.list_len,
            &[],
            Duration::from_secs(10),
            RingReport::all_ok,
        )
        .await?;
        let k = self.list_len.min(n - 1);
        self.check(
            "neighbour lists exact",
            ok,
            t.elapsed(),
            if ok {
                format!("every node holds its {k} true successors and {k} true predecessors")
            } else {
                r.describe()
            },
        );
        Ok(())
    }
}
