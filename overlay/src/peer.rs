//! Who a node is (`PeerId`), where it sits (`Peer`), and how to reach it (`Contact`).
//!
//! The overlay is generic over the identity type, the way iroh-gossip's `proto` is: production
//! uses the transport's `NodeId` (a hash of the TLS key, so nobody chooses their ring position),
//! the simulator uses small integers so a million nodes fit in memory.

use crate::proof::{signed_bytes, Signer};
use crate::ring::RingId;
use crate::time::Time;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;
use std::net::SocketAddr;

/// A node identity usable by the overlay.
pub trait PeerId:
    Copy + Ord + Eq + std::hash::Hash + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// A proof that this identity's owner signed some bytes (see [`crate::proof`]).
    type Proof: Clone + PartialEq + Eq + Debug + Serialize + DeserializeOwned + Send + Sync;

    /// The node's ring position. Must be a pure function of the identity.
    fn ring_id(&self) -> RingId;

    /// Whether `proof` shows that the owner of this identity signed `msg`.
    fn verify(&self, msg: &[u8], proof: &Self::Proof) -> bool;
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
///
/// A contact is a *record* its node signed ([`Contact::proof`]), which anyone can pass on and
/// every receiver checks ([`Contact::verify`]): a node takes an id into its tables, or dials an
/// address, only on such first-hand evidence (or an authenticated connection). A contact
/// without a proof is a bare mention of a node (a bootstrap ticket, a test), which no receiver
/// takes into its tables.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Contact<P: PeerId> {
    /// Identity.
    pub id: P,
    /// Addresses to dial; empty in the simulator and when unknown.
    pub addrs: Vec<SocketAddr>,
    /// A node that keeps a connection to this one and can introduce (hole punching) or relay
    /// for it, when it sits behind a NAT that refuses unsolicited connections.
    pub relay: Option<RelayHint<P>>,
    /// When the node made this record (a newer record replaces an older one).
    pub issued: Time,
    /// The node's signature over the fields above.
    pub proof: Option<P::Proof>,
}

/// A node through which another can be reached: its id and addresses.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RelayHint<P: PeerId> {
    /// The relay's identity.
    pub id: P,
    /// Where to dial it.
    pub addrs: Vec<SocketAddr>,
}

/// What a contact record's proof covers.
const RECORD_DOMAIN: &str = "p2ps/contact";

impl<P: PeerId> Contact<P> {
    /// A contact with no addresses and no proof: a bare mention of `id`.
    pub fn bare(id: P) -> Self {
        Contact {
            id,
            addrs: Vec::new(),
            relay: None,
            issued: Time::ZERO,
            proof: None,
        }
    }

    /// The signer's own record, made at `issued`.
    pub fn signed(
        signer: &dyn Signer<P>,
        addrs: Vec<SocketAddr>,
        relay: Option<RelayHint<P>>,
        issued: Time,
    ) -> Self {
        let mut c = Contact {
            id: signer.id(),
            addrs,
            relay,
            issued,
            proof: None,
        };
        c.proof = Some(signer.sign(&c.signed_bytes()));
        c
    }

    fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(
            RECORD_DOMAIN,
            &(&self.id, &self.addrs, &self.relay, self.issued),
        )
    }

    /// Whether this contact is a record its node signed.
    pub fn verify(&self) -> bool {
        self.proof
            .as_ref()
            .is_some_and(|p| self.id.verify(&self.signed_bytes(), p))
    }

    /// The peer this contact names.
    pub fn peer(&self) -> Peer<P> {
        Peer::new(self.id)
    }
}
