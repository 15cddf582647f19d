//! Answers to commands that take a while: a lookup's responsible node, a cast's or a group
//! message's count.

use p2ps_transport::NodeId;

/// The answer to a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupResult {
    /// The node responsible for the key.
    pub node: NodeId,
    /// Overlay hops the request took.
    pub hops: u16,
}

/// The outcome of a group message: how many members got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupReport {
    /// The message number this node gave it.
    pub seq: u64,
    /// Members that received it (this node not included), as counted back up the group's
    /// tree: a member whose count was lost to a crash or a timeout is missing, and a lying
    /// tree node could add to it (up to a cap the network's size makes plausible).
    pub members: u64,
    /// Whether every part of the tree answered in time.
    pub complete: bool,
}

/// The outcome of a broadcast or range multicast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CastReport {
    /// The message number this node gave it.
    pub seq: u64,
    /// Nodes that received it (this node not included), as counted back up the tree. A node
    /// whose count was lost to a crash is missing from it.
    pub delivered: u64,
    /// Whether every piece of the tree was acknowledged.
    pub complete: bool,
}
