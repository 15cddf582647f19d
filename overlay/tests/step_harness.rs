//! A step-by-step harness: a handful of nodes whose positions are chosen by hand, messages
//! passed one at a time, and the exact outputs of join, leave and crash handling checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_overlay::cast::{self, CastEvent, Casts, CAST};
use p2ps_overlay::messaging::{self, Messaging, MESSAGES};
use p2ps_overlay::service::{encode, Emits};
use p2ps_overlay::sim::ideal::Ring;
use p2ps_overlay::{
    standard, Adjacency, Answer, Body, Class, Config, Contact, Dir, Envelope, Event, Message, Node,
    Output, Peer, PeerId, RelayHint, RingId, Routed, Sealed, Segment, ServiceMessage, StandIn,
    StandInProof, State, Time,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A test identity whose ring position is `n << 120`, so that positions read as small numbers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct T(u8);

impl PeerId for T {
    type Proof = StandInProof;

    fn verify(&self, msg: &[u8], proof: &StandInProof) -> bool {
        StandInProof::of(self, msg) == *proof
    }

    fn ring_id(&self) -> RingId {
        RingId((self.0 as u128) << 120)
    }
}

fn cfg() -> Config {
    Config::default().with_list_len(2)
}

fn drain(n: &mut Node<T>) -> Vec<Output<T>> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

/// The ids of the contacts in `list`.
fn cids(list: &[Contact<T>]) -> Vec<u8> {
    list.iter().map(|c| c.id.0).collect()
}

/// Records signed by their own nodes, made at `at`.
fn signed(ids: &[u8], at: Time) -> Vec<Contact<T>> {
    ids.iter()
        .map(|i| Contact::signed(&StandIn(T(*i)), Vec::new(), None, at))
        .collect()
}

fn bare(ids: &[u8]) -> Vec<Contact<T>> {
    ids.iter().map(|i| Contact::bare(T(*i))).collect()
}

/// An envelope from `origin` signed by `signer` (the same node unless forging).
fn sealed(signer: u8, origin: u8, at: Time, key: RingId, body: Body<T>) -> Sealed<T> {
    let env = Envelope {
        origin: Contact::signed(&StandIn(T(origin)), Vec::new(), None, at),
        seq: 7,
        issued: at,
        key,
        body,
    };
    Sealed::seal(&StandIn(T(signer)), env)
}

fn routed(sealed: Sealed<T>) -> Message<T> {
    Message::Routed(Routed::at_hop(1, Vec::new(), sealed))
}

/// A stabilisation from `from` in direction `dir`, with its record made at `at`.
fn stabilize(from: u8, dir: Dir, list: Vec<Contact<T>>, at: Time) -> Message<T> {
    Message::Stabilize {
        dir,
        me: signed(&[from], at).remove(0),
        list,
        follows: None,
    }
}

/// The messages sent, as `(to, message)`.
fn sends(out: &[Output<T>]) -> Vec<(u8, Message<T>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((to.0, msg.clone())),
            _ => None,
        })
        .collect()
}

fn ids(peers: &[Peer<T>]) -> Vec<u8> {
    peers.iter().map(|p| p.id.0).collect()
}

/// Nodes already joined in a correct ring made of `members`.
fn ring_of(members: &[u8]) -> Vec<Node<T>> {
    let ring = Ring::new(members.iter().map(|m| Peer::new(T(*m))).collect());
    (0..members.len())
        .map(|i| {
            let table = ring.ideal_table(i, cfg().strategy, 2);
            let mut node = Node::from_table(StandIn(table.me().id), cfg(), table, Time::ZERO);
            standard::register(&mut node).unwrap();
            node
        })
        .collect()
}

/// The origins of what `node`'s plain-message and cast services delivered.
fn delivered_from(node: &mut Node<T>) -> Vec<u8> {
    let mut from = Vec::new();
    let inbox = node.service_mut::<Messaging<T>>().unwrap();
    while let Some(d) = inbox.poll_event() {
        from.push(d.origin.0);
    }
    let casts = node.service_mut::<Casts<T>>().unwrap();
    while let Some(e) = casts.poll_event() {
        if let CastEvent::Delivered { origin, .. } = e {
            from.push(origin.0);
        }
    }
    from
}

#[test]
fn second_node_joins_through_the_first() {
    let now = Time::from_secs(1);
    let mut a = Node::new(StandIn(T(10)), cfg());
    a.create(now).unwrap();
    assert_eq!(drain(&mut a), vec![Output::Event(Event::Joined)]);

    let mut b = Node::new(StandIn(T(20)), cfg());
    b.join(now, Contact::bare(T(10))).unwrap();
    let out = sends(&drain(&mut b));
    let (to, join) = &out[0];
    let req = match join {
        Message::Routed(r) if r.sealed.env.body == Body::Join && r.sealed.verify() => {
            assert_eq!(r.key(), T(20).ring_id());
            r.sealed.env.seq
        }
        other => panic!("{other:?}"),
    };
    assert_eq!((*to, out.len()), (10, 1));
    assert_eq!(b.state(), State::Joining);

    // A is alone, so responsible for every key: it answers and takes B as its neighbour.
    a.handle_message(now, T(20), join.clone());
    let out = drain(&mut a);
    let reply = match &sends(&out)[..] {
        [(
            20,
            m @ Message::JoinReply {
                req: r,
                succs,
                preds,
            },
        )] => {
            assert_eq!(*r, req);
            assert_eq!((cids(succs), cids(preds)), (vec![10], vec![10]));
            assert!(succs[0].verify(), "the replier's own record is signed");
            m.clone()
        }
        other => panic!("{other:?}"),
    };
    // A takes B in only when B itself talks to it (below): a join request proves a key, not
    // a running node.
    assert!(a.table().successors().is_empty());

    // B is in: it tells its neighbour (A on both sides) at once, then announces itself towards
    // its finger targets. In a two-node ring every announcement's target is A's.
    b.handle_message(now, T(10), reply);
    let out = drain(&mut b);
    assert_eq!(out[0], Output::Event(Event::Joined));
    for (i, dir) in [(0, Dir::Cw), (1, Dir::Ccw)] {
        match &sends(&out)[i] {
            (
                10,
                Message::Stabilize {
                    dir: d, me, list, ..
                },
            ) => {
                assert_eq!(*d, dir);
                // B's record goes in full once; the second message only names B.
                assert_eq!(me.id, T(20));
                assert_eq!(me.verify(), i == 0);
                assert_eq!(cids(list), vec![10]);
            }
            other => panic!("{other:?}"),
        }
    }
    let probes = &sends(&out)[2..];
    assert!(!probes.is_empty());
    for (to, m) in probes {
        match m {
            Message::Routed(r) => {
                assert_eq!(*to, 10);
                assert!(
                    matches!(r.sealed.env.body, Body::FingerProbe { .. }),
                    "{r:?}"
                );
                assert_eq!(r.hops, 1);
            }
            other => panic!("unexpected output {other:?}"),
        }
    }
    assert_eq!(out.last(), Some(&Output::Event(Event::NeighbourUp(T(10)))));
    assert_eq!(b.state(), State::Joined);
    // B's first stabilisation reaches A, which now takes B as its neighbour on both sides.
    let stab = sends(&out)[0].1.clone();
    a.handle_message(now, T(20), stab);
    assert!(drain(&mut a).contains(&Output::Event(Event::NeighbourUp(T(20)))));
    assert_eq!(ids(a.table().successors()), vec![20]);
    assert_eq!(ids(a.table().predecessors()), vec![20]);
}

#[test]
fn joiner_lands_between_two_nodes() {
    // Ring 10, 30, 50; node 20 joins through 50. 50 forwards towards 20's position; 30 is
    // responsible for (10, 30] and answers.
    let mut nodes = ring_of(&[10, 30, 50]);
    let now = Time::from_secs(1);
    let mut x = Node::new(StandIn(T(20)), cfg());
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
    // The responsible node, then its own successors; the joiner cuts to its list length.
    match &sends(&out)[..] {
        [(20, Message::JoinReply { succs, preds, .. })] => {
            assert_eq!(cids(succs), vec![30, 50, 10]);
            assert_eq!(cids(preds), vec![10, 50]);
        }
        other => panic!("{other:?}"),
    }
    // 30 takes 20 as its predecessor only once 20 talks to it (its first stabilisation).
    assert_eq!(ids(nodes[1].table().predecessors()), vec![10, 50]);
}

#[test]
fn a_member_that_restarted_is_answered_not_sent_its_own_join() {
    // Ring 10, 30, 50; 30 crashed unnoticed and, restarted with its key, joins through 50.
    // 50 still lists 30, the node responsible for 30's position: the join request from 30
    // itself shows the entry is stale, so 50 drops it and answers as the responsible node.
    let mut nodes = ring_of(&[10, 30, 50]);
    let now = Time::from_secs(1);
    let mut again = Node::new(StandIn(T(30)), cfg());
    again.join(now, Contact::bare(T(50))).unwrap();
    let join = match sends(&drain(&mut again)).pop() {
        Some((50, msg)) => msg,
        other => panic!("{other:?}"),
    };
    nodes[2].handle_message(now, T(30), join);
    let out = drain(&mut nodes[2]);
    match &sends(&out)[..] {
        [.., (30, Message::JoinReply { succs, .. })] => {
            assert_eq!(cids(succs)[0], 50);
        }
        other => panic!("{other:?}"),
    }
    assert!(!sends(&out)
        .iter()
        .any(|(to, m)| *to == 30 && matches!(m, Message::Routed(_))));
}

#[test]
fn the_only_neighbour_that_restarted_is_answered_without_isolation() {
    let mut nodes = ring_of(&[10, 30]);
    let now = Time::from_secs(1);
    let mut again = Node::new(StandIn(T(30)), cfg());
    again.join(now, Contact::bare(T(10))).unwrap();
    let join = match sends(&drain(&mut again)).pop() {
        Some((10, msg)) => msg,
        other => panic!("{other:?}"),
    };
    nodes[0].handle_message(now, T(30), join);
    let out = drain(&mut nodes[0]);
    assert!(!out.contains(&Output::Event(Event::Isolated)), "{out:?}");
    assert_eq!(nodes[0].state(), State::Joined);
    let reply = match &sends(&out)[..] {
        [.., (30, m @ Message::JoinReply { .. })] => m.clone(),
        other => panic!("{other:?}"),
    };
    again.handle_message(now, T(10), reply);
    assert_eq!(again.state(), State::Joined);
}

#[test]
fn graceful_leave_hands_over_to_neighbours() {
    let mut nodes = ring_of(&[10, 20, 30]);
    let now = Time::from_secs(5);
    nodes[1].leave(now);
    let out = drain(&mut nodes[1]);
    let leave = match &sends(&out)[..] {
        [(10, m @ Message::Leave { succs, preds }), (30, m2)] => {
            assert_eq!((cids(succs), cids(preds)), (vec![30, 10], vec![10, 30]));
            assert_eq!(m, m2);
            m.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(out.last(), Some(&Output::Event(Event::Left)));
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
    // A second-hand mention of the leaver is ignored for a while, even a signed one.
    nodes[2].handle_message(now, T(10), stabilize(10, Dir::Cw, signed(&[20], now), now));
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
    let stabs: Vec<(u8, Dir, Vec<u8>)> = sends(&out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::Stabilize { dir, list, .. } => Some((to, dir, cids(&list))),
            _ => None,
        })
        .collect();
    assert_eq!(
        stabs,
        vec![(20, Dir::Cw, vec![40, 30]), (40, Dir::Ccw, vec![20, 30])]
    );
    // 40 answers, 20 (crashed) does not.
    a.handle_message(
        t1,
        T(40),
        Message::StabilizeReply {
            dir: Dir::Ccw,
            me: signed(&[40], t1).remove(0),
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

/// A record of node `id`, signed by it at `at`.
fn record(id: u8, port: u16, relay: Option<u8>, at: Time) -> Contact<T> {
    let relay = relay.map(|r| RelayHint {
        id: T(r),
        addrs: vec![addr(9000 + r as u16)],
    });
    Contact::signed(&StandIn(T(id)), vec![addr(port)], relay, at)
}

/// Addresses and relay hints come from records signed by their node: a newer record replaces
/// what an older one said, an older copy changes nothing, and addresses the driver saw work go
/// first.
#[test]
fn relay_hints_and_addresses_follow_signed_records() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let a = &mut nodes[0];
    let now = Time::from_secs(10);
    let stab = |list| stabilize(20, Dir::Cw, list, now);
    // 20 passes on 30's record, with 30's relay.
    a.handle_message(now, T(20), stab(vec![record(30, 3000, Some(40), now)]));
    assert_eq!(a.relay_hint(&T(30)).map(|h| h.id), Some(T(40)));
    assert_eq!(a.addresses(&T(30)), &[addr(3000)]);
    // An older record without the relay: nothing changes.
    let older = Time::from_secs(5);
    a.handle_message(now, T(20), stab(vec![record(30, 3001, None, older)]));
    assert_eq!(a.relay_hint(&T(30)).map(|h| h.id), Some(T(40)));
    assert_eq!(a.addresses(&T(30)), &[addr(3000)]);
    // The same claim, not signed by 30: nothing changes either, and it is counted.
    let mut fake = record(30, 3009, None, Time::from_secs(11));
    fake.addrs = vec![addr(3010)];
    let forged = a.stats().forged;
    a.handle_message(now, T(20), stab(vec![fake]));
    assert_eq!(a.addresses(&T(30)), &[addr(3000)]);
    assert_eq!(a.stats().forged, forged + 1);
    // The driver connected to 30 at another address: it goes first, the hint stays.
    a.add_addresses(T(30), &[addr(3002)]);
    assert_eq!(a.addresses(&T(30)), &[addr(3002), addr(3000)]);
    assert_eq!(a.relay_hint(&T(30)).map(|h| h.id), Some(T(40)));
    // 30, now reachable directly, routes a lookup through us: its newer record wins.
    let later = Time::from_secs(12);
    let env = Envelope {
        origin: record(30, 3003, None, later),
        seq: 1,
        issued: later,
        key: RingId(25 << 120),
        body: Body::Lookup,
    };
    a.handle_message(later, T(20), routed(Sealed::seal(&StandIn(T(30)), env)));
    assert_eq!(a.relay_hint(&T(30)), None);
    assert_eq!(a.addresses(&T(30)), &[addr(3003)]);
}

/// Routed data, casts and group messages naming an origin that did not sign them are dropped
/// and counted; the genuine ones are delivered as from their origin.
#[test]
fn forged_origins_are_dropped() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let now = Time::from_secs(10);
    let a = &mut nodes[0];
    let data = |signer| {
        let body = Body::Service {
            service: MESSAGES,
            class: Class::User,
            target: Some(T(10)),
            data: encode(&messaging::Wire::Data, b"hi"),
        };
        routed(sealed(signer, 30, now, T(10).ring_id(), body))
    };
    let cast = |signer| {
        let body = Body::Service {
            service: CAST,
            class: Class::Tree,
            target: None,
            data: encode(&cast::Wire::<T>::Broadcast { reply: false }, b"all"),
        };
        let piece = cast::Wire::<T>::Piece {
            piece: 1,
            seg: Segment::between(RingId(5 << 120), RingId(15 << 120)),
            depth: 1,
        };
        Message::Service(ServiceMessage {
            service: CAST,
            class: Class::Tree,
            data: encode(&piece, &[]),
            sealed: Some(Box::new(sealed(signer, 30, now, T(30).ring_id(), body))),
        })
    };
    // 20 speaks as 30.
    a.handle_message(now, T(20), data(20));
    a.handle_message(now, T(20), cast(20));
    drain(a);
    assert_eq!(delivered_from(a), Vec::<u8>::new());
    assert_eq!(a.stats().forged, 2);
    // A stale envelope (a replay) is dropped too.
    let old = Time::from_secs(10) + cfg().seen_ttl * 2;
    a.handle_message(old, T(20), data(30));
    assert_eq!(a.stats().stale, 1);
    assert_eq!(delivered_from(a), Vec::<u8>::new());
    // The real thing is delivered, from 30.
    let mut b = ring_of(&[10, 20, 30, 40]).remove(0);
    b.handle_message(now, T(20), data(30));
    b.handle_message(now, T(20), cast(30));
    assert_eq!(delivered_from(&mut b), vec![30, 30]);
    // A piece whose envelope is another service's is refused before the service sees it.
    let mut c = ring_of(&[10, 20, 30, 40]).remove(0);
    let mut wrong = cast(30);
    if let Message::Service(m) = &mut wrong {
        m.service = MESSAGES;
    }
    c.handle_message(now, T(20), wrong);
    assert_eq!(delivered_from(&mut c), Vec::<u8>::new());
    assert_eq!(c.stats().dropped, 1);
}

/// A routed message's signature is checked where the message is acted on, not by the nodes
/// that only pass it on (the next one checks again anyway): a forgery passes a forwarder
/// untouched and dies where it arrives; what comes straight from its origin is taken on the
/// link's word.
#[test]
fn signatures_are_checked_where_messages_are_acted_on() {
    let now = Time::from_secs(10);
    let to_40 = |signer, origin| {
        let body = Body::Service {
            service: MESSAGES,
            class: Class::User,
            target: Some(T(40)),
            data: encode(&messaging::Wire::Data, b"hi"),
        };
        routed(sealed(signer, origin, now, T(40).ring_id(), body))
    };
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    // 10 passes on 20's forgery "from 30" towards 40 without checking (nothing counted).
    drain(&mut nodes[0]);
    nodes[0].handle_message(now, T(20), to_40(20, 30));
    let passed = sends(&drain(&mut nodes[0]));
    assert!(
        passed.iter().any(|(_, m)| matches!(m, Message::Routed(_))),
        "the forwarder passed it on: {passed:?}"
    );
    assert_eq!(nodes[0].stats().forged, 0);
    assert_eq!(delivered_from(&mut nodes[0]), Vec::<u8>::new());
    // 40 checks it on arrival: dropped and counted, nothing delivered.
    nodes[3].handle_message(now, T(10), to_40(20, 30));
    assert_eq!(nodes[3].stats().forged, 1);
    assert_eq!(delivered_from(&mut nodes[3]), Vec::<u8>::new());
    // The real one from 30, passed on by 10, is delivered.
    nodes[3].handle_message(now, T(10), to_40(30, 30));
    assert_eq!(delivered_from(&mut nodes[3]), vec![30]);
    // Straight from its origin, the link vouches for it: delivered without a check.
    nodes[3].handle_message(now, T(20), to_40(99, 20));
    assert_eq!(delivered_from(&mut nodes[3]), vec![20]);
    assert_eq!(nodes[3].stats().forged, 1);
    // Still stale when old, whoever brings it.
    let old = now + cfg().seen_ttl * 2;
    nodes[3].handle_message(old, T(20), to_40(20, 20));
    assert_eq!(nodes[3].stats().stale, 1);
    assert_eq!(delivered_from(&mut nodes[3]), Vec::<u8>::new());
}

/// Contacts a peer lists enter the tables only as records signed by their nodes; a list never
/// pushes out neighbours this node heard from lately.
#[test]
fn unsigned_contacts_never_enter_the_lists() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let a = &mut nodes[0];
    let now = Time::from_secs(10);
    // 40, the predecessor, was heard from lately.
    a.handle_link_up(now, T(40));
    // 5 (a real node: it is connected) claims to be 10's predecessor, listing fakes 4 and 3.
    a.handle_message(now, T(5), stabilize(5, Dir::Cw, bare(&[4, 3]), now));
    assert_eq!(ids(a.table().predecessors()), vec![5, 40]);
    assert!(a.stats().unverified >= 2);
    // With signed records of 4 and 3 they are real nodes and are taken.
    a.handle_message(now, T(5), stabilize(5, Dir::Cw, signed(&[4, 3], now), now));
    assert_eq!(ids(a.table().predecessors()), vec![5, 4]);
    // An unsolicited join reply and a finger notification of an unsigned node change nothing.
    let before = a.table().clone();
    a.handle_message(
        now,
        T(6),
        Message::JoinReply {
            req: 1,
            succs: bare(&[7]),
            preds: bare(&[6]),
        },
    );
    a.handle_message(
        now,
        T(6),
        Message::FingerNotify {
            new: Contact::bare(T(8)),
            dir: Dir::Cw,
            level: 3,
            stop: RingId(0),
        },
    );
    assert!(!a.table().contains(&T(7)) && !a.table().contains(&T(8)));
    assert_eq!(ids(a.table().successors()), ids(before.successors()));
}

/// A node takes a lookup answer only for a request in flight, for that key, signed by a node
/// whose proof of responsibility (its predecessor's signed word) covers the key and agrees
/// with what the asker knows.
#[test]
fn lookup_answers_are_checked() {
    let mut nodes = ring_of(&[10, 20, 30, 40, 50, 60, 70]);
    let now = Time::from_secs(100);
    let a = &mut nodes[0];
    let key = RingId(45 << 120);
    let req = a.lookup(now, key).unwrap();
    drain(a);
    // `signer` signs, as `pred`, that `succ` follows it, at `at`.
    let proof = |signer: u8, pred: u8, succ: u8, at: Time| {
        let mut adj = Adjacency::sign(&StandIn(T(signer)), T(succ), at);
        adj.pred = T(pred);
        adj
    };
    let answer = |by: u8, req: u64, key: RingId, pred: Option<Adjacency<T>>| {
        let body = Body::Answer {
            req,
            asker: T(10),
            pred,
            hops: 2,
        };
        Message::Answer(Answer {
            trail: Vec::new(),
            sealed: sealed(by, by, now, key, body),
        })
    };
    let good = || Some(proof(40, 40, 50, now));
    let done = |out: &[Output<T>]| {
        out.iter().find_map(|o| match o {
            Output::Event(Event::LookupDone { result, .. }) => Some(*result),
            _ => None,
        })
    };
    let refused: Vec<Message<T>> = vec![
        // Unasked, or for another key.
        answer(50, req ^ 1, key, good()),
        answer(50, req, RingId(44 << 120), good()),
        // 40 vouches for 70, but 10 knows 60 lies between them.
        answer(70, req, key, Some(proof(40, 40, 70, now))),
        // No proof, and 50 is not in 10's lists; a proof that names another node; a proof
        // signed by 30 in 40's name; one too old or from the future; a node vouching for itself.
        answer(50, req, key, None),
        answer(50, req, key, Some(proof(40, 40, 55, now))),
        answer(50, req, key, Some(proof(30, 40, 50, now))),
        answer(50, req, key, Some(proof(40, 40, 50, Time::from_secs(5)))),
        answer(50, req, key, Some(proof(40, 40, 50, Time::from_secs(200)))),
        answer(50, req, key, Some(proof(50, 50, 50, now))),
    ];
    let n_refused = refused.len() as u64;
    for m in refused {
        a.handle_message(now, T(70), m);
    }
    let mut forged = answer(70, req, key, Some(proof(60, 60, 70, now)));
    if let Message::Answer(x) = &mut forged {
        x.sealed.env.origin.id = T(50);
    }
    a.handle_message(now, T(70), forged);
    assert_eq!(done(&drain(a)), None);
    assert_eq!(a.stats().bad_answers, n_refused);
    assert_eq!(a.stats().forged, 1);
    // The responsible node's signed answer with a recent proof is taken, wherever it came from.
    a.handle_message(now, T(70), answer(50, req, key, good()));
    assert_eq!(done(&drain(a)), Some(Ok((T(50), 2))));
}

/// A node keeps the word its predecessor signs in its clockwise stabilisation and puts it
/// into its answers; a word signed by anyone else, or naming another node, is counted as
/// forged and never used.
#[test]
fn answers_carry_the_predecessors_word() {
    let mut nodes = ring_of(&[10, 20, 30, 40, 50, 60, 70]);
    let now = Time::from_secs(10);
    let r = &mut nodes[4];
    let stab = |follows: Adjacency<T>| {
        let mut m = stabilize(40, Dir::Cw, signed(&[30, 20], now), now);
        if let Message::Stabilize { follows: f, .. } = &mut m {
            *f = Some(follows);
        }
        m
    };
    let mut by_30 = Adjacency::sign(&StandIn(T(30)), T(50), now);
    by_30.pred = T(40);
    r.handle_message(now, T(40), stab(by_30));
    r.handle_message(
        now,
        T(40),
        stab(Adjacency::sign(&StandIn(T(40)), T(60), now)),
    );
    assert_eq!(r.stats().forged, 2);
    let ask = |r: &mut Node<T>| {
        let request = Message::Routed(Routed::at_hop(
            2,
            vec![T(20), T(30)],
            sealed(10, 10, now, RingId(45 << 120), Body::Lookup),
        ));
        drain(r);
        r.handle_message(now, T(30), request);
        // Straight to the asker or back along the trail, whichever is linked.
        match &sends(&drain(r))[..] {
            [(10 | 30, Message::Answer(a))] => match &a.sealed.env.body {
                Body::Answer { pred, .. } => pred.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ask(r), None);
    let word = Adjacency::sign(&StandIn(T(40)), T(50), now);
    r.handle_message(now, T(40), stab(word.clone()));
    assert_eq!(ask(r), Some(word));
}

/// The responsible node answers over connections that exist: back along the request's trail
/// when it has no connection to the asker.
#[test]
fn answers_go_back_along_the_trail() {
    let mut nodes = ring_of(&[10, 20, 30, 40, 50, 60, 70]);
    let now = Time::from_secs(10);
    let body = Body::Lookup;
    let request = Message::Routed(Routed::at_hop(
        2,
        vec![T(20), T(30)],
        sealed(10, 10, now, RingId(45 << 120), body),
    ));
    let r = &mut nodes[4];
    // 50 holds no connection to the asker (a node of a known ring starts linked to its table).
    r.handle_link_closed(now, T(10));
    r.handle_message(now, T(30), request);
    match &sends(&drain(r))[..] {
        [(30, Message::Answer(a))] => {
            assert_eq!(a.trail, vec![T(20)]);
            assert!(a.sealed.verify());
        }
        other => panic!("{other:?}"),
    }
}

/// A node that loses every neighbour says so and joins again through a node it knew.
#[test]
fn an_isolated_node_rejoins() {
    let mut nodes = ring_of(&[10, 20, 30]);
    let now = Time::from_secs(10);
    let mut a = nodes.remove(0);
    // 10 has talked only to 20 (a node of a known ring starts linked to its table) and
    // learnt 20's and 30's records (as stabilisation hands them out).
    a.handle_link_closed(now, T(30));
    a.handle_message(
        now,
        T(20),
        Message::StabilizeReply {
            dir: Dir::Cw,
            me: signed(&[20], now).remove(0),
            back: None,
            list: signed(&[30], now),
        },
    );
    drain(&mut a);
    a.handle_link_down(now, T(20));
    a.handle_link_down(now, T(30));
    let out = drain(&mut a);
    assert!(out.contains(&Output::Event(Event::Isolated)), "{out:?}");
    assert_eq!(a.state(), State::Rejoining);
    assert!(a.lookup(now, RingId(1)).is_err());
    // (Losing 20 changed the table, so 30, in it without a link, was asked for a sign of life
    // before its own link failed.)
    let (to, join) = match &sends(&out)[..] {
        [(30, Message::Ping { .. }), (to, m @ Message::Routed(r))]
            if r.sealed.env.body == Body::Join =>
        {
            (*to, m.clone())
        }
        other => panic!("{other:?}"),
    };
    // 10 heard only from 20, so its join goes there; 20 had declared 10 dead and, alone with
    // 30 now, is responsible for 10's position: it answers.
    assert_eq!(to, 20);
    let mut b = nodes.remove(0);
    b.handle_link_down(now, T(10));
    drain(&mut b);
    b.handle_message(now, T(10), join);
    let reply = match &sends(&drain(&mut b))[..] {
        [(10, m @ Message::JoinReply { .. })] => m.clone(),
        other => panic!("{other:?}"),
    };
    a.handle_message(now, T(20), reply);
    assert!(drain(&mut a).contains(&Output::Event(Event::Joined)));
    assert_eq!(a.state(), State::Joined);
    assert_eq!(a.stats().rejoins, 1);
    // 30 is still buried here (declared dead a moment ago): stabilisation brings it back.
    assert_eq!(ids(a.table().successors()), vec![20]);
}

/// A steered lookup takes only answers to its own queries, from the node asked, and only
/// signed records from them; the nearest live node at or after the key wins.
#[test]
fn steered_lookups_take_only_signed_answers_to_their_queries() {
    let steered = cfg()
        .with_lookup_mode(p2ps_overlay::LookupMode::Steered)
        .with_steer_parallelism(2);
    let ring = p2ps_overlay::sim::ideal::Ring::new(
        [10u8, 100, 200].iter().map(|m| Peer::new(T(*m))).collect(),
    );
    let table = ring.ideal_table(0, steered.strategy, 2);
    let mut a = Node::from_table(StandIn(T(10)), steered, table, Time::ZERO);
    let now = Time::from_secs(10);
    let key = RingId(150 << 120);
    let req = a.lookup(now, key).unwrap();
    let queries: Vec<(u8, u64)> = sends(&drain(&mut a))
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::FindNear { req, key: k } if k == key => Some((to, req)),
            _ => None,
        })
        .collect();
    assert_eq!(queries.len(), 2, "{queries:?}");
    let (to, q) = queries[0];
    let other = queries[1].0;
    // An answer nobody asked for, and one from the wrong node: ignored.
    a.handle_message(
        now,
        T(to),
        Message::Near {
            req: q ^ 1,
            nodes: signed(&[160], now),
        },
    );
    a.handle_message(
        now,
        T(other),
        Message::Near {
            req: q,
            nodes: signed(&[160], now),
        },
    );
    assert_eq!(a.stats().bad_answers, 2);
    // The asked node answers with an unsigned mention of 151 and a signed record of 160.
    let mut nodes = bare(&[151]);
    nodes.extend(signed(&[160], now));
    a.handle_message(now, T(to), Message::Near { req: q, nodes });
    let out = drain(&mut a);
    let asked: Vec<u8> = sends(&out)
        .into_iter()
        .filter_map(|(to, m)| matches!(m, Message::FindNear { .. }).then_some(to))
        .collect();
    assert!(asked.contains(&160) && !asked.contains(&151), "{asked:?}");
    // Everyone asked answers; 160 is the nearest at or after the key.
    for (p, q) in sends(&out)
        .into_iter()
        .chain(
            queries
                .iter()
                .skip(1)
                .map(|(t, q)| (*t, Message::FindNear { req: *q, key })),
        )
        .filter_map(|(to, m)| match m {
            Message::FindNear { req, .. } => Some((to, req)),
            _ => None,
        })
    {
        a.handle_message(
            now,
            T(p),
            Message::Near {
                req: q,
                nodes: Vec::new(),
            },
        );
    }
    let done = drain(&mut a).into_iter().find_map(|o| match o {
        Output::Event(Event::LookupDone { req: r, result, .. }) if r == req => Some(result),
        _ => None,
    });
    assert_eq!(done.map(|r| r.map(|(p, _)| p)), Some(Ok(T(160))));
}

/// One peer cannot make a node learn (and later dial) an unbounded number of addresses, even
/// with validly signed records: at most 64 records of new nodes per peer and minute.
#[test]
fn records_of_new_nodes_are_rate_limited_per_peer() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let a = &mut nodes[0];
    let now = Time::from_secs(10);
    let flood: Vec<Contact<T>> = (100..=220u8)
        .map(|i| record(i, 5000 + i as u16, None, now))
        .collect();
    a.handle_message(now, T(20), stabilize(20, Dir::Cw, flood.clone(), now));
    let learnt = |a: &Node<T>| {
        (100..=220u8)
            .filter(|i| !a.addresses(&T(*i)).is_empty())
            .count()
    };
    assert_eq!(learnt(a), 64);
    // Another peer has a budget of its own.
    a.handle_message(now, T(40), stabilize(40, Dir::Ccw, flood.clone(), now));
    assert_eq!(learnt(a), 121);
}

/// A linked peer that sends more messages than `peer_message_rate` allows has the rest dropped
/// unread and counted; other peers are not held back, and closing its link and opening a new
/// one does not refill its bucket.
#[test]
fn a_flooding_peer_is_throttled_per_link() {
    use p2ps_overlay::rate::Rate;
    let rate = Rate {
        per_sec: 100,
        burst: 50,
    };
    let ring = Ring::new([10, 20, 30].iter().map(|m| Peer::new(T(*m))).collect());
    let c = cfg().with_peer_message_rate(rate);
    let table = ring.ideal_table(0, c.strategy, 2);
    let mut a = Node::from_table(StandIn(T(10)), c, table, Time::ZERO);
    let now = Time::from_secs(10);
    let pongs_to = |out: &[Output<T>], to: u8| {
        sends(out)
            .iter()
            .filter(|(t, m)| *t == to && matches!(m, Message::Pong { .. }))
            .count()
    };
    let mut out = Vec::new();
    for nonce in 0..1000 {
        a.handle_message(now, T(99), Message::Ping { nonce });
        out.extend(drain(&mut a));
    }
    assert_eq!(pongs_to(&out, 99), 50, "only the burst is answered");
    assert_eq!(a.stats().rate_limited, 950);
    // An honest neighbour is answered meanwhile.
    a.handle_message(now, T(20), Message::Ping { nonce: 1 });
    assert_eq!(pongs_to(&drain(&mut a), 20), 1);
    // A new connection does not give the flooder a new burst…
    a.handle_link_closed(now, T(99));
    a.handle_link_up(now, T(99));
    a.handle_message(now, T(99), Message::Ping { nonce: 1 });
    assert_eq!(pongs_to(&drain(&mut a), 99), 0);
    // …time does: 100 a second.
    let later = now + Duration::from_secs(1);
    let mut out = Vec::new();
    for nonce in 0..1000 {
        a.handle_message(later, T(99), Message::Ping { nonce });
        out.extend(drain(&mut a));
    }
    assert_eq!(pongs_to(&out, 99), 50, "the bucket holds at most the burst");
    assert_eq!(a.stats().rate_limited, 950 + 1 + 950);
}

/// A steered lookup judges answers from near the key: one that names too few nodes around it
/// (a hostile node hiding the others) makes its sender and the nodes it named suspect, and
/// they are never asked; the lookup backs off to other nodes, and a dense answer settles it.
#[test]
fn steered_lookups_see_through_sparse_answers() {
    let steered = cfg().with_lookup_mode(p2ps_overlay::LookupMode::Steered);
    // Twenty nodes, 10 apart; node 10 knows 20, 30, 200, 190 and 60. The key 145 belongs to
    // 150.
    let ring =
        p2ps_overlay::sim::ideal::Ring::new((1..=20u8).map(|m| Peer::new(T(m * 10))).collect());
    let table = ring.ideal_table(0, steered.strategy, 2);
    let mut a = Node::from_table(StandIn(T(10)), steered, table, Time::ZERO);
    let now = Time::from_secs(10);
    let key = RingId(145 << 120);
    let req = a.lookup(now, key).unwrap();
    let mut asked = Vec::new();
    let next = |a: &mut Node<T>, asked: &mut Vec<u8>| {
        let out = drain(a);
        let q = sends(&out).into_iter().find_map(|(to, m)| match m {
            Message::FindNear { req, .. } => Some((to, req)),
            _ => None,
        });
        if let Some((to, _)) = q {
            asked.push(to);
        }
        (q, out)
    };
    let answer = |a: &mut Node<T>, (to, q): (u8, u64), named: &[u8]| {
        a.handle_message(
            now,
            T(to),
            Message::Near {
                req: q,
                nodes: signed(named, now),
            },
        );
    };
    // 190 is far from the key (it names nodes between itself and the key): not judged.
    let (q, _) = next(&mut a, &mut asked);
    answer(&mut a, q.unwrap(), &[160, 110]);
    // 160, right after the key, hides 150 and everything near and names 170 and 240: sparse.
    // Nearer to the key than 110, 170 would be asked next if 160 were believed.
    let (q, _) = next(&mut a, &mut asked);
    answer(&mut a, q.unwrap(), &[170, 240]);
    // The lookup backs off to 110, which points at 140, which names the neighbourhood.
    let (q, _) = next(&mut a, &mut asked);
    answer(&mut a, q.unwrap(), &[120, 130, 140, 150]);
    let (q, _) = next(&mut a, &mut asked);
    answer(&mut a, q.unwrap(), &[150, 130, 160]);
    let (q, out) = next(&mut a, &mut asked);
    assert_eq!(q, None);
    assert_eq!(asked, vec![190, 160, 110, 140]);
    let done = out.iter().find_map(|o| match o {
        Output::Event(Event::LookupDone { req: r, result, .. }) if *r == req => Some(*result),
        _ => None,
    });
    assert_eq!(done, Some(Ok((T(150), 4))));
}

/// Runs `n`'s timers up to `until`, returning everything it output meanwhile.
fn run_until(n: &mut Node<T>, until: Time) -> Vec<Output<T>> {
    let mut out = drain(n);
    while let Some(t) = n.poll_timeout().filter(|t| *t <= until) {
        n.handle_timeout(t);
        out.extend(drain(n));
    }
    out
}

#[test]
fn table_members_are_linked_ahead_of_need_and_links_left_behind_close() {
    let mut nodes = ring_of(&[10, 20, 30, 40, 50]);
    let a = &mut nodes[0];
    let t1 = a.poll_timeout().unwrap();
    a.handle_timeout(t1);
    drain(a);
    assert_eq!(ids(a.table().successors()), vec![20, 30]);
    assert!(!a.table().contains(&T(25)));
    // 20's answer names 25, which 10 has never heard from: it takes 30's place in the list and
    // is asked for a sign of life at once, which makes the driver connect to it.
    a.handle_message(
        t1,
        T(20),
        Message::StabilizeReply {
            dir: Dir::Cw,
            me: signed(&[20], t1).remove(0),
            back: Some(signed(&[10], t1).remove(0)),
            list: signed(&[25, 30], t1),
        },
    );
    assert_eq!(ids(a.table().successors()), vec![20, 25]);
    let nonce = match &sends(&drain(a))[..] {
        [(25, Message::Ping { nonce })] => *nonce,
        other => panic!("{other:?}"),
    };
    a.handle_message(t1, T(25), Message::Pong { nonce });
    assert!(drain(a).is_empty(), "a linked member is asked only once");
    // 30 left the table; its link, there for the table, closes once 30 has been silent for a
    // stabilisation timeout. 25 answered, so it stays.
    assert!(!a.table().contains(&T(30)));
    // (The next round comes within 1.1 stabilisation intervals, before 50, which never
    // answered, counts as failed.)
    let out = run_until(a, t1 + Duration::from_millis(2500));
    let closed: Vec<u8> = out
        .iter()
        .filter_map(|o| match o {
            Output::Disconnect { peer } => Some(peer.0),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![30]);
    assert!(a.table().contains(&T(25)));
}

#[test]
fn a_link_closed_on_purpose_is_not_a_crash_and_is_opened_again() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let a = &mut nodes[0];
    assert_eq!(ids(a.table().successors()), vec![20, 30]);
    let now = Time::from_secs(1);
    // The peer closed the connection as no longer needed: 30 stays in the table.
    a.handle_link_closed(now, T(30));
    assert!(drain(a).is_empty());
    assert!(a.table().contains(&T(30)));
    // The next stabilisation round links it again.
    let t = a.poll_timeout().unwrap();
    let out = run_until(a, t);
    let pinged: Vec<u8> = sends(&out)
        .into_iter()
        .filter_map(|(to, m)| matches!(m, Message::Ping { .. }).then_some(to))
        .collect();
    assert_eq!(pinged, vec![30]);
    // A link that failed is a crash.
    a.handle_link_down(t, T(30));
    assert!(!a.table().contains(&T(30)));
}
