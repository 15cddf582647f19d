//! What the demo checks after a node leaves or crashes: its neighbours notice
//! (`NeighbourDown`), the ring repairs around it, and lookups no longer name it.

use super::lookups::{lookup_detail, lookup_round, plan};
use super::ring_check::{short_opt, true_ring, wait_for_ring, RingReport};
use super::stats::quantile;
use super::{Demo, DemoArgs, ROUND_LIMIT};
use anyhow::Result;
use p2ps::{Node, NodeEvent, NodeId};
use p2ps_overlay::TrueRing;
use std::time::{Duration, Instant};

/// A node that just left or crashed, as the checks after it name it.
pub(super) struct Departure<'a> {
    /// `leave` or `crash`, as in the check names.
    pub(super) event: &'a str,
    /// The node that went.
    pub(super) gone: NodeId,
    /// How details name it: `the leaver`, `the victim`.
    pub(super) who: &'a str,
    /// Every node gone so far: no list may mention one.
    pub(super) departed: &'a [NodeId],
    /// When it went.
    pub(super) since: Instant,
    /// A repair time as the details say it (e.g. `120 ms after it left`).
    pub(super) after: fn(Duration) -> String,
}

impl Demo {
    /// The indices of `id`'s true predecessor and successor in `truth`, and the progress text
    /// `its neighbours: … before, … after`.
    pub(super) fn neighbours_of(
        &self,
        truth: &TrueRing<NodeId>,
        id: &NodeId,
    ) -> (Vec<usize>, String) {
        let pred = truth.predecessors(id, 1);
        let succ = truth.successors(id, 1);
        let idxs = pred
            .iter()
            .chain(succ.iter())
            .filter_map(|x| self.idx_of(x))
            .collect();
        let text = format!(
            "its neighbours: {} before, {} after",
            short_opt(pred.first()),
            short_opt(succ.first())
        );
        (idxs, text)
    }

    /// Waits up to `limit` until every node in `idxs` emitted `NeighbourDown(gone)` after
    /// `since`; returns how long after `since` the last did, or the nodes that did not.
    pub(super) async fn neighbour_down(
        &mut self,
        idxs: &[usize],
        gone: NodeId,
        since: Instant,
        limit: Duration,
    ) -> std::result::Result<Duration, Vec<usize>> {
        self.events
            .wait_all(idxs, since, &NodeEvent::NeighbourDown(gone), limit)
            .await
            .map(|t| t.duration_since(since))
    }

    /// After `dep`, waits (up to 20 s) for the ring of `live` to be repaired and checks it,
    /// then checks `--lookups` lookups of keys tagged `after-{event}-{seed}`, none of which may
    /// name the departed node. Returns the repair time.
    pub(super) async fn check_repaired(
        &mut self,
        dep: &Departure<'_>,
        live: &[Node],
        args: &DemoArgs,
    ) -> Result<Duration> {
        let truth = true_ring(live.iter().map(Node::id));
        let (ok, _, r) = wait_for_ring(
            live,
            &truth,
            self.list_len,
            dep.departed,
            Duration::from_secs(20),
            RingReport::repaired,
        )
        .await?;
        let repaired = dep.since.elapsed();
        self.check(
            &format!("ring repaired after {}", dep.event),
            ok,
            repaired,
            if ok {
                format!(
                    "successors and predecessors true again and no list names {} {} ({} lists \
                     not yet exact)",
                    dep.who,
                    (dep.after)(repaired),
                    r.wrong_lists
                )
            } else {
                r.describe()
            },
        );

        let t = Instant::now();
        let tag = format!("after-{}-{}", dep.event, args.seed);
        let asks = plan(&mut self.rng, live.len(), args.lookups, Some(&tag));
        let round = lookup_round(live, &truth, &asks, &[dep.gone], ROUND_LIMIT).await;
        let p50 = quantile(&round.micros, 0.5);
        self.check(
            &format!("lookups after {}", dep.event),
            round.ok() && round.named_gone == 0,
            t.elapsed(),
            format!(
                "{}; {} named {}",
                lookup_detail(&round, p50),
                round.named_gone,
                dep.who
            ),
        );
        Ok(repaired)
    }
}
