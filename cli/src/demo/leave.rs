//! Where the demo makes a node leave gracefully (`leave`, then `shutdown`) and checks that the
//! leaver says so, its neighbours notice at once and the ring repairs.

use super::departure::Departure;
use super::{Demo, DemoArgs};
use anyhow::{bail, Context, Result};
use p2ps::{NodeEvent, NodeId};
use p2ps_overlay::TrueRing;
use std::time::{Duration, Instant};
use tokio::time::timeout;

impl Demo {
    /// A random live node other than node 0 leaves; checks the `Left` and `NeighbourDown`
    /// events, the repair, and the leaver's shutdown. Returns the leaver's id.
    pub(super) async fn leave_step(
        &mut self,
        truth: &TrueRing<NodeId>,
        args: &DemoArgs,
    ) -> Result<NodeId> {
        let candidates: Vec<usize> = self.live_idx().into_iter().filter(|i| *i != 0).collect();
        let Some(&li) = candidates.get(self.rng.below(candidates.len())) else {
            bail!("no node left to leave")
        };
        let leaver = self.nodes[li].clone();
        let lid = leaver.id();
        let (neighbours, around) = self.neighbours_of(truth, &lid);
        self.p.say(format!(
            "node {li} {} leaves gracefully ({around})",
            lid.short()
        ));
        let t_leave = Instant::now();
        timeout(Duration::from_secs(10), leaver.leave())
            .await
            .context("leave did not return in 10 s")?
            .context("leave")?;
        // Close its endpoint in the background while the others repair.
        let closing = {
            let leaver = leaver.clone();
            tokio::spawn(async move { timeout(Duration::from_secs(15), leaver.shutdown()).await })
        };
        self.alive[li] = false;
        let left = self
            .events
            .wait_all(&[li], t_leave, &NodeEvent::Left, Duration::from_secs(5))
            .await;
        let seen = self
            .neighbour_down(&neighbours, lid, t_leave, Duration::from_secs(10))
            .await;
        self.leave_times.0 = seen.as_ref().ok().map(Duration::as_secs_f64);
        self.check(
            "graceful leave seen",
            left.is_ok() && seen.is_ok(),
            t_leave.elapsed(),
            match (&left, &seen) {
                (Ok(_), Ok(detect)) => format!(
                    "the leaver emitted Left; its predecessor and successor emitted \
                     NeighbourDown({}) within {:.0} ms",
                    lid.short(),
                    detect.as_secs_f64() * 1e3
                ),
                _ => format!(
                    "Left event: {}; neighbours without NeighbourDown: {:?}",
                    if left.is_ok() { "yes" } else { "missing" },
                    seen.as_ref().err().cloned().unwrap_or_default()
                ),
            },
        );
        let departure = Departure {
            event: "leave",
            gone: lid,
            who: "the leaver",
            departed: &[lid],
            since: t_leave,
            after: |t| format!("{:.0} ms after it left", t.as_secs_f64() * 1e3),
        };
        let live = self.live();
        let repaired = self.check_repaired(&departure, &live, args).await?;
        self.leave_times.1 = Some(repaired.as_secs_f64());
        let closed = closing.await.is_ok_and(|r| r.is_ok());
        self.check(
            "leaver shut down",
            closed,
            t_leave.elapsed(),
            if closed {
                format!(
                    "its endpoint closed, {:.1} s after it left",
                    t_leave.elapsed().as_secs_f64()
                )
            } else {
                "its shutdown did not finish within 15 s".into()
            },
        );
        Ok(lid)
    }
}
