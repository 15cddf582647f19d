//! Typed errors, one enum per operation, every variant documented.
//!
//! Callers match on these to decide what to do (retry later, pick another address, report a
//! configuration mistake to the user), so none of them is a bag of strings except where the
//! underlying library only gives text.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::class::StreamClass;
use crate::event::CloseCode;
use crate::identity::NodeId;

/// Why a string is not a [`NodeId`] (expected: 64 hex characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseNodeIdError {
    /// The string is not 64 characters long.
    #[error("a node id is 64 hex characters, got {len}")]
    InvalidLength {
        /// Length of the rejected string in bytes.
        len: usize,
    },
    /// A character is not a hex digit.
    #[error("invalid hex character at position {index} of the node id")]
    InvalidChar {
        /// Byte offset of the first bad character.
        index: usize,
    },
}

/// Why an identity could not be generated, loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The directory that should hold the key file does not exist (it is not created for you, so
    /// that a typo in a path does not silently give the node a new identity).
    #[error("directory {dir} for the key file does not exist")]
    MissingDirectory {
        /// The missing directory.
        dir: PathBuf,
    },
    /// `Identity::load` was asked for a file that does not exist.
    #[error("key file {path} does not exist")]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// The path exists but is a directory or another non-regular file.
    #[error("key path {path} is not a regular file")]
    NotAFile {
        /// The offending path.
        path: PathBuf,
    },
    /// The key file can be read or written by group or other users. Fix with `chmod 600`.
    #[error("key file {path} has mode {mode:o}; it must not be accessible by group or others (chmod 600)")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a PKCS#8 PEM private key (corrupt, truncated, or another format).
    #[error("key file {path} is not a PKCS#8 PEM private key: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file holds a valid private key of another type than Ed25519.
    #[error("key file {path} holds a {found} key; P2PS node keys are Ed25519")]
    WrongKeyType {
        /// The key file.
        path: PathBuf,
        /// The algorithm that was found.
        found: String,
    },
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },
    /// The system random number generator or the key generator failed.
    #[error("could not generate an Ed25519 key: {0}")]
    KeyGeneration(String),
}

/// Why a peer certificate was refused (see [`crate::tls::verify_peer_certificate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerCertificateError {
    /// The peer presented no certificate.
    #[error("no certificate presented")]
    Missing,
    /// The certificate is not valid DER X.509.
    #[error("certificate does not parse: {0}")]
    Unparsable(String),
    /// Bytes follow the certificate's DER encoding.
    #[error("trailing bytes after the certificate")]
    TrailingData,
    /// The peer sent a chain; P2PS certificates are self-signed, intermediates are refused.
    #[error(
        "{0} intermediate certificates sent; only a single self-signed certificate is accepted"
    )]
    IntermediatesNotAllowed(usize),
    /// The subject public key is not an Ed25519 key.
    #[error("subject public key is not Ed25519")]
    NotEd25519Key,
    /// The certificate is not signed with Ed25519.
    #[error("certificate signature algorithm is not Ed25519")]
    NotEd25519Signature,
    /// Issuer and subject names differ: the certificate is not self-issued.
    #[error("certificate is not self-issued (issuer differs from subject)")]
    NotSelfIssued,
    /// The self-signature does not verify with the certificate's own public key.
    #[error("certificate self-signature is invalid")]
    BadSelfSignature,
    /// The current time is outside the certificate's validity period.
    #[error("certificate is not valid at this time (valid from {not_before} to {not_after}, unix seconds; now {now})")]
    Expired {
        /// Start of validity, unix seconds.
        not_before: i64,
        /// End of validity, unix seconds.
        not_after: i64,
        /// The time used for the check, unix seconds.
        now: i64,
    },
    /// The certificate carries an unknown extension marked critical.
    #[error("certificate has an unsupported critical extension")]
    UnsupportedCriticalExtension,
}

/// Why a [`crate::TransportConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is outside its allowed range.
    #[error("invalid transport setting `{field}`: {reason}")]
    Invalid {
        /// Name of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why [`crate::Transport::bind`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The self-signed certificate could not be made from the identity.
    #[error("could not create the node certificate: {0}")]
    Certificate(String),
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The UDP socket could not be bound. (The operating system's reason is the error's
    /// `source`, not repeated in its message: a chain of causes names it once.)
    #[error("could not bind UDP socket on {addr}")]
    Io {
        /// The requested address.
        addr: SocketAddr,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },
    /// There is no tokio runtime to run the endpoint on.
    #[error("Transport::bind must be called inside a tokio runtime")]
    NoRuntime,
}

/// Why a connection to a peer could not be established.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The transport is shutting down or shut down.
    #[error("transport is shut down")]
    ShuttingDown,
    /// A node cannot connect to itself.
    #[error("cannot connect to our own node id")]
    SelfConnect,
    /// No address is known for the peer (see `Transport::add_addresses`).
    #[error("no address known for peer {peer}")]
    NoAddress {
        /// The peer.
        peer: NodeId,
    },
    /// This node already has `max_connections` connections.
    #[error("connection limit of {limit} reached")]
    TooManyConnections {
        /// The configured limit.
        limit: usize,
    },
    /// quinn refused to start the dial (for example an unusable address).
    #[error("cannot dial {addr}: {source}")]
    Dial {
        /// The address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectError,
    },
    /// The node at the address proved a different identity than the one we dialed.
    #[error("peer at {addr} is {actual}, expected {expected}")]
    PeerIdMismatch {
        /// The address dialed.
        addr: SocketAddr,
        /// The node id we wanted.
        expected: NodeId,
        /// The node id the peer proved.
        actual: NodeId,
    },
    /// We refused the peer's certificate (not a valid P2PS certificate, or a bad handshake
    /// signature, i.e. the peer does not hold the key of the certificate it presented).
    #[error("refused the certificate of {addr}: {reason}")]
    BadPeerCertificate {
        /// The address dialed.
        addr: SocketAddr,
        /// rustls' and our verifier's reason.
        reason: String,
    },
    /// The peer refused the connection before the handshake (its connection limit, or it is
    /// shutting down).
    #[error("{addr} refused the connection")]
    Refused {
        /// The address dialed.
        addr: SocketAddr,
    },
    /// The peer closed the connection with a P2PS close code during or right after setup.
    #[error("{addr} closed the connection: {code:?} ({reason})")]
    Closed {
        /// The address dialed.
        addr: SocketAddr,
        /// The peer's close code.
        code: CloseCode,
        /// The peer's reason text.
        reason: String,
    },
    /// The peer does not speak our protocol version (ALPN `p2ps/<version>` was not negotiated).
    #[error("{addr} does not speak {protocol}: {reason}")]
    Protocol {
        /// The address dialed.
        addr: SocketAddr,
        /// The protocol we asked for.
        protocol: String,
        /// What went wrong.
        reason: String,
    },
    /// The peer is reachable but not in our private network, or we are not in its: the network
    /// proof exchange after the handshake failed (see [`crate::NetworkKey`]).
    #[error("{addr} is not in private network {network}: {source}")]
    NetworkKey {
        /// The address dialed.
        addr: SocketAddr,
        /// Our network's public name.
        network: crate::NetworkName,
        /// What went wrong.
        #[source]
        source: crate::NetworkProofError,
    },
    /// No answer within the handshake timeout.
    #[error("connecting to {addr} timed out")]
    TimedOut {
        /// The address dialed.
        addr: SocketAddr,
    },
    /// The handshake failed for another reason (TLS alert from the peer, transport error).
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The address dialed.
        addr: SocketAddr,
        /// quinn's error.
        #[source]
        source: quinn::ConnectionError,
    },
    /// Every known address of the peer failed; `last` is the error of the last one.
    #[error("all {attempts} addresses of {peer} failed, last: {last}")]
    AllAddressesFailed {
        /// The peer.
        peer: NodeId,
        /// How many addresses were tried.
        attempts: usize,
        /// The error from the last address.
        last: Box<ConnectError>,
    },
}

/// Why a message could not be framed or a received frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The encoded message is larger than the maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Body length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// postcard could not encode the message.
    #[error("cannot encode message: {0}")]
    Encode(#[source] postcard::Error),
    /// The frame body is not a valid postcard encoding of the message type.
    #[error("cannot decode frame: {0}")]
    Decode(#[source] postcard::Error),
    /// The frame body decoded but left unread bytes.
    #[error("{0} trailing bytes after the message in the frame")]
    TrailingBytes(usize),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
}

/// Why [`crate::Transport::send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message could not be framed (too large, or not serializable).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Not connected and no address known for the peer.
    #[error("not connected to {peer} and no address known")]
    NoAddress {
        /// The peer.
        peer: NodeId,
    },
    /// A node does not send to itself.
    #[error("cannot send to our own node id")]
    SelfSend,
    /// The transport is shutting down.
    #[error("transport is shut down")]
    ShuttingDown,
    /// The peer disconnected (or its dial failed) while the message waited for queue room.
    #[error("peer {peer} disconnected before the message was queued")]
    Disconnected {
        /// The peer.
        peer: NodeId,
    },
}

/// Why [`crate::Transport::try_send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The peer's queue for this class has no room for the frame right now.
    #[error("send queue to {peer} for {class:?} is full")]
    QueueFull {
        /// The peer.
        peer: NodeId,
        /// The traffic class.
        class: StreamClass,
    },
    /// Any of the reasons `send` can fail for.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Why [`crate::Transport::open_bi`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// Not connected and the on-demand dial failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection was lost while opening the stream.
    #[error("connection to {peer} lost: {source}")]
    ConnectionLost {
        /// The peer.
        peer: NodeId,
        /// quinn's error.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The new stream could not be written to (the peer stopped it at once).
    #[error("stream to {peer} refused: {source}")]
    StreamRefused {
        /// The peer.
        peer: NodeId,
        /// quinn's error.
        #[source]
        source: quinn::WriteError,
    },
}
