//! The replicated dictionary of P2PS: values kept on the nodes responsible for their keys,
//! replicated on the nodes after them, while nodes come and go.
//!
//! It is a service on the overlay's open service layer ([`p2ps_overlay::service`]): a sans-IO
//! state machine with its own messages, timers and traffic, driven the same way by the QUIC
//! runtime and by the simulator. The ring core does not name it.
//!
//! - [`record`]: what is stored — a value signed by its writer, with a version and an expiry,
//!   under an open key (anyone writes; the greatest version wins) or an owned one (only the
//!   owner writes);
//! - [`store`]: where a node keeps its records (in memory, or in a redb file that outlives
//!   the node's process), with quotas per writer and per node;
//! - [`wire`]: what nodes send each other, and the errors a request can end with;
//! - [`service`]: the service, its settings and its requests (put, delete, compare-and-swap,
//!   get); the primary's coordination (write and read quorums, read repair) is in
//!   `coordinate.rs`, the replicas' part and hand-over in `replicate.rs`, anti-entropy between
//!   replicas (range digests) in `sync.rs`, the writer's republishing in `republish.rs`,
//!   watches of keys in `watch.rs`.

mod coordinate;
pub mod record;
mod replicate;
mod republish;
pub mod service;
pub mod store;
mod sync;
mod watch;
pub mod wire;

pub use record::{DictKey, Mode, Record, Stamp};
pub use service::{Dict, DictConfig, DictEvent, DictStats, PutOptions, DICT};
pub use store::{
    MemStore, NodeStore, PutError, QuotaExceeded, Quotas, RedbStore, StorageError, Store, Usage,
};
pub use wire::{DictError, Outcome, Part, ReplicaHealth};
