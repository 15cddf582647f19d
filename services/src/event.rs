//! What a node tells its subscribers about itself.

use p2ps_overlay::RingId;
use p2ps_transport::NodeId;
use std::net::SocketAddr;

/// Something that happened to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node is part of a network.
    Joined,
    /// Joining failed.
    JoinFailed,
    /// A join through a ticket moved on (see [`JoinStep`]); [`NodeEvent::Joined`] or
    /// [`NodeEvent::JoinFailed`] ends it.
    Joining(JoinStep),
    /// The node left its network.
    Left,
    /// The node lost every neighbour (a partition, a suspended machine) and is joining again
    /// through the nodes it knew; [`NodeEvent::Joined`] follows when it is back.
    Isolated,
    /// A peer became a ring neighbour (successor or predecessor list).
    NeighbourUp(NodeId),
    /// A peer is no longer a ring neighbour (it left, crashed, or someone nearer arrived).
    NeighbourDown(NodeId),
    /// A child in a group tree could not keep up with the group's traffic and was dropped
    /// (it re-joins through the tree refresh once it catches up).
    GroupChildDropped {
        /// The group's ring position.
        group: RingId,
        /// The slow peer.
        peer: NodeId,
    },
}

/// How far a join through a ticket has come ([`NodeEvent::Joining`]), for progress reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinStep {
    /// Connecting to the ticket's node at the ticket's addresses.
    Dialing {
        /// The ticket's node.
        via: NodeId,
        /// The addresses tried.
        addrs: Vec<SocketAddr>,
    },
    /// Connected to the ticket's node.
    Connected {
        /// The ticket's node.
        via: NodeId,
        /// The address the connection goes to.
        addr: SocketAddr,
    },
    /// A join request went out through the ticket's node (it waits for the connection if
    /// there is none yet); the node responsible for this node's position answers.
    Requested {
        /// This attempt, from 1.
        attempt: u32,
        /// Attempts in all before the join fails.
        of: u32,
    },
}
