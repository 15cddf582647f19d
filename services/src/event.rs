//! What a node tells its subscribers about itself.

use p2ps_overlay::RingId;
use p2ps_transport::NodeId;

/// Something that happened to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node is part of a network.
    Joined,
    /// Joining failed.
    JoinFailed,
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
