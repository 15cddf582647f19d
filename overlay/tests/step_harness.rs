//! A step-by-step harness: a handful of nodes whose positions are chosen by hand, messages
//! passed one at a time, and the exact outputs of join, leave and crash handling checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_overlay::sim::ideal::Ring;
use p2ps_overlay::{
    Config, Contact, Dir, Event, Message, Node, Output, Peer, PeerId, RelayHint, RingId, Routed,
    RoutedBody, State, Time,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A test identity whose ring position is `n << 120`, so that positions read as small numbers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct T(u8);

impl PeerId for T {
    fn ring_id(&self) -> RingId {
        RingId((self.0 as u128) << 120)
    }
}

fn cfg() -> Config {
    Config {
        list_len: 2,
        ..Config::default()
    }
}

fn drain(n: &mut Node<T>) -> Vec<Output<T>> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn send(to: u8, msg: Message<T>) -> Output<T> {
    Output::Send { to: T(to), msg }
}

fn bare(ids: &[u8]) -> Vec<Contact<T>> {
    ids.iter().map(|i| Contact::bare(T(*i))).collect()
}

fn ids(peers: &[Peer<T>]) -> Vec<u8> {
    peers.iter().map(|p| p.id.0).collect()
}

/// Nodes already joined in a correct ring made of `members`.
fn ring_of(members: &[u8]) -> Vec<Node<T>> {
    let ring = Ring::new(members.iter().map(|m| Peer::new(T(*m))).collect());
    (0..members.len())
        .map(|i| Node::from_table(cfg(), ring.ideal_table(i, cfg().strategy, 2), Time::ZERO))
        .collect()
}

#[test]
fn second_node_joins_through_the_first() {
    let now = Time::from_secs(1);
    let mut a = Node::new(T(10), cfg());
    a.create(now).unwrap();
    assert_eq!(drain(&mut a), vec![Output::Event(Event::Joined)]);

    let mut b = Node::new(T(20), cfg());
    b.join(now, Contact::bare(T(10))).unwrap();
    let join = Message::Routed(Routed {
        key: T(20).ring_id(),
        origin: Contact::bare(T(20)),
        hops: 0,
        body: RoutedBody::Join,
    });
    assert_eq!(drain(&mut b), vec![send(10, join.clone())]);
    assert_eq!(b.state(), State::Joining);

    // A is alone, so responsible for every key: it answers and takes B as its neighbour.
    a.handle_message(now, T(20), join);
    let reply = Message::JoinReply {
        succs: bare(&[10]),
        preds: bare(&[10]),
    };
    assert_eq!(
        drain(&mut a),
        vec![
            send(20, reply.clone()),
            Output::Event(Event::NeighbourUp(T(20)))
        ]
    );
    assert_eq!(ids(a.table().successors()), vec![20]);
    assert_eq!(ids(a.table().predecessors()), vec![20]);

    // B is in: it tells its neighbour (A on both sides) at once, then announces itself towards
    // its finger targets. In a two-node ring every announcement's target is A's.
    b.handle_message(now, T(10), reply);
    let out = drain(&mut b);
    assert_eq!(out[0], Output::Event(Event::Joined));
    assert_eq!(
        out[1],
        send(
            10,
            Message::Stabilize {
                dir: Dir::Cw,
                list: bare(&[10])
            }
        )
    );
    assert_eq!(
        out[2],
        send(
            10,
            Message::Stabilize {
                dir: Dir::Ccw,
                list: bare(&[10])
            }
        )
    );
    let probes: Vec<_> = out[3..out.len() - 1].to_vec();
    assert!(!probes.is_empty());
    for p in &probes {
        match p {
            Output::Send {
                to: T(10),
                msg: Message::Routed(r),
            } => {
                assert!(matches!(r.body, RoutedBody::FingerProbe { .. }), "{r:?}");
                assert_eq!(r.hops, 1);
            }
            other => panic!("unexpected output {other:?}"),
        }
    }
    assert_eq!(out.last(), Some(&Output::Event(Event::NeighbourUp(T(10)))));
    assert_eq!(b.state(), State::Joined);

    // A answers B's stabilisations with what it knows.
    a.handle_message(
        now,
        T(20),
        Message::Stabilize {
            dir: Dir::Cw,
            list: bare(&[10]),
        },
    );
    assert_eq!(
        drain(&mut a),
        vec![send(
            20,
            Message::StabilizeReply {
                dir: Dir::Cw,
                back: Some(Contact::bare(T(20))),
                list: bare(&[20])
            }
        )]
    );
}

#[test]
fn joiner_lands_between_two_nodes() {
    // Ring 10, 30, 50; node 20 joins through 50. 50 forwards towards 20's position; 30 is
    // responsible for (10, 30] and answers.
    let mut nodes = ring_of(&[10, 30, 50]);
    let now = Time::from_secs(1);
    let mut x = Node::new(T(20), cfg());
    x.join(now, Contact::bare(T(50))).unwrap();
    let join = match drain(&mut x).pop() {
        Some(Output::Send { to: T(50), msg }) => msg,
        other => panic!("{other:?}"),
    };
    nodes[2].handle_message(now, T(20), join);
    let fwd = drain(&mut nodes[2]);
    // 50's lists span the whole ring: 20 lies in (10, 30], so it goes straight to 30.
    let fwd_msg = match &fwd[..] {
        [Output::Send {
            to: T(30),
            msg: m @ Message::Routed(r),
        }] if r.hops == 1 => m.clone(),
        other => panic!("{other:?}"),
    };
    nodes[1].handle_message(now, T(50), fwd_msg);
    let out = drain(&mut nodes[1]);
    assert_eq!(
        out,
        vec![
            // The responsible node, then its own successors; the joiner cuts to its list length.
            send(
                20,
                Message::JoinReply {
                    succs: bare(&[30, 50, 10]),
                    preds: bare(&[10, 50])
                }
            ),
            Output::Event(Event::NeighbourUp(T(20))),
        ]
    );
    // 30 takes 20 as its predecessor at once; its two-entry list keeps the nearest two.
    assert_eq!(ids(nodes[1].table().predecessors()), vec![20, 10]);
}

#[test]
fn graceful_leave_hands_over_to_neighbours() {
    let mut nodes = ring_of(&[10, 20, 30]);
    let now = Time::from_secs(5);
    nodes[1].leave(now);
    let leave = Message::Leave {
        succs: bare(&[30, 10]),
        preds: bare(&[10, 30]),
    };
    assert_eq!(
        drain(&mut nodes[1]),
        vec![
            send(10, leave.clone()),
            send(30, leave.clone()),
            Output::Event(Event::Left)
        ]
    );
    assert_eq!(nodes[1].state(), State::Left);

    nodes[0].handle_message(now, T(20), leave.clone());
    assert_eq!(
        drain(&mut nodes[0]),
        vec![Output::Event(Event::NeighbourDown(T(20)))]
    );
    assert_eq!(ids(nodes[0].table().successors()), vec![30]);
    assert_eq!(ids(nodes[0].table().predecessors()), vec![30]);
    // 20's keys go to its successor 30, not to 10, which keeps (30, 10].
    assert!(!nodes[0].table().is_responsible(T(15).ring_id()));

    nodes[2].handle_message(now, T(20), leave);
    assert_eq!(
        drain(&mut nodes[2]),
        vec![Output::Event(Event::NeighbourDown(T(20)))]
    );
    assert!(nodes[2].table().is_responsible(T(15).ring_id()));
    // A second-hand mention of the leaver is ignored for a while.
    nodes[2].handle_message(
        now,
        T(10),
        Message::Stabilize {
            dir: Dir::Cw,
            list: bare(&[20]),
        },
    );
    assert!(!nodes[2].table().contains(&T(20)));
}

#[test]
fn crashed_successor_is_detected_by_stabilisation_timeout() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let a = &mut nodes[0];
    // Run A's timers until its first stabilisation goes out.
    let t1 = a.poll_timeout().unwrap();
    a.handle_timeout(t1);
    let out = drain(a);
    let stabs: Vec<_> = out
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Send {
                    msg: Message::Stabilize { .. },
                    ..
                }
            )
        })
        .cloned()
        .collect();
    assert_eq!(
        stabs,
        vec![
            send(
                20,
                Message::Stabilize {
                    dir: Dir::Cw,
                    list: bare(&[40, 30])
                }
            ),
            send(
                40,
                Message::Stabilize {
                    dir: Dir::Ccw,
                    list: bare(&[20, 30])
                }
            ),
        ]
    );
    // 40 answers, 20 (crashed) does not.
    a.handle_message(
        t1,
        T(40),
        Message::StabilizeReply {
            dir: Dir::Ccw,
            back: Some(Contact::bare(T(10))),
            list: bare(&[30, 20]),
        },
    );
    drain(a);
    let deadline = t1 + cfg().stabilize_timeout;
    a.handle_timeout(deadline - Duration::from_millis(1));
    assert!(a.table().contains(&T(20)), "declared dead too early");
    drain(a);
    a.handle_timeout(deadline);
    let out = drain(a);
    assert!(
        out.contains(&Output::Event(Event::NeighbourDown(T(20)))),
        "{out:?}"
    );
    assert_eq!(ids(a.table().successors()), vec![30]);
    assert!(!a.table().contains(&T(20)));
    assert_eq!(a.stats().peers_failed, 1);
}

#[test]
fn link_down_removes_a_peer_everywhere() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let a = &mut nodes[0];
    a.handle_link_down(Time::from_secs(1), T(40));
    assert_eq!(drain(a), vec![Output::Event(Event::NeighbourDown(T(40)))]);
    assert_eq!(ids(a.table().predecessors()), vec![30]);
    assert!(!a.table().contains(&T(40)));
}

#[test]
fn a_peer_being_reached_otherwise_is_not_declared_dead_until_its_link_fails() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let a = &mut nodes[0];
    let t1 = a.poll_timeout().unwrap();
    a.handle_timeout(t1);
    drain(a);
    // The driver could not dial 20 and is trying a punch or a relay.
    a.handle_link_pending(t1, T(20));
    let deadline = t1 + cfg().stabilize_timeout;
    a.handle_timeout(deadline);
    drain(a);
    a.handle_timeout(deadline + cfg().stabilize_timeout);
    drain(a);
    assert!(
        a.table().contains(&T(20)),
        "declared dead while its link was pending"
    );
    // The other paths failed too: now it is gone.
    a.handle_link_down(deadline + cfg().stabilize_timeout, T(20));
    let out = drain(a);
    assert!(out.contains(&Output::Event(Event::NeighbourDown(T(20)))));
    assert!(!a.table().contains(&T(20)));
}

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([192, 0, 2, 1], port))
}

fn contact(id: u8, port: u16, relay: Option<u8>) -> Contact<T> {
    Contact {
        id: T(id),
        addrs: vec![addr(port)],
        relay: relay.map(|r| RelayHint {
            id: T(r),
            addrs: vec![addr(9000 + r as u16)],
        }),
    }
}

/// A relay hint is dropped only when the peer itself says it has none: another node's copy of
/// its contact may predate the hint. Addresses the driver saw work go first and keep the hint.
#[test]
fn relay_hints_and_addresses_follow_first_hand_contacts() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let a = &mut nodes[0];
    let now = Time::from_secs(1);
    // 20 passes on 30's contact, with 30's relay.
    let stab = |list| Message::Stabilize { dir: Dir::Cw, list };
    a.handle_message(now, T(20), stab(vec![contact(30, 3000, Some(40))]));
    assert_eq!(a.relay_hint(&T(30)).map(|h| h.id), Some(T(40)));
    // An older copy without the relay, from someone else: the hint stays; the address is
    // added after the known one.
    a.handle_message(now, T(20), stab(vec![contact(30, 3001, None)]));
    assert_eq!(a.relay_hint(&T(30)).map(|h| h.id), Some(T(40)));
    assert_eq!(a.addresses(&T(30)), &[addr(3000), addr(3001)]);
    // The driver connected to 30 at another address: it goes first, the hint stays.
    a.add_addresses(T(30), &[addr(3002)]);
    assert_eq!(a.addresses(&T(30)), &[addr(3002), addr(3000), addr(3001)]);
    assert_eq!(a.relay_hint(&T(30)).map(|h| h.id), Some(T(40)));
    // 30 itself, now reachable directly, routes a lookup through us: its own contact wins.
    let lookup = Message::Routed(Routed {
        key: RingId(25 << 120),
        origin: contact(30, 3003, None),
        hops: 1,
        body: RoutedBody::Lookup { req: 1 },
    });
    a.handle_message(now, T(20), lookup);
    assert_eq!(a.relay_hint(&T(30)), None);
    assert_eq!(a.addresses(&T(30)), &[addr(3003)]);
}
