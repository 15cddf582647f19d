//! Who a node is (`PeerId`), where it sits (`Peer`), and how to reach it (`Contact`).
//!
//! The overlay is generic over the identity type, the way iroh-gossip's `proto` is: production
//! uses the transport's `NodeId` (a hash of the TLS key, so nobody chooses their ring position),
//! the simulator uses small integers so a million nodes fit in memory.

use crate::ring::RingId;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;
use std::net::SocketAddr;

/// A node identity usable by the overlay.
pub trait PeerId: Copy + Ord + Eq + std::hash::Hash + Debug + Serialize + DeserializeOwned {
    /// The node's ring position. Must be a pure function of the identity.
    fn ring_id(&self) -> RingId;
}

/// A node known by identity and ring position (the position is cached: it is used on every hop).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Peer<P> {
    /// Ring position, always `id.ring_id()`.
    pub pos: RingId,
    /// Identity.
    pub id: P,
}

impl<P: PeerId> Peer<P> {
    /// The peer with identity `id`, at the position derived from it.
    pub fn new(id: P) -> Self {
        Peer {
            pos: id.ring_id(),
            id,
        }
    }
}

/// A node identity with the addresses it can be reached at, as carried in messages.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Contact<P> {
    /// Identity.
    pub id: P,
    /// Addresses to dial; empty in the simulator and when unknown.
    pub addrs: Vec<SocketAddr>,
    /// A node that keeps a connection to this one and can introduce (hole punching) or relay
    /// for it, when it sits behind a NAT that refuses unsolicited connections.
    pub relay: Option<RelayHint<P>>,
}

/// A node through which another can be reached: its id and addresses.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RelayHint<P> {
    /// The relay's identity.
    pub id: P,
    /// Where to dial it.
    pub addrs: Vec<SocketAddr>,
}

impl<P: PeerId> Contact<P> {
    /// A contact with no addresses.
    pub fn bare(id: P) -> Self {
        Contact {
            id,
            addrs: Vec::new(),
            relay: None,
        }
    }

    /// The peer this contact names.
    pub fn peer(&self) -> Peer<P> {
        Peer::new(self.id)
    }
}
