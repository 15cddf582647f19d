//! The node watcher of P2PS: an application watches any node id, not only its neighbours, and
//! is told when that node fails or leaves.
//!
//! It is a service on the overlay's open service layer ([`p2ps_overlay::service`]), in a crate
//! of its own like the dictionary: the ring core does not name it, and the simulator drives
//! the same code as the QUIC runtime.
//!
//! How a watch works (the watcher `A`, the watched node `W`):
//!
//! 1. `A` routes a `Watch` to `W`'s position, signed by `A` and addressed to `W` (so no other
//!    node can take it). `W` holds it for a lease, answers `Held` and hands `A`'s signed
//!    request to its nearest ring neighbours (`replicate_to` on each side), and again to nodes
//!    that become its neighbours later. Those neighbours already detect `W`'s failure (they
//!    stabilise with it); holding the watch, they tell `A` (`Suspect`) when they take `W` for
//!    dead.
//! 2. `A` believes nobody's word for a failure: on a report it probes `W` itself, straight
//!    (one hop) and through the ring (a signed probe routed to `W`, answered the same way, so
//!    that a path broken only between `A` and `W` does not look like a failure). Only if
//!    neither is answered within `probe_timeout` does `A` report [`NodeWatchEvent::Failed`].
//!    A lying neighbour costs one probe, rate-limited per watch, and produces no event.
//! 3. A graceful leave: `W` signs a `Left` for every watcher it holds; only `W`'s signature
//!    makes [`NodeWatchEvent::Left`].
//! 4. Leases: `A` renews every third of the lease (through the ring, to `W`); holders forget
//!    what is not renewed. A renewal `W` does not acknowledge in time also starts a probe, so a
//!    failure is reported even when every neighbour keeps quiet (within a renewal period plus
//!    the probe).
//!
//! Bounds: watches one application keeps ([`WatcherConfig::max_watches`]), watches a node holds
//! for one watcher and in all, one probe in flight per watch and at most one a
//! `probe_quiet` period. Modules: [`wire`] (messages), `watching.rs` (the watcher's side),
//! `holding.rs` (the watched node's and its neighbours' side), [`service`] (the service, its
//! settings, events and counters).

mod holding;
pub mod service;
mod watching;
pub mod wire;

pub use service::{NodeWatchEvent, WatchError, Watcher, WatcherConfig, WatcherStats, WATCHER};
