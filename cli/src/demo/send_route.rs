//! Where the demo checks point-to-point delivery: `send` to a node id reaches that node, `route`
//! to a key reaches the node responsible for it, each once, and nothing else arrives.

use super::stats::mean;
use super::{Demo, DemoArgs};
use anyhow::{bail, Result};
use p2ps::id::ring_id_of;
use p2ps::{key_of, Node, NodeId, Via};
use p2ps_overlay::TrueRing;
use std::time::{Duration, Instant};
use tokio::time::timeout;

impl Demo {
    /// Ten messages between random pairs of live nodes, each to arrive at the named node.
    pub(super) async fn check_send(&mut self, live: &[Node]) {
        let t = Instant::now();
        let mut problems = Vec::new();
        let mut hops = Vec::new();
        for j in 0..10 {
            let a = self.rng.below(live.len());
            let mut b = self.rng.below(live.len() - 1);
            if b >= a {
                b += 1;
            }
            let (from, to) = (&live[a], &live[b]);
            let payload = format!(
                "hello #{j} from {} to {}",
                from.id().short(),
                to.id().short()
            );
            if let Err(e) = from.send(to.id(), payload.clone().into_bytes()).await {
                problems.push(format!("send #{j}: {e}"));
                continue;
            }
            match expect_message(to, payload.as_bytes()).await {
                Some(m)
                    if m.from == from.id()
                        && m.via == Via::Node
                        && m.key == ring_id_of(&to.id()) =>
                {
                    hops.push(f64::from(m.hops));
                }
                Some(m) => problems.push(format!("send #{j}: delivered with wrong fields {m:?}")),
                None => problems.push(format!(
                    "send #{j}: {} never received it (5 s)",
                    to.id().short()
                )),
            }
        }
        self.check(
            "send to a node id",
            problems.is_empty(),
            t.elapsed(),
            if problems.is_empty() {
                format!(
                    "10 of 10 messages arrived at the named node with the right sender and \
                     payload ({:.1} hops mean)",
                    mean(hops.iter().copied())
                )
            } else {
                problems.join("; ")
            },
        );
    }

    /// Ten messages to keys, each to arrive at the node `truth` makes responsible.
    pub(super) async fn check_route(
        &mut self,
        live: &[Node],
        truth: &TrueRing<NodeId>,
        args: &DemoArgs,
    ) -> Result<()> {
        let t = Instant::now();
        let mut problems = Vec::new();
        let mut hops = Vec::new();
        for j in 0..10 {
            let from = &live[self.rng.below(live.len())];
            let key = key_of(format!("routed-{}-{j}", args.seed));
            let Some(holder_id) = truth.responsible(key) else {
                bail!("empty ring")
            };
            let Some(holder) = live.iter().find(|x| x.id() == holder_id) else {
                bail!("responsible node not found")
            };
            let payload = format!("routed #{j} to key {key}");
            if let Err(e) = from.route(key, payload.clone().into_bytes()).await {
                problems.push(format!("route #{j}: {e}"));
                continue;
            }
            match expect_message(holder, payload.as_bytes()).await {
                Some(m) if m.from == from.id() && m.via == Via::Key && m.key == key => {
                    hops.push(f64::from(m.hops));
                }
                Some(m) => problems.push(format!("route #{j}: delivered with wrong fields {m:?}")),
                None => problems.push(format!(
                    "route #{j}: the responsible node {} never received it (5 s)",
                    holder_id.short()
                )),
            }
        }
        self.check(
            "route to a key",
            problems.is_empty(),
            t.elapsed(),
            if problems.is_empty() {
                format!(
                    "10 of 10 messages arrived at the node responsible for their key ({:.1} hops \
                     mean)",
                    mean(hops.iter().copied())
                )
            } else {
                problems.join("; ")
            },
        );
        Ok(())
    }

    /// After a pause, no node holds a message it was not sent (nor a second copy).
    pub(super) async fn check_no_strays(&mut self, live: &[Node]) {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut strays = Vec::new();
        for node in live {
            if let Ok(Some(m)) = timeout(Duration::from_millis(10), node.recv()).await {
                strays.push(format!(
                    "{} got {:?}",
                    node.id().short(),
                    String::from_utf8_lossy(&m.payload)
                ));
            }
        }
        self.check(
            "no stray deliveries",
            strays.is_empty(),
            t.elapsed(),
            if strays.is_empty() {
                "no node received a message meant for another, nor a duplicate".into()
            } else {
                strays.join("; ")
            },
        );
    }
}

/// Waits up to 5 s for a message with `payload` on `node`; other messages are skipped (and
/// would be reported as a mismatch by the caller through the missing payload).
async fn expect_message(node: &Node, payload: &[u8]) -> Option<p2ps::Delivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, node.recv()).await {
            Ok(Some(m)) if m.payload.as_ref() == payload => return Some(m),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}
