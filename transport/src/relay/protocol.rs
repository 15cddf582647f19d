//! The circuit protocol, spoken on bidirectional streams of the ordinary authenticated QUIC
//! connections between a node and its relay.
//!
//! Every bidirectional stream starts with one tag byte written by its opener: `TAG_RAW` for
//! application streams (`Transport::open_bi`), `TAG_CONNECT` for a circuit request to a relay,
//! `TAG_INCOMING` for a relay announcing a circuit. Set-up (A wants B, through relay R):
//!
//! ```text
//! A -> R  TAG_CONNECT  Header(Connect { target: B })
//! R -> B  TAG_INCOMING Header(Incoming { from: A, limits })
//! B -> R               Header(Accepted | Refused { reason })
//! R -> A               Header(Accepted { limits } | Refused { code, reason })
//! ```
//!
//! A header is a 2-byte big-endian length (at most `MAX_HEADER`) and a postcard body. After
//! `Accepted` both streams carry the end-to-end QUIC packets of A and B, each as a 2-byte
//! big-endian length and the packet. R copies bytes between the two streams without parsing them.
//! A relay ends a circuit by resetting and stopping both streams with a [`CircuitEnd`] code.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::identity::NodeId;
use crate::relay::limits::CircuitLimits;

/// Tag of an application (raw) bidirectional stream.
pub(crate) const TAG_RAW: u8 = 0x00;
/// Tag of a circuit request from an end to a relay.
pub(crate) const TAG_CONNECT: u8 = 0x10;
/// Tag of a circuit announcement from a relay to the target.
pub(crate) const TAG_INCOMING: u8 = 0x11;

/// Largest header body.
pub(crate) const MAX_HEADER: usize = 1024;

/// Request of an end to a relay.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ConnectRequest {
    /// Open a circuit to `target`.
    Connect {
        /// The target's node id bytes.
        target: [u8; 32],
    },
}

/// A relay's answer to a [`ConnectRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ConnectReply {
    /// The target accepted; packets flow from now on, within `limits`.
    Accepted {
        /// The circuit's limits.
        limits: CircuitLimits,
    },
    /// No circuit.
    Refused {
        /// Why, for programs.
        code: RefuseCode,
        /// Why, for people.
        reason: String,
    },
}

/// A relay announcing a circuit to its target.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IncomingCircuit {
    /// The node id bytes of the node that asked for the circuit.
    pub(crate) from: [u8; 32],
    /// The circuit's limits.
    pub(crate) limits: CircuitLimits,
}

/// The target's answer to an [`IncomingCircuit`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum IncomingReply {
    /// Packets may flow.
    Accepted,
    /// The target does not take the circuit.
    Refused {
        /// Why, for people.
        reason: String,
    },
}

/// Why a relay refused a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseCode {
    /// The node does not serve as a relay.
    NotServing,
    /// The target is not connected to the relay.
    TargetNotConnected,
    /// A relay limit (circuits in total or per peer) is reached.
    LimitExceeded,
    /// The target refused the circuit (or did not answer in time).
    TargetRefused,
    /// The request made no sense (circuit to oneself or to the relay).
    BadRequest,
}

/// Why a circuit ended. Relays send the codes of the first four when they end a circuit (the
/// others are seen locally); both ends report it (logs, `DisconnectReason::Relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitEnd {
    /// The relay's byte limit for the circuit was reached.
    ByteLimit,
    /// The relay's duration limit for the circuit was reached.
    DurationLimit,
    /// The other end closed the circuit.
    PeerClosed,
    /// An end sent something the relay could not parse.
    Malformed,
    /// The connection to the relay was lost.
    RelayConnectionLost,
    /// The circuit was never used by a QUIC connection within the connect timeout.
    Unused,
    /// This end closed it (its connection over the circuit ended).
    Closed,
    /// A code this version does not know.
    Other(u64),
}

impl CircuitEnd {
    /// The stream error code on the wire.
    pub fn to_u64(self) -> u64 {
        match self {
            CircuitEnd::ByteLimit => 0x100,
            CircuitEnd::DurationLimit => 0x101,
            CircuitEnd::PeerClosed => 0x102,
            CircuitEnd::Malformed => 0x103,
            CircuitEnd::RelayConnectionLost => 0x105,
            CircuitEnd::Unused => 0x106,
            CircuitEnd::Closed => 0x107,
            CircuitEnd::Other(n) => n,
        }
    }

    /// Decodes a stream error code.
    pub fn from_u64(n: u64) -> Self {
        match n {
            // Streams dropped without an explicit code (an end that went away).
            0 => CircuitEnd::PeerClosed,
            0x100 => CircuitEnd::ByteLimit,
            0x101 => CircuitEnd::DurationLimit,
            0x102 => CircuitEnd::PeerClosed,
            0x103 => CircuitEnd::Malformed,
            0x105 => CircuitEnd::RelayConnectionLost,
            0x106 => CircuitEnd::Unused,
            0x107 => CircuitEnd::Closed,
            n => CircuitEnd::Other(n),
        }
    }

    pub(crate) fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u64(self.to_u64()).unwrap_or(quinn::VarInt::MAX)
    }
}

impl std::fmt::Display for CircuitEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CircuitEnd::ByteLimit => f.write_str("relay byte limit reached"),
            CircuitEnd::DurationLimit => f.write_str("relay duration limit reached"),
            CircuitEnd::PeerClosed => f.write_str("the other end closed the circuit"),
            CircuitEnd::Malformed => f.write_str("malformed circuit data"),
            CircuitEnd::RelayConnectionLost => f.write_str("connection to the relay lost"),
            CircuitEnd::Unused => f.write_str("circuit unused"),
            CircuitEnd::Closed => f.write_str("closed by this end"),
            CircuitEnd::Other(n) => write!(f, "unknown circuit end code {n:#x}"),
        }
    }
}

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("stream ended or failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("header of {0} bytes exceeds {MAX_HEADER}")]
    TooLarge(usize),
    #[error("undecodable header: {0}")]
    Decode(#[from] postcard::Error),
    #[error("no header within {0:?}")]
    TimedOut(Duration),
}

/// Encodes a header (length and body).
pub(crate) fn encode_header<T: Serialize>(msg: &T) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_allocvec(msg)?;
    let len = u16::try_from(body.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads one header, within `timeout`.
pub(crate) async fn read_header<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    timeout: Duration,
) -> Result<T, HeaderError> {
    let read = async {
        let mut len = [0u8; 2];
        recv.read_exact(&mut len).await?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_HEADER {
            return Err(HeaderError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await?;
        decode_header_body(&body)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| HeaderError::TimedOut(timeout))?
}

/// Decodes a header's body (what follows its length): exactly one message.
pub(crate) fn decode_header_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, HeaderError> {
    let (msg, rest) = postcard::take_from_bytes::<T>(body)?;
    if !rest.is_empty() {
        return Err(HeaderError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(msg)
}

/// The node id in a header.
pub(crate) fn node_id(bytes: [u8; 32]) -> NodeId {
    NodeId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_codes_round_trip() {
        for e in [
            CircuitEnd::ByteLimit,
            CircuitEnd::DurationLimit,
            CircuitEnd::PeerClosed,
            CircuitEnd::Malformed,
            CircuitEnd::RelayConnectionLost,
            CircuitEnd::Unused,
            CircuitEnd::Closed,
            CircuitEnd::Other(7),
        ] {
            assert_eq!(CircuitEnd::from_u64(e.to_u64()), e);
        }
    }

    #[test]
    fn header_is_length_prefixed_postcard() {
        let h = encode_header(&ConnectRequest::Connect { target: [7; 32] }).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([h[0], h[1]])), h.len() - 2);
        let (ConnectRequest::Connect { target }, rest) =
            postcard::take_from_bytes::<ConnectRequest>(&h[2..]).unwrap();
        assert!(rest.is_empty());
        assert_eq!(target, [7; 32]);
    }
}
