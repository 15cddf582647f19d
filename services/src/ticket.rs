//! Tickets: a node's id and addresses in one copy-pasteable string, used to join a network
//! through that node.
//!
//! Form: `p2ps1` followed by lowercase base32 (no padding) of the postcard encoding of the id
//! and addresses, then a 4-byte SHA-256 checksum, so that a truncated or mistyped ticket is
//! refused with a clear error instead of dialing the wrong node.
//!
//! A ticket of a private network also carries the network's public name (never its key), after
//! the id and addresses: tag [`NETWORK_EXTENSION`] and the name's 8 bytes. Tickets of open
//! networks are byte for byte what they were before, and old tickets still parse.

use p2ps_transport::{NetworkName, NodeId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use thiserror::Error;

const PREFIX: &str = "p2ps1";
const CHECKSUM_LEN: usize = 4;
/// Addresses a ticket may carry.
pub const MAX_TICKET_ADDRS: usize = 8;
/// Tag of the optional extension after the id and addresses that names the private network.
pub const NETWORK_EXTENSION: u8 = 0x01;

/// How to reach a node: its id and the addresses it listens on.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ticket {
    /// The node's id (its authenticated identity).
    pub id: NodeId,
    /// Addresses to dial, most preferred first.
    pub addrs: Vec<SocketAddr>,
    /// The public name of the node's private network; `None` for an open network.
    #[serde(default)]
    pub network: Option<NetworkName>,
}

/// The part of a ticket every version encodes, as written.
#[derive(Serialize)]
struct BaseRef<'a> {
    id: NodeId,
    addrs: &'a [SocketAddr],
}

/// The part of a ticket every version encodes, as read.
#[derive(Deserialize)]
struct Base {
    id: NodeId,
    addrs: Vec<SocketAddr>,
}

/// Why a string is not a ticket.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketError {
    /// It does not start with `p2ps1`.
    #[error("not a P2PS ticket: it should start with \"{PREFIX}\"")]
    Prefix,
    /// Characters outside the ticket alphabet.
    #[error("ticket has characters that are not base32: {0}")]
    Encoding(String),
    /// Too short to hold a checksum.
    #[error("ticket is truncated")]
    Truncated,
    /// The checksum does not match: the ticket was cut or mistyped.
    #[error("ticket checksum does not match (truncated or mistyped ticket)")]
    Checksum,
    /// The content does not decode.
    #[error("ticket content is malformed: {0}")]
    Content(String),
    /// No address to dial.
    #[error("ticket has no address")]
    NoAddress,
    /// More addresses than a ticket may carry.
    #[error("ticket has {0} addresses, at most {MAX_TICKET_ADDRS} are allowed")]
    TooManyAddresses(usize),
}

impl Ticket {
    /// A ticket for `id` at `addrs`, in an open network.
    pub fn new(id: NodeId, addrs: Vec<SocketAddr>) -> Self {
        Ticket {
            id,
            addrs,
            network: None,
        }
    }

    /// The same ticket for the private network named `network` (`None`: an open network).
    #[must_use]
    pub fn with_network(mut self, network: Option<NetworkName>) -> Self {
        self.network = network;
        self
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = BaseRef {
            id: self.id,
            addrs: &self.addrs,
        };
        let mut bytes = postcard::to_stdvec(&base).map_err(|_| fmt::Error)?;
        if let Some(name) = self.network {
            bytes.push(NETWORK_EXTENSION);
            bytes.extend_from_slice(name.as_bytes());
        }
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        let body = data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase();
        write!(f, "{PREFIX}{body}")
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, TicketError> {
        let s = s.trim();
        let body = s.strip_prefix(PREFIX).ok_or(TicketError::Prefix)?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|e| match e.kind {
                data_encoding::DecodeKind::Length | data_encoding::DecodeKind::Trailing => {
                    TicketError::Truncated
                }
                _ => TicketError::Encoding(e.to_string()),
            })?;
        if bytes.len() <= CHECKSUM_LEN {
            return Err(TicketError::Truncated);
        }
        let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(content)[..CHECKSUM_LEN] != *sum {
            return Err(TicketError::Checksum);
        }
        let (base, rest): (Base, &[u8]) =
            postcard::take_from_bytes(content).map_err(|e| TicketError::Content(e.to_string()))?;
        let network = match rest {
            [] => None,
            [NETWORK_EXTENSION, name @ ..] => {
                let name: [u8; 8] = name.try_into().map_err(|_| {
                    TicketError::Content(format!(
                        "the network name is {} bytes, expected 8",
                        name.len()
                    ))
                })?;
                Some(NetworkName::from_bytes(name))
            }
            [tag, ..] => {
                return Err(TicketError::Content(format!(
                    "unknown extension {tag:#04x} after the addresses"
                )))
            }
        };
        let t = Ticket {
            id: base.id,
            addrs: base.addrs,
            network,
        };
        if t.addrs.is_empty() {
            return Err(TicketError::NoAddress);
        }
        if t.addrs.len() > MAX_TICKET_ADDRS {
            return Err(TicketError::TooManyAddresses(t.addrs.len()));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket::new(
            NodeId::from_bytes([42; 32]),
            vec![
                "127.0.0.1:4433".parse().unwrap(),
                "[::1]:5000".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn round_trips() {
        let t = sample();
        let s = t.to_string();
        assert!(s.starts_with("p2ps1"));
        assert!(s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(s.parse::<Ticket>().unwrap(), t);
        assert_eq!(
            format!("  {}\n", s.to_uppercase().replace("P2PS1", "p2ps1"))
                .parse::<Ticket>()
                .unwrap(),
            t
        );
    }

    #[test]
    fn bad_tickets_give_clear_errors() {
        let s = sample().to_string();
        assert_eq!("hello".parse::<Ticket>(), Err(TicketError::Prefix));
        assert_eq!("p2ps1".parse::<Ticket>(), Err(TicketError::Truncated));
        for cut in [1, 3, 8, 20] {
            let r = s[..s.len() - cut].parse::<Ticket>();
            assert!(
                matches!(r, Err(TicketError::Truncated | TicketError::Checksum)),
                "cut {cut}: {r:?}"
            );
        }
        // One character changed.
        let mut chars: Vec<char> = s.chars().collect();
        let i = 12;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(typo.parse::<Ticket>(), Err(TicketError::Checksum));
        assert!(matches!(
            "p2ps1!!!!".parse::<Ticket>(),
            Err(TicketError::Encoding(_))
        ));
        let empty = Ticket::new(NodeId::from_bytes([1; 32]), vec![]).to_string();
        assert_eq!(empty.parse::<Ticket>(), Err(TicketError::NoAddress));
    }

    /// A ticket as the version before network names wrote it (postcard of id and addresses).
    fn old_encoding(t: &Ticket) -> String {
        #[derive(Serialize)]
        struct Old<'a> {
            id: NodeId,
            addrs: &'a Vec<SocketAddr>,
        }
        let mut bytes = postcard::to_stdvec(&Old {
            id: t.id,
            addrs: &t.addrs,
        })
        .unwrap();
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        let body = data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase();
        format!("{PREFIX}{body}")
    }

    #[test]
    fn network_names_round_trip_and_old_tickets_still_parse() {
        let open = sample();
        // Open networks: the same string as before.
        assert_eq!(open.to_string(), old_encoding(&open));
        assert_eq!(old_encoding(&open).parse::<Ticket>().unwrap(), open);
        let name = NetworkName::from_bytes([9, 8, 7, 6, 5, 4, 3, 2]);
        let private = sample().with_network(Some(name));
        let s = private.to_string();
        assert_ne!(s, open.to_string());
        let back = s.parse::<Ticket>().unwrap();
        assert_eq!(back.network, Some(name));
        assert_eq!(back, private);
    }

    #[test]
    fn bad_extensions_are_refused() {
        let with_tail = |tail: &[u8]| {
            let t = sample();
            let mut bytes = postcard::to_stdvec(&BaseRef {
                id: t.id,
                addrs: &t.addrs,
            })
            .unwrap();
            bytes.extend_from_slice(tail);
            let sum = Sha256::digest(&bytes);
            bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
            let body = data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase();
            format!("{PREFIX}{body}").parse::<Ticket>()
        };
        assert!(matches!(
            with_tail(&[NETWORK_EXTENSION, 1, 2]),
            Err(TicketError::Content(_))
        ));
        assert!(matches!(
            with_tail(&[NETWORK_EXTENSION, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            Err(TicketError::Content(_))
        ));
        assert!(matches!(
            with_tail(&[0x7f, 1]),
            Err(TicketError::Content(_))
        ));
        assert!(with_tail(&[NETWORK_EXTENSION, 1, 2, 3, 4, 5, 6, 7, 8]).is_ok());
    }
}
