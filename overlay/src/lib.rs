//! The Tango overlay of P2PS as a deterministic, sans-IO state machine.
//!
//! Tango is a Chord-family ring DHT whose fingers sit at distances 1, 4, 12, 36, … in both
//! directions, so the same table size gives fewer hops than Chord. This crate holds the protocol
//! and nothing else: no sockets, no async runtime, no clock. [`Node`] takes inputs (a message from
//! a peer, a timer, a link going down, an application command, each with `now`) and produces
//! outputs (send, disconnect, deliver, event, next deadline). The QUIC runtime drives it in
//! production; the [`sim`] module drives the very same code for 100 000+ nodes.
//!
//! Where things are:
//! - [`ring`]: ring positions and interval arithmetic;
//! - [`strategy`]: finger placement (Tango, Chord, Tango+);
//! - [`routing_table`]: successor/predecessor lists, finger slots, next-hop choice;
//! - [`message`]: wire messages, the signed envelope, and traffic classes;
//! - [`proof`]: how nodes sign what they say and how receivers check it;
//! - [`adjacency`]: a node's signed word that its successor follows it, which lookup answers
//!   carry as proof of responsibility;
//! - [`node`]: the state machine (joins, leaves, stabilisation, fingers, routing), with
//!   contact records and the evidence rule in `node/records.rs`, lookups and signed answers in
//!   `node/requests.rs`, rejoining after isolation in `node/heal.rs`, broadcast and range
//!   multicast in `node/cast.rs` and group trees in `node/groups.rs`;
//! - [`segment`]: ring segments and the midpoint split that gives broadcast its disjoint pieces;
//! - [`truth`]: the ring as it should be (who is responsible for a key, the true successors and
//!   predecessors), which the simulator, the demo and the tests judge nodes against;
//! - [`sim`] (feature `sim`): the discrete-event simulator and the stable-ring fast path.

pub mod adjacency;
pub mod cast;
pub mod cast_policy;
pub mod config;
pub mod groups;
pub mod message;
pub mod messaging;
pub mod node;
pub mod peer;
pub mod proof;
pub mod rate;
pub mod ring;
pub mod rng;
pub mod routing_table;
pub mod seen;
pub mod segment;
pub mod service;
pub mod standard;
pub mod strategy;
pub mod time;
pub mod truth;

#[cfg(feature = "sim")]
pub mod sim;

pub use adjacency::Adjacency;
pub use config::{Config, ConfigError, LookupMode};
pub use message::{
    Answer, Body, Class, Envelope, Message, PassBack, Query, Routed, Sealed, ServiceMessage,
};
pub use node::{CommandError, Event, LookupError, Node, NodeStats, Output, RegisterError, State};
pub use peer::{Contact, Peer, PeerId, RelayHint};
pub use proof::{Signer, StandIn, StandInProof};
pub use ring::{Dir, RingId};
pub use routing_table::{ListChange, NextHop, RoutingTable};
pub use segment::Segment;
pub use strategy::FingerStrategy;
pub use time::Time;
pub use truth::TrueRing;
