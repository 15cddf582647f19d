//! Broadcast and group multicast across real `p2ps node` processes on loopback, driven by
//! `p2ps broadcast` and `p2ps group join|send`, including a group member killed with SIGKILL;
//! `group send` reports how many members got each message.
//!
//! Every wait is bounded; a failure panics with the node's own output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::p2ps::{self, NodeId, RingId};
use p2ps_interop_tests::{wait_for, wait_ring, NodeProc, TestNet, FAST};
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(30);
const RING_WAIT: Duration = Duration::from_secs(30);

fn cli_ok(node: &NodeProc, args: &[&str]) -> String {
    let out = node.cli(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "p2ps {args:?} failed: {err}");
    err
}

/// How many lines of `node`'s output end with `suffix`.
fn count(node: &NodeProc, suffix: &str) -> usize {
    node.stdout().iter().filter(|l| l.ends_with(suffix)).count()
}

/// Waits until every node in `want` printed `suffix` once, then a little longer, and checks
/// that exactly those nodes printed it, once each.
fn expect_exactly(nodes: &[NodeProc], want: &[usize], suffix: &str) {
    let all = wait_for(Duration::from_secs(15), || {
        want.iter()
            .all(|i| count(&nodes[*i], suffix) >= 1)
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<(usize, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i, count(n, suffix)))
        .filter(|(_, c)| *c > 0)
        .collect();
    let expected: Vec<(usize, usize)> = want.iter().map(|i| (*i, 1)).collect();
    assert!(
        all.is_some() && got == expected,
        "{suffix:?}: printed by (node, times) {got:?}, expected {expected:?}"
    );
}

#[test]
fn broadcast_and_groups_across_processes_with_a_crash() {
    let t0 = Instant::now();
    let net = TestNet::new();
    let mut nodes = net.spawn_network(12, FAST, JOIN_WAIT);
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();
    wait_ring(&mut nodes.iter_mut().collect::<Vec<_>>(), RING_WAIT);
    eprintln!("[{:?}] 12 nodes joined, ring settled", t0.elapsed());

    // Broadcast from n03: the other eleven print it once; the count comes back.
    let err = cli_ok(&nodes[3], &["broadcast", "hello everyone"]);
    assert!(err.contains("11 nodes received it"), "{err}");
    let others: Vec<usize> = (0..12).filter(|i| *i != 3).collect();
    expect_exactly(&nodes, &others, "to everyone): hello everyone");
    let sender = format!("message from {} (", ids[3].short());
    assert!(nodes[0].stdout().iter().any(|l| l.starts_with(&sender)));
    eprintln!("[{:?}] broadcast reached 11/11", t0.elapsed());

    // Range multicasts with no node outside the range (issue #16: they reached only the node
    // responsible for the top key and those before it): the whole ring, a range that wraps
    // round to just before its start, and [0, just past the last node].
    let mut positions: Vec<RingId> = ids.iter().map(p2ps::id::ring_id_of).collect();
    positions.sort();
    let last = positions[positions.len() - 1];
    let start = positions[4].plus(1);
    let ranges = [
        ("whole", RingId(0), RingId(u128::MAX)),
        ("wrapping", start, start.minus(1)),
        ("past the last", RingId(0), last.plus(1)),
    ];
    for (i, (name, lo, hi)) in ranges.into_iter().enumerate() {
        let from = 5 + i;
        let text = format!("range {name}");
        let (lo, hi) = (lo.to_string(), hi.to_string());
        let err = cli_ok(&nodes[from], &["range", &lo, &hi, &text]);
        assert!(err.contains("11 nodes received it"), "{name}: {err}");
        let others: Vec<usize> = (0..12).filter(|n| *n != from).collect();
        expect_exactly(&nodes, &others, &format!("to range {lo}..{hi}): {text}"));
    }
    eprintln!(
        "[{:?}] whole-ring and wrapping ranges reached 11/11",
        t0.elapsed()
    );

    // A group of five; a non-member sends.
    let members = [1usize, 4, 6, 9, 11];
    for m in members {
        cli_ok(&nodes[m], &["group", "join", "chess"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let err = cli_ok(&nodes[2], &["group", "send", "chess", "e2e4"]);
    assert!(
        err.contains("sent to group chess: reached 5 members"),
        "{err}"
    );
    expect_exactly(&nodes, &members, "to group chess): e2e4");
    let status = nodes[4].status();
    assert!(status
        .groups
        .iter()
        .any(|g| g.member && g.name.as_deref() == Some("chess")));
    eprintln!(
        "[{:?}] group of 5 got a message from a non-member",
        t0.elapsed()
    );

    // A member crashes (SIGKILL); the tree repairs and the others keep receiving.
    nodes[6].kill();
    let mut alive: Vec<&mut NodeProc> = nodes
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != 6)
        .map(|(_, n)| n)
        .collect();
    wait_ring(&mut alive, RING_WAIT);
    // Two tree refresh periods (2 s with FAST) for the tree to route around the dead node.
    std::thread::sleep(Duration::from_secs(4));
    let err = cli_ok(&nodes[9], &["group", "send", "chess", "d7d5"]);
    // A member sends: the three other members left, the sender not counted.
    assert!(err.contains("reached 3 members"), "{err}");
    expect_exactly(&nodes, &[1, 4, 11], "to group chess): d7d5");
    // And a member that leaves gets nothing more.
    cli_ok(&nodes[1], &["group", "leave", "chess"]);
    std::thread::sleep(Duration::from_millis(300));
    let err = cli_ok(&nodes[0], &["group", "send", "chess", "g1f3"]);
    assert!(err.contains("reached 3 members"), "{err}");
    expect_exactly(&nodes, &[4, 9, 11], "to group chess): g1f3");
    eprintln!(
        "[{:?}] group repaired after a crash and a leave",
        t0.elapsed()
    );
}

/// Four processes, three in a group: `group send` reports how many members got the message,
/// the sender not counted (`--json` carries the number).
#[test]
fn group_send_reports_how_many_members_got_it() {
    let net = TestNet::new();
    let mut nodes = net.spawn_network(4, FAST, JOIN_WAIT);
    wait_ring(&mut nodes.iter_mut().collect::<Vec<_>>(), RING_WAIT);
    for m in [1usize, 2, 3] {
        cli_ok(&nodes[m], &["group", "join", "go"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let err = cli_ok(&nodes[0], &["group", "send", "go", "d4"]);
    assert!(err.contains("sent to group go: reached 3 members"), "{err}");
    expect_exactly(&nodes, &[1, 2, 3], "to group go): d4");

    let out = nodes[2].cli(&["group", "send", "go", "d5", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["members"], 2, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    expect_exactly(&nodes, &[1, 3], "to group go): d5");
}
