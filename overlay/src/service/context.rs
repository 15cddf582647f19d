//! What a service may see of its node and do through it while one of its hooks runs.

use super::{Incoming, ServiceId, WayBack};
use crate::config::Config;
use crate::message::{Body, Class, Message, PassBack, Query, Routed, Sealed, ServiceMessage};
use crate::node::{Node, State};
use crate::peer::{Peer, PeerId};
use crate::ring::RingId;
use crate::routing_table::{NextHop, RoutingTable};
use crate::segment::Segment;
use crate::service::registry::Work;
use crate::time::Time;
use bytes::Bytes;
use std::time::Duration;

/// The bytes a service's signature ([`Context::sign`]) covers: `value` in the context `domain`,
/// kept apart from every domain of the core's own signatures.
pub fn service_signed_bytes<T: serde::Serialize + ?Sized>(domain: &str, value: &T) -> Vec<u8> {
    crate::proof::signed_bytes(&format!("p2ps/service/{domain}"), value)
}

/// A service's view of its node during a hook: read access to the ring, and the actions a
/// service may take. Sends go out in order after the hook; routed messages are routed then
/// (their `forward` and `deliver` hooks run after this one returns).
pub struct Context<'a, P: PeerId> {
    pub(crate) node: &'a mut Node<P>,
    pub(crate) service: ServiceId,
    pub(crate) class: Class,
}

impl<P: PeerId> Context<'_, P> {
    /// The time of the input being handled.
    pub fn now(&self) -> Time {
        self.node.now
    }

    /// This node.
    pub fn me(&self) -> Peer<P> {
        self.node.me
    }

    /// The id of the service this context belongs to.
    pub fn service(&self) -> ServiceId {
        self.service
    }

    /// Where the node is in its life.
    pub fn state(&self) -> State {
        self.node.state()
    }

    /// Whether the node is part of a network (services act only then).
    pub fn is_joined(&self) -> bool {
        self.node.state() == State::Joined
    }

    /// The node's routing table: neighbour lists and fingers.
    pub fn table(&self) -> &RoutingTable<P> {
        self.node.table()
    }

    /// The node's configuration (message limits, `max_hops`, `seen_ttl`, …).
    pub fn config(&self) -> &Config {
        self.node.config()
    }

    /// Whether `peer` was found dead lately (it should not be given work).
    pub fn is_dead(&self, peer: &P) -> bool {
        self.node.is_buried(peer)
    }

    /// The next hop towards `key`: this node if it is responsible, else the peer to forward to.
    pub fn next_hop(&self, key: RingId) -> Option<NextHop<P>> {
        self.node.table().next_hop(key)
    }

    /// The `r` nodes that should hold replicas of `key`, in order (see
    /// [`RoutingTable::replica_set`]); `None` when this node's lists do not reach the key.
    pub fn replica_set(&self, key: RingId, r: usize) -> Option<Vec<Peer<P>>> {
        self.node.table().replica_set(key, r)
    }

    /// How this node hands out segment `seg` of a tree over the ring (broadcast, census, …):
    /// cut among the live nodes it knows in it and itself (see [`Segment::split`]), every
    /// piece but its own given to its node; a segment in which it knows no node goes whole to
    /// the known node nearest to it, if that is nearer than this node (it knows that part of
    /// the ring better), else to no one. Nodes in `avoid` are passed over.
    pub fn cut(&self, seg: Segment, avoid: &[P]) -> Vec<(P, Segment)> {
        let me = self.me();
        let usable: Vec<Peer<P>> = self
            .table()
            .entries()
            .filter(|p| !avoid.contains(&p.id) && !self.is_dead(&p.id))
            .collect();
        let mut points: Vec<Peer<P>> = usable
            .iter()
            .copied()
            .filter(|p| seg.contains(p.pos))
            .collect();
        if seg.contains(me.pos) {
            points.push(me);
        }
        seg.sort_points(&mut points, |p| p.pos);
        if points.is_empty() {
            let mine = seg.distance_to(me.pos);
            return usable
                .iter()
                .map(|p| (seg.distance_to(p.pos), p))
                .filter(|(d, _)| *d < mine)
                .min_by_key(|(d, p)| (*d, p.pos))
                .map(|(_, p)| (p.id, seg))
                .into_iter()
                .collect();
        }
        let positions: Vec<RingId> = points.iter().map(|p| p.pos).collect();
        points
            .iter()
            .zip(seg.split(&positions))
            .filter(|(p, _)| p.id != me.id)
            .map(|(p, piece)| (p.id, piece))
            .collect()
    }

    /// A new message number: unpredictable and unique for this node.
    pub fn next_seq(&mut self) -> u64 {
        self.node.nonces.next()
    }

    /// Signs a message of this service from this node, with a new message number: to be
    /// routed to `key` ([`Context::route`]), delivered only at `target` if given, or passed
    /// along one-hop links ([`Context::send_sealed`]).
    pub fn seal(&mut self, key: RingId, target: Option<P>, data: Bytes) -> Sealed<P> {
        let seq = self.next_seq();
        let body = Body::Service {
            service: self.service,
            class: self.class,
            target,
            data,
        };
        self.node.seal(seq, key, body)
    }

    /// This node's signature over `value` in the context `domain`: what a service signs as
    /// this node beyond envelopes, such as a stored record. Receivers check it with
    /// [`PeerId::verify`] over [`service_signed_bytes`]`(domain, value)`. The bytes signed
    /// never look like what the core signs, whatever the domain.
    pub fn sign<T: serde::Serialize + ?Sized>(&mut self, domain: &str, value: &T) -> P::Proof {
        self.node.signer.sign(&service_signed_bytes(domain, value))
    }

    /// Routes a sealed message of this service from this node towards its key.
    pub fn route(&mut self, sealed: Sealed<P>) {
        self.node
            .services
            .work
            .push_back(Work::Route(Routed::new(sealed)));
    }

    /// Passes on a routed message this service received (in [`crate::service::Service::deliver`]
    /// or kept from [`crate::service::Service::forward`]) from this node: routed on towards its
    /// key with its hop count.
    pub fn reroute(&mut self, msg: Routed<P>) {
        self.node.services.work.push_back(Work::Route(msg));
    }

    /// Sends this service's one-hop message `data` to `to`.
    pub fn send(&mut self, to: P, data: Bytes) {
        self.send_message(to, data, None);
    }

    /// Whether this node has a connection to `peer` now (a one-hop send to it costs no
    /// handshake).
    pub fn is_linked(&self, peer: &P) -> bool {
        self.node.is_linked(peer)
    }

    /// Answers a routed request of this service (its [`Routed::way_back`]): straight to its
    /// origin if this node has a link to it, else back along the nodes that forwarded the
    /// request, each passing it on over a link it has ([`Message::PassBack`]); only when no
    /// node of the way is linked any more does it go straight (a new connection). The origin's
    /// service gets it in [`Service::answered`]. A request answered straight back from a node
    /// its origin has never met would cost a QUIC handshake, often longer than the whole
    /// route; this costs one message per hop and no signature. What the answer is worth is up
    /// to the service: it is not signed, so any node on the request's way could have made it
    /// (those nodes can drop the request anyway).
    ///
    /// [`Routed::way_back`]: crate::Routed::way_back
    /// [`Service::answered`]: super::Service::answered
    ///
    /// The answer to a query ([`Context::query`], `way.retrace`) retraces the query's links
    /// exactly and is dropped where one of them is gone.
    pub fn reply(&mut self, way: &WayBack<P>, data: Bytes) {
        let msg = PassBack {
            service: self.service,
            class: self.class,
            to: way.to,
            trail: way.trail.clone(),
            data,
            retrace: way.retrace,
        };
        self.node.pass_service_answer(None, msg);
    }

    /// Routes `data` to the node responsible for `key` as a query of this service: unsigned,
    /// so it costs no signature here or where it is read, and every node on its way may look
    /// at it ([`Service::query_passing`], which runs at this node too) before it reaches the
    /// responsible node ([`Service::query`]). Whoever answers ([`Context::reply`]) answers
    /// back along the links it came over. For requests whose answer needs no proof of who
    /// asked (a read of signed records, a write of a record its writer signed); a request that
    /// must name its author goes signed ([`Context::seal`], [`Context::route`]).
    ///
    /// [`Service::query_passing`]: super::Service::query_passing
    /// [`Service::query`]: super::Service::query
    pub fn query(&mut self, key: RingId, data: Bytes) {
        let q = Query {
            service: self.service,
            class: self.class,
            key,
            hops: 0,
            trail: Vec::new(),
            data,
        };
        self.node.services.work.push_back(Work::Query(q));
    }

    /// Sends `data` to `to` without opening a connection: over the link to it if there is one,
    /// as a one-hop message ([`Service::receive`] there, `from` authenticated by the
    /// connection); otherwise signed by this node and routed to `to` over the ring's existing
    /// links ([`Service::deliver`] there, with `target` set to it and this node as the
    /// envelope's checked origin). The receiving service must take the message from both
    /// hooks. For news to a node that asked for it a while ago (a watch), when the way its
    /// request came may be gone; an answer to a request in hand goes by [`Context::reply`].
    ///
    /// [`Service::receive`]: super::Service::receive
    /// [`Service::deliver`]: super::Service::deliver
    pub fn send_or_route(&mut self, to: P, data: Bytes) {
        if to == self.node.me.id || self.is_linked(&to) {
            return self.send(to, data);
        }
        let sealed = self.seal(to.ring_id(), Some(to), data);
        self.route(sealed);
    }

    /// Sends this service's one-hop message `data` to `to`, carrying `sealed` (a message some
    /// node signed, passed on unchanged).
    pub fn send_sealed(&mut self, to: P, data: Bytes, sealed: Sealed<P>) {
        self.send_message(to, data, Some(Box::new(sealed)));
    }

    fn send_message(&mut self, to: P, data: Bytes, sealed: Option<Box<Sealed<P>>>) {
        if to == self.node.me.id {
            // A message to oneself is handed straight back, after this hook.
            let incoming = Incoming {
                from: to,
                data,
                sealed: sealed.map(|s| *s),
            };
            self.node
                .services
                .work
                .push_back(Work::Receive(self.service, incoming));
            return;
        }
        let msg = Message::Service(ServiceMessage {
            service: self.service,
            class: self.class,
            data,
            sealed,
        });
        self.node.push_send(to, msg);
    }

    /// `d` scaled by a random factor in [0.9, 1.1), so that nodes do not act in step.
    pub fn jitter(&mut self, d: Duration) -> Duration {
        self.node.jitter(d)
    }

    /// A random number from the node's seeded generator (deterministic in the simulator).
    pub fn random(&mut self) -> u64 {
        self.node.rng.next_u64()
    }
}
