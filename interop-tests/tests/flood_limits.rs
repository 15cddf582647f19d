//! Floods of messages against real `p2ps node` processes on loopback (issue #12, rows 3-5 of
//! its table and the per-peer message limit), each with an attacker of our own:
//!
//! * `cast_flood_stays_bounded`: a hostile peer ([`Hostile`]) starts full-ring casts as its own
//!   origin, at every node, as fast as it can for 5 s. The casts each node delivers, the
//!   messages the honest nodes send each other and the receivers' stdout must stay within
//!   what the cast policy and `p2ps node`'s flood summaries allow; an honest broadcast after it
//!   still reaches every node exactly once.
//! * `group_join_flood_leaves_room_for_the_nodes_own_groups`: 1 100 `GroupJoin`s with random
//!   group ids from one peer, repeated every 500 ms as a child keeping its place would; the
//!   node's own `p2ps group join` still works meanwhile, and no node holds more trees than one
//!   peer's share.
//! * `garbage_frames_log_a_few_lines`: a raw QUIC attacker ([`Attacker`]) sends 2 000 garbage
//!   frames, each on its own stream; the node's WARN lines stay a handful, every frame is
//!   counted, and lookups through the node stay correct.
//! * `a_peer_flooding_messages_is_throttled`: a hostile peer sends Pings as fast as it can for
//!   3 s (at most 100 000) to a node whose per-peer message rate is set low; the node answers
//!   no more than the rate allows, counts the rest, and honest lookups through it stay correct
//!   meanwhile.
//!
//! Every flood is bounded in messages and time; only loopback addresses are used. Run with
//! `P2PS_BIN=target/debug/p2ps cargo test -p p2ps-interop-tests --test flood_limits --
//! --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::hostile::{address_of, counters_of, forge, one_hop, Hostile, SprayLimits};
use p2ps_interop_tests::p2ps::status::Counters;
use p2ps_interop_tests::p2ps::{key_of, wall_clock, NodeId, OverlayId};
use p2ps_interop_tests::raw_quic::Attacker;
use p2ps_interop_tests::{
    check_lookups, random_keys, responsible, wait_for, wait_ring, NodeProc, TestNet, FAST,
};
use p2ps_overlay::cast::{self, CAST};
use p2ps_overlay::groups::{self, GROUPS};
use p2ps_overlay::service::encode;
use p2ps_overlay::{Body, Class, Message, RingId, Segment};
use p2ps_transport::StreamClass;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(30);
const RING_WAIT: Duration = Duration::from_secs(30);

/// The cast policy's defaults (`CastRate::default()`): casts one origin may start at once, and
/// per second.
const CAST_BURST: u64 = 256;
const CASTS_PER_SEC: u64 = 64;

/// What `p2ps node` prints per second at most before it summarises (`flood.rs`), plus the
/// summary line.
const LINES_PER_SEC: u64 = 20 + 1;

/// A network of `n` honest nodes with the fast settings and `extra` flags, its ring exact.
fn network(n: usize, extra: &[&str]) -> (TestNet, Vec<NodeProc>) {
    let dir = TestNet::new();
    let args: Vec<&str> = FAST.iter().chain(extra).copied().collect();
    let mut nodes = dir.spawn_network(n, &args, JOIN_WAIT);
    wait_ring(&mut nodes.iter_mut().collect::<Vec<_>>(), RING_WAIT);
    (dir, nodes)
}

/// The nodes' ids and addresses, for an attacker to dial.
fn addresses(nodes: &[NodeProc]) -> Vec<(NodeId, SocketAddr)> {
    nodes.iter().map(|n| address_of(n).unwrap()).collect()
}

/// Sum of `f` over the counters of `nodes`.
fn total(nodes: &[&NodeProc], f: impl Fn(&Counters) -> u64) -> u64 {
    counters_of(nodes).iter().map(f).sum()
}

/// Lines of `node`'s stdout that contain `needle`.
fn printed(node: &NodeProc, needle: &str) -> usize {
    node.stdout().iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn cast_flood_stays_bounded() {
    const N: usize = 5;
    const FLOOD: Duration = Duration::from_secs(5);
    let t0 = Instant::now();
    let (_dir, nodes) = network(N, &[]);
    let refs: Vec<&NodeProc> = nodes.iter().collect();
    let peers = addresses(&nodes);
    let positions: Vec<(NodeId, RingId)> = peers
        .iter()
        .map(|(id, _)| (*id, p2ps_interop_tests::p2ps::id::ring_id_of(id)))
        .collect();
    let h = Hostile::new().unwrap();
    h.connect(&peers).unwrap();
    eprintln!("[{:?}] {N} nodes, attacker connected", t0.elapsed());

    let delivered0 = counters_of(&refs);
    let out0 = total(&refs, |c| c.messages_out);
    let to_attacker0 = h.received();
    let lines0: Vec<usize> = nodes.iter().map(|n| n.stdout().len()).collect();
    let bytes0: Vec<usize> = nodes
        .iter()
        .map(|n| n.stdout().iter().map(|l| l.len() + 1).sum())
        .collect();

    // Full-ring casts by the attacker as its own origin, a new one to each node in turn, for
    // 5 s: what a node starting a broadcast sends its first neighbours.
    let started = Instant::now();
    let spray = {
        let signer = h.signer();
        let record = h.record();
        h.spray(
            SprayLimits {
                max_messages: 400_000,
                max_time: FLOOD,
                pause: Duration::ZERO,
            },
            move |round| {
                positions
                    .iter()
                    .enumerate()
                    .map(|(i, (id, pos))| {
                        let piece = (round * N + i) as u64;
                        let body = Body::Service {
                            service: CAST,
                            class: Class::Tree,
                            target: None,
                            data: encode(
                                &cast::Wire::<OverlayId>::Broadcast { reply: false },
                                b"flood",
                            ),
                        };
                        let head = cast::Wire::<OverlayId>::Piece {
                            piece,
                            seg: Segment::full(*pos),
                            depth: 0,
                        };
                        let sealed = forge(&signer, record.clone(), *pos, body, wall_clock());
                        (*id, one_hop(CAST, encode(&head, &[]), Some(sealed)))
                    })
                    .collect()
            },
        )
    };
    let report = spray.wait();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("[{:?}] flood: {report}", t0.elapsed());
    assert!(report.sent > 5_000, "the flood hardly ran: {report}");
    // Let what was admitted finish.
    std::thread::sleep(Duration::from_secs(3));
    let window = secs + 3.0;

    // Each node delivers at most what the policy admits from one origin in that time.
    let allowed = CAST_BURST + (CASTS_PER_SEC as f64 * (window + 1.0)) as u64;
    let delivered1 = counters_of(&refs);
    let delivered: Vec<u64> = delivered0
        .iter()
        .zip(&delivered1)
        .map(|(a, b)| b.delivered - a.delivered)
        .collect();
    // Messages the honest nodes sent each other (not the acknowledgements to the attacker):
    // each admitted cast costs about 2 (N - 1) (pieces and acknowledgements), and at most N x
    // `allowed` casts are admitted; upkeep adds a little.
    let sent = total(&refs, |c| c.messages_out) - out0;
    let to_attacker = h.received() - to_attacker0;
    let among_nodes = sent.saturating_sub(to_attacker);
    let message_bound = N as u64 * allowed * 2 * (N as u64 - 1) + 5_000;
    // Stdout: at most the shown lines and one summary per second.
    let lines: Vec<usize> = nodes
        .iter()
        .zip(&lines0)
        .map(|(n, l0)| n.stdout().len() - l0)
        .collect();
    let bytes: Vec<usize> = nodes
        .iter()
        .zip(&bytes0)
        .map(|(n, b0)| n.stdout().iter().map(|l| l.len() + 1).sum::<usize>() - b0)
        .collect();
    let line_bound = (LINES_PER_SEC as f64 * (window + 2.0)) as usize + 10;
    eprintln!(
        "{} casts sprayed in {secs:.1} s ({:.0}/s); delivered per node {delivered:?} (allowed \
         {allowed}); {sent} messages sent by the nodes, {to_attacker} of them to the attacker, \
         {among_nodes} among themselves (bound {message_bound}); stdout lines per node {lines:?} \
         (bound {line_bound}), bytes {bytes:?}",
        report.sent,
        report.sent as f64 / secs
    );
    assert!(
        delivered.iter().all(|d| *d <= allowed),
        "a node delivered more casts of one origin than its policy allows: {delivered:?} > \
         {allowed}"
    );
    assert!(
        among_nodes <= message_bound,
        "the flood multiplied: {among_nodes} messages among the nodes (bound {message_bound})"
    );
    assert!(
        lines.iter().all(|l| *l <= line_bound),
        "stdout grew by {lines:?} lines ({bytes:?} bytes); bound {line_bound} lines per node"
    );

    // An honest broadcast still reaches every other node, once.
    std::thread::sleep(Duration::from_secs(2));
    let text = format!("honest {:08x}", rand::random::<u32>());
    let out = nodes[1].cli(&["broadcast", &text]);
    assert!(
        out.status.success(),
        "p2ps broadcast failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    let got: Vec<usize> = nodes.iter().map(|n| printed(n, &text)).collect();
    let want: Vec<usize> = (0..N).map(|i| usize::from(i != 1)).collect();
    assert_eq!(got, want, "the honest broadcast printed (per node)");
    h.shutdown();
    eprintln!("[{:?}] done", t0.elapsed());
}

#[test]
fn group_join_flood_leaves_room_for_the_nodes_own_groups() {
    const JOINS: usize = 1_100;
    let t0 = Instant::now();
    let (_dir, mut nodes) = network(3, &[]);
    let peers = addresses(&nodes);
    let h = Hostile::new().unwrap();
    let victim = peers[1].0;
    h.connect(&peers[1..2]).unwrap();
    // 1 100 joins for random groups, sent again every 500 ms as a child refreshing its place
    // would, for at most 8 s.
    let groups: Vec<RingId> = (0..JOINS).map(|_| RingId(rand::random::<u128>())).collect();
    let spray = h.spray(
        SprayLimits {
            max_messages: 20 * JOINS,
            max_time: Duration::from_secs(8),
            pause: Duration::from_millis(500),
        },
        move |_| {
            groups
                .iter()
                .map(|g| {
                    let join = groups::Wire::Join { group: *g };
                    (victim, one_hop(GROUPS, encode(&join, &[]), None))
                })
                .collect()
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let held: Vec<usize> = nodes.iter_mut().map(|n| n.status().groups.len()).collect();
    eprintln!(
        "[{:?}] {JOINS} group joins sent to n01 every 500 ms; trees held per node {held:?}",
        t0.elapsed()
    );
    let out = nodes[1].cli(&["group", "join", "sports"]);
    let report = spray.stop();
    eprintln!("[{:?}] junk joins: {report}", t0.elapsed());
    assert!(report.sent >= 2 * JOINS, "the flood hardly ran: {report}");
    assert!(
        out.status.success(),
        "the node's own group join failed while a peer held {JOINS} junk joins (trees held \
         {held:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One peer's share of a node's groups (`GroupConfig::max_groups_per_peer`, 64), and the
    // trees the victim's own joins for them made at the others.
    let share = 64;
    assert!(
        held.iter().all(|h| *h <= share + 1),
        "trees held per node {held:?}, more than one peer's share ({share})"
    );
    // Its group works: another node's message reaches it. A join returns before the tree has
    // reached the group's root, so the sender tries (a new text each time, at most 20) until
    // its send reports a member reached.
    let mut text = String::new();
    for _ in 0..20 {
        text = format!("kickoff {:08x}", rand::random::<u32>());
        let out = nodes[2].cli(&["group", "send", "sports", &text, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("group send --json: {e}"));
        if report["members"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while printed(&nodes[1], &text) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        printed(&nodes[1], &text),
        1,
        "the group message reached n01"
    );
    h.shutdown();
}

/// Garbage of kind `i % 3`: an unknown stream class, a frame whose body is no message, a frame
/// longer than any the node takes.
fn garbage(i: usize) -> Vec<u8> {
    match i % 3 {
        0 => vec![0xEE, 1, 2, 3],
        1 => {
            let mut g = vec![StreamClass::User.tag()];
            g.extend_from_slice(&8u32.to_be_bytes());
            g.extend_from_slice(&[0xFF; 8]);
            g
        }
        _ => {
            let mut g = vec![StreamClass::Routing.tag()];
            g.extend_from_slice(&u32::MAX.to_be_bytes());
            g
        }
    }
}

/// WARN lines in `node`'s log so far.
fn warn_lines(node: &NodeProc) -> usize {
    node.stderr()
        .lines()
        .filter(|l| l.contains(" WARN "))
        .count()
}

#[test]
fn garbage_frames_log_a_few_lines() {
    const FRAMES: usize = 2_000;
    let t0 = Instant::now();
    let (_dir, mut nodes) = network(3, &[]);
    let (victim, addr) = address_of(&nodes[1]).unwrap();
    let warns0 = warn_lines(&nodes[1]);
    let errors0 = nodes[1].status().counters.frame_errors;
    let attacker = Attacker::new("127.0.0.1:0", victim, addr).unwrap();
    let (e, target, at) = (attacker.endpoint.clone(), attacker.target, attacker.addr);
    let sent = attacker.rt.block_on(async move {
        let conn = Attacker::dial(e, target, at).await.unwrap();
        let start = Instant::now();
        let mut sent = 0;
        for i in 0..FRAMES {
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
            let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), conn.open_uni()).await
            else {
                break;
            };
            if s.write_all(&garbage(i)).await.is_err() {
                continue;
            }
            let _ = s.finish();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        sent
    });
    let errors = nodes[1].status().counters.frame_errors - errors0;
    let warns = warn_lines(&nodes[1]) - warns0;
    eprintln!(
        "[{:?}] {sent} garbage frames sent; the node counted {errors} frame errors and logged \
         {warns} WARN lines",
        t0.elapsed()
    );
    assert!(sent >= FRAMES / 2, "only {sent} garbage frames went out");
    assert!(
        errors as usize >= sent * 9 / 10,
        "the node counted {errors} frame errors of {sent}"
    );
    // A few lines per peer and call site per 10 s, not one per frame.
    assert!(
        warns <= 20,
        "{warns} WARN lines for {sent} garbage frames:\n{}",
        nodes[1]
            .stderr()
            .lines()
            .filter(|l| l.contains(" WARN "))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    attacker.close_all();
    let keys = random_keys(30);
    check_lookups(&mut nodes.iter_mut().collect::<Vec<_>>(), &keys);
}

#[test]
fn a_peer_flooding_messages_is_throttled() {
    const PER_SEC: u64 = 200;
    const BURST: u64 = 400;
    const FLOOD: Duration = Duration::from_secs(3);
    let t0 = Instant::now();
    let (per_sec, burst) = (PER_SEC.to_string(), BURST.to_string());
    let limits = [
        "--peer-messages-per-sec",
        per_sec.as_str(),
        "--peer-message-burst",
        burst.as_str(),
    ];
    let (_dir, mut nodes) = network(3, &limits);
    let peers = addresses(&nodes);
    let victim = peers[1].0;
    let limited0 = nodes[1].status().counters.rate_limited;
    let h = Hostile::new().unwrap();
    h.connect(&peers[1..2]).unwrap();
    let started = Instant::now();
    let spray = h.spray(
        SprayLimits {
            max_messages: 100_000,
            max_time: FLOOD,
            pause: Duration::ZERO,
        },
        move |round| {
            (0..64)
                .map(|i| {
                    let nonce = (round * 64 + i) as u64;
                    (victim, Message::Ping { nonce })
                })
                .collect()
        },
    );
    // Honest lookups from every node, through the victim too, while it is flooded. A node
    // takes any peer that talks to it into its table until it fails to answer, so the keys
    // the attacker would hold, or would be the last hop to (those of its successor), are left
    // out: they are not what this tests.
    let mut all: Vec<NodeId> = peers.iter().map(|(id, _)| *id).collect();
    all.push(h.id());
    let after_attacker = responsible(&all, h.pos().plus(1));
    let keys: Vec<String> = random_keys(90)
        .into_iter()
        .filter(|k| {
            let holder = responsible(&all, key_of(k));
            holder != h.id() && holder != after_attacker
        })
        .take(30)
        .collect();
    check_lookups(&mut nodes.iter_mut().collect::<Vec<_>>(), &keys);
    let report = spray.wait();
    // A loaded node may still be working through the flood: the accounting is read once every
    // ping is either answered or counted (or after 10 s; the assertions below then say what
    // went missing). Pings are charged when the node handles them, so the time allowed runs
    // until then.
    let sent = report.sent as u64;
    let read = |h: &Hostile, node: &mut NodeProc| {
        let answered = h.received_kinds().get("pong").copied().unwrap_or(0);
        (answered, node.status().counters.rate_limited - limited0)
    };
    wait_for(Duration::from_secs(10), || {
        let (a, l) = read(&h, &mut nodes[1]);
        (a + l + 100 >= sent).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (answered, limited) = read(&h, &mut nodes[1]);
    let secs = started.elapsed().as_secs_f64();
    let allowed = BURST + (PER_SEC as f64 * (secs + 1.0)) as u64;
    eprintln!(
        "[{:?}] flood: {report}; the node answered {answered} (allowed {allowed}) and dropped \
         {limited} over the attacker's rate",
        t0.elapsed()
    );
    assert!(
        report.sent as u64 > 4 * allowed,
        "the flood hardly ran: {report}"
    );
    assert!(
        answered <= allowed,
        "the node answered {answered} of {} pings (allowed {allowed})",
        report.sent
    );
    assert!(
        limited + answered + 100 >= report.sent as u64,
        "{limited} counted as over the rate, {answered} answered, {} sent",
        report.sent
    );
    h.shutdown();
    // And once the attacker is gone, lookups are still right everywhere.
    wait_ring(&mut nodes.iter_mut().collect::<Vec<_>>(), RING_WAIT);
    check_lookups(&mut nodes.iter_mut().collect::<Vec<_>>(), &random_keys(30));
}
