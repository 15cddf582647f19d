//! Who a node is: an Ed25519 key pair and the [`NodeId`] derived from it.
//!
//! The node id is the SHA-256 of the raw 32-byte Ed25519 public key. Peers learn it from the TLS
//! certificate presented during the QUIC handshake (see [`crate::tls`]), so an id cannot be
//! claimed without holding the matching private key.
//!
//! The key is kept in a PKCS#8 PEM file so that a node keeps its id across restarts. The file is
//! created exclusively (never clobbering an existing one) with owner-only permissions, and any
//! problem with it (missing directory, corrupt content, another key type, permissions that let
//! other users read it) is reported as a typed [`IdentityError`] rather than silently replaced by
//! a fresh identity.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rcgen::{KeyPair, PKCS_ED25519};
use sha2::{Digest, Sha256};

use crate::error::{IdentityError, ParseNodeIdError};

/// Largest key file we are willing to read: a PKCS#8 Ed25519 PEM is about 120 bytes.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// The identity of a node: SHA-256 of its raw Ed25519 public key.
///
/// `Display` prints the full 64-character lowercase hex form (for users, configuration files and
/// `FromStr`); `Debug` and [`NodeId::short`] print the first 10 hex characters (for logs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Length of the id in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw id bytes (no hashing).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Derives the id of the holder of an Ed25519 public key (raw 32-byte form).
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public_key);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&digest);
        Self(bytes)
    }

    /// The raw id bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Short form for logs: the first 10 hex characters.
    pub fn short(&self) -> ShortNodeId {
        let mut b = [0u8; 5];
        b.copy_from_slice(&self.0[..5]);
        ShortNodeId(b)
    }
}

/// First 10 hex characters of a [`NodeId`], for log lines. Made by [`NodeId::short`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortNodeId([u8; 5]);

impl fmt::Display for ShortNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ShortNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        let hi = HEX[usize::from(b >> 4)] as char;
        let lo = HEX[usize::from(b & 0x0f)] as char;
        write!(f, "{hi}{lo}")?;
    }
    Ok(())
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    /// Parses the full 64-character hex form (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(ParseNodeIdError::InvalidLength { len: s.len() });
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(ParseNodeIdError::InvalidChar { index: 2 * i })?;
            let lo =
                hex_value(pair[1]).ok_or(ParseNodeIdError::InvalidChar { index: 2 * i + 1 })?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl serde::Serialize for NodeId {
    /// Hex string in human-readable formats (JSON, TOML), 32 raw bytes otherwise (postcard).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Self)
        }
    }
}

/// A node's secret Ed25519 key together with its [`NodeId`]. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<IdentityInner>,
}

struct IdentityInner {
    key: KeyPair,
    public_key: [u8; 32],
    node_id: NodeId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret key.
        f.debug_struct("Identity")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh random identity (not stored anywhere).
    pub fn generate() -> Result<Self, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)
            .map_err(|e| IdentityError::KeyGeneration(e.to_string()))?;
        Self::from_key_pair(key).map_err(|reason| IdentityError::KeyGeneration(reason.to_string()))
    }

    /// Parses an identity from a PKCS#8 PEM string holding an Ed25519 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, IdentityError> {
        Self::parse_pem(pem, Path::new("<memory>"))
    }

    /// Loads the identity stored at `path`.
    ///
    /// Fails if the file is missing, unreadable, readable or writable by group or others, not a
    /// PKCS#8 PEM private key, or a key of another type than Ed25519.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::NotFound { path: path.into() })
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        if !meta.is_file() {
            return Err(IdentityError::NotAFile { path: path.into() });
        }
        check_permissions(path, &meta)?;
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(IdentityError::Malformed {
                path: path.into(),
                reason: format!("file is {} bytes, a key file is far smaller", meta.len()),
            });
        }
        let pem = fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::InvalidData {
                IdentityError::Malformed {
                    path: path.into(),
                    reason: "not UTF-8 text (expected a PEM file)".into(),
                }
            } else {
                IdentityError::Io {
                    path: path.into(),
                    source,
                }
            }
        })?;
        Self::parse_pem(&pem, path)
    }

    /// Loads the identity at `path`, or creates a new one there if no file exists.
    ///
    /// A new key file is written with mode 0600 and linked into place atomically without ever
    /// replacing an existing file, so two processes racing on the same path end up with the same
    /// identity. An existing but unusable file is an error, never silently replaced. The parent
    /// directory must exist.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        match fs::symlink_metadata(path) {
            Ok(_) => return Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.into(),
                    source,
                })
            }
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(IdentityError::MissingDirectory { dir });
        }
        let identity = Self::generate()?;
        let pem = identity.inner.key.serialize_pem();
        match write_new_file(&dir, path, pem.as_bytes()) {
            Ok(()) => {
                tracing::info!(node = %identity.node_id().short(), path = %path.display(), "created new node identity");
                Ok(identity)
            }
            // Someone else created it between our check and our link: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(source) => Err(IdentityError::Io {
                path: path.into(),
                source,
            }),
        }
    }

    fn parse_pem(pem: &str, path: &Path) -> Result<Self, IdentityError> {
        if !pem.contains("-----BEGIN PRIVATE KEY-----") {
            return Err(IdentityError::Malformed {
                path: path.into(),
                reason: "no PKCS#8 'PRIVATE KEY' PEM block".into(),
            });
        }
        let key = KeyPair::from_pem(pem).map_err(|e| IdentityError::Malformed {
            path: path.into(),
            reason: e.to_string(),
        })?;
        if key.algorithm() != &PKCS_ED25519 {
            return Err(IdentityError::WrongKeyType {
                path: path.into(),
                found: format!("{:?}", key.algorithm()),
            });
        }
        Self::from_key_pair(key).map_err(|reason| IdentityError::Malformed {
            path: path.into(),
            reason: reason.into(),
        })
    }

    fn from_key_pair(key: KeyPair) -> Result<Self, &'static str> {
        let public_key: [u8; 32] = key
            .public_key_raw()
            .try_into()
            .map_err(|_| "Ed25519 public key is not 32 bytes")?;
        let node_id = NodeId::from_public_key(&public_key);
        Ok(Self {
            inner: Arc::new(IdentityInner {
                key,
                public_key,
                node_id,
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.inner.public_key
    }

    /// The key pair, for certificate generation.
    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.inner.key
    }

    /// The private key as PKCS#8 DER bytes.
    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        self.inner.key.serialize_der()
    }

    /// The private key as PKCS#8 DER, as rustls wants it.
    pub fn private_key_der(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::Pkcs8(self.inner.key.serialize_der().into())
    }
}

/// Refuses a secret file that others than its owner may read (see `secret_file.rs`).
fn check_permissions(path: &Path, meta: &fs::Metadata) -> Result<(), IdentityError> {
    match crate::secret_file::too_open(meta) {
        Some(mode) => Err(IdentityError::InsecurePermissions {
            path: path.into(),
            mode,
        }),
        None => Ok(()),
    }
}

/// Writes `data` to a fresh temporary file (mode 0600) in `dir`, then hard-links it to `path`,
/// which fails with `AlreadyExists` instead of replacing an existing file.
fn write_new_file(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut file = crate::secret_file::create_new(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::hard_link(&tmp, path)
    })();
    // The temporary name is ours alone; remove it whatever happened.
    let _ = fs::remove_file(&tmp);
    result?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = Identity::generate().unwrap().node_id();
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short().to_string(), s[..10]);
        assert_eq!(format!("{id:?}"), format!("NodeId({})", &s[..10]));
    }

    #[test]
    fn parse_errors_are_typed() {
        assert_eq!(
            "abc".parse::<NodeId>(),
            Err(ParseNodeIdError::InvalidLength { len: 3 })
        );
        let mut s = "0".repeat(64);
        s.replace_range(7..8, "g");
        assert_eq!(
            s.parse::<NodeId>(),
            Err(ParseNodeIdError::InvalidChar { index: 7 })
        );
    }

    #[test]
    fn node_id_is_sha256_of_public_key() {
        let identity = Identity::generate().unwrap();
        let digest = Sha256::digest(identity.public_key());
        assert_eq!(identity.node_id().as_bytes().as_slice(), digest.as_slice());
    }

    #[test]
    fn serde_forms() {
        let id = Identity::generate().unwrap().node_id();
        let bin = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bin.as_slice(), id.as_bytes().as_slice());
        assert_eq!(postcard::from_bytes::<NodeId>(&bin).unwrap(), id);
    }

    #[test]
    fn pem_round_trip_keeps_id() {
        let identity = Identity::generate().unwrap();
        let pem = identity.key_pair().serialize_pem();
        let again = Identity::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.node_id(), identity.node_id());
    }

    #[test]
    fn other_key_types_are_refused() {
        let ecdsa = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        match Identity::from_pkcs8_pem(&ecdsa.serialize_pem()) {
            Err(IdentityError::WrongKeyType { .. }) => {}
            other => panic!("expected WrongKeyType, got {other:?}"),
        }
    }
}
