//! The overlay's wire messages, the signed envelope they carry, and their traffic classes.
//!
//! Messages are plain serde types; the transport frames them with postcard. Everything a node
//! says on its own behalf to a peer it is connected to (stabilisation, join replies, acks) is
//! authenticated by the connection. Everything that others pass on — a routed message, a
//! broadcast or range multicast piece, a group message, a lookup answer — travels in one
//! [`Sealed`] [`Envelope`] signed by its origin: the origin's contact record, a message number,
//! when it was made, the key, and the [`Body`]. Forwarders change only what lies outside the
//! envelope (hop counts, the trail back, the piece of a cast), and every node checks the
//! signature before it acts on what the envelope says (a node that only passes a routed message
//! on does not act on it; one that got it straight from its origin has the link's word).
//! Contacts carried in lists are records signed by their own nodes.

use crate::adjacency::Adjacency;
use crate::peer::{Contact, PeerId};
use crate::proof::{signed_bytes, Signer};
use crate::ring::{Dir, RingId};
use crate::service::ServiceId;
use crate::time::Time;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Which stream class a message travels on, so that a burst of user data never delays upkeep.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Class {
    /// Ring and finger maintenance, joins, lookups.
    Routing,
    /// Broadcast and multicast tree traffic.
    Tree,
    /// Application payloads.
    User,
}

/// A message between two overlay nodes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Message<P: PeerId> {
    /// Periodic upkeep, sent to the neighbour in direction `dir` (the successor for `Cw`):
    /// "I am your neighbour in the other direction; here is my list on that side".
    Stabilize {
        /// Direction from the sender to the receiver.
        dir: Dir,
        /// The sender's own signed record.
        me: Contact<P>,
        /// The sender's list in the opposite direction, nearest first (signed records).
        list: Vec<Contact<P>>,
        /// Clockwise only: the sender's signed word that the receiver follows it, which the
        /// receiver keeps and puts into its lookup answers (see [`crate::adjacency`]); sent
        /// when new and every fifth stabilisation otherwise.
        follows: Option<Adjacency<P>>,
    },
    /// Answer to [`Message::Stabilize`]: the receiver's list in the same direction, and its
    /// nearest neighbour back towards the sender (which may lie between the two).
    StabilizeReply {
        /// The direction of the request this answers.
        dir: Dir,
        /// The replier's own signed record.
        me: Contact<P>,
        /// The replier's nearest neighbour in the opposite direction.
        back: Option<Contact<P>>,
        /// The replier's list in direction `dir`, nearest first.
        list: Vec<Contact<P>>,
    },
    /// Sent by the responsible node to a node that asked to join.
    JoinReply {
        /// The message number of the join request this answers.
        req: u64,
        /// Successors for the joiner (the replier's own record first).
        succs: Vec<Contact<P>>,
        /// Predecessors for the joiner.
        preds: Vec<Contact<P>>,
    },
    /// Sent by a node leaving gracefully to every peer it knows of.
    Leave {
        /// The leaver's successors (the first takes over its keys).
        succs: Vec<Contact<P>>,
        /// The leaver's predecessors.
        preds: Vec<Contact<P>>,
    },
    /// "`new` just joined and should be your finger in slot `(dir, level)`".
    FingerNotify {
        /// The node that joined (its signed record).
        new: Contact<P>,
        /// Slot direction at the receiver.
        dir: Dir,
        /// Slot level.
        level: u8,
        /// Lower end (exclusive) of the interval still to notify, walking counter-clockwise.
        stop: RingId,
    },
    /// A steered lookup's query: "which nodes do you know nearest to `key`?"
    FindNear {
        /// The asker's query id, echoed in the answer.
        req: u64,
        /// The key looked up.
        key: RingId,
    },
    /// The answer to [`Message::FindNear`]: the replier's known nodes nearest to the key, on
    /// both sides of it (itself included), as signed records.
    Near {
        /// The query id.
        req: u64,
        /// Signed records, in no particular order.
        nodes: Vec<Contact<P>>,
    },
    /// "Are you alive?": a liveness check of a node a neighbour's list left out.
    Ping {
        /// Echoed in the answer.
        nonce: u64,
    },
    /// The answer to [`Message::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// A message routed hop by hop towards the node responsible for its key.
    Routed(Routed<P>),
    /// The signed answer to a lookup or finger probe, on its way back to the asker.
    Answer(Answer<P>),
    /// A service's message to a peer this node talks to directly (see [`crate::service`]).
    Service(ServiceMessage<P>),
    /// A service's answer to a routed request, passed back along the request's trail over
    /// connections that exist (see [`crate::service::Context::reply`]).
    PassBack(PassBack<P>),
    /// A service's request routed to a key unsigned (see [`crate::service::Context::query`]).
    Query(Query<P>),
}

/// A service's request routed hop by hop to a key without a signature. Its origin is known
/// only as the way back: every receiver appends the authenticated peer that handed it the
/// query to `trail`, and the answer ([`crate::service::Context::reply`]) retraces exactly
/// those links, never a shortcut to a node the trail names (which a sender could have made
/// up, to reflect answers at a victim). For requests whose answer proves itself (a record its
/// writer signed) or needs no author: they cost no signature at either end.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Query<P: PeerId> {
    /// The service it belongs to.
    pub service: ServiceId,
    /// The stream class it travels on (the service's own).
    pub class: Class,
    /// Where it goes.
    pub key: RingId,
    /// Hops so far.
    pub hops: u16,
    /// The peers that handed it on, in order, each written in by the node it handed it to;
    /// the first is the origin as the first receiver saw it.
    pub trail: Vec<P>,
    /// What the service says, encoded by the service.
    pub data: Bytes,
}

/// A service's answer on its way back to the origin of the request it answers, hop by hop
/// along the nodes that forwarded the request. Not signed: each hop knows only who handed it
/// the answer, so the receiving service gets it in [`crate::service::Service::answered`] with
/// the last hop as `via`, never as a message from the answerer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct PassBack<P: PeerId> {
    /// The service it belongs to.
    pub service: ServiceId,
    /// The stream class it travels on (the service's own).
    pub class: Class,
    /// Where it goes: the request's origin.
    pub to: P,
    /// The rest of the way back: the nodes that forwarded the request, nearest to `to` first;
    /// each passes the answer to `to` if connected to it, else to the last one it is
    /// connected to.
    pub trail: Vec<P>,
    /// What the service says, encoded by the service.
    pub data: Bytes,
    /// Whether the answer must retrace `trail` exactly (the answer to a [`Query`]): each node
    /// hands it to the last node of the trail left, never straight to `to`, and a node with
    /// no link to that one drops it.
    pub retrace: bool,
}

/// A service's one-hop message: its own bytes, and, when it passes on something another node
/// signed (a broadcast piece, a group message), that node's sealed envelope, which the core
/// checks before the service sees it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ServiceMessage<P: PeerId> {
    /// The service it belongs to.
    pub service: ServiceId,
    /// The stream class it travels on (the service's own).
    pub class: Class,
    /// What the service says, encoded by the service.
    pub data: Bytes,
    /// An origin's envelope the message carries, with body [`Body::Service`] of the same
    /// service.
    pub sealed: Option<Box<Sealed<P>>>,
}

/// What an origin signs: everything about a message except how it travels.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Envelope<P: PeerId> {
    /// The origin's signed contact record; the envelope is signed by `origin.id`.
    pub origin: Contact<P>,
    /// The origin's message number: unpredictable, unique per origin. It identifies a cast
    /// for duplicate detection and a request for its answer.
    pub seq: u64,
    /// When the origin made the message; receivers drop envelopes too old to be told apart
    /// from replays.
    pub issued: Time,
    /// The key: where a routed message goes, the looked-up key of an answer, the group of a
    /// group message.
    pub key: RingId,
    /// What the message is.
    pub body: Body<P>,
}

/// An [`Envelope`] with its origin's proof.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Sealed<P: PeerId> {
    /// The signed content.
    pub env: Envelope<P>,
    /// The origin's signature over `env`.
    pub proof: P::Proof,
}

/// What an envelope's signature covers.
const ENVELOPE_DOMAIN: &str = "p2ps/envelope";

impl<P: PeerId> Sealed<P> {
    /// Signs `env` as `signer` (which must be `env.origin.id`).
    pub fn seal(signer: &dyn Signer<P>, env: Envelope<P>) -> Self {
        let proof = signer.sign(&signed_bytes(ENVELOPE_DOMAIN, &env));
        Sealed { env, proof }
    }

    /// Whether the origin named in the envelope signed it.
    pub fn verify(&self) -> bool {
        self.env
            .origin
            .id
            .verify(&signed_bytes(ENVELOPE_DOMAIN, &self.env), &self.proof)
    }

    /// The origin.
    pub fn origin(&self) -> P {
        self.env.origin.id
    }
}

/// What a sealed message is.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Body<P: PeerId> {
    /// The origin wants to join; the key is its own position. The answer is
    /// [`Message::JoinReply`] with the envelope's number.
    Join,
    /// The origin looks up its finger for the key; the envelope's number is the request id.
    FingerProbe {
        /// Slot direction at the origin.
        dir: Dir,
        /// Slot level.
        level: u8,
        /// Whether the origin keeps this slot and wants an answer.
        reply: bool,
        /// Position of the origin's predecessor, when the nodes that should now point at the
        /// origin (slot `(dir.opposite(), level)`) are to be told.
        notify_from: Option<RingId>,
    },
    /// A lookup: who is responsible for the key? The envelope's number is the request id.
    Lookup,
    /// The answer to a lookup or finger probe, signed by the node responsible for the key.
    Answer {
        /// The request's id (its envelope's number).
        req: u64,
        /// Who asked.
        asker: P,
        /// The responder's predecessor's signed word that the responder follows it: the
        /// responder is responsible for the keys in `(pred, responder]`, which must hold the
        /// key. `None` when the responder has no recent one (alone, or just joined): the asker
        /// then believes the answer only if its own lists confirm it.
        pred: Option<Adjacency<P>>,
        /// Hops the request took.
        hops: u16,
    },
    /// A service's message, routed to the node responsible for the key (or to `target`).
    Service {
        /// The service it belongs to.
        service: ServiceId,
        /// The stream class it travels on.
        class: Class,
        /// Deliver only at this node (a send to a node id), or at whoever is responsible.
        target: Option<P>,
        /// What the service says, encoded by the service.
        data: Bytes,
    },
}

/// A message routed through the overlay.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Routed<P: PeerId> {
    /// Hops so far.
    pub hops: u16,
    /// For requests that want an answer (lookups, finger probes, services' messages routed to
    /// a key): the nodes that forwarded it, in order, so that the answer can come back over
    /// connections that already exist.
    pub trail: Vec<P>,
    /// The origin's envelope; its key is where the message goes.
    pub sealed: Sealed<P>,
    /// Whether this node checked the envelope's signature. Never sent: a receiver that got the
    /// message straight from its origin knows the origin from the authenticated link and checks
    /// the signature only if it passes the message on.
    #[serde(skip)]
    pub(crate) checked: bool,
}

impl<P: PeerId> Routed<P> {
    /// `sealed` at its origin: no hops yet, no trail.
    pub fn new(sealed: Sealed<P>) -> Self {
        Routed {
            hops: 0,
            trail: Vec::new(),
            sealed,
            checked: false,
        }
    }

    /// `sealed` as a node passes it on: `hops` so far and the `trail` of nodes that forwarded it.
    pub fn at_hop(hops: u16, trail: Vec<P>, sealed: Sealed<P>) -> Self {
        Routed {
            hops,
            trail,
            ..Routed::new(sealed)
        }
    }

    /// The target key.
    pub fn key(&self) -> RingId {
        self.sealed.env.key
    }

    /// The origin.
    pub fn origin(&self) -> P {
        self.sealed.env.origin.id
    }

    /// How an answer gets back to the origin (see [`crate::service::Context::reply`]).
    pub fn way_back(&self) -> crate::service::WayBack<P> {
        crate::service::WayBack {
            to: self.origin(),
            trail: self.trail.clone(),
            retrace: false,
        }
    }
}

/// A signed answer travelling back along a request's trail.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Answer<P: PeerId> {
    /// The rest of the way back: the nodes that forwarded the request, nearest to the asker
    /// first; each passes the answer to the asker if connected to it, else to the last one.
    pub trail: Vec<P>,
    /// The responder's envelope, body [`Body::Answer`].
    pub sealed: Sealed<P>,
}

impl<P: PeerId> Message<P> {
    /// The stream class this message travels on.
    pub fn class(&self) -> Class {
        match self {
            Message::Routed(r) => match r.sealed.env.body {
                Body::Service { class, .. } => class,
                _ => Class::Routing,
            },
            Message::Service(m) => m.class,
            Message::PassBack(m) => m.class,
            Message::Query(q) => q.class,
            _ => Class::Routing,
        }
    }

    /// The service a message belongs to, if it is a service's.
    pub fn service(&self) -> Option<ServiceId> {
        match self {
            Message::Routed(r) => match r.sealed.env.body {
                Body::Service { service, .. } => Some(service),
                _ => None,
            },
            Message::Service(m) => Some(m.service),
            Message::PassBack(m) => Some(m.service),
            Message::Query(q) => Some(q.service),
            _ => None,
        }
    }

    /// Calls `f` on every contact the message carries.
    pub fn for_each_contact(&self, mut f: impl FnMut(&Contact<P>)) {
        match self {
            Message::Stabilize { me, list, .. } => std::iter::once(me).chain(list).for_each(f),
            Message::StabilizeReply { me, back, list, .. } => std::iter::once(me)
                .chain(back.iter())
                .chain(list)
                .for_each(f),
            Message::JoinReply { succs, preds, .. } | Message::Leave { succs, preds } => {
                succs.iter().chain(preds).for_each(f)
            }
            Message::FingerNotify { new, .. } => f(new),
            Message::Near { nodes, .. } => nodes.iter().for_each(f),
            Message::Routed(r) => f(&r.sealed.env.origin),
            Message::Answer(a) => f(&a.sealed.env.origin),
            Message::Service(m) => {
                if let Some(s) = &m.sealed {
                    f(&s.env.origin)
                }
            }
            Message::FindNear { .. }
            | Message::Ping { .. }
            | Message::Pong { .. }
            | Message::PassBack(_)
            | Message::Query(_) => {}
        }
    }

    /// Every value [`Message::kind`] can return, in the order of [`Message::kind_index`].
    /// Services name the kinds of their own messages (see [`crate::service::Service::kinds`]).
    pub const KINDS: [&'static str; 14] = [
        "stabilize",
        "stabilize-reply",
        "join-reply",
        "leave",
        "finger-notify",
        "answer",
        "join",
        "finger-probe",
        "lookup",
        "find-near",
        "near",
        "ping",
        "pong",
        "service",
    ];

    /// The position of [`Message::kind`] in [`Message::KINDS`], for counters kept in arrays.
    pub fn kind_index(&self) -> usize {
        match self {
            Message::Stabilize { .. } => 0,
            Message::StabilizeReply { .. } => 1,
            Message::JoinReply { .. } => 2,
            Message::Leave { .. } => 3,
            Message::FingerNotify { .. } => 4,
            Message::Answer(_) => 5,
            Message::Routed(r) => match r.sealed.env.body {
                Body::Join => 6,
                Body::FingerProbe { .. } => 7,
                Body::Lookup | Body::Answer { .. } => 8,
                Body::Service { .. } => 13,
            },
            Message::FindNear { .. } => 9,
            Message::Near { .. } => 10,
            Message::Ping { .. } => 11,
            Message::Pong { .. } => 12,
            Message::Service(_) | Message::PassBack(_) | Message::Query(_) => 13,
        }
    }

    /// A short name for counters and logs (`service` for every service's message: the node
    /// that runs the service names it, see [`crate::Node::kind_of`]).
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::{StandIn, StandInProof};
    use crate::ring::Dir;

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
    struct T(u8);

    impl PeerId for T {
        type Proof = StandInProof;
        fn ring_id(&self) -> RingId {
            RingId((self.0 as u128) << 120)
        }
        fn verify(&self, msg: &[u8], proof: &StandInProof) -> bool {
            StandInProof::of(self, msg) == *proof
        }
    }

    fn sealed(origin: u8, body: Body<T>) -> Sealed<T> {
        let env = Envelope {
            origin: Contact::bare(T(origin)),
            seq: 9,
            issued: Time::ZERO,
            key: RingId(1),
            body,
        };
        Sealed::seal(&StandIn(T(origin)), env)
    }

    #[test]
    fn envelopes_verify_only_as_signed() {
        let s = sealed(1, Body::Lookup);
        assert!(s.verify());
        // Another origin named in the same envelope: the proof is not theirs.
        let mut forged = s.clone();
        forged.env.origin.id = T(2);
        assert!(!forged.verify());
        // A changed body under the same proof.
        let mut forged = s.clone();
        forged.env.key = RingId(2);
        assert!(!forged.verify());
        // A record signed by its node, and the same fields claimed for another node.
        let c = Contact::signed(&StandIn(T(3)), Vec::new(), None, Time::from_secs(5));
        assert!(c.verify());
        assert!(!Contact {
            id: T(4),
            ..c.clone()
        }
        .verify());
        assert!(!Contact::bare(T(3)).verify());
    }

    #[test]
    fn kind_table_matches_variants() {
        let c = || Contact::bare(T(1));
        let routed = |body| Message::Routed(Routed::new(sealed(1, body)));
        let all = [
            Message::Stabilize {
                dir: Dir::Cw,
                me: c(),
                list: vec![],
                follows: None,
            },
            Message::StabilizeReply {
                dir: Dir::Cw,
                me: c(),
                back: None,
                list: vec![],
            },
            Message::JoinReply {
                req: 0,
                succs: vec![],
                preds: vec![],
            },
            Message::Leave {
                succs: vec![],
                preds: vec![],
            },
            Message::FingerNotify {
                new: c(),
                dir: Dir::Cw,
                level: 0,
                stop: RingId(0),
            },
            Message::Answer(Answer {
                trail: vec![],
                sealed: sealed(
                    1,
                    Body::Answer {
                        req: 0,
                        asker: T(2),
                        pred: None,
                        hops: 0,
                    },
                ),
            }),
            routed(Body::Join),
            routed(Body::FingerProbe {
                dir: Dir::Cw,
                level: 0,
                reply: true,
                notify_from: None,
            }),
            routed(Body::Lookup),
            Message::FindNear {
                req: 0,
                key: RingId(0),
            },
            Message::Near {
                req: 0,
                nodes: vec![],
            },
            Message::Ping { nonce: 0 },
            Message::Pong { nonce: 0 },
            Message::Service(ServiceMessage {
                service: ServiceId::named("test"),
                class: Class::User,
                data: Bytes::new(),
                sealed: None,
            }),
        ];
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.kind_index(), i, "{m:?}");
        }
    }
}
