//! P2PS: run a node of the Tango overlay over authenticated QUIC, and use it.
//!
//! [`Node`] is the one entry point: start it with a [`NodeConfig`], then create a network or
//! join one through a [`Ticket`], and send, route, look up, broadcast, multicast to a key range
//! or a named group, receive and watch events. Inside,
//! one actor task owns the sans-IO overlay state machine ([`p2ps_overlay::Node`]) and drives it
//! with the QUIC transport ([`p2ps_transport::Transport`]); see the `runtime` module.
//!
//! Module map: [`config`] (settings), [`ticket`] (join tickets), [`id`] (ring positions of nodes
//! and keys), [`status`] (monitoring snapshot), [`wire`] (what nodes send each other), [`error`].

pub mod config;
pub mod error;
pub mod id;
mod node;
mod runtime;
pub mod status;
pub mod ticket;
pub mod wire;

pub use config::NodeConfig;
pub use error::{JoinError, LookupError, NodeError, StartError};
pub use id::{group_key, key_of, KeySigner, OverlayId};
pub use node::{Message, Node, NodeEvent, Via};
pub use p2ps_overlay::{Dir, FingerStrategy, LookupMode, RingId};
pub use p2ps_transport::{Identity, NodeId};
pub use runtime::{wall_clock, CastReport, LookupResult};
pub use status::{NodeState, PortMapping, Reachability, Status};
pub use ticket::{Ticket, TicketError};
