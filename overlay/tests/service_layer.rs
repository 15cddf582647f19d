//! The open service layer, step by step: a user-defined service gets its hooks (deliver,
//! forward, receive, neighbours, failures, timers, leave), `replica_set` answers from the lists,
//! and what hostile peers send to services (unknown services, garbage, envelopes that are not
//! there or belong to another service, endless self-routing) changes nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use p2ps_overlay::cast::{self, Casts, CAST};
use p2ps_overlay::groups::{self, GroupExt, Groups, GROUPS};
use p2ps_overlay::service::{
    encode, Answered, Context, Forwarding, Incoming, NeighbourChange, Queried, Service, ServiceId,
};
use p2ps_overlay::sim::ideal::Ring;
use p2ps_overlay::{
    standard, Body, Class, Config, Message, Node, Output, PassBack, Peer, PeerId, Query, RingId,
    Routed, ServiceMessage, StandIn, StandInProof, Time,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A test identity at ring position `n << 120`.
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

fn pos(n: u8) -> RingId {
    RingId((n as u128) << 120)
}

fn cfg() -> Config {
    Config::default().with_list_len(2)
}

/// What a [`Probe`] saw.
#[derive(Default, Debug)]
struct Seen {
    delivered: Vec<(T, u16, Bytes)>,
    forwarded: Vec<T>,
    received: Vec<(T, Bytes)>,
    answered: Vec<(T, Bytes)>,
    /// Queries that reached this node as the responsible one: who asked, hops, what.
    queried: Vec<(T, u16, Bytes)>,
    /// Queries that passed through (this node as a step of their way).
    query_passing: u32,
    neighbours_up: Vec<T>,
    failed: Vec<T>,
    timeouts: u32,
    left: bool,
}

/// A user-defined service that records its hooks; it takes messages passing through when
/// `consume` is set, and keeps one timer.
#[derive(Default)]
struct Probe {
    seen: Seen,
    consume: bool,
    /// Answer queries passing through, here.
    take_queries: bool,
    timer: Option<Time>,
}

impl Service<T> for Probe {
    fn name(&self) -> &'static str {
        "test/probe"
    }

    fn deliver(&mut self, ctx: &mut Context<'_, T>, msg: Routed<T>) {
        let Body::Service { data, .. } = &msg.sealed.env.body else {
            return;
        };
        if &data[..] == b"ask" {
            ctx.reply(&msg.way_back(), Bytes::from_static(b"answer"));
        }
        self.seen
            .delivered
            .push((msg.sealed.origin(), msg.hops, data.clone()));
    }

    fn inspects_forwarded(&self) -> bool {
        true
    }

    fn forward(&mut self, ctx: &mut Context<'_, T>, _msg: &Routed<T>, _next: T) -> Forwarding {
        self.seen.forwarded.push(ctx.me().id);
        if self.consume {
            Forwarding::Consumed
        } else {
            Forwarding::Continue
        }
    }

    fn receive(&mut self, _ctx: &mut Context<'_, T>, msg: Incoming<T>) {
        self.seen.received.push((msg.from, msg.data));
    }

    fn query(&mut self, ctx: &mut Context<'_, T>, q: Queried<T>) {
        ctx.reply(&q.back, Bytes::from_static(b"answer"));
        self.seen.queried.push((q.back.to, q.hops, q.data));
    }

    fn query_passing(&mut self, ctx: &mut Context<'_, T>, q: &Queried<T>, _next: T) -> Forwarding {
        self.seen.query_passing += 1;
        if self.take_queries {
            ctx.reply(&q.back, Bytes::from_static(b"taken"));
            return Forwarding::Consumed;
        }
        Forwarding::Continue
    }

    fn answered(&mut self, _ctx: &mut Context<'_, T>, msg: Answered<T>) {
        self.seen.answered.push((msg.via, msg.data));
    }

    fn neighbours(&mut self, _ctx: &mut Context<'_, T>, change: &NeighbourChange<T>) {
        self.seen.neighbours_up.extend(&change.up);
    }

    fn peer_failed(&mut self, _ctx: &mut Context<'_, T>, peer: T) {
        self.seen.failed.push(peer);
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.timer
    }

    fn handle_timeout(&mut self, _ctx: &mut Context<'_, T>) {
        self.seen.timeouts += 1;
        self.timer = None;
    }

    fn leave(&mut self, ctx: &mut Context<'_, T>) {
        self.seen.left = true;
        // Last words to the successor.
        if let Some(s) = ctx.table().successor() {
            ctx.send(s.id, Bytes::from_static(b"bye"));
        }
    }
}

/// A service that routes a new message to its own position at every delivery: a loop that the
/// node must cut.
struct Looper;

impl Service<T> for Looper {
    fn name(&self) -> &'static str {
        "test/looper"
    }

    fn deliver(&mut self, ctx: &mut Context<'_, T>, _msg: Routed<T>) {
        let me = ctx.me().pos;
        let sealed = ctx.seal(me, None, Bytes::new());
        ctx.route(sealed);
    }
}

/// Nodes already joined in a correct ring of `members`, each with the standard services and a
/// probe.
fn ring_of(members: &[u8]) -> BTreeMap<u8, Node<T>> {
    let ring = Ring::new(members.iter().map(|m| Peer::new(T(*m))).collect());
    (0..members.len())
        .map(|i| {
            let table = ring.ideal_table(i, cfg().strategy, 2);
            let id = table.me().id;
            let mut node = Node::from_table(StandIn(id), cfg(), table, Time::ZERO);
            standard::register(&mut node).unwrap();
            node.register(Probe::default()).unwrap();
            (id.0, node)
        })
        .collect()
}

/// Every message the nodes have to send now: (from, to, message).
fn drain_sends(nodes: &mut BTreeMap<u8, Node<T>>) -> Vec<(T, T, Message<T>)> {
    let mut sends = Vec::new();
    for (id, n) in nodes.iter_mut() {
        while let Some(o) = n.poll_output() {
            if let Output::Send { to, msg } = o {
                sends.push((T(*id), to, msg));
            }
        }
    }
    sends
}

/// Passes messages between the nodes until none is left (at most `max` of them); returns how
/// many were passed.
fn pump(nodes: &mut BTreeMap<u8, Node<T>>, now: Time, max: usize) -> usize {
    let mut passed = 0;
    loop {
        let sends = drain_sends(nodes);
        if sends.is_empty() || passed >= max {
            return passed;
        }
        for (from, to, msg) in sends {
            passed += 1;
            if let Some(n) = nodes.get_mut(&to.0) {
                n.handle_message(now, from, msg);
            }
        }
    }
}

fn probe(n: &Node<T>) -> &Seen {
    &n.service::<Probe>().unwrap().seen
}

/// Routes `data` as a probe message from `from` to `key`.
fn route_probe(nodes: &mut BTreeMap<u8, Node<T>>, from: u8, key: RingId, data: &'static [u8]) {
    let now = Time::from_secs(1);
    nodes
        .get_mut(&from)
        .unwrap()
        .command::<Probe, _>(now, |_, ctx| {
            let sealed = ctx.seal(key, None, Bytes::from_static(data));
            ctx.route(sealed);
        })
        .unwrap();
}

#[test]
fn a_user_service_gets_its_hooks() {
    let mut nodes = ring_of(&[10, 20, 30, 40, 50, 60, 70, 80]);
    let now = Time::from_secs(1);
    // From 10 to the node responsible for 55 (60), forwarded on the way.
    route_probe(&mut nodes, 10, pos(55), b"to 55");
    pump(&mut nodes, now, 100);
    let at60 = &probe(&nodes[&60]).delivered;
    assert_eq!(at60.len(), 1);
    assert_eq!((at60[0].0, &at60[0].2[..]), (T(10), &b"to 55"[..]));
    assert!(probe(&nodes[&10]).forwarded.contains(&T(10)));
    let others: usize = nodes
        .iter()
        .filter(|(id, _)| **id != 60)
        .map(|(_, n)| probe(n).delivered.len())
        .sum();
    assert_eq!(others, 0);

    // A node on the way that takes the message stops it there.
    let hops: Vec<T> = nodes
        .values()
        .flat_map(|n| probe(n).forwarded.clone())
        .collect();
    let middle = hops.iter().find(|h| **h != T(10)).copied();
    if let Some(m) = middle {
        nodes
            .get_mut(&m.0)
            .unwrap()
            .service_mut::<Probe>()
            .unwrap()
            .consume = true;
        route_probe(&mut nodes, 10, pos(55), b"again");
        pump(&mut nodes, now, 100);
        assert_eq!(probe(&nodes[&60]).delivered.len(), 1, "taken on the way");
    }

    // One-hop messages, a timer, a failure, and leaving.
    nodes
        .get_mut(&20)
        .unwrap()
        .command::<Probe, _>(now, |p, ctx| {
            ctx.send(T(30), Bytes::from_static(b"hop"));
            p.timer = Some(ctx.now() + Duration::from_secs(2));
        })
        .unwrap();
    pump(&mut nodes, now, 100);
    assert_eq!(
        probe(&nodes[&30]).received,
        vec![(T(20), Bytes::from_static(b"hop"))]
    );
    let n20 = nodes.get_mut(&20).unwrap();
    assert!(n20.poll_timeout().unwrap() <= now + Duration::from_secs(2));
    n20.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(probe(n20).timeouts, 1);
    n20.handle_link_down(now, T(70));
    assert!(probe(n20).failed.contains(&T(70)));
    n20.leave(now);
    assert!(probe(n20).left);
    pump(&mut nodes, now, 100);
    assert!(probe(&nodes[&30])
        .received
        .contains(&(T(20), Bytes::from_static(b"bye"))));
}

#[test]
fn answers_come_back_the_way_the_request_came() {
    let members: Vec<u8> = (1..=16).map(|i| i * 15).collect();
    let mut nodes = ring_of(&members);
    let now = Time::from_secs(1);
    // Every key far from 15, so that requests take hops and 15 has no link to most answerers.
    for k in [100u8, 130, 160, 190, 220] {
        let before = probe(&nodes[&15]).answered.len();
        route_probe(&mut nodes, 15, pos(k), b"ask");
        // Every message on the way goes between linked nodes: nobody dials.
        pump_linked(&mut nodes, now);
        let got = &probe(&nodes[&15]).answered;
        assert_eq!(got.len(), before + 1, "answer for key {k}");
        let (via, data) = &got[before];
        assert_eq!(&data[..], b"answer");
        assert!(nodes[&15].links().any(|p| p == via));
    }

    // Hostile pass-backs: one with an endless trail, and one for a node the receiver has no
    // link to with a trail of nodes it has no link to either. Dropped; no connection opened.
    let n15 = nodes.get_mut(&15).unwrap();
    while n15.poll_output().is_some() {}
    let linked: Vec<T> = n15.links().copied().collect();
    let stranger = *members
        .iter()
        .find(|m| **m != 15 && !linked.contains(&T(**m)))
        .unwrap();
    let from = linked[0];
    for trail in [vec![from; 64], vec![T(stranger)]] {
        let m = PassBack {
            service: ServiceId::named("test/probe"),
            class: Class::User,
            to: T(stranger),
            trail,
            data: Bytes::from_static(b"junk"),
            retrace: false,
        };
        n15.handle_message(now, from, Message::PassBack(m));
        assert!(n15.poll_output().is_none(), "nothing sent");
    }
    assert!(probe(n15).answered.len() == 5);
}

/// Passes messages between the nodes until none is left, asserting that each goes over a
/// link its sender has; the kinds of messages passed, in order.
fn pump_linked(nodes: &mut BTreeMap<u8, Node<T>>, now: Time) -> Vec<(T, T, &'static str)> {
    let mut passed = Vec::new();
    loop {
        let sends = drain_sends(nodes);
        if sends.is_empty() {
            return passed;
        }
        for (from, to, msg) in sends {
            let linked = nodes[&from.0].links().any(|p| *p == to);
            assert!(linked, "{from:?} sent {:?} to {to:?} unlinked", msg);
            let kind = match &msg {
                Message::Query(_) => "query",
                Message::PassBack(_) => "pass-back",
                other => other.kind(),
            };
            passed.push((from, to, kind));
            nodes.get_mut(&to.0).unwrap().handle_message(now, from, msg);
        }
    }
}

#[test]
fn queries_are_answered_back_over_the_links_they_came_by() {
    let members: Vec<u8> = (1..=16).map(|i| i * 15).collect();
    let mut nodes = ring_of(&members);
    let now = Time::from_secs(1);
    let query = |nodes: &mut BTreeMap<u8, Node<T>>, from: u8, key: RingId| {
        nodes
            .get_mut(&from)
            .unwrap()
            .command::<Probe, _>(now, |_, ctx| ctx.query(key, Bytes::from_static(b"q")))
            .unwrap();
    };
    for k in [100u8, 130, 160, 190, 220, 20] {
        let before = probe(&nodes[&15]).answered.len();
        query(&mut nodes, 15, pos(k));
        let passed = pump_linked(&mut nodes, now);
        // Exactly back the way it came: each query hop answered by a pass-back the other way.
        let there: Vec<(T, T)> = passed
            .iter()
            .filter(|p| p.2 == "query")
            .map(|p| (p.0, p.1))
            .collect();
        let mut back: Vec<(T, T)> = passed
            .iter()
            .filter(|p| p.2 == "pass-back")
            .map(|p| (p.1, p.0))
            .collect();
        back.reverse();
        assert_eq!(there, back, "key {k}: {passed:?}");
        let got = &probe(&nodes[&15]).answered;
        assert_eq!(got.len(), before + 1, "answer for key {k}");
        assert_eq!(&got[before].1[..], b"answer");
        // The responsible node (first node at or after the key) saw who asked and the hops.
        let owner = members.iter().copied().find(|m| *m >= k).unwrap();
        let q = probe(&nodes[&owner]).queried.last().cloned().unwrap();
        assert_eq!(
            (q.0, q.1 as usize, &q.2[..]),
            (T(15), there.len(), &b"q"[..])
        );
    }
    // Started at the node responsible: answered there, nothing sent.
    query(&mut nodes, 15, pos(15));
    assert!(pump_linked(&mut nodes, now).is_empty());
    assert_eq!(probe(&nodes[&15]).queried.last().unwrap().0, T(15));

    // A node on the way may answer it itself.
    let passing: u32 = nodes.values().map(|n| probe(n).query_passing).sum();
    assert!(passing > 0);
    let owner_before = probe(&nodes[&195]).queried.len();
    query(&mut nodes, 15, pos(190));
    let passed = pump_linked(&mut nodes, now);
    let first = passed.iter().find(|p| p.2 == "query").unwrap().1;
    nodes
        .get_mut(&first.0)
        .unwrap()
        .service_mut::<Probe>()
        .unwrap()
        .take_queries = true;
    query(&mut nodes, 15, pos(190));
    pump_linked(&mut nodes, now);
    assert_eq!(&probe(&nodes[&15]).answered.last().unwrap().1[..], b"taken");
    assert_eq!(
        probe(&nodes[&195]).queried.len(),
        owner_before + 1,
        "taken on the way"
    );
    nodes
        .get_mut(&first.0)
        .unwrap()
        .service_mut::<Probe>()
        .unwrap()
        .take_queries = false;

    // Hostile: a peer names a victim as the query's origin, one the answering node has a link
    // to. The answer goes back to the peer that sent the query, never to the victim.
    let (hostile, owner) = (T(30), 195u8);
    let victim = *nodes[&owner]
        .links()
        .find(|p| **p != hostile && p.0 != owner)
        .unwrap();
    let victim_before = probe(&nodes[&victim.0]).answered.len();
    let n = nodes.get_mut(&owner).unwrap();
    while n.poll_output().is_some() {}
    let q = Query {
        service: ServiceId::named("test/probe"),
        class: Class::User,
        key: pos(190),
        hops: 3,
        trail: vec![victim],
        data: Bytes::from_static(b"reflect"),
    };
    n.handle_message(now, hostile, Message::Query(q.clone()));
    let mut sent = Vec::new();
    while let Some(o) = n.poll_output() {
        if let Output::Send { to, msg } = o {
            sent.push((to, msg.kind()));
        }
    }
    assert_eq!(
        sent,
        vec![(hostile, "service")],
        "answered to the sender only"
    );
    assert_eq!(probe(&nodes[&owner]).queried.last().unwrap().0, victim);
    assert_eq!(probe(&nodes[&victim.0]).answered.len(), victim_before);
    // The answer's next hop names the victim; the hostile node drops it or not, the victim's
    // node would only take it over a link from the hostile one.

    // An endless trail, or too many hops: dropped, nothing sent, nothing delivered.
    let queried_before = probe(&nodes[&owner]).queried.len();
    let n = nodes.get_mut(&owner).unwrap();
    for q in [
        Query {
            trail: vec![victim; 64],
            ..q.clone()
        },
        Query { hops: 64, ..q },
    ] {
        n.handle_message(now, hostile, Message::Query(q));
        assert!(n.poll_output().is_none(), "nothing sent");
    }
    assert_eq!(probe(&nodes[&owner]).queried.len(), queried_before);
}

#[test]
fn answers_take_links_or_the_ring_never_a_new_connection() {
    let members: Vec<u8> = (1..=16).map(|i| i * 15).collect();
    let mut nodes = ring_of(&members);
    let now = Time::from_secs(1);
    let linked: Vec<u8> = nodes[&15].links().map(|p| p.0).collect();
    let stranger = *members
        .iter()
        .find(|m| **m != 15 && !linked.contains(m))
        .expect("a node 15 has no link to");
    let friend = linked[0];

    // To a peer it has a link to: one hop, straight, as a plain one-hop message.
    let answer = |nodes: &mut BTreeMap<u8, Node<T>>, to: u8, data: &'static [u8]| {
        let n15 = nodes.get_mut(&15).unwrap();
        n15.command::<Probe, _>(now, |_, ctx| {
            ctx.send_or_route(T(to), Bytes::from_static(data))
        })
        .unwrap();
        let mut sends = Vec::new();
        while let Some(o) = n15.poll_output() {
            if let Output::Send { to, msg } = o {
                sends.push((to, msg));
            }
        }
        let firsts: Vec<T> = sends.iter().map(|(to, _)| *to).collect();
        for (to, msg) in sends {
            nodes
                .get_mut(&to.0)
                .unwrap()
                .handle_message(now, T(15), msg);
        }
        pump(nodes, now, 100);
        firsts
    };
    assert_eq!(answer(&mut nodes, friend, b"near"), vec![T(friend)]);
    assert_eq!(
        probe(&nodes[&friend]).received,
        vec![(T(15), Bytes::from_static(b"near"))]
    );

    // To a peer it has no link to: signed and routed over links it has, delivered only there.
    let firsts = answer(&mut nodes, stranger, b"far");
    assert_eq!(firsts.len(), 1);
    assert!(
        linked.contains(&firsts[0].0),
        "sent over a link: {firsts:?}"
    );
    let got = &probe(&nodes[&stranger]).delivered;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, &got[0].2[..]), (T(15), &b"far"[..]));
    assert!(got[0].1 >= 1, "routed, not sent straight");
    let elsewhere: usize = nodes
        .iter()
        .filter(|(id, _)| **id != stranger)
        .map(|(_, n)| probe(n).delivered.len())
        .sum();
    assert_eq!(elsewhere, 0, "delivered at the addressee only");
}

#[test]
fn neighbour_changes_reach_services() {
    let mut nodes = ring_of(&[10, 30]);
    let now = Time::from_secs(1);
    let mut joiner = Node::new(StandIn(T(20)), cfg());
    joiner.register(Probe::default()).unwrap();
    joiner
        .join(now, p2ps_overlay::Contact::bare(T(10)))
        .unwrap();
    nodes.insert(20, joiner);
    for _ in 0..5 {
        pump(&mut nodes, now, 1000);
        for n in nodes.values_mut() {
            n.handle_timeout(now + Duration::from_secs(10));
        }
    }
    let up = &probe(&nodes[&20]).neighbours_up;
    assert!(up.contains(&T(10)) && up.contains(&T(30)), "{up:?}");
    assert!(probe(&nodes[&10]).neighbours_up.contains(&T(20)));
}

#[test]
fn replica_sets_come_from_the_lists() {
    let nodes = ring_of(&[10, 20, 30, 40, 50, 60, 70, 80]);
    let t = nodes[&10].table();
    let ids = |v: Option<Vec<Peer<T>>>| v.map(|v| v.iter().map(|p| p.id.0).collect::<Vec<_>>());
    // Within the successor list: the responsible node and those after it that are known.
    assert_eq!(ids(t.replica_set(pos(15), 2)), Some(vec![20, 30]));
    assert_eq!(ids(t.replica_set(pos(20), 1)), Some(vec![20]));
    assert_eq!(ids(t.replica_set(pos(25), 3)), Some(vec![30]));
    // This node's own keys.
    assert_eq!(ids(t.replica_set(pos(5), 3)), Some(vec![10, 20, 30]));
    // Behind the predecessors: the lists reach it.
    assert_eq!(ids(t.replica_set(pos(75), 3)), Some(vec![80, 10, 20]));
    // Beyond both lists: unknown here.
    assert_eq!(ids(t.replica_set(pos(45), 3)), None);
    // A ring the lists hold whole.
    let small = ring_of(&[10, 20, 30]);
    assert_eq!(
        ids(small[&10].table().replica_set(pos(25), 3)),
        Some(vec![30, 10, 20])
    );
}

#[test]
fn hostile_service_messages_change_nothing() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let now = Time::from_secs(1);
    let one_hop = |service: ServiceId, data: &[u8]| {
        Message::Service(ServiceMessage {
            service,
            class: Class::Tree,
            data: Bytes::copy_from_slice(data),
            sealed: None,
        })
    };
    let a = nodes.get_mut(&10).unwrap();
    let dropped = a.stats().dropped;
    // A service this node does not run.
    a.handle_message(now, T(20), one_hop(ServiceId::named("nobody/here"), b"x"));
    assert_eq!(a.stats().dropped, dropped + 1);
    // Garbage for the cast and group services, a piece without its envelope, a count and an
    // acknowledgement for pieces never sent, a tree message without its envelope.
    let garbage: Vec<Message<T>> = vec![
        one_hop(CAST, &[0xff, 0xff, 0xff]),
        one_hop(CAST, &[]),
        one_hop(
            CAST,
            &encode(
                &cast::Wire::<T>::Piece {
                    piece: 1,
                    seg: p2ps_overlay::Segment::full(pos(0)),
                    depth: 1,
                },
                &[],
            ),
        ),
        one_hop(
            CAST,
            &encode(
                &cast::Wire::Ack {
                    origin: T(10),
                    seq: 1,
                    piece: 99,
                },
                &[],
            ),
        ),
        one_hop(
            CAST,
            &encode(
                &cast::Wire::Done {
                    origin: T(10),
                    seq: 1,
                    piece: 99,
                    delivered: 1_000_000,
                },
                &[],
            ),
        ),
        one_hop(GROUPS, &[9, 9]),
        one_hop(GROUPS, &encode(&groups::Wire::Cast { hops: 1 }, &[])),
        one_hop(GROUPS, &encode(&groups::Wire::Send, b"unsigned")),
    ];
    for m in garbage {
        a.handle_message(now, T(20), m);
    }
    let sent: Vec<Output<T>> = std::iter::from_fn(|| a.poll_output()).collect();
    assert!(
        sent.iter().all(|o| !matches!(o, Output::Send { .. })),
        "nothing answered: {sent:?}"
    );
    let cast_dropped = a.service::<Casts<T>>().unwrap().stats().dropped;
    let group_dropped = a.service::<Groups<T>>().unwrap().stats().dropped;
    assert_eq!((cast_dropped, group_dropped), (3, 3));
    assert_eq!(a.service::<Casts<T>>().unwrap().active(), 0);
    assert!(a.service::<Groups<T>>().unwrap().roles().is_empty());

    // A routed message of a service that no node runs is dropped where it arrives.
    let b = nodes.get_mut(&20).unwrap();
    let dropped = b.stats().dropped;
    let sealed = p2ps_overlay::Sealed::seal(
        &StandIn(T(40)),
        p2ps_overlay::Envelope {
            origin: p2ps_overlay::Contact::signed(&StandIn(T(40)), Vec::new(), None, now),
            seq: 5,
            issued: now,
            key: pos(15),
            body: Body::Service {
                service: ServiceId::named("nobody/here"),
                class: Class::User,
                target: None,
                data: Bytes::new(),
            },
        },
    );
    b.handle_message(
        now,
        T(40),
        Message::Routed(Routed::at_hop(1, Vec::new(), sealed)),
    );
    assert_eq!(b.stats().dropped, dropped + 1);
}

#[test]
fn a_service_that_routes_forever_is_cut_off() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let now = Time::from_secs(1);
    let a = nodes.get_mut(&10).unwrap();
    a.register(Looper).unwrap();
    let dropped = a.stats().dropped;
    a.command::<Looper, _>(now, |_, ctx| {
        let me = ctx.me().pos;
        let sealed = ctx.seal(me, None, Bytes::new());
        ctx.route(sealed);
    })
    .unwrap();
    assert!(a.stats().dropped > dropped, "the loop was cut");
    // The node still answers.
    let req = a.lookup(now, pos(5)).unwrap();
    let done = std::iter::from_fn(|| a.poll_output()).any(|o| {
        matches!(o, Output::Event(p2ps_overlay::Event::LookupDone { req: r, result: Ok(_), .. }) if r == req)
    });
    assert!(done);
}

/// A peer that sends a node 1 100 group joins for random groups (issue 12: it once made a node
/// hold 1 024 trees and refuse its own application's join) gets its share of the node's groups
/// and no more; another peer's join and the node's own application's join still succeed.
#[test]
fn one_peer_cannot_fill_a_nodes_groups() {
    let mut nodes = ring_of(&[10, 20, 30, 40]);
    let now = Time::from_secs(1);
    let join = |g: u128| {
        Message::Service(ServiceMessage {
            service: GROUPS,
            class: Class::Tree,
            data: encode(&groups::Wire::Join { group: RingId(g) }, &[]),
            sealed: None,
        })
    };
    let per_peer = groups::GroupConfig::default().max_groups_per_peer;
    let n10 = nodes.get_mut(&10).unwrap();
    for i in 0..1_100u128 {
        n10.handle_message(now, T(30), join(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1));
    }
    let g = n10.service::<Groups<T>>().unwrap();
    let held = g.roles().len();
    assert_eq!(held, per_peer, "trees held for one peer");
    assert_eq!(g.stats().refused_joins, 1_100 - per_peer as u64);
    // Another peer still gets in, and the node's own application too.
    n10.handle_message(now, T(40), join(7 << 64));
    assert!(n10
        .service::<Groups<T>>()
        .unwrap()
        .roles()
        .iter()
        .any(|r| r.group == RingId(7 << 64) && r.children == vec![T(40)]));
    n10.join_group(now, RingId(5 << 64)).unwrap();
    assert!(n10
        .service::<Groups<T>>()
        .unwrap()
        .is_member(RingId(5 << 64)));
}
