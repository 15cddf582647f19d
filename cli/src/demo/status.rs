//! Where the demo checks what nodes report about themselves: ids, positions, addresses and
//! connections match, and no node has declared a live peer failed.

use super::ring_check::status_of;
use super::stats::quantile;
use super::Demo;
use anyhow::Result;
use p2ps::id::ring_id_of;
use p2ps::Node;
use std::time::{Duration, Instant};

impl Demo {
    /// Checks every live node's status, and that none saw a false failure.
    pub(super) async fn check_status(&mut self, live: &[Node]) -> Result<()> {
        let t = Instant::now();
        let mut problems = Vec::new();
        let mut rtts = Vec::new();
        let (mut fingers, mut conns) = (0usize, 0usize);
        let mut false_failures = Vec::new();
        for node in live {
            let s = status_of(node).await?;
            if s.id != node.id() || s.ring_position != ring_id_of(&node.id()) {
                problems.push(format!("{}: wrong id or ring position", node.id().short()));
            }
            if s.addrs != node.addrs() {
                problems.push(format!(
                    "{}: addresses differ from the handle's",
                    node.id().short()
                ));
            }
            if s.connections.is_empty() {
                problems.push(format!("{}: no connections", node.id().short()));
            }
            fingers += s.fingers.len();
            conns += s.connections.len();
            rtts.extend(s.connections.iter().map(|c| c.rtt_ms));
            let c = s.counters;
            if c.peers_failed + c.peers_timed_out > 0 {
                false_failures.push(format!(
                    "{} declared {} peers failed ({} connections timed out, {} sends failed, {} \
                     sends dropped on a full queue)",
                    node.id().short(),
                    c.peers_failed,
                    c.peers_timed_out,
                    c.send_failed,
                    c.send_queue_full
                ));
            }
        }
        let rtt = quantile(&rtts, 0.5);
        self.summary_rtt = Some(rtt);
        self.check(
            "status",
            problems.is_empty(),
            t.elapsed(),
            if problems.is_empty() {
                format!(
                    "ids and positions match; {:.1} fingers, {:.1} connections per node, median \
                     QUIC RTT {:.3} ms",
                    fingers as f64 / live.len() as f64,
                    conns as f64 / live.len() as f64,
                    rtt
                )
            } else {
                problems.join("; ")
            },
        );
        self.check(
            "no false failure detection",
            false_failures.is_empty(),
            Duration::ZERO,
            if false_failures.is_empty() {
                "no node has declared a live peer failed".into()
            } else {
                false_failures.join("; ")
            },
        );
        Ok(())
    }
}
