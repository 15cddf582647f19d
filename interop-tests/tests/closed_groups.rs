//! Closed groups across real `p2ps node` processes (issue 12 item 5): two members holding the
//! key hear each other; a node without it reads nothing and cannot send to them; a hostile
//! client's crafted join and message are refused. The same traffic in an open group shows
//! the old behaviour: anyone may join and read it.
//!
//! Every wait is bounded; a failure panics with the node's own output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::hostile::{answer_pings, grind_identity, Hostile};
use p2ps_interop_tests::p2ps::{self, NodeId, OverlayId};
use p2ps_interop_tests::{responsible, run_p2ps, wait_for, wait_ring, NodeProc, TestNet, FAST};
use p2ps_overlay::groups::closed::link_bytes;
use p2ps_overlay::groups::{self, Admission, ClosedGroup, Link, GROUPS};
use p2ps_overlay::service::encode;
use p2ps_overlay::Signer;
use p2ps_overlay::{Body, Class, Message, Routed, ServiceMessage};
use std::time::Duration;

const JOIN_WAIT: Duration = Duration::from_secs(30);
const RING_WAIT: Duration = Duration::from_secs(30);

fn cli_ok(node: &NodeProc, args: &[&str]) -> String {
    let out = node.cli(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "p2ps {args:?} failed: {err}");
    err
}

/// Which nodes printed a line ending with `suffix`, after waiting (bounded) for `want` to.
fn printed_by(nodes: &[NodeProc], want: &[usize], suffix: &str) -> Vec<usize> {
    wait_for(Duration::from_secs(10), || {
        want.iter()
            .all(|i| nodes[*i].stdout().iter().any(|l| l.ends_with(suffix)))
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(700));
    (0..nodes.len())
        .filter(|i| nodes[*i].stdout().iter().any(|l| l.ends_with(suffix)))
        .collect()
}

fn refused_closed(node: &mut NodeProc) -> u64 {
    node.status()
        .services
        .iter()
        .find(|s| s.name == groups::NAME)
        .and_then(|s| s.counters.get("refused_closed").copied())
        .unwrap_or(0)
}

#[test]
fn only_key_holders_join_send_and_read_a_closed_group() {
    let net = TestNet::new();
    let mut nodes = net.spawn_network(4, FAST, JOIN_WAIT);
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();
    wait_ring(&mut nodes.iter_mut().collect::<Vec<_>>(), RING_WAIT);
    let (m1, m2, outsider) = (1usize, 2usize, 3usize);

    // The old behaviour, still that of open groups: the outsider joins and reads.
    for n in [m1, m2, outsider] {
        cli_ok(&nodes[n], &["group", "join", "lobby"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    cli_ok(&nodes[m1], &["group", "send", "lobby", "open plans"]);
    let got = printed_by(&nodes, &[m2, outsider], "to group lobby): open plans");
    assert_eq!(got, vec![m2, outsider], "open group");

    // A closed group: a key file, given to the two members only.
    let key = net.path().join("club.key");
    let key = key.to_str().unwrap();
    let made = run_p2ps(&["group", "key", "new", key], Duration::from_secs(10));
    assert!(made.status.success(), "{made:?}");
    let again = run_p2ps(&["group", "key", "new", key], Duration::from_secs(10));
    assert!(!again.status.success(), "a key file was overwritten");
    for n in [m1, m2] {
        let err = cli_ok(&nodes[n], &["group", "join", "club", "--key", key]);
        assert!(err.contains("joined closed group club"), "{err}");
    }
    std::thread::sleep(Duration::from_millis(500));

    // The outsider: no key file, a clear error; without a key, its join and send go to the
    // open group of that name, which no member is in.
    let missing = net.path().join("none.key");
    let out = nodes[outsider].cli(&["group", "join", "club", "--key", missing.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "joined without a key file");
    assert!(err.contains("does not exist"), "{err}");
    cli_ok(&nodes[outsider], &["group", "join", "club"]);
    cli_ok(
        &nodes[outsider],
        &["group", "send", "club", "outsider speaks"],
    );

    // Members hear each other, in both directions; the outsider and node 0 do not.
    cli_ok(&nodes[m1], &["group", "send", "club", "closed plans"]);
    let got = printed_by(&nodes, &[m2], "to group club): closed plans");
    assert_eq!(got, vec![m2], "closed group, from m1");
    cli_ok(&nodes[m2], &["group", "send", "club", "reply"]);
    let got = printed_by(&nodes, &[m1], "to group club): reply");
    assert_eq!(got, vec![m1], "closed group, from m2");
    let got = printed_by(&nodes, &[], "outsider speaks");
    assert!(!got.contains(&m1) && !got.contains(&m2), "{got:?}");
    let status = nodes[m1].status();
    assert!(status
        .groups
        .iter()
        .any(|g| g.closed && g.member && g.name.as_deref() == Some("club")));

    // A hostile client that knows the group's public part and a member's certificate (say it
    // was once shown them): a join of its own, and a message, to every node.
    let secret = p2ps::group_key::load(std::path::Path::new(key)).unwrap();
    let club = ClosedGroup::new(&secret, "club");
    let group = club.id();
    // The client enters the nodes' tables once it speaks (until found dead): so that it is not
    // on the group's way to its root, it sits outside the arcs of the group key's node and of
    // the node after it, and answers pings.
    let root = responsible(&ids, group);
    let avoid = [root, responsible(&ids, p2ps::id::ring_id_of(&root).plus(1))];
    let want = |p| !avoid.contains(&responsible(&ids, p));
    let (identity, _) = grind_identity(want, 10_000).unwrap_or_else(|e| panic!("{e}"));
    let h = Hostile::with_identity(identity).unwrap_or_else(|e| panic!("{e}"));
    h.respond(answer_pings());
    let peers: Vec<_> = nodes
        .iter()
        .map(|n| p2ps_interop_tests::hostile::address_of(n).unwrap())
        .collect();
    h.connect(&peers).unwrap_or_else(|e| panic!("{e}"));
    let before: u64 = nodes.iter_mut().map(refused_closed).sum();
    let signer = h.signer();
    let member = OverlayId(ids[m1]);
    for to in &ids {
        let admission = Admission {
            member,
            cert: club.certify(member),
            links: vec![Link {
                to: OverlayId(*to),
                proof: signer.sign(&link_bytes(group, OverlayId(*to))),
            }],
        };
        let join = groups::join_closed_message(club.public(), &admission);
        let msg = Message::Service(ServiceMessage {
            service: GROUPS,
            class: Class::Tree,
            data: join,
            sealed: None,
        });
        h.send(*to, msg).unwrap_or_else(|e| panic!("{e}"));
        // A message with the member's certificate, from the hostile client's own envelope.
        let head = groups::Wire::SendClosed {
            cert: club.certify(member),
            nonce: [1; 12],
        };
        let sealed = h.seal(
            group,
            Body::Service {
                service: GROUPS,
                class: Class::Tree,
                target: None,
                data: encode(&head, b"hostile speaks"),
            },
        );
        let msg = Message::Routed(Routed::new(sealed));
        h.send(*to, msg).unwrap_or_else(|e| panic!("{e}"));
    }
    let after = wait_for(Duration::from_secs(10), || {
        let n: u64 = nodes.iter_mut().map(refused_closed).sum();
        (n >= before + 2).then_some(n)
    });
    assert!(
        after.is_some(),
        "the crafted join and message were not refused"
    );
    cli_ok(&nodes[m2], &["group", "send", "club", "after the attack"]);
    let got = printed_by(&nodes, &[m1], "to group club): after the attack");
    assert_eq!(got, vec![m1]);
    assert!(printed_by(&nodes, &[], "hostile speaks").is_empty());
    let leaked = h.captured().into_iter().any(|(_, m)| match m {
        Message::Service(s) => s.sealed.is_some_and(|x| x.env.key == group),
        Message::Routed(r) => r.sealed.env.key == group,
        _ => false,
    });
    assert!(!leaked, "the hostile client got the closed group's traffic");
    h.shutdown();

    // Leaving: by name (the closed group it joined), then again: an error.
    cli_ok(&nodes[m2], &["group", "leave", "club"]);
    let out = nodes[m2].cli(&["group", "leave", "club", "--key", key]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a member of group club"), "{err}");
}
