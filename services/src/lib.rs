//! P2PS: run a node of the Tango overlay over authenticated QUIC, and use it.
//!
//! [`Node`] is the entry point: start it with a [`NodeConfig`], then create a network or join
//! one through a [`Ticket`], and send, route, look up, broadcast, multicast to a key range or a
//! named group, receive and watch events. Inside, one actor task owns the sans-IO overlay state
//! machine ([`p2ps_overlay::Node`]) and drives it with the QUIC transport
//! ([`p2ps_transport::Transport`]).
//!
//! # Services of your own
//!
//! Everything above is built from services on the overlay's open service layer
//! ([`p2ps_overlay::service`]): plain messages, broadcast and range multicast, groups. An
//! application adds its own the same way: write a sans-IO state machine that implements
//! [`p2ps_overlay::service::Service`] (its hooks: deliveries, messages passing through, one-hop
//! messages, neighbour changes, failures, timers, leaving; its context: route, send,
//! `replica_set`) and [`p2ps_overlay::service::Emits`] (what it tells the application), register
//! it with [`NodeBuilder::service`] on every node, and use the [`ServiceHandle`] it returns.
//! `services/examples/replicated_counter.rs` is a complete one, run with
//! `cargo run -p p2ps --example replicated_counter`.
//!
//! Module map: [`config`] (settings), [`ticket`] (join tickets), [`id`] (ring positions of nodes
//! and keys), [`delivery`] (what the application receives), [`event`] (what subscribers are
//! told), [`report`] (answers to lookups and casts), [`status`] (monitoring snapshot),
//! [`wire`] (what nodes send each other), [`error`]; the handles are in `node`, `builder` and
//! `service_handle`, the actor in `runtime`.

mod advertise;
mod builder;
pub mod config;
pub mod delivery;
mod dict_handle;
pub mod error;
pub mod event;
pub mod group_key;
pub mod id;
pub mod metrics;
mod node;
pub mod node_watch;
pub mod report;
mod runtime;
mod service_handle;
pub mod status;
pub mod ticket;
pub mod wire;

pub use builder::NodeBuilder;
pub use config::NodeConfig;
pub use delivery::{Delivery, Via};
pub use dict_handle::{DictHandle, KeyWatch};
pub use error::{JoinError, LookupError, NodeError, StartError};
pub use event::{JoinStep, NodeEvent};
pub use id::{group_key, key_of, KeySigner, OverlayId};
pub use metrics::Metrics;
pub use node::Node;
pub use node_watch::{NodeWatch, NodeWatchEvent};
pub use p2ps_census as census;
pub use p2ps_census::Report as CensusReport;
pub use p2ps_dict as dict;
pub use p2ps_overlay::{Dir, FingerStrategy, LookupMode, RingId};
pub use p2ps_transport::{Identity, NodeId};
pub use p2ps_watcher as watcher;
pub use report::{CastReport, GroupReport, LookupResult};
pub use runtime::wall_clock;
pub use service_handle::ServiceHandle;
pub use status::{NodeState, PortMapping, Reachability, Status};
pub use ticket::{Ticket, TicketError};
