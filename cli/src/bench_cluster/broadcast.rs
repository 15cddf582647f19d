//! Broadcast timing for `p2ps bench cluster`: broadcasts one at a time from random nodes, timed
//! to the last node's delivery, with an exactly-once check.

use crate::demo::rng::Rng;
use anyhow::{Context, Result};
use p2ps::Node;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// What the broadcasts showed.
pub(super) struct BroadcastTimes {
    /// Time from the call to the last delivery, per broadcast, ms.
    pub(super) last_ms: Vec<f64>,
    /// Deepest delivery seen (tree depth).
    pub(super) depth: u16,
    /// Whether every broadcast reached every other node exactly once.
    pub(super) exact: bool,
}

/// `rounds` broadcasts, one at a time, each from a random node: the time from the call to the
/// last delivery, and whether every other node got it exactly once.
pub(super) async fn broadcast_times(
    nodes: &[Node],
    rounds: usize,
    rng: &mut Rng,
) -> Result<BroadcastTimes> {
    let mut out = BroadcastTimes {
        last_ms: Vec::new(),
        depth: 0,
        exact: true,
    };
    for round in 0..rounds {
        let origin = rng.below(nodes.len());
        let payload = format!("bench broadcast {round}").into_bytes();
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, n) in nodes.iter().enumerate() {
            if i == origin {
                continue;
            }
            let (n, want) = (n.clone(), payload.clone());
            set.spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let mut first: Option<(Instant, u16)> = None;
                let mut count = 0;
                while let Ok(Some(m)) = tokio::time::timeout_at(deadline, n.recv()).await {
                    if m.payload.as_ref() == want.as_slice() {
                        count += 1;
                        first.get_or_insert((Instant::now(), m.hops));
                        // Linger briefly to catch a duplicate.
                        let grace = tokio::time::Instant::now() + Duration::from_millis(200);
                        while let Ok(Some(m)) = tokio::time::timeout_at(grace, n.recv()).await {
                            count += usize::from(m.payload.as_ref() == want.as_slice());
                        }
                        break;
                    }
                }
                (first, count)
            });
        }
        let report = timeout(
            Duration::from_secs(15),
            nodes[origin].broadcast(payload.clone()),
        )
        .await
        .context("no broadcast report within 15 s")?
        .context("broadcast")?;
        let mut last = start;
        while let Some(r) = set.join_next().await {
            let (first, count) = r.context("a receiver task failed")?;
            match first {
                Some((t, hops)) if count == 1 => {
                    last = last.max(t);
                    out.depth = out.depth.max(hops);
                }
                _ => out.exact = false,
            }
        }
        if report.delivered as usize != nodes.len() - 1 {
            out.exact = false;
        }
        out.last_ms
            .push(last.duration_since(start).as_secs_f64() * 1000.0);
    }
    Ok(out)
}
