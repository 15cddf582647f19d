//! A stored value: its name, its writer, its version, when it expires, and the writer's
//! signature over all of it, which every replica and every reader checks.
//!
//! Keys come in two kinds. An *open* key (`key = H("open", name)`) may be written by anyone;
//! concurrent values are ordered by version, then by writer id, and the greatest wins. An *owned*
//! key (`key = H("owned", owner, name)`) can only be written by its owner, since the key itself
//! names the owner: a record for it signed by anyone else lands on another key. A deletion is a
//! record without a value (a tombstone), so that it wins over the value it deletes wherever the
//! two meet.

use bytes::Bytes;
use p2ps_overlay::proof::signed_bytes;
use p2ps_overlay::service::service_signed_bytes;
use p2ps_overlay::{PeerId, RingId, Time};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;

/// What a record's signature covers.
const RECORD_DOMAIN: &str = "p2ps/dict/record";

/// Longest key name, in bytes.
pub const MAX_NAME: usize = 256;

/// Who may write a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Mode {
    /// Anyone; the greatest `(version, writer)` wins.
    Open,
    /// Only the owner, whose id is part of the key.
    Owned,
}

/// A key of the dictionary: its name and who may write it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DictKey<P> {
    /// The name the application gave it.
    pub name: Bytes,
    /// Open, or owned by `owner`.
    pub owner: Option<P>,
}

impl<P: PeerId> DictKey<P> {
    /// The open key `name`.
    pub fn open(name: impl Into<Bytes>) -> Self {
        DictKey {
            name: name.into(),
            owner: None,
        }
    }

    /// The key `name` owned by `owner`.
    pub fn owned(owner: P, name: impl Into<Bytes>) -> Self {
        DictKey {
            name: name.into(),
            owner: Some(owner),
        }
    }

    /// Who may write it.
    pub fn mode(&self) -> Mode {
        if self.owner.is_some() {
            Mode::Owned
        } else {
            Mode::Open
        }
    }

    /// Its ring position: where it is stored.
    pub fn position(&self) -> RingId {
        let mut h = Sha256::new();
        match &self.owner {
            None => h.update(b"p2ps/dict/open\0"),
            Some(owner) => {
                h.update(b"p2ps/dict/owned\0");
                h.update(signed_bytes("owner", owner));
            }
        }
        h.update(&self.name);
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        RingId(u128::from_be_bytes(b))
    }
}

/// What a writer signs.
#[derive(Serialize)]
struct Signed<'a, P> {
    name: &'a [u8],
    mode: Mode,
    writer: &'a P,
    version: u64,
    expires: Time,
    value: Option<&'a [u8]>,
}

/// A value (or a deletion) as stored and passed between nodes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Record<P: PeerId> {
    /// The key's name.
    pub name: Bytes,
    /// Open, or owned by the writer.
    pub mode: Mode,
    /// Who wrote it (for an owned key, its owner).
    pub writer: P,
    /// Versions increase; the greatest `(version, writer)` wins.
    pub version: u64,
    /// When it stops existing.
    pub expires: Time,
    /// The value; `None` for a deletion.
    pub value: Option<Bytes>,
    /// The writer's signature over all of the above.
    pub proof: P::Proof,
}

impl<P: PeerId> Record<P> {
    /// A record signed with `sign`, which gets a domain and the record's content and returns
    /// the writer's signature over them ([`p2ps_overlay::service::Context::sign`] does).
    pub fn new(
        key: &DictKey<P>,
        writer: P,
        version: u64,
        expires: Time,
        value: Option<Bytes>,
        sign: impl FnOnce(&str, &[u8]) -> P::Proof,
    ) -> Self {
        let mode = key.mode();
        let signed = Signed {
            name: &key.name,
            mode,
            writer: &writer,
            version,
            expires,
            value: value.as_deref(),
        };
        let content = postcard::to_stdvec(&signed).unwrap_or_default();
        let proof = sign(RECORD_DOMAIN, &content);
        Record {
            name: key.name.clone(),
            mode,
            writer,
            version,
            expires,
            value,
            proof,
        }
    }

    /// The key it belongs to.
    pub fn key(&self) -> DictKey<P> {
        DictKey {
            name: self.name.clone(),
            owner: (self.mode == Mode::Owned).then_some(self.writer),
        }
    }

    /// Its ring position.
    pub fn position(&self) -> RingId {
        self.key().position()
    }

    /// Whether the writer signed it as it is.
    pub fn verify(&self) -> bool {
        let signed = Signed {
            name: &self.name,
            mode: self.mode,
            writer: &self.writer,
            version: self.version,
            expires: self.expires,
            value: self.value.as_deref(),
        };
        let Ok(content) = postcard::to_stdvec(&signed) else {
            return false;
        };
        let bytes = service_signed_bytes(RECORD_DOMAIN, &content[..]);
        self.writer.verify(&bytes, &self.proof)
    }

    /// Which of two records of one key wins: the greater `(version, writer)`.
    pub fn order(&self, other: &Record<P>) -> Ordering {
        (self.version, self.writer).cmp(&(other.version, other.writer))
    }

    /// Whether it wins over `other`.
    pub fn newer_than(&self, other: &Record<P>) -> bool {
        self.order(other) == Ordering::Greater
    }

    /// Whether it renews `other`: the same version by the same writer, expiring later (the
    /// writer republished it). A renewal replaces the record it renews.
    pub fn renews(&self, other: &Record<P>) -> bool {
        self.order(other) == Ordering::Equal && self.expires > other.expires
    }

    /// Whether it is a deletion.
    pub fn is_deletion(&self) -> bool {
        self.value.is_none()
    }

    /// What anti-entropy compares of it (see [`Stamp`]).
    pub fn stamp(&self) -> Stamp {
        Stamp::of_encoded(self.version, &postcard::to_stdvec(self).unwrap_or_default())
    }

    /// Bytes it takes in a store (name and value; the rest is small and fixed).
    pub fn size(&self) -> usize {
        self.name.len() + self.value.as_ref().map_or(0, |v| v.len()) + 64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use p2ps_overlay::proof::{Signer, StandIn, StandInProof};

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
    struct T(u8);

    impl PeerId for T {
        type Proof = StandInProof;
        fn ring_id(&self) -> RingId {
            RingId((self.0 as u128) << 120)
        }
        fn verify(&self, msg: &[u8], proof: &StandInProof) -> bool {
            StandInProof::of(self, msg) == *proof
        }
    }

    fn record(
        key: &DictKey<T>,
        writer: u8,
        version: u64,
        value: Option<&'static [u8]>,
    ) -> Record<T> {
        let signer = StandIn(T(writer));
        Record::new(
            key,
            T(writer),
            version,
            Time::from_secs(600),
            value.map(Bytes::from_static),
            |domain, content| signer.sign(&service_signed_bytes(domain, content)),
        )
    }

    #[test]
    fn records_verify_only_as_signed() {
        let k = DictKey::open(&b"colour"[..]);
        let r = record(&k, 1, 5, Some(b"blue"));
        assert!(r.verify());
        assert_eq!(r.position(), k.position());
        let mut forged = r.clone();
        forged.value = Some(Bytes::from_static(b"red"));
        assert!(!forged.verify());
        let mut forged = r.clone();
        forged.version = 6;
        assert!(!forged.verify());
        let mut forged = r.clone();
        forged.writer = T(2);
        assert!(!forged.verify());
    }

    #[test]
    fn owned_keys_name_their_owner() {
        let mine = DictKey::owned(T(1), &b"profile"[..]);
        let theirs = DictKey::owned(T(2), &b"profile"[..]);
        let open = DictKey::<T>::open(&b"profile"[..]);
        assert_ne!(mine.position(), theirs.position());
        assert_ne!(mine.position(), open.position());
        // A record T(2) signs for "my" key lands on T(2)'s own key.
        let r = record(&mine, 2, 1, Some(b"x"));
        assert_eq!(r.position(), theirs.position());
        assert_eq!(record(&mine, 1, 1, Some(b"x")).position(), mine.position());
    }

    #[test]
    fn the_greatest_version_then_writer_wins() {
        let k = DictKey::open(&b"k"[..]);
        let a = record(&k, 1, 5, Some(b"a"));
        let b = record(&k, 2, 5, Some(b"b"));
        let c = record(&k, 1, 6, None);
        assert!(b.newer_than(&a));
        assert!(c.newer_than(&b));
        assert!(c.is_deletion());
        assert!(!a.newer_than(&a));
    }
}

/// What replicas compare of a record when they bring each other up to date: its version, and
/// a hash of the whole record (so two records of one version that differ in anything, expiry
/// included, have different stamps).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// The record's version.
    pub version: u64,
    /// The first 8 bytes of the SHA-256 of the record as postcard encodes it.
    pub hash: u64,
}

impl Stamp {
    /// The stamp of a record of `version` whose postcard encoding is `encoded`.
    pub fn of_encoded(version: u64, encoded: &[u8]) -> Stamp {
        let d = Sha256::digest(encoded);
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        Stamp {
            version,
            hash: u64::from_le_bytes(b),
        }
    }
}
