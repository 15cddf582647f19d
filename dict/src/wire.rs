//! What dictionary nodes send each other, and what a request's answer can be.

use crate::record::{Record, Stamp};
use crate::store::QuotaExceeded;
use p2ps_overlay::{PeerId, RingId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The dictionary's messages. `Put`, `Get` and `Replicas` travel as queries to the key
/// (unsigned: a write carries its writer's signed record, a read's answer is one, and the
/// answer retraces the query's links); `Watch` and `Unwatch` are routed signed by their origin
/// (the holder tells that node of changes); the rest go one hop.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Wire<P: PeerId> {
    /// Store `record` at the key's replicas: answered once `w` of them hold it. With
    /// `expect`, only if the key's current version is that (0: the key holds nothing).
    Put {
        /// The origin's request id.
        req: u64,
        /// Replicas that must hold it before the answer.
        w: u8,
        /// Compare-and-swap: the version the key must have now.
        expect: Option<u64>,
        /// The signed record.
        record: Record<P>,
    },
    /// Read the key from `r` replicas; the newest record wins (and is written back to the
    /// replicas that lack it).
    Get {
        /// The origin's request id.
        req: u64,
        /// Replicas to ask.
        r: u8,
    },
    /// Coordinator (or any holder) to replica: keep `record`; answer with `Stored` unless
    /// `op` is 0.
    Replicate {
        /// The primary's operation id (0: no answer wanted).
        op: u64,
        /// The signed record.
        record: Record<P>,
    },
    /// Replica to coordinator: `record` of operation `op` is held now, or why not.
    Stored {
        /// The operation.
        op: u64,
        /// `None`: held (this version, or a renewal of it); else why the replica refused it.
        refused: Option<DictError>,
    },
    /// Coordinator to replica: what do you hold for `key`?
    Fetch {
        /// The primary's operation id.
        op: u64,
        /// The key's position.
        key: RingId,
    },
    /// Replica to coordinator: what it holds.
    Fetched {
        /// The operation.
        op: u64,
        /// The record held, if any.
        record: Option<Record<P>>,
    },
    /// Coordinator to origin, back along the query's links: the answer to request `req`.
    Reply {
        /// The origin's request id.
        req: u64,
        /// What happened.
        outcome: Outcome<P>,
    },
    /// Routed to the key: tell the origin of every change of the key for `lease_ms` (the
    /// origin renews the watch before then, which also moves it to a new primary).
    Watch {
        /// The origin's watch id.
        req: u64,
        /// How long the watch holds without renewal, in milliseconds.
        lease_ms: u32,
    },
    /// Routed to the key: the origin no longer watches it.
    Unwatch {
        /// The origin's watch id.
        req: u64,
    },
    /// Holder to watcher: the key of watch `req` now holds `record` (`None`: nothing, or it
    /// expired).
    Notify {
        /// The watcher's watch id.
        req: u64,
        /// The record now held.
        record: Option<Record<P>>,
    },
    /// Routed to the key: how many of its replicas hold its newest version? (Every replica
    /// is asked, and those that lack it get it.)
    Replicas {
        /// The origin's request id.
        req: u64,
    },
    /// Replica to replica: what the sender holds of some pieces of the ring (anti-entropy:
    /// see `sync.rs`). Answered, where the receiver holds otherwise, by finer pieces, lists,
    /// records and `Want`s; an `opening` message is answered even when nothing differs.
    Sync {
        /// The exchange (the id its opener gave it).
        round: u64,
        /// The pieces, each described by a digest or a list.
        parts: Vec<Part>,
        /// Whether this opens the exchange.
        opening: bool,
    },
    /// Replica to replica: send me the records of these keys (anti-entropy).
    Want {
        /// The exchange.
        round: u64,
        /// The keys' positions.
        keys: Vec<RingId>,
    },
}

/// What a node holds of one piece of the ring, `(after, end]` going clockwise, in an
/// anti-entropy exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// How many records, and a hash of their stamps in ring order.
    Digest {
        /// The position before the piece.
        after: RingId,
        /// The piece's last position.
        end: RingId,
        /// Records held in it.
        count: u32,
        /// The first 16 bytes of the SHA-256 of their keys and stamps.
        hash: [u8; 16],
    },
    /// Every record held in it: key and stamp, in ring order.
    Items {
        /// The position before the piece.
        after: RingId,
        /// The piece's last position.
        end: RingId,
        /// The records.
        items: Vec<(RingId, Stamp)>,
    },
}

impl Part {
    /// The piece: the position before it and its last one.
    pub fn bounds(&self) -> (RingId, RingId) {
        match self {
            Part::Digest { after, end, .. } | Part::Items { after, end, .. } => (*after, *end),
        }
    }
}

/// The message names, by variant, for traffic counters.
pub(crate) const KINDS: &[&str] = &[
    "dict-put",
    "dict-get",
    "dict-replicate",
    "dict-stored",
    "dict-fetch",
    "dict-fetched",
    "dict-reply",
    "dict-watch",
    "dict-unwatch",
    "dict-notify",
    "dict-replicas",
    "dict-sync",
    "dict-want",
];

/// How a request ended at the node that coordinated it (the first node on the request's way
/// that knew the key's replica set, or the primary).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Outcome<P: PeerId> {
    /// The record is held by `acks` replicas (at least the `w` asked for).
    Stored {
        /// The version stored.
        version: u64,
        /// Replicas that acknowledged it (the coordinator included if it is one).
        acks: u8,
    },
    /// The newest record among the replicas asked (`None`: the key holds nothing).
    Found(Option<Record<P>>),
    /// The request was refused.
    Refused(DictError),
    /// The replicas of a key, as the primary found them.
    Replicas(ReplicaHealth),
}

/// How many of a key's replicas hold its newest version, as its primary found them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaHealth {
    /// The newest version found (0: the key holds nothing).
    pub version: u64,
    /// Replicas that held that version when asked (the primary included).
    pub current: u8,
    /// Replicas that answered.
    pub answered: u8,
    /// Replicas the key should have.
    pub replicas: u8,
}

/// Why a dictionary request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DictError {
    /// The node is not part of a network.
    #[error("the node is not part of a network")]
    NotJoined,
    /// Too many requests in flight.
    #[error("too many dictionary requests in flight")]
    Busy,
    /// The value is larger than the limit.
    #[error("value of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key's name is longer than the limit.
    #[error("key name of {len} bytes is over the {max}-byte limit")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record's signature does not hold, or it belongs to another key.
    #[error("the record is not signed by its writer, or belongs to another key")]
    Forged,
    /// The key holds a newer (or the same) version.
    #[error("the key holds version {current}, not older than the one written")]
    Stale {
        /// The version held.
        current: u64,
    },
    /// Compare-and-swap: the key's version is not the one expected.
    #[error("the key is at version {current}, not the one expected")]
    Conflict {
        /// The version held (0: nothing).
        current: u64,
    },
    /// A replica's quota would be overrun.
    #[error("refused by a replica: {0}")]
    Quota(#[from] QuotaExceeded),
    /// Fewer replicas than asked answered in time.
    #[error("only {answered} of the replicas asked answered in time")]
    NotEnoughReplicas {
        /// Replicas that answered (the primary included).
        answered: u8,
    },
    /// No answer from the key's primary in time.
    #[error("no answer from the node responsible for the key")]
    Timeout,
    /// This node republishes as many keys as it may.
    #[error("this node already republishes {max} keys, the most it may")]
    TooManyRepublished {
        /// The limit (`DictConfig::max_republished`).
        max: usize,
    },
    /// The expiry is in the past or further than the longest time to live.
    #[error("the time to live must be between 1 s and the longest allowed")]
    BadExpiry,
    /// The node responsible for the key could not read or write its store (its disk); the
    /// node itself logs the cause.
    #[error("the node responsible for the key could not read or write its store")]
    Storage,
    /// A node asked to hold the record is not one of the key's replicas by its own lists (the
    /// ring around the key is changing).
    #[error("a node asked to hold the record is not one of the key's replicas by its own view")]
    NotReplica,
}
