//! Signatures made with a node's identity key, and unpredictable numbers from the OS.
//!
//! TLS proves who is at the other end of a connection; a message that others pass on needs its
//! own proof. A node signs with the same Ed25519 key its [`NodeId`] is derived from, and a
//! [`Signature`] carries the public key, so anybody can check both that the key belongs to the
//! claimed id (its SHA-256) and that the key signed the bytes. Uses `ed25519-dalek` (strict
//! verification): the node checks a signature for every routed message it receives, so the
//! fastest well-kept implementation counts.

use crate::identity::{Identity, NodeId};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An Ed25519 signature together with the public key that made it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The signer's raw public key; its SHA-256 is the signer's [`NodeId`].
    pub public_key: [u8; 32],
    /// The signature bytes (`R || S`).
    #[serde(with = "sig_bytes")]
    pub sig: [u8; 64],
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:02x}{:02x}…)", self.sig[0], self.sig[1])
    }
}

impl Signature {
    /// Whether this signature shows that the owner of `signer` signed `msg`: the key hashes to
    /// `signer` and the signature over `msg` checks out.
    pub fn verify(&self, signer: &NodeId, msg: &[u8]) -> bool {
        NodeId::from_public_key(&self.public_key) == *signer
            && ed25519_dalek::VerifyingKey::from_bytes(&self.public_key).is_ok_and(|k| {
                k.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&self.sig))
                    .is_ok()
            })
    }
}

/// The signing half of an [`Identity`], ready to sign (parsing the key once).
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    public_key: [u8; 32],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret key.
        write!(
            f,
            "SigningKey({})",
            NodeId::from_public_key(&self.public_key).short()
        )
    }
}

/// Why an identity's key could not be used for signing.
#[derive(Debug, thiserror::Error)]
#[error("the identity key cannot sign: {0}")]
pub struct SigningKeyError(String);

impl SigningKey {
    /// The signing key of `identity`.
    pub fn new(identity: &Identity) -> Result<Self, SigningKeyError> {
        let der = identity.pkcs8_der();
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(&der)
            .map_err(|e| SigningKeyError(e.to_string()))?;
        let public_key = key.verifying_key().to_bytes();
        if public_key != *identity.public_key() {
            return Err(SigningKeyError(
                "public key does not match the identity".into(),
            ));
        }
        Ok(SigningKey { key, public_key })
    }

    /// The id this key signs as.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key)
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature {
            public_key: self.public_key,
            sig: self.key.sign(msg).to_bytes(),
        }
    }
}

/// 64 unpredictable bits from the operating system's generator (for seeds and nonces).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // The OS generator does not fail on the platforms we run on; if it ever did, fall back to
    // the clock's nanoseconds, which is still unknown to a remote peer.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ 0x9E37_79B9_7F4A_7C15;
    }
    u64::from_le_bytes(b)
}

/// Serde for `[u8; 64]` (serde's array impls stop at 32), as a fixed-length tuple.
mod sig_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(64)?;
        for x in b {
            t.serialize_element(x)?;
        }
        t.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = [u8; 64];
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("64 bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
                let mut b = [0u8; 64];
                for (i, x) in b.iter_mut().enumerate() {
                    *x = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(b)
            }
        }
        d.deserialize_tuple(64, V)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_signer_and_bytes() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        let ka = SigningKey::new(&a).unwrap();
        assert_eq!(ka.node_id(), a.node_id());
        let s = ka.sign(b"hello");
        assert!(s.verify(&a.node_id(), b"hello"));
        assert!(!s.verify(&a.node_id(), b"hellO"));
        // Another id: the key does not hash to it.
        assert!(!s.verify(&b.node_id(), b"hello"));
        // b's key with a's signature: the signature does not check out.
        let mut forged = s.clone();
        forged.public_key = *b.public_key();
        assert!(!forged.verify(&b.node_id(), b"hello"));
        let bytes = postcard::to_stdvec(&s).unwrap();
        assert_eq!(bytes.len(), 96);
        assert_eq!(postcard::from_bytes::<Signature>(&bytes).unwrap(), s);
        assert_ne!(random_u64(), random_u64());
    }
}
