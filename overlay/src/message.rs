//! The overlay's wire messages and the traffic class each travels in.
//!
//! Messages are plain serde types; the transport frames them with postcard. Every contact a
//! message carries can be read with [`Message::contacts`], so the runtime can learn addresses
//! without understanding the protocol.

use crate::peer::Contact;
use crate::ring::{Dir, RingId};
use crate::segment::Segment;
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
pub enum Message<P> {
    /// Periodic upkeep, sent to the neighbour in direction `dir` (the successor for `Cw`):
    /// "I am your neighbour in the other direction; here is my list on that side".
    Stabilize {
        /// Direction from the sender to the receiver.
        dir: Dir,
        /// The sender's list in the opposite direction, nearest first.
        list: Vec<Contact<P>>,
    },
    /// Answer to [`Message::Stabilize`]: the receiver's list in the same direction, and its
    /// nearest neighbour back towards the sender (which may lie between the two).
    StabilizeReply {
        /// The direction of the request this answers.
        dir: Dir,
        /// The replier's nearest neighbour in the opposite direction.
        back: Option<Contact<P>>,
        /// The replier's list in direction `dir`, nearest first.
        list: Vec<Contact<P>>,
    },
    /// Sent by the responsible node to a node that asked to join.
    JoinReply {
        /// Successors for the joiner (the replier first).
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
    /// A finger probe's answer: the replier is responsible for the probed key.
    FingerReply {
        /// Slot direction.
        dir: Dir,
        /// Slot level.
        level: u8,
    },
    /// "`new` just joined and should be your finger in slot `(dir, level)`".
    FingerNotify {
        /// The node that joined.
        new: Contact<P>,
        /// Slot direction at the receiver.
        dir: Dir,
        /// Slot level.
        level: u8,
        /// Lower end (exclusive) of the interval still to notify, walking counter-clockwise.
        stop: RingId,
    },
    /// The answer to a lookup, sent straight to its origin.
    LookupReply {
        /// The origin's request id.
        req: u64,
        /// Hops the request took.
        hops: u16,
    },
    /// A message routed hop by hop towards the node responsible for `key`.
    Routed(Routed<P>),
    /// A piece of a broadcast or range multicast: deliver it to every node in the piece.
    Cast(Cast<P>),
    /// "I have your piece `piece` of cast `(origin, seq)` and cover it now."
    CastAck {
        /// The cast's origin.
        origin: P,
        /// The origin's message number.
        seq: u64,
        /// The sender's piece number.
        piece: u64,
    },
    /// "Piece `piece` is covered": sent up the tree when the origin asked for a reply.
    CastDone {
        /// The cast's origin.
        origin: P,
        /// The origin's message number.
        seq: u64,
        /// The sender's piece number (0 from the root of a range multicast to its origin).
        piece: u64,
        /// Nodes in the piece that delivered the payload for the first time.
        delivered: u64,
    },
    /// Child to parent: "keep me in the tree of `group`" (also the periodic refresh).
    GroupJoin {
        /// The group's position on the ring (hash of its name).
        group: RingId,
    },
    /// Child to parent: "take me out of the tree of `group`".
    GroupPrune {
        /// The group.
        group: RingId,
    },
    /// A group message travelling along the tree's edges.
    GroupCast {
        /// The group.
        group: RingId,
        /// Who sent it.
        origin: P,
        /// The origin's message number.
        seq: u64,
        /// Tree edges crossed so far.
        hops: u16,
        /// The payload.
        payload: Vec<u8>,
    },
}

/// A piece of a broadcast (the whole ring) or of a range multicast (the nodes responsible for
/// the keys in a range), handed down the dissemination tree.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Cast<P> {
    /// Who sent the broadcast.
    pub origin: Contact<P>,
    /// The origin's message number; `(origin, seq)` identifies the cast.
    pub seq: u64,
    /// The sender's number for this piece, echoed in acknowledgements.
    pub piece: u64,
    /// The nodes to reach: every node whose position lies here.
    pub seg: Segment,
    /// For a range multicast, the key range `[lo, hi]`; `None` for a broadcast.
    pub keys: Option<(RingId, RingId)>,
    /// Tree depth of the receiver (1 for the origin's direct children).
    pub depth: u16,
    /// Whether the origin wants a count of deliveries gathered back up the tree.
    pub reply: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A message routed through the overlay.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Routed<P> {
    /// Target key; the node responsible for it (its successor) receives the message.
    pub key: RingId,
    /// Who sent it first.
    pub origin: Contact<P>,
    /// Hops so far.
    pub hops: u16,
    /// What to do on arrival.
    pub body: RoutedBody<P>,
}

/// What a routed message asks of the responsible node.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RoutedBody<P> {
    /// The origin wants to join; its key is its own position.
    Join,
    /// The origin looks up its finger for `key`.
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
    /// A lookup: who is responsible for `key`?
    Lookup {
        /// The origin's request id.
        req: u64,
    },
    /// A range multicast on its way to the node responsible for `hi` (the routed key), which
    /// then covers every node from `lo` to itself.
    Range {
        /// Lower end of the key range.
        lo: RingId,
        /// The origin's message number.
        seq: u64,
        /// Whether the origin wants a count of deliveries.
        reply: bool,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A group message on its way to the group's tree (the routed key is the group).
    GroupSend {
        /// The origin's message number.
        seq: u64,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Application data.
    Data {
        /// Deliver only to this node (a send to a node id), or to whoever is responsible.
        target: Option<P>,
        /// The payload.
        payload: Vec<u8>,
    },
}

impl<P> Message<P> {
    /// The stream class this message travels on.
    pub fn class(&self) -> Class {
        match self {
            Message::Routed(Routed {
                body: RoutedBody::Data { .. },
                ..
            }) => Class::User,
            Message::Routed(Routed {
                body: RoutedBody::Range { .. } | RoutedBody::GroupSend { .. },
                ..
            })
            | Message::Cast(_)
            | Message::CastAck { .. }
            | Message::CastDone { .. }
            | Message::GroupJoin { .. }
            | Message::GroupPrune { .. }
            | Message::GroupCast { .. } => Class::Tree,
            _ => Class::Routing,
        }
    }

    /// Calls `f` on every contact the message carries.
    pub fn for_each_contact(&self, mut f: impl FnMut(&Contact<P>)) {
        match self {
            Message::Stabilize { list, .. } => list.iter().for_each(f),
            Message::StabilizeReply { back, list, .. } => back.iter().chain(list).for_each(f),
            Message::JoinReply { succs, preds } | Message::Leave { succs, preds } => {
                succs.iter().chain(preds).for_each(f)
            }
            Message::FingerNotify { new, .. } => f(new),
            Message::Routed(r) => f(&r.origin),
            Message::Cast(c) => f(&c.origin),
            Message::FingerReply { .. }
            | Message::LookupReply { .. }
            | Message::CastAck { .. }
            | Message::CastDone { .. }
            | Message::GroupJoin { .. }
            | Message::GroupPrune { .. }
            | Message::GroupCast { .. } => {}
        }
    }

    /// Every value [`Message::kind`] can return, in the order of [`Message::kind_index`].
    pub const KINDS: [&'static str; 19] = [
        "stabilize",
        "stabilize-reply",
        "join-reply",
        "leave",
        "finger-reply",
        "finger-notify",
        "lookup-reply",
        "join",
        "finger-probe",
        "lookup",
        "data",
        "range",
        "group-send",
        "cast",
        "cast-ack",
        "cast-done",
        "group-join",
        "group-prune",
        "group-cast",
    ];

    /// The position of [`Message::kind`] in [`Message::KINDS`], for counters kept in arrays.
    pub fn kind_index(&self) -> usize {
        match self {
            Message::Stabilize { .. } => 0,
            Message::StabilizeReply { .. } => 1,
            Message::JoinReply { .. } => 2,
            Message::Leave { .. } => 3,
            Message::FingerReply { .. } => 4,
            Message::FingerNotify { .. } => 5,
            Message::LookupReply { .. } => 6,
            Message::Routed(r) => match r.body {
                RoutedBody::Join => 7,
                RoutedBody::FingerProbe { .. } => 8,
                RoutedBody::Lookup { .. } => 9,
                RoutedBody::Data { .. } => 10,
                RoutedBody::Range { .. } => 11,
                RoutedBody::GroupSend { .. } => 12,
            },
            Message::Cast(_) => 13,
            Message::CastAck { .. } => 14,
            Message::CastDone { .. } => 15,
            Message::GroupJoin { .. } => 16,
            Message::GroupPrune { .. } => 17,
            Message::GroupCast { .. } => 18,
        }
    }

    /// A short name for counters and logs.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Dir;

    #[test]
    fn kind_table_matches_variants() {
        let c = || Contact {
            id: 1u8,
            addrs: Vec::new(),
            relay: None,
        };
        let routed = |body| {
            Message::Routed(Routed {
                key: RingId(1),
                origin: c(),
                hops: 0,
                body,
            })
        };
        let all = [
            Message::Stabilize {
                dir: Dir::Cw,
                list: vec![],
            },
            Message::StabilizeReply {
                dir: Dir::Cw,
                back: None,
                list: vec![],
            },
            Message::JoinReply {
                succs: vec![],
                preds: vec![],
            },
            Message::Leave {
                succs: vec![],
                preds: vec![],
            },
            Message::FingerReply {
                dir: Dir::Cw,
                level: 0,
            },
            Message::FingerNotify {
                new: c(),
                dir: Dir::Cw,
                level: 0,
                stop: RingId(0),
            },
            Message::LookupReply { req: 0, hops: 0 },
            routed(RoutedBody::Join),
            routed(RoutedBody::FingerProbe {
                dir: Dir::Cw,
                level: 0,
                reply: true,
                notify_from: None,
            }),
            routed(RoutedBody::Lookup { req: 0 }),
            routed(RoutedBody::Data {
                target: None,
                payload: vec![],
            }),
            routed(RoutedBody::Range {
                lo: RingId(0),
                seq: 0,
                reply: false,
                payload: vec![],
            }),
            routed(RoutedBody::GroupSend {
                seq: 0,
                payload: vec![],
            }),
            Message::Cast(Cast {
                origin: c(),
                seq: 0,
                piece: 0,
                seg: Segment::full(RingId(0)),
                keys: None,
                depth: 0,
                reply: false,
                payload: vec![],
            }),
            Message::CastAck {
                origin: 1,
                seq: 0,
                piece: 0,
            },
            Message::CastDone {
                origin: 1,
                seq: 0,
                piece: 0,
                delivered: 0,
            },
            Message::GroupJoin { group: RingId(0) },
            Message::GroupPrune { group: RingId(0) },
            Message::GroupCast {
                group: RingId(0),
                origin: 1,
                seq: 0,
                hops: 0,
                payload: vec![],
            },
        ];
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.kind_index(), i, "{m:?}");
        }
    }
}
