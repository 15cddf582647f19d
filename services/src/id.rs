//! Node identities as the overlay sees them, and keys.
//!
//! The overlay is generic over its identity type; here it is the transport's authenticated
//! [`NodeId`], wrapped so that the overlay's [`PeerId`] trait can be implemented for it. A
//! node's ring position is the first 128 bits of its id (itself a SHA-256 of its public key),
//! so nobody chooses where they sit. A key's position is the first 128 bits of its SHA-256.
//! The overlay's proofs are Ed25519 signatures by the identity key ([`KeySigner`]); each
//! carries the public key, which must hash to the signer's id.

use p2ps_overlay::{PeerId, RingId, Signer};
use p2ps_transport::{NodeId, Signature, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A [`NodeId`] as an overlay peer identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OverlayId(pub NodeId);

impl std::fmt::Debug for OverlayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.short())
    }
}

impl PeerId for OverlayId {
    type Proof = Signature;

    fn ring_id(&self) -> RingId {
        ring_id_of(&self.0)
    }

    fn verify(&self, msg: &[u8], proof: &Signature) -> bool {
        proof.verify(&self.0, msg)
    }
}

/// Signs overlay messages and records with the node's Ed25519 identity key.
#[derive(Debug)]
pub struct KeySigner(pub SigningKey);

impl Signer<OverlayId> for KeySigner {
    fn id(&self) -> OverlayId {
        OverlayId(self.0.node_id())
    }

    fn sign(&self, msg: &[u8]) -> Signature {
        self.0.sign(msg)
    }
}

/// The ring position of node `id`.
pub fn ring_id_of(id: &NodeId) -> RingId {
    let mut b = [0u8; 16];
    b.copy_from_slice(&id.as_bytes()[..16]);
    RingId(u128::from_be_bytes(b))
}

/// The ring position of an application key: the first 128 bits of its SHA-256.
pub fn key_of(key: impl AsRef<[u8]>) -> RingId {
    let digest = Sha256::digest(key.as_ref());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    RingId(u128::from_be_bytes(b))
}

/// The ring position of group `name`: the key `group/<name>`, so that groups and dictionary
/// keys never share a position by accident.
pub fn group_key(name: &str) -> RingId {
    key_of(format!("group/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_come_from_the_id_and_the_key_hash() {
        let id = NodeId::from_bytes([7; 32]);
        assert_eq!(
            OverlayId(id).ring_id(),
            RingId(u128::from_be_bytes([7; 16]))
        );
        // SHA-256("") starts e3b0c442 98fc1c14 9afbf4c8 996fb924.
        assert_eq!(key_of(b""), RingId(0xe3b0c44298fc1c149afbf4c8996fb924));
        assert_ne!(key_of("a"), key_of("b"));
    }
}
