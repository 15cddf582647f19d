//! What the application receives: a payload, who sent it, and how it was addressed.

use bytes::Bytes;
use p2ps_overlay::RingId;
use p2ps_transport::NodeId;

/// An application message delivered to this node (what [`crate::Node::recv`] returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The node that sent it.
    pub from: NodeId,
    /// The key it was routed to (this node's own position for a send to its id).
    pub key: RingId,
    /// Overlay hops it took.
    pub hops: u16,
    /// How it was addressed.
    pub via: Via,
    /// The payload.
    pub payload: Bytes,
}

/// How a delivered message was addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Via {
    /// To this node's id ([`crate::Node::send`]).
    Node,
    /// To a key this node is responsible for ([`crate::Node::route`]).
    Key,
    /// To every node ([`crate::Node::broadcast`]).
    Broadcast,
    /// To the nodes responsible for the keys in `[lo, hi]` ([`crate::Node::multicast_range`]).
    Range {
        /// Lower end of the key range.
        lo: RingId,
        /// Upper end of the key range.
        hi: RingId,
    },
    /// To the members of the named group ([`crate::Node::send_group`]).
    Group(String),
}

impl std::fmt::Display for Via {
    /// How the message was addressed, in words: `node`, `key`, `everyone`, `range LO..HI`,
    /// `group NAME`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Node => f.write_str("node"),
            Via::Key => f.write_str("key"),
            Via::Broadcast => f.write_str("everyone"),
            Via::Range { lo, hi } => write!(f, "range {lo}..{hi}"),
            Via::Group(g) => write!(f, "group {g}"),
        }
    }
}
