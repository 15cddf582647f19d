//! The census of P2PS: figures of every node of a network gathered in one command, a
//! network-size estimate that costs no traffic, and a picture of the ring.
//!
//! The census is a service on the overlay's open service layer ([`p2ps_overlay::service`]), a
//! sans-IO state machine driven the same way by the QUIC runtime and by the simulator; the ring
//! core does not name it. It has its own crate, as the dictionary has, because it brings its
//! own wire, its own figures and their checks, and a renderer that the command line, the HTTP
//! interface and the simulator all use.
//!
//! - [`figures`]: what one node tells ([`Figures`], told by the runtime through
//!   [`Census::set_local`]) and the sums of a segment ([`Aggregate`]), with the checks a sum
//!   from a peer must pass;
//! - [`estimate`]: the network's size from the node's own successor and predecessor lists;
//! - [`wire`]: what nodes send each other;
//! - [`service`]: the service (a tree of disjoint ring segments, the answer as the
//!   acknowledgement: N - 1 asks and N - 1 answers on a stable ring);
//! - [`report`]: the outcome as text and JSON;
//! - [`picture`]: the ring as SVG.

pub mod estimate;
pub mod figures;
pub mod picture;
pub mod report;
pub mod service;
pub mod wire;

pub use estimate::network_size;
pub use figures::{Aggregate, Figures, NatClass, Row, Version};
pub use picture::{svg, Colouring, Focus};
pub use report::{Bucket, Report, ReportRow};
pub use service::{
    Census, CensusConfig, CensusEvent, CensusExt, CensusStats, Outcome, CENSUS, NAME,
};
