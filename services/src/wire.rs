//! What nodes send each other: one enum over every protocol, framed by the transport.
//!
//! The protocol version lives in the transport's ALPN (`p2ps/3`): a node speaking another
//! version is refused during the handshake, so variants here never need version checks.
//!
//! [`Wire::Forward`] exists for nodes behind NATs: until a direct (punched) or relayed
//! connection to such a node is up, which can take seconds, its overlay upkeep and lookup
//! answers travel through the node it announced as its relay, which keeps a connection to it.
//! Application payloads never take that way: the relay would read them. The sender signs what
//! it hands the relay (addressee and message), and the addressee checks that signature, so a
//! relay can pass messages on but never forge or alter one.

use crate::id::OverlayId;
use p2ps_overlay::proof::signed_bytes;
use p2ps_overlay::{Class, Message};
use p2ps_transport::Signature;
use serde::{Deserialize, Serialize};

/// A message between two P2PS nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wire {
    /// Overlay upkeep, routing and application payloads.
    Overlay(Message<OverlayId>),
    /// An overlay message for `to`, given to `to`'s relay because the sender has no connection
    /// to `to` yet. The relay passes it on as [`Wire::Forwarded`] if it is connected to `to`.
    Forward {
        /// The addressee.
        to: OverlayId,
        /// The message; never of [`Class::User`].
        msg: Message<OverlayId>,
        /// The sender's signature over `to` and `msg` ([`forward_bytes`]), so that the relay
        /// can neither change the message nor speak as the sender.
        proof: Signature,
    },
    /// An overlay message passed on by this node's relay; `from` is the peer that gave it to
    /// the relay, which `proof` must show.
    Forwarded {
        /// The original sender.
        from: OverlayId,
        /// The message.
        msg: Message<OverlayId>,
        /// The original sender's signature ([`forward_bytes`] with this node as `to`).
        proof: Signature,
    },
}

/// What a forwarded message's signature covers: the addressee and the message.
pub fn forward_bytes(to: &OverlayId, msg: &Message<OverlayId>) -> Vec<u8> {
    signed_bytes("p2ps/forward", &(to, msg))
}

/// Whether `msg` may travel through a relay as [`Wire::Forward`]: overlay upkeep, lookups and
/// tree traffic may (intermediate overlay hops see those anyway); application data may not.
pub fn forwardable(msg: &Message<OverlayId>) -> bool {
    msg.class() != Class::User
}
