//! Private networks: a 32-byte secret shared by every node of a network.
//!
//! Why this shape: like libp2p's pnet, a node without the secret must not get a connection
//! admitted, but here the secret is used *inside* QUIC instead of wrapping the socket. Each side
//! of a fresh connection sends, before anything else, an HMAC-SHA256 keyed with the secret over
//! a TLS exporter value of this very session, the role (dialer or acceptor) and both node ids
//! (see `network_proof`). The exporter value is unique to the session, so a proof seen on one
//! connection is worthless on any other: it cannot be replayed or relayed, and it reveals
//! nothing about the secret.
//!
//! The network's public [`NetworkName`] (a hash of the secret) goes into the ALPN
//! (`p2ps/<version>/net-<name>`), so that nodes of different networks, or a node without a key,
//! fail fast in the handshake with a clear message. The name is public (tickets carry it); the
//! proof is the gate.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::hmac;
use sha2::{Digest, Sha256};

use crate::identity::NodeId;

/// Length of a network secret in bytes.
pub const NETWORK_KEY_LEN: usize = 32;

/// Domain separation for the public name.
const NAME_DOMAIN: &[u8] = b"p2ps network name";
/// Domain separation for the proof MAC.
const PROOF_DOMAIN: &[u8] = b"p2ps network proof v1";
/// A key file is 64 hex characters and a newline; anything far larger is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Why a network key could not be parsed, loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkKeyError {
    /// The text is not 64 hex characters.
    #[error("a network key is {} hex characters, got {len}", NETWORK_KEY_LEN * 2)]
    InvalidLength {
        /// Length of the rejected text in bytes (surrounding whitespace removed).
        len: usize,
    },
    /// A character is not a hex digit.
    #[error("invalid hex character at position {index} of the network key")]
    InvalidChar {
        /// Byte offset of the first bad character.
        index: usize,
    },
    /// The key file does not exist.
    #[error("network key file {path} does not exist (make one with `p2ps network-key new FILE`)")]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// The path is a directory or another non-regular file.
    #[error("network key path {path} is not a regular file")]
    NotAFile {
        /// The offending path.
        path: PathBuf,
    },
    /// The key file can be read or written by group or other users.
    #[error("network key file {path} has mode {mode:o}; it must not be accessible by group or others (chmod 600)")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold a network key.
    #[error("network key file {path} is not a network key: {source}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its content.
        #[source]
        source: Box<NetworkKeyError>,
    },
    /// `NetworkKey::create` was asked to write over an existing file.
    #[error("network key file {path} already exists; not replacing it")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing the key file failed.
    #[error("network key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The public name of a private network: the first 8 bytes of
/// SHA-256("p2ps network name" || secret), shown as 16 hex characters. Safe to publish (tickets
/// carry it); it only lets a node tell which network a key or a ticket is for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkName([u8; 8]);

impl NetworkName {
    /// The name's bytes.
    pub const fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// A name from its bytes.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkName({self})")
    }
}

impl FromStr for NetworkName {
    type Err = NetworkKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(parse_hex::<8>(s)?))
    }
}

impl serde::Serialize for NetworkName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for NetworkName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <[u8; 8]>::deserialize(deserializer).map(Self)
    }
}

/// Which end of a connection made a proof; part of what is signed, so that a proof cannot be
/// reflected back to its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The node that dialed.
    Dialer,
    /// The node that accepted.
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"d",
            Role::Acceptor => b"a",
        }
    }
}

/// A private network's secret. Every node of the network holds the same one; without it no
/// connection to them gets past admission. `Debug` shows only the public [`NetworkName`].
#[derive(Clone)]
pub struct NetworkKey {
    secret: [u8; NETWORK_KEY_LEN],
    name: NetworkName,
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for NetworkKey {
    fn eq(&self, other: &Self) -> bool {
        // Every byte compared, whatever differs first.
        let diff = self
            .secret
            .iter()
            .zip(other.secret.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl Eq for NetworkKey {}

impl NetworkKey {
    /// The key with these secret bytes.
    pub fn from_bytes(secret: [u8; NETWORK_KEY_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(NAME_DOMAIN)
            .chain_update(secret)
            .finalize();
        let mut name = [0u8; 8];
        name.copy_from_slice(&digest[..8]);
        Self {
            secret,
            name: NetworkName(name),
        }
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Self, NetworkKeyError> {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; NETWORK_KEY_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| NetworkKeyError::Random)?;
        Ok(Self::from_bytes(secret))
    }

    /// Parses the key file format: 64 hex characters, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, NetworkKeyError> {
        parse_hex::<NETWORK_KEY_LEN>(text).map(Self::from_bytes)
    }

    /// The secret as 64 hex characters (the key file's content). Handle with care.
    pub fn secret_hex(&self) -> String {
        self.secret.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The network's public name.
    pub fn name(&self) -> NetworkName {
        self.name
    }

    /// Loads the key file at `path`: a regular file, not accessible by group or others, holding
    /// 64 hex characters (and optionally a newline).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, NetworkKeyError> {
        let path = path.as_ref();
        let io = |source| NetworkKeyError::Io {
            path: path.into(),
            source,
        };
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NetworkKeyError::NotFound { path: path.into() })
            }
            Err(e) => return Err(io(e)),
        };
        if !meta.is_file() {
            return Err(NetworkKeyError::NotAFile { path: path.into() });
        }
        check_permissions(path, &meta)?;
        let malformed = |source| NetworkKeyError::Malformed {
            path: path.into(),
            source: Box::new(source),
        };
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(malformed(NetworkKeyError::InvalidLength {
                len: usize::try_from(meta.len()).unwrap_or(usize::MAX),
            }));
        }
        let bytes = fs::read(path).map_err(io)?;
        let text = String::from_utf8_lossy(&bytes);
        Self::from_hex(&text).map_err(malformed)
    }

    /// Makes a new random key and writes it to `path` with mode 0600. Never replaces an
    /// existing file.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, NetworkKeyError> {
        let path = path.as_ref();
        let key = Self::generate()?;
        let mut file = crate::secret_file::create_new(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                NetworkKeyError::AlreadyExists { path: path.into() }
            } else {
                NetworkKeyError::Io {
                    path: path.into(),
                    source,
                }
            }
        })?;
        let io = |source| NetworkKeyError::Io {
            path: path.into(),
            source,
        };
        file.write_all(format!("{}\n", key.secret_hex()).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(key)
    }

    /// The proof that the `role` end of the session with exporter value `exporter`, node
    /// `sender`, holds this key, addressed to `receiver`.
    pub(crate) fn proof(
        &self,
        exporter: &[u8],
        role: Role,
        sender: &NodeId,
        receiver: &NodeId,
    ) -> hmac::Tag {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret);
        let mut ctx = hmac::Context::with_key(&key);
        for part in proof_parts(exporter, role, sender, receiver) {
            ctx.update(part);
        }
        ctx.sign()
    }

    /// Checks, in constant time, a proof made by [`NetworkKey::proof`] with the same inputs.
    pub(crate) fn verify(
        &self,
        exporter: &[u8],
        role: Role,
        sender: &NodeId,
        receiver: &NodeId,
        proof: &[u8],
    ) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret);
        let mut message = Vec::with_capacity(128);
        for part in proof_parts(exporter, role, sender, receiver) {
            message.extend_from_slice(part);
        }
        hmac::verify(&key, &message, proof).is_ok()
    }
}

/// What a proof covers, in order.
fn proof_parts<'a>(
    exporter: &'a [u8],
    role: Role,
    sender: &'a NodeId,
    receiver: &'a NodeId,
) -> [&'a [u8]; 5] {
    [
        PROOF_DOMAIN,
        exporter,
        role.label(),
        sender.as_bytes(),
        receiver.as_bytes(),
    ]
}

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], NetworkKeyError> {
    let s = text.trim().as_bytes();
    if s.len() != N * 2 {
        return Err(NetworkKeyError::InvalidLength { len: s.len() });
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]).ok_or(NetworkKeyError::InvalidChar { index: 2 * i })?;
        let lo = hex_value(pair[1]).ok_or(NetworkKeyError::InvalidChar { index: 2 * i + 1 })?;
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Refuses a secret file that others than its owner may read (see `secret_file.rs`).
fn check_permissions(path: &Path, meta: &fs::Metadata) -> Result<(), NetworkKeyError> {
    match crate::secret_file::too_open(meta) {
        Some(mode) => Err(NetworkKeyError::InsecurePermissions {
            path: path.into(),
            mode,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = NetworkKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains(&key.name().to_string()), "{shown}");
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let key = NetworkKey::generate().expect("random");
        let back = NetworkKey::from_hex(&format!("{}\n", key.secret_hex())).expect("parses");
        assert_eq!(back, key);
        assert_eq!(back.name(), key.name());
        assert!(matches!(
            NetworkKey::from_hex("abcd"),
            Err(NetworkKeyError::InvalidLength { len: 4 })
        ));
        let mut bad = key.secret_hex();
        bad.replace_range(10..11, "g");
        assert!(matches!(
            NetworkKey::from_hex(&bad),
            Err(NetworkKeyError::InvalidChar { index: 10 })
        ));
        let name = key.name();
        assert_eq!(name.to_string().parse::<NetworkName>().ok(), Some(name));
    }

    #[test]
    fn names_differ_between_keys_and_are_not_the_secret() {
        let a = NetworkKey::from_bytes([1; 32]);
        let b = NetworkKey::from_bytes([2; 32]);
        assert_ne!(a.name(), b.name());
        assert_ne!(&a.name().as_bytes()[..], &[1u8; 8][..]);
    }

    #[test]
    fn proofs_bind_session_role_and_ids() {
        let key = NetworkKey::from_bytes([7; 32]);
        let other = NetworkKey::from_bytes([8; 32]);
        let exporter = [3u8; 32];
        let tag = key.proof(&exporter, Role::Dialer, &id(1), &id(2));
        let tag = tag.as_ref();
        assert!(key.verify(&exporter, Role::Dialer, &id(1), &id(2), tag));
        assert!(!other.verify(&exporter, Role::Dialer, &id(1), &id(2), tag));
        assert!(!key.verify(&[4u8; 32], Role::Dialer, &id(1), &id(2), tag));
        assert!(!key.verify(&exporter, Role::Acceptor, &id(1), &id(2), tag));
        assert!(!key.verify(&exporter, Role::Dialer, &id(2), &id(1), tag));
        assert!(!key.verify(&exporter, Role::Dialer, &id(1), &id(2), &tag[..31]));
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("net.key");
        let key = NetworkKey::create(&path).expect("created");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(NetworkKey::load(&path).expect("loads"), key);
        assert!(matches!(
            NetworkKey::create(&path),
            Err(NetworkKeyError::AlreadyExists { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            NetworkKey::load(&path),
            Err(NetworkKeyError::InsecurePermissions { mode: 0o644, .. })
        ));
        let junk = dir.path().join("junk.key");
        fs::write(&junk, "not a key\n").expect("write");
        fs::set_permissions(&junk, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            NetworkKey::load(&junk),
            Err(NetworkKeyError::Malformed { .. })
        ));
        assert!(matches!(
            NetworkKey::load(dir.path().join("missing")),
            Err(NetworkKeyError::NotFound { .. })
        ));
    }
}
