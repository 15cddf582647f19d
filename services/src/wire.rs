//! What nodes send each other: one enum over every protocol, framed by the transport.
//!
//! The protocol version lives in the transport's ALPN (`p2ps/1`): a node speaking another
//! version is refused during the handshake, so variants here never need version checks.

use crate::id::OverlayId;
use serde::{Deserialize, Serialize};

/// A message between two P2PS nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wire {
    /// Overlay upkeep, routing and application payloads.
    Overlay(p2ps_overlay::Message<OverlayId>),
}
