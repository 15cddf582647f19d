//! Proofs of authorship: how a node signs what it says and how anyone checks it.
//!
//! TLS authenticates the peer at the other end of a connection, not what it relays for others.
//! Whatever a message carries on behalf of a third node (a routed message's origin, a cast's
//! origin, a contact record, a lookup answer) is signed by that node, and every receiver checks
//! the signature before it changes any state. The overlay stays free of cryptography: the
//! identity type says how its proofs are checked ([`PeerId::verify`]), and the driver hands
//! each node a [`Signer`] that can sign only as that node. The runtime uses Ed25519 keys (the
//! proof carries the public key, whose hash is the node id); simulations and tests use
//! [`StandIn`], a cheap keyed hash under which a node signs only as itself.

use crate::peer::PeerId;
use serde::Serialize;
use std::fmt::Debug;

/// Signs on behalf of one node. The driver creates it from the node's secret key.
pub trait Signer<P: PeerId>: Debug + Send {
    /// The node this signer signs as.
    fn id(&self) -> P;
    /// A proof that this node signed `msg`.
    fn sign(&self, msg: &[u8]) -> P::Proof;
}

/// The bytes a proof covers: a domain tag (so that a signature made for one purpose is never
/// accepted for another) followed by the value's postcard encoding.
pub fn signed_bytes<T: Serialize + ?Sized>(domain: &str, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(domain.as_bytes());
    out.push(0);
    // Encoding a value of our own types into a Vec cannot fail; should it ever, the empty
    // encoding still signs only the domain, which no receiver accepts for a real value.
    if let Ok(body) = postcard::to_stdvec(value) {
        out.extend_from_slice(&body);
    }
    out
}

/// The stand-in proof of simulations and tests: a 64-bit keyed hash of the signer's identity
/// and the signed bytes. Only the simulator's nodes make them, each through its own [`StandIn`]
/// signer, so a simulated node can sign only as itself; it costs a hash instead of Ed25519.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, serde::Deserialize)]
pub struct StandInProof(pub u64);

impl StandInProof {
    /// The proof that `id` signed `msg`.
    pub fn of<P: Serialize>(id: &P, msg: &[u8]) -> StandInProof {
        // FNV-1a over the id's encoding and the message, then a final mix.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let id_bytes = postcard::to_stdvec(id).unwrap_or_default();
        for b in id_bytes.iter().chain(msg) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        StandInProof(crate::rng::mix64(h))
    }
}

/// The stand-in signer of simulated and test nodes (see [`StandInProof`]).
#[derive(Clone, Copy, Debug)]
pub struct StandIn<P>(pub P);

impl<P: PeerId<Proof = StandInProof> + Send> Signer<P> for StandIn<P> {
    fn id(&self) -> P {
        self.0
    }

    fn sign(&self, msg: &[u8]) -> StandInProof {
        StandInProof::of(&self.0, msg)
    }
}
