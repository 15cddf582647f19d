//! Broadcast and group multicast across real `p2ps node` processes on loopback, driven by
//! `p2ps broadcast` and `p2ps group join|send`, including a group member killed with SIGKILL;
//! `group send` reports how many members got each message, also after a hostile peer attacked
//! the counts.
//!
//! Every wait is bounded; a failure panics with the node's own output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::hostile::{
    address_of, answer_pings, grind_identity, one_hop, service_counter, try_status, Hostile, Msg,
    SprayLimits,
};
use p2ps_interop_tests::p2ps::{self, NodeId, OverlayId, RingId};
use p2ps_interop_tests::{responsible, wait_for, wait_ring, NodeProc, TestNet, FAST};
use p2ps_overlay::groups::{self, GROUPS};
use p2ps_overlay::service::{decode, encode};
use p2ps_overlay::{Body, Class, Message, PassBack};
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

/// The groups service's counter `name` on every node (a node that cannot answer: a panic).
fn group_counters(nodes: &[NodeProc], name: &str) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| {
            service_counter(n, groups::NAME, name)
                .unwrap_or_else(|| panic!("{}: no groups counter {name}", n.name))
        })
        .collect()
}

/// The `Count` answering `tag` that `h` received: (sender, members, complete).
fn count_for(h: &Hostile, tag: u64) -> Option<(NodeId, u64, bool)> {
    h.captured().into_iter().find_map(|(from, m)| match m {
        Message::Service(s) if s.service == GROUPS => match decode::<groups::Wire>(&s.data) {
            Ok((
                groups::Wire::Count {
                    tag: t,
                    members,
                    complete,
                },
                _,
            )) if t == tag => Some((from, members, complete)),
            _ => None,
        },
        _ => None,
    })
}

/// Whether `err`, what `group send` printed, has the line `sent to group {group}: reached {n}
/// members` (a complete count; an incomplete one says more on the same line).
fn reached(err: &str, group: &str, n: u64) -> bool {
    let want = format!("sent to group {group}: reached {n} members");
    err.lines().any(|l| l.trim_end() == want)
}

/// A hostile peer with its own identity, connected to five processes of which three are in
/// group `tally`, attacks the groups service's delivery counts: (a) unsolicited `Count`s with
/// huge totals and random tags, (b) `Counted` answers for message numbers nobody sent, passed
/// back at each node and through it to another, (c) a `CastCounted` whose wait is `u32::MAX`
/// ms: from outside the tree to four nodes (dropped, answered with a count of 0), and along a
/// tree edge to the fifth, below which a second hostile identity also hangs and never
/// answers (its late and repeated count for the real tag comes afterwards). The nodes
/// refuse and count every bad count, deliver only the cast that came along a tree edge, give
/// up on the silent child within their own count timeout (not the enormous wait), still
/// answer, and an honest `group send` still reports exactly the members.
#[test]
fn hostile_counts_are_refused_and_group_send_still_counts_right() {
    const G: &str = "tally";
    const K: u64 = 4;
    let net = TestNet::new();
    let mut nodes = net.spawn_network(5, FAST, JOIN_WAIT);
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();
    wait_ring(&mut nodes.iter_mut().collect::<Vec<_>>(), RING_WAIT);
    let members = [1usize, 2, 3];
    // `entry`: a non-member the hostile peers hang below; `sender`: another non-member.
    let (entry, sender) = (0usize, 4usize);
    for m in members {
        cli_ok(&nodes[m], &["group", "join", G]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let err = cli_ok(&nodes[sender], &["group", "send", G, "before"]);
    assert!(reached(&err, G, 3), "before the attack: {err}");
    expect_exactly(&nodes, &members, &format!("to group {G}): before"));

    let peers: Vec<_> = nodes
        .iter()
        .map(|n| address_of(n).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let gk = p2ps::id::group_key(G);
    // The hostile peers enter the nodes' tables as soon as they speak (any sender is offered
    // to them) and stay until found dead. So that they change neither the way to the group's
    // root nor the entry node's stabilisation, they sit in an arc of the ring that holds
    // neither the group's key nor the entry node's neighbours, and they answer pings.
    let entry_id = ids[entry];
    let pos = |id: &NodeId| p2ps::id::ring_id_of(id);
    let avoid = [
        entry_id,
        responsible(&ids, pos(&entry_id).plus(1)),
        responsible(&ids, gk),
    ];
    let hostile = || {
        let want = |p: RingId| !avoid.contains(&responsible(&ids, p));
        let (identity, _) = grind_identity(want, 10_000).unwrap_or_else(|e| panic!("{e}"));
        let h = Hostile::with_identity(identity).unwrap_or_else(|e| panic!("{e}"));
        h.respond(answer_pings());
        h
    };
    let h = hostile();
    h.connect(&peers).unwrap_or_else(|e| panic!("{e}"));
    let silent = hostile();
    silent
        .connect(&peers[entry..=entry])
        .unwrap_or_else(|e| panic!("{e}"));
    let group_msg = |to: NodeId, head: &groups::Wire| -> (NodeId, Msg) {
        (to, one_hop(GROUPS, encode(head, &[]), None))
    };
    let passback = |via: NodeId, to: NodeId| -> (NodeId, Msg) {
        let head = groups::Wire::Counted {
            seq: rand::random(),
            members: u64::MAX,
            complete: true,
        };
        let m = PassBack {
            service: GROUPS,
            class: Class::Tree,
            to: OverlayId(to),
            trail: Vec::new(),
            data: encode(&head, &[]),
            retrace: false,
        };
        (via, Message::PassBack(m))
    };

    // (a) unsolicited counts with huge totals, then (b) answers for message numbers nobody
    // sent, K of each per node: each node refuses (and counts) K more after each. Answers
    // passed through a node to the next one add theirs where they arrive.
    let attack = |make: &dyn Fn(usize, NodeId) -> Vec<(NodeId, Msg)>, what: &str| {
        let before = group_counters(&nodes, "refused_counts");
        for (i, id) in ids.iter().enumerate() {
            for _ in 0..K {
                for (to, msg) in make(i, *id) {
                    h.send(to, msg).unwrap_or_else(|e| panic!("{what}: {e}"));
                }
            }
        }
        let refused = wait_for(Duration::from_secs(10), || {
            let now = group_counters(&nodes, "refused_counts");
            now.iter()
                .zip(&before)
                .all(|(n, b)| *n >= b + K)
                .then_some(now)
        });
        eprintln!("{what}: refused_counts {before:?} -> {refused:?}");
        assert!(
            refused.is_some(),
            "{what} not all refused: refused_counts {before:?} -> {:?}, want +{K} each",
            group_counters(&nodes, "refused_counts"),
        );
    };
    attack(
        &|_, id| {
            let count = groups::Wire::Count {
                tag: rand::random(),
                members: u64::MAX,
                complete: true,
            };
            vec![group_msg(id, &count)]
        },
        "unsolicited counts",
    );
    attack(
        &|i, id| vec![passback(id, id), passback(id, ids[(i + 1) % ids.len()])],
        "unasked answers",
    );

    // (c): both hostile peers hang below `entry` (the silent one kept there), then `h` casts.
    let join = encode(&groups::Wire::Join { group: gk }, &[]);
    let keep_below = |h: &Hostile| {
        let join = join.clone();
        h.spray(
            SprayLimits {
                max_messages: 60,
                max_time: Duration::from_secs(60),
                pause: Duration::from_millis(500),
            },
            move |_| vec![(entry_id, one_hop(GROUPS, join.clone(), None))],
        )
    };
    let keep = [keep_below(&h), keep_below(&silent)];
    let (hid, sid) = (h.id(), silent.id());
    let below = wait_for(Duration::from_secs(10), || {
        let s = try_status(&nodes[entry]).ok()?;
        s.groups
            .iter()
            .any(|g| g.position == gk && g.children.contains(&hid) && g.children.contains(&sid))
            .then_some(())
    });
    assert!(
        below.is_some(),
        "the hostile peers ({}, {}) are not children of the entry node: {:?}",
        hid.short(),
        sid.short(),
        try_status(&nodes[entry]).map(|s| s.groups)
    );
    let sealed = |text: &str| {
        h.seal(
            gk,
            Body::Service {
                service: GROUPS,
                class: Class::Tree,
                target: None,
                data: encode(&groups::Wire::Send, text.as_bytes()),
            },
        )
    };
    let (outside, inside) = (sealed("cast from outside"), sealed("cast along an edge"));
    let tags: Vec<u64> = ids.iter().map(|_| rand::random()).collect();
    let sent_at = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let head = groups::Wire::CastCounted {
            hops: 1,
            tag: tags[i],
            wait_ms: u32::MAX,
        };
        let env = if i == entry { &inside } else { &outside };
        h.send(*id, one_hop(GROUPS, encode(&head, &[]), Some(env.clone())))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Every node answers its tag: 0 from outside the tree at once; the entry node the 3
    // members, incomplete (the silent child), after its own count timeout (4 s), not
    // u32::MAX ms.
    let answers = wait_for(Duration::from_secs(15), || {
        tags.iter()
            .map(|t| count_for(&h, *t))
            .collect::<Option<Vec<_>>>()
    });
    let took = sent_at.elapsed();
    assert!(
        took >= Duration::from_millis(3_500),
        "the entry node answered after {took:?}, before its count timeout: did it wait for \
         the silent child at all?"
    );
    let answers = answers.unwrap_or_else(|| {
        let got: Vec<_> = tags.iter().map(|t| count_for(&h, *t)).collect();
        panic!("not every node answered the counted cast within 15 s: {got:?}")
    });
    eprintln!("counted cast answered after {took:?}: {answers:?}");
    for (i, (from, members, complete)) in answers.into_iter().enumerate() {
        let want = if i == entry { (3, false) } else { (0, true) };
        assert_eq!(from, ids[i], "node {i}'s count came from another node");
        assert_eq!(
            (members, complete),
            want,
            "node {i}'s count (after {took:?})"
        );
    }
    expect_exactly(&nodes, &members, "to group tally): cast along an edge");
    expect_exactly(&nodes, &[], "to group tally): cast from outside");
    // The silent child was asked for its count with a tag of the entry node's.
    let asked = silent.captured().into_iter().find_map(|(from, m)| match m {
        Message::Service(s) if from == entry_id && s.service == GROUPS => {
            match (decode::<groups::Wire>(&s.data), s.sealed) {
                (Ok((groups::Wire::CastCounted { tag, wait_ms, .. }, _)), Some(env))
                    if env.origin().0 == hid =>
                {
                    Some((tag, wait_ms))
                }
                _ => None,
            }
        }
        _ => None,
    });
    let (silent_tag, wait_ms) = asked.expect("the entry node did not pass the cast to its child");
    assert!(
        wait_ms <= 4_000,
        "the child was given {wait_ms} ms to count"
    );
    // Nothing is waited for any more anywhere.
    let idle = wait_for(Duration::from_secs(10), || {
        group_counters(&nodes, "counting")
            .iter()
            .all(|c| *c == 0)
            .then_some(())
    });
    assert!(
        idle.is_some(),
        "counts still waited for: {:?}",
        group_counters(&nodes, "counting")
    );
    // The silent child's count, late (the entry gave up) and then again: both refused.
    let before_late = group_counters(&nodes, "refused_counts")[entry];
    for _ in 0..2 {
        let late = groups::Wire::Count {
            tag: silent_tag,
            members: u64::MAX,
            complete: true,
        };
        let (to, msg) = group_msg(entry_id, &late);
        silent.send(to, msg).unwrap_or_else(|e| panic!("{e}"));
    }
    let late = wait_for(Duration::from_secs(10), || {
        let n = group_counters(&nodes, "refused_counts")[entry];
        (n >= before_late + 2).then_some(n)
    });
    assert!(
        late.is_some(),
        "late counts not refused: {before_late} -> {}",
        group_counters(&nodes, "refused_counts")[entry]
    );

    // The hostile peers leave the tree; every node answers; honest sends count exactly.
    for k in keep {
        k.stop();
    }
    let prune = encode(&groups::Wire::Prune { group: gk }, &[]);
    silent
        .send(entry_id, one_hop(GROUPS, prune.clone(), None))
        .unwrap_or_else(|e| panic!("{e}"));
    h.send(entry_id, one_hop(GROUPS, prune, None))
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(300));
    for (i, n) in nodes.iter_mut().enumerate() {
        assert!(n.try_exit().is_none(), "node {i} exited: {}", n.stderr());
        assert!(try_status(n).is_ok(), "node {i} does not answer");
    }
    let err = cli_ok(&nodes[sender], &["group", "send", G, "after"]);
    assert!(reached(&err, G, 3), "after the attack, a non-member: {err}");
    expect_exactly(&nodes, &members, "to group tally): after");
    let err = cli_ok(&nodes[2], &["group", "send", G, "member after"]);
    assert!(reached(&err, G, 2), "after the attack, a member: {err}");
    expect_exactly(&nodes, &[1, 3], "to group tally): member after");
    silent.shutdown();
    h.shutdown();
}
