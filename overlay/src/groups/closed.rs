//! Closed groups: a group whose members share a 32-byte secret.
//!
//! Why this shape: a Scribe tree needs forwarders that are not members (the nodes on the
//! members' routes to the root), so "only members" cannot mean "only members carry the
//! traffic". It means: only holders of the secret can join, send or read.
//!
//! - From the secret (HKDF-SHA256) come an Ed25519 group key and a ChaCha20-Poly1305 key.
//! - The group's ring position is a hash of the group's public key and its name's hash
//!   ([`GroupPublic::id`]), so nobody can squat on a closed group's position without the key,
//!   and a closed group never shares its position with the open group of the same name.
//! - A member's certificate ([`Cert`]) is the group key's signature over (group, member id).
//!   Any holder of the secret can make one for itself; nobody else can.
//! - Every join carries an [`Admission`]: a member's certificate and a chain of delegations,
//!   each signed by one node of the chain and naming the next, ending with the sender naming
//!   the receiver. A member's own join is its certificate and one link (itself to its parent);
//!   a forwarder passes on a child's admission with one more link of its own. So a node holds
//!   a place in the tree only if it is a member or a member's join went through it, and every
//!   tree node checks that with the group's public key, which the join carries.
//! - A message carries its origin's certificate (the origin is the signed envelope's) and an
//!   AEAD ciphertext bound to the group, the origin and the message number: tree nodes drop a
//!   message whose certificate does not name its origin; forwarders see only ciphertext.
//!
//! There are no invitations: the secret is the membership. A member cannot be expelled;
//! make a new secret (a new group position) and hand it to the remaining members.

use crate::peer::PeerId;
use crate::proof::signed_bytes;
use crate::ring::RingId;
use crate::service::service_signed_bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Length of a group secret in bytes.
pub const GROUP_SECRET_LEN: usize = 32;

/// Delegations one admission may carry (a tree deeper than this is refused).
pub const MAX_LINKS: usize = 24;

/// What a certificate's signature covers.
const CERT_DOMAIN: &str = "p2ps/group-cert";
/// What a delegation link's signature covers (a service domain of the node's key).
pub(crate) const LINK_DOMAIN: &str = "groups/delegate";

/// The secret of a closed group: whoever holds it is a member. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupSecret([u8; GROUP_SECRET_LEN]);

impl GroupSecret {
    /// The secret with these bytes.
    pub const fn from_bytes(bytes: [u8; GROUP_SECRET_LEN]) -> Self {
        GroupSecret(bytes)
    }

    /// The secret's bytes. Handle with care.
    pub const fn as_bytes(&self) -> &[u8; GROUP_SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for GroupSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupSecret(..)")
    }
}

/// What anyone may know of a closed group: its public key and its name's hash. Joins carry
/// it, so that every tree node can check certificates.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupPublic {
    /// The group's Ed25519 public key.
    pub key: [u8; 32],
    /// SHA-256 of the group's name (with a domain prefix).
    pub label: [u8; 32],
}

impl GroupPublic {
    /// The group's ring position: the first 128 bits of a hash of the key and the label.
    pub fn id(&self) -> RingId {
        let d = Sha256::new()
            .chain_update(b"p2ps/closed-group-id")
            .chain_update(self.key)
            .chain_update(self.label)
            .finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        RingId(u128::from_be_bytes(b))
    }

    /// Whether `cert` is the group key's certificate for `member` in this group.
    pub fn verify<P: PeerId>(&self, member: P, cert: &Cert) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.key) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&cert.to_bytes());
        key.verify_strict(&cert_bytes(self.id(), member), &sig)
            .is_ok()
    }
}

fn cert_bytes<P: PeerId>(group: RingId, member: P) -> Vec<u8> {
    signed_bytes(CERT_DOMAIN, &(group, member))
}

/// A member's certificate: the group key's Ed25519 signature over (group, member id).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Cert {
    r: [u8; 32],
    s: [u8; 32],
}

impl Cert {
    /// The certificate from the 64 bytes of its signature.
    pub fn from_bytes(b: [u8; 64]) -> Self {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&b[..32]);
        s.copy_from_slice(&b[32..]);
        Cert { r, s }
    }

    /// The signature's 64 bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[..32].copy_from_slice(&self.r);
        b[32..].copy_from_slice(&self.s);
        b
    }
}

/// A closed group as its members hold it: position, public part, signing and sealing keys,
/// all derived from the secret and the name.
#[derive(Clone)]
pub struct ClosedGroup {
    public: GroupPublic,
    id: RingId,
    signing: SigningKey,
    aead: ChaCha20Poly1305,
}

impl fmt::Debug for ClosedGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosedGroup")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ClosedGroup {
    /// The closed group `name` of the members holding `secret`.
    pub fn new(secret: &GroupSecret, name: &str) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"p2ps/closed-group/v1"), secret.as_bytes());
        let mut seed = [0u8; 32];
        let mut sym = [0u8; 32];
        // 32 bytes are far below HKDF-SHA256's limit of 8160: expansion cannot fail.
        let _ = hk.expand(b"signing key", &mut seed);
        let _ = hk.expand(b"payload key", &mut sym);
        let signing = SigningKey::from_bytes(&seed);
        let label: [u8; 32] = Sha256::new()
            .chain_update(b"p2ps/group-name/")
            .chain_update(name.as_bytes())
            .finalize()
            .into();
        let public = GroupPublic {
            key: signing.verifying_key().to_bytes(),
            label,
        };
        ClosedGroup {
            id: public.id(),
            public,
            signing,
            aead: ChaCha20Poly1305::new(Key::from_slice(&sym)),
        }
    }

    /// The group's ring position.
    pub fn id(&self) -> RingId {
        self.id
    }

    /// What anyone may know of the group.
    pub fn public(&self) -> GroupPublic {
        self.public
    }

    /// The certificate of `member`.
    pub fn certify<P: PeerId>(&self, member: P) -> Cert {
        Cert::from_bytes(self.signing.sign(&cert_bytes(self.id, member)).to_bytes())
    }

    /// `plain` encrypted for the members, bound to the group and the origin (`nonce` from
    /// [`nonce`], never repeated).
    pub(crate) fn seal<P: PeerId>(&self, origin: P, nonce: [u8; 12], plain: &[u8]) -> Vec<u8> {
        let aad = signed_bytes("p2ps/group-payload", &(self.id, origin));
        // Encryption fails only for payloads beyond 256 GiB.
        self.aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default()
    }

    /// The plaintext of a sealed payload, `None` if it was not sealed by a member for this
    /// origin.
    pub(crate) fn open<P: PeerId>(
        &self,
        origin: P,
        nonce: [u8; 12],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        let aad = signed_bytes("p2ps/group-payload", &(self.id, origin));
        self.aead
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()
    }
}

/// The AEAD nonce of `origin`'s message with the unique number `n`: a hash of both, so that
/// nonces of different members never meet (a repeated nonce under one key would leak the
/// plaintexts) whatever their generators.
pub(crate) fn nonce<P: PeerId>(origin: P, n: u64) -> [u8; 12] {
    let d = Sha256::digest(signed_bytes("p2ps/group-nonce", &(origin, n)));
    let mut b = [0u8; 12];
    b.copy_from_slice(&d[..12]);
    b
}

/// One delegation of an [`Admission`]: the previous node of the chain signed that `to` may
/// hold a place in the group's tree for the member.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Link<P: PeerId> {
    /// The node delegated to.
    pub to: P,
    /// The delegating node's signature over (group, `to`).
    pub proof: P::Proof,
}

/// The bytes a delegation to `to` in `group` signs (with the node's own key, in a service
/// domain).
pub fn link_bytes<P: PeerId>(group: RingId, to: P) -> Vec<u8> {
    service_signed_bytes(LINK_DOMAIN, &(group, to))
}

/// The proof a join into a closed group's tree carries: a member, its certificate, and the
/// delegations from the member down to the receiver.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Admission<P: PeerId> {
    /// The member that stands behind the join.
    pub member: P,
    /// Its certificate.
    pub cert: Cert,
    /// The delegations, from the member's to the one naming the receiver.
    pub links: Vec<Link<P>>,
}

impl<P: PeerId> Admission<P> {
    /// Whether this admission, sent by `from` to `me`, lets `from` hang below `me` in the
    /// closed group `public`: the certificate is the group's for the member, every link was
    /// signed by the node before it (the member first), the last but one node is `from` and
    /// the last is `me`.
    pub fn verify(&self, public: &GroupPublic, from: P, me: P) -> bool {
        if self.links.is_empty() || self.links.len() > MAX_LINKS {
            return false;
        }
        let group = public.id();
        let mut signer = self.member;
        let mut before_last = self.member;
        for l in &self.links {
            if !signer.verify(&link_bytes(group, l.to), &l.proof) {
                return false;
            }
            before_last = signer;
            signer = l.to;
        }
        signer == me && before_last == from && public.verify(self.member, &self.cert)
    }

    /// The number of links.
    pub fn depth(&self) -> usize {
        self.links.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimId;

    fn group(b: u8, name: &str) -> ClosedGroup {
        ClosedGroup::new(&GroupSecret::from_bytes([b; 32]), name)
    }

    #[test]
    fn certificates_name_their_member_and_group() {
        let g = group(1, "chess");
        let public = g.public();
        assert_eq!(public.id(), g.id());
        let cert = g.certify(SimId(5));
        assert!(public.verify(SimId(5), &cert));
        assert!(
            !public.verify(SimId(6), &cert),
            "a certificate for another node"
        );
        assert!(
            !public.verify(SimId(5), &Cert::from_bytes([9; 64])),
            "forged"
        );
        // Another secret or another name: another group, which this certificate is not for.
        assert!(!group(2, "chess").public().verify(SimId(5), &cert));
        assert!(!group(1, "go").public().verify(SimId(5), &cert));
        assert_ne!(group(1, "go").id(), g.id());
        assert_ne!(group(2, "chess").id(), g.id());
    }

    #[test]
    fn payloads_open_only_for_members_and_their_origin() {
        let g = group(1, "chess");
        let n = nonce(SimId(5), 77);
        let sealed = g.seal(SimId(5), n, b"e2e4 e7e5");
        assert!(!sealed.windows(4).any(|w| w == b"e2e4"));
        assert_eq!(
            g.open(SimId(5), n, &sealed).as_deref(),
            Some(&b"e2e4 e7e5"[..])
        );
        assert_eq!(g.open(SimId(6), n, &sealed), None, "another origin");
        assert_eq!(
            group(2, "chess").open(SimId(5), n, &sealed),
            None,
            "another key"
        );
        let mut bent = sealed.clone();
        bent[0] ^= 1;
        assert_eq!(g.open(SimId(5), n, &bent), None, "altered");
        assert_ne!(nonce(SimId(5), 77), nonce(SimId(6), 77));
    }
}
