//! The demo's dictionary checks: values put on one node are read from others with their
//! replicas whole, a watch sees a change, and after the crash step every value is still read.

use super::Demo;
use p2ps::Node;
use std::time::{Duration, Instant};

/// Keys the demo writes.
const KEYS: usize = 20;

fn key(i: usize) -> String {
    format!("demo-key-{i}")
}

fn value(i: usize) -> String {
    format!("value {i}")
}

/// Reads every demo key through `reader`; the keys not read with their value.
async fn unread(reader: &Node) -> Vec<String> {
    let mut bad = Vec::new();
    for i in 0..KEYS {
        match reader.dict().get(key(i)).await {
            Ok(Some((v, _))) if v.as_ref() == value(i).as_bytes() => {}
            Ok(other) => bad.push(format!("{}: {other:?}", key(i))),
            Err(e) => bad.push(format!("{}: {e}", key(i))),
        }
    }
    bad
}

impl Demo {
    /// Put from one node, get from the others, replica health, and a watch.
    pub(super) async fn dictionary_checks(&mut self, live: &[Node]) {
        let t = Instant::now();
        let writer = self.rng.below(live.len());
        let mut problems = Vec::new();
        for i in 0..KEYS {
            if let Err(e) = live[writer].dict().put(key(i), value(i)).await {
                problems.push(format!("put {}: {e}", key(i)));
            }
        }
        let mut readers = 0;
        for (j, n) in live
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != writer)
            .take(3)
        {
            let bad = unread(n).await;
            if !bad.is_empty() {
                problems.push(format!("node {j} read: {}", bad.join(", ")));
            }
            readers += 1;
        }
        let health = live[writer].dict().replicas(key(0)).await;
        match &health {
            Ok(h) if h.current == h.replicas => {}
            other => problems.push(format!("replicas of {}: {other:?}", key(0))),
        }
        let detail = match (&health, problems.is_empty()) {
            (Ok(h), true) => format!(
                "{KEYS} values put on one node read back from {readers} others; {} of {} replicas \
                 of {} hold its newest version",
                h.current,
                h.replicas,
                key(0)
            ),
            _ => problems.join("; "),
        };
        self.check(
            "dictionary put and get",
            problems.is_empty(),
            t.elapsed(),
            detail,
        );

        let t = Instant::now();
        let watcher = (writer + 1) % live.len();
        let outcome = async {
            let mut w = live[watcher].dict().watch("demo-watched").await?;
            let first = w.next().await;
            live[writer].dict().put("demo-watched", "changed").await?;
            let second = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
            Ok::<_, p2ps::NodeError>((first, second))
        }
        .await;
        let (ok, detail) = match outcome {
            Ok((Some(None), Ok(Some(Some(r))))) if r.value.as_deref() == Some(&b"changed"[..]) => (
                true,
                format!(
                    "the watcher saw the new value {:.0} ms after the watch began",
                    t.elapsed().as_secs_f64() * 1000.0
                ),
            ),
            Ok((first, second)) => (false, format!("saw {first:?}, then {second:?}")),
            Err(e) => (false, format!("watch failed: {e}")),
        };
        self.check("dictionary watch", ok, t.elapsed(), detail);
    }

    /// After the crash step: every value is still read.
    pub(super) async fn dictionary_after_crash(&mut self) {
        let t = Instant::now();
        let live = self.live();
        let Some(reader) = live.first() else {
            return;
        };
        let bad = unread(reader).await;
        self.check(
            "dictionary after the crash",
            bad.is_empty(),
            t.elapsed(),
            if bad.is_empty() {
                format!("all {KEYS} values still read")
            } else {
                bad.join(", ")
            },
        );
    }
}
