//! Is the ring right? Every node's successor and predecessor lists compared with the ring as it
//! should be (`p2ps_overlay::TrueRing`, from the node ids alone), and bounded waits until they
//! match. Shared by the demo and `p2ps bench cluster`.

use anyhow::{Context, Result};
use p2ps::id::ring_id_of;
use p2ps::{Node, NodeId, NodeState};
use p2ps_overlay::TrueRing;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// The ring as it should be for the nodes `ids`, computed from the ids alone.
pub(crate) fn true_ring(ids: impl IntoIterator<Item = NodeId>) -> TrueRing<NodeId> {
    ids.into_iter().map(|id| (ring_id_of(&id), id)).collect()
}

/// How far the nodes' routing state is from the truth.
#[derive(Clone, Debug, Default)]
pub(crate) struct RingReport {
    /// Nodes compared.
    pub(crate) nodes: usize,
    /// Nodes not in the `joined` state.
    pub(crate) not_joined: usize,
    /// Nodes whose nearest successor is not the true one.
    pub(crate) wrong_successor: usize,
    /// Nodes whose nearest predecessor is not the true one.
    pub(crate) wrong_predecessor: usize,
    /// Nodes whose successor or predecessor list is not exactly the true one.
    pub(crate) wrong_lists: usize,
    /// Mentions of departed nodes in successor or predecessor lists.
    pub(crate) stale_mentions: usize,
    /// The first difference found, for the check's detail.
    pub(crate) first_problem: Option<String>,
}

impl RingReport {
    /// Every node joined, with the true successor and predecessor.
    pub(crate) fn neighbours_ok(&self) -> bool {
        self.not_joined == 0 && self.wrong_successor == 0 && self.wrong_predecessor == 0
    }

    /// True neighbours and no departed node mentioned (lists may still be filling).
    pub(crate) fn repaired(&self) -> bool {
        self.neighbours_ok() && self.stale_mentions == 0
    }

    /// Also every list exact and no departed node mentioned.
    pub(crate) fn all_ok(&self) -> bool {
        self.neighbours_ok() && self.wrong_lists == 0 && self.stale_mentions == 0
    }

    /// The counts and the first problem, in one line.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} nodes: {} not joined, {} wrong successors, {} wrong predecessors, {} inexact \
             lists, {} mentions of departed nodes{}",
            self.nodes,
            self.not_joined,
            self.wrong_successor,
            self.wrong_predecessor,
            self.wrong_lists,
            self.stale_mentions,
            self.first_problem
                .as_ref()
                .map(|p| format!(" (e.g. {p})"))
                .unwrap_or_default()
        )
    }
}

/// A node's status, bounded in time.
pub(crate) async fn status_of(node: &Node) -> Result<p2ps::Status> {
    timeout(Duration::from_secs(5), node.status())
        .await
        .with_context(|| format!("node {} did not answer a status request", node.id().short()))?
        .with_context(|| format!("status of node {}", node.id().short()))
}

/// Compares every node's lists with the truth; `gone` are nodes that must not be mentioned.
pub(crate) async fn ring_report(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    list_len: usize,
    gone: &[NodeId],
) -> Result<RingReport> {
    let mut r = RingReport {
        nodes: nodes.len(),
        ..RingReport::default()
    };
    for n in nodes {
        let s = status_of(n).await?;
        let me = n.id().short();
        let succs = truth.successors(&n.id(), list_len);
        let preds = truth.predecessors(&n.id(), list_len);
        let note = |r: &mut RingReport, what: String| {
            if r.first_problem.is_none() {
                r.first_problem = Some(what);
            }
        };
        if s.state != NodeState::Joined {
            r.not_joined += 1;
            note(&mut r, format!("{me} is {}", s.state));
        }
        if s.successors.first() != succs.first() {
            r.wrong_successor += 1;
            note(
                &mut r,
                format!(
                    "{me} has successor {} instead of {}",
                    short_opt(s.successors.first()),
                    short_opt(succs.first())
                ),
            );
        }
        if s.predecessors.first() != preds.first() {
            r.wrong_predecessor += 1;
            note(
                &mut r,
                format!(
                    "{me} has predecessor {} instead of {}",
                    short_opt(s.predecessors.first()),
                    short_opt(preds.first())
                ),
            );
        }
        if s.successors != succs || s.predecessors != preds {
            r.wrong_lists += 1;
            let show = |v: &[NodeId]| {
                v.iter()
                    .map(|x| x.short().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            note(
                &mut r,
                format!(
                    "{me} lists successors [{}] predecessors [{}], true ones [{}] [{}]",
                    show(&s.successors),
                    show(&s.predecessors),
                    show(&succs),
                    show(&preds)
                ),
            );
        }
        let stale = s
            .successors
            .iter()
            .chain(s.predecessors.iter())
            .filter(|x| gone.contains(x))
            .count();
        if stale > 0 {
            r.stale_mentions += stale;
            note(&mut r, format!("{me} still lists a departed node"));
        }
    }
    Ok(r)
}

/// Polls [`ring_report`] every 100 ms until `done` holds or `limit` passes. Returns whether it
/// held, the time waited and the last report.
pub(crate) async fn wait_for_ring(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    list_len: usize,
    gone: &[NodeId],
    limit: Duration,
    done: fn(&RingReport) -> bool,
) -> Result<(bool, Duration, RingReport)> {
    let t = Instant::now();
    loop {
        let r = ring_report(nodes, truth, list_len, gone).await?;
        if done(&r) {
            return Ok((true, t.elapsed(), r));
        }
        if t.elapsed() >= limit {
            return Ok((false, t.elapsed(), r));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node id in short form, or `none`.
pub(super) fn short_opt(id: Option<&NodeId>) -> String {
    id.map(|i| i.short().to_string())
        .unwrap_or_else(|| "none".into())
}
