//! Broadcast, range multicast and groups between in-process nodes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{network, settle};
use p2ps::{group_key, Node, RingId, Via};
use p2ps_overlay::TrueRing;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::timeout;

/// Drains every node's inbox (all at once) for `wait`; the messages per node, in node order.
async fn collect(nodes: &[Node], wait: Duration) -> Vec<Vec<p2ps::Delivery>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut set = tokio::task::JoinSet::new();
    for (i, n) in nodes.iter().enumerate() {
        let n = n.clone();
        set.spawn(async move {
            let mut mine = Vec::new();
            while let Ok(Some(m)) = tokio::time::timeout_at(deadline, n.recv()).await {
                mine.push(m);
            }
            (i, mine)
        });
    }
    let mut got = vec![Vec::new(); nodes.len()];
    while let Some(r) = set.join_next().await {
        let (i, mine) = r.unwrap();
        got[i] = mine;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_range_and_groups() {
    let nodes = network(12).await;
    settle(&nodes).await;

    // Broadcast: every other node once, and the count comes back.
    let report = timeout(Duration::from_secs(20), nodes[4].broadcast(&b"all"[..]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.delivered, report.complete), (11, true));
    let got = collect(&nodes, Duration::from_millis(500)).await;
    for (i, msgs) in got.iter().enumerate() {
        let n = msgs.iter().filter(|m| &m.payload[..] == b"all").count();
        assert_eq!(n, usize::from(i != 4), "node {i}");
        assert!(msgs
            .iter()
            .all(|m| m.via == Via::Broadcast && m.from == nodes[4].id()));
    }

    // Range multicast over a third of the ring: exactly the responsible nodes.
    let lo = RingId(u128::MAX / 3);
    let hi = RingId(u128::MAX / 3 * 2);
    let report = timeout(
        Duration::from_secs(20),
        nodes[0].multicast_range(lo, hi, &b"range"[..]),
    )
    .await
    .unwrap()
    .unwrap();
    let mut positions: Vec<(RingId, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (p2ps::id::ring_id_of(&n.id()), i))
        .collect();
    positions.sort();
    let mut want: Vec<usize> = positions
        .iter()
        .filter(|(p, _)| lo.cw_to(*p) <= lo.cw_to(hi))
        .map(|(_, i)| *i)
        .collect();
    // The node responsible for `hi`.
    let truth: TrueRing<usize> = positions.iter().copied().collect();
    let holder = truth.responsible(hi).unwrap();
    want.push(holder);
    want.sort();
    want.dedup();
    want.retain(|i| *i != 0);
    let got = collect(&nodes, Duration::from_millis(500)).await;
    let reached: Vec<usize> = (0..nodes.len())
        .filter(|i| got[*i].iter().any(|m| &m.payload[..] == b"range"))
        .collect();
    assert_eq!(reached, want);
    assert_eq!(report.delivered as usize, want.len());

    // A group of four; a non-member sends; only members receive, each once.
    let members = [1usize, 5, 8, 11];
    for m in members {
        nodes[m].join_group("chess").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        let text = format!("move {round}");
        let report = nodes[2].send_group("chess", text.clone()).await.unwrap();
        // The sender is not a member: all four counted.
        assert_eq!(
            (report.members, report.complete),
            (4, true),
            "round {round}"
        );
        let got = collect(&nodes, Duration::from_millis(800)).await;
        for (i, msgs) in got.iter().enumerate() {
            let n = msgs.iter().filter(|m| m.payload == text.as_bytes()).count();
            assert_eq!(
                n,
                usize::from(members.contains(&i)),
                "round {round}, node {i}"
            );
            for m in msgs {
                assert_eq!(m.via, Via::Group("chess".into()));
            }
        }
    }
    // The members show up in status; the root holds the group's position.
    let mut roots = 0;
    let mut member_count = 0;
    for n in &nodes {
        for g in n.status().await.unwrap().groups {
            assert_eq!(g.position, group_key("chess"));
            roots += usize::from(g.root);
            member_count += usize::from(g.member);
        }
    }
    assert_eq!((roots, member_count), (1, 4));

    // A member leaves the group: it gets nothing more, the others still do.
    nodes[5].leave_group("chess").await.unwrap();
    // Leaving again is an error, as is leaving a group never joined.
    assert_eq!(
        nodes[5].leave_group("chess").await,
        Err(p2ps::NodeError::NotMember("chess".into()))
    );
    assert_eq!(
        nodes[0].leave_group("go").await,
        Err(p2ps::NodeError::NotMember("go".into()))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = nodes[1].send_group("chess", &b"after"[..]).await.unwrap();
    // A member sends: the two other members that stayed, the sender not counted.
    assert_eq!((report.members, report.complete), (2, true));
    let got = collect(&nodes, Duration::from_millis(800)).await;
    let counts: BTreeMap<usize, usize> = got
        .iter()
        .enumerate()
        .map(|(i, m)| (i, m.iter().filter(|m| &m.payload[..] == b"after").count()))
        .filter(|(_, c)| *c > 0)
        .collect();
    assert_eq!(counts, BTreeMap::from([(8, 1), (11, 1)]));

    // Bad group names are refused.
    assert!(nodes[0].join_group("").await.is_err());
    let mut set = tokio::task::JoinSet::new();
    for n in nodes {
        set.spawn(async move { n.shutdown().await });
    }
    while set.join_next().await.is_some() {}
}
