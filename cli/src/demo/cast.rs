//! The demo's group-communication checks: a broadcast reaches every other live node once and
//! its count comes back; a group message from a non-member reaches exactly the members.

use super::Demo;
use p2ps::Node;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How many times each node (by index in `nodes`) received `payload`, over `wait`.
async fn receipts(nodes: &[Node], payload: &[u8], wait: Duration) -> BTreeMap<usize, usize> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut set = tokio::task::JoinSet::new();
    for (i, n) in nodes.iter().enumerate() {
        let (n, want) = (n.clone(), payload.to_vec());
        set.spawn(async move {
            let mut count = 0;
            while let Ok(Some(m)) = tokio::time::timeout_at(deadline, n.recv()).await {
                if m.payload.as_ref() == want.as_slice() {
                    count += 1;
                }
            }
            (i, count)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(Ok((i, c))) = set.join_next().await {
        if c > 0 {
            out.insert(i, c);
        }
    }
    out
}

impl Demo {
    /// Broadcast and group checks on the `live` nodes.
    pub(super) async fn cast_checks(&mut self, live: &[Node]) {
        let t = Instant::now();
        let origin = self.rng.below(live.len());
        let payload = format!("broadcast from {}", live[origin].id().short());
        let report = tokio::time::timeout(
            Duration::from_secs(20),
            live[origin].broadcast(payload.clone().into_bytes()),
        )
        .await;
        let took = t.elapsed();
        let got = receipts(live, payload.as_bytes(), Duration::from_millis(700)).await;
        let want: BTreeMap<usize, usize> = (0..live.len())
            .filter(|i| *i != origin)
            .map(|i| (i, 1))
            .collect();
        let (ok, detail) = match report {
            Ok(Ok(r)) if got == want && r.delivered as usize == want.len() && r.complete => (
                true,
                format!(
                    "{} of {} other nodes received it once; the tree counted {} back in {:.0} ms",
                    got.len(),
                    want.len(),
                    r.delivered,
                    took.as_secs_f64() * 1000.0
                ),
            ),
            Ok(Ok(r)) => (
                false,
                format!(
                    "received by (node, times) {got:?}; counted {} (complete {})",
                    r.delivered, r.complete
                ),
            ),
            Ok(Err(e)) => (false, format!("broadcast refused: {e}")),
            Err(_) => (false, "no report within 20 s".into()),
        };
        self.check("broadcast", ok, t.elapsed(), detail);

        let t = Instant::now();
        let mut members: Vec<usize> = Vec::new();
        while members.len() < 5.min(live.len() - 1) {
            let m = self.rng.below(live.len());
            if !members.contains(&m) {
                members.push(m);
            }
        }
        members.sort_unstable();
        let mut problems = Vec::new();
        for m in &members {
            if let Err(e) = live[*m].join_group("demo").await {
                problems.push(format!("join_group: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sender = (0..live.len()).find(|i| !members.contains(i)).unwrap_or(0);
        let payload = format!("to the group, from {}", live[sender].id().short());
        if let Err(e) = live[sender]
            .send_group("demo", payload.clone().into_bytes())
            .await
        {
            problems.push(format!("send_group: {e}"));
        }
        let got = receipts(live, payload.as_bytes(), Duration::from_secs(1)).await;
        let want: BTreeMap<usize, usize> = members.iter().map(|m| (*m, 1)).collect();
        if got != want {
            problems.push(format!(
                "received by (node, times) {got:?}, members {members:?}"
            ));
        }
        let mut tree = 0;
        for n in live {
            if let Ok(s) = n.status().await {
                tree += s.groups.len();
            }
        }
        self.check(
            "group multicast",
            problems.is_empty(),
            t.elapsed(),
            if problems.is_empty() {
                format!(
                    "a non-member's message reached the {} members once each and nobody else \
                     ({tree} nodes in the group's tree)",
                    members.len()
                )
            } else {
                problems.join("; ")
            },
        );
    }
}
