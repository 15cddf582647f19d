//! Tunables of the overlay state machine, with documented defaults.

use crate::rate::Rate;
use crate::strategy::FingerStrategy;
use std::time::Duration;
use thiserror::Error;

/// How lookups find the node responsible for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LookupMode {
    /// Routed hop by hop through the overlay; the responsible node's signed answer comes back
    /// along the route. Cheapest; a hostile node on the route can drop or misdirect it (the
    /// asker then retries, and refuses answers its neighbours contradict).
    #[default]
    Routed,
    /// Steered by the asker, Kademlia-style: it asks the nodes nearest the key that it knows
    /// ([`Message::FindNear`](crate::Message::FindNear)) for the nodes they know nearest the key
    /// (signed records), `steer_parallelism` at a time, until an answer from near the key
    /// names as many nodes around it as an honest neighbour would; answers that leave gaps
    /// (hidden nodes) make their senders and the nodes they named suspect. The responsible
    /// node is the nearest live node at or after the key. A hostile node can hide nodes and
    /// waste a query, never invent a nearer node.
    Steered,
}

impl LookupMode {
    /// A short name for reports and command lines: `"routed"` or `"steered"`.
    pub fn name(self) -> &'static str {
        match self {
            LookupMode::Routed => "routed",
            LookupMode::Steered => "steered",
        }
    }
}

/// Overlay configuration. `Config::default()` suits a real network; the simulator scales the
/// intervals in its scenarios. Outside this crate, start from `Config::default()` and change
/// what you need with the `with_*` setters (`Config::default().with_list_len(4)`) or by
/// assigning the public fields; the struct is `#[non_exhaustive]` so that fields can be added.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Finger placement. Default: Tango.
    pub strategy: FingerStrategy,
    /// Successors kept, and as many predecessors. Default: 8.
    pub list_len: usize,
    /// How often a node exchanges lists with its immediate neighbours. Default: 2 s.
    pub stabilize_interval: Duration,
    /// A neighbour silent this long after a stabilisation request is taken for crashed.
    /// Default: 3 s (with the interval, a crash is noticed within 5 s).
    pub stabilize_timeout: Duration,
    /// Every finger slot is re-probed once per this period, one slot at a time. Default: 120 s.
    pub finger_refresh_period: Duration,
    /// Delay before emptied finger slots are probed again. Default: 500 ms.
    pub repair_delay: Duration,
    /// How long to wait for an answer to a join request. Default: 5 s.
    pub join_timeout: Duration,
    /// Join attempts before giving up. Default: 5.
    pub join_attempts: u32,
    /// How long to wait for a lookup's answer before trying again. Default: 3 s.
    pub lookup_timeout: Duration,
    /// Lookup attempts before reporting failure. Default: 3.
    pub lookup_attempts: u32,
    /// How lookups find the responsible node. Default: [`LookupMode::Routed`].
    pub lookup_mode: LookupMode,
    /// Queries a steered lookup keeps in flight at once. Default: 1 (fewest messages; more
    /// trade messages for time).
    pub steer_parallelism: usize,
    /// Queries a steered lookup sends at most before it takes the best it has. Default: 32.
    pub steer_max_queries: u16,
    /// Lookups waiting for an answer at once. Default: 4096.
    pub max_pending_lookups: usize,
    /// Routed messages are dropped after this many hops. Default: 64.
    pub max_hops: u16,
    /// How long second-hand mentions of a departed node are ignored. Default: 60 s.
    pub tombstone_ttl: Duration,
    /// Departed nodes remembered at once. Default: 1024.
    pub max_tombstones: usize,
    /// A peer outside the routing table that has been silent this long is disconnected.
    /// Default: 60 s.
    pub link_idle: Duration,
    /// How long a message id is remembered to drop duplicates (services' casts and group
    /// messages), and how old an envelope may be. Default: 120 s.
    pub seen_ttl: Duration,
    /// Message ids remembered at once for duplicate detection. Default: 65 536.
    pub max_seen: usize,
    /// How long a signed contact record is believed after it was made; a node signs its own
    /// anew every quarter of this. Default: 1 h.
    pub record_ttl: Duration,
    /// How long a node's signed word that its successor follows it (see
    /// [`crate::adjacency`]) is believed; a node signs a new one for its successor every
    /// quarter of this, or at once when its successor changes. Default: 60 s.
    pub adjacency_ttl: Duration,
    /// How far in the future a signed record or envelope may claim to be made (clocks of two
    /// nodes differ). Envelopes older than `seen_ttl - max_clock_skew` are dropped, so that
    /// duplicate detection covers every envelope still accepted. Default: 30 s.
    pub max_clock_skew: Duration,
    /// A node that lost every neighbour tries to join again through a node it knew (or its
    /// bootstrap) this often. Default: 5 s.
    pub rejoin_interval: Duration,
    /// How often a node asks one node it lost (a crash, or a partition that healed since)
    /// to route a join request for its position: if that node lives in another ring, the
    /// answer carries the other ring's nodes near this one and the two rings merge. Default:
    /// 30 s.
    pub merge_probe_interval: Duration,
    /// Messages one linked peer may send this node (every kind: ring upkeep, lookups, routed
    /// and service messages, cast pieces), charged to the authenticated sender, not to the
    /// origin a message names: more are dropped unread and counted
    /// ([`NodeStats::rate_limited`](crate::NodeStats::rate_limited)). Sized far above honest
    /// traffic (a busy node sends a neighbour a few hundred a second). Default: 10 000 a
    /// second, bursts of 20 000.
    pub peer_message_rate: Rate,
    /// Seed of the node's random choices (timer jitter) and, with its position, the key of its
    /// request ids and message numbers. The runtime draws it from the OS; the simulator from
    /// its own seed. Default: 0.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: FingerStrategy::Tango,
            list_len: 8,
            stabilize_interval: Duration::from_secs(2),
            stabilize_timeout: Duration::from_secs(3),
            finger_refresh_period: Duration::from_secs(120),
            repair_delay: Duration::from_millis(500),
            join_timeout: Duration::from_secs(5),
            join_attempts: 5,
            lookup_timeout: Duration::from_secs(3),
            lookup_attempts: 3,
            lookup_mode: LookupMode::Routed,
            steer_parallelism: 1,
            steer_max_queries: 32,
            max_pending_lookups: 4096,
            max_hops: 64,
            tombstone_ttl: Duration::from_secs(60),
            max_tombstones: 1024,
            link_idle: Duration::from_secs(60),
            seen_ttl: Duration::from_secs(120),
            max_seen: 65_536,
            record_ttl: Duration::from_secs(3600),
            adjacency_ttl: Duration::from_secs(60),
            max_clock_skew: Duration::from_secs(30),
            rejoin_interval: Duration::from_secs(5),
            merge_probe_interval: Duration::from_secs(30),
            peer_message_rate: Rate {
                per_sec: 10_000,
                burst: 20_000,
            },
            seed: 0,
        }
    }
}

impl Config {
    /// Sets [`strategy`](Self::strategy).
    #[must_use]
    pub fn with_strategy(mut self, strategy: FingerStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets [`list_len`](Self::list_len).
    #[must_use]
    pub fn with_list_len(mut self, list_len: usize) -> Self {
        self.list_len = list_len;
        self
    }

    /// Sets [`stabilize_interval`](Self::stabilize_interval).
    #[must_use]
    pub fn with_stabilize_interval(mut self, stabilize_interval: Duration) -> Self {
        self.stabilize_interval = stabilize_interval;
        self
    }

    /// Sets [`stabilize_timeout`](Self::stabilize_timeout).
    #[must_use]
    pub fn with_stabilize_timeout(mut self, stabilize_timeout: Duration) -> Self {
        self.stabilize_timeout = stabilize_timeout;
        self
    }

    /// Sets [`finger_refresh_period`](Self::finger_refresh_period).
    #[must_use]
    pub fn with_finger_refresh_period(mut self, finger_refresh_period: Duration) -> Self {
        self.finger_refresh_period = finger_refresh_period;
        self
    }

    /// Sets [`repair_delay`](Self::repair_delay).
    #[must_use]
    pub fn with_repair_delay(mut self, repair_delay: Duration) -> Self {
        self.repair_delay = repair_delay;
        self
    }

    /// Sets [`join_timeout`](Self::join_timeout).
    #[must_use]
    pub fn with_join_timeout(mut self, join_timeout: Duration) -> Self {
        self.join_timeout = join_timeout;
        self
    }

    /// Sets [`join_attempts`](Self::join_attempts).
    #[must_use]
    pub fn with_join_attempts(mut self, join_attempts: u32) -> Self {
        self.join_attempts = join_attempts;
        self
    }

    /// Sets [`lookup_timeout`](Self::lookup_timeout).
    #[must_use]
    pub fn with_lookup_timeout(mut self, lookup_timeout: Duration) -> Self {
        self.lookup_timeout = lookup_timeout;
        self
    }

    /// Sets [`lookup_attempts`](Self::lookup_attempts).
    #[must_use]
    pub fn with_lookup_attempts(mut self, lookup_attempts: u32) -> Self {
        self.lookup_attempts = lookup_attempts;
        self
    }

    /// Sets [`lookup_mode`](Self::lookup_mode).
    #[must_use]
    pub fn with_lookup_mode(mut self, lookup_mode: LookupMode) -> Self {
        self.lookup_mode = lookup_mode;
        self
    }

    /// Sets [`steer_parallelism`](Self::steer_parallelism).
    #[must_use]
    pub fn with_steer_parallelism(mut self, steer_parallelism: usize) -> Self {
        self.steer_parallelism = steer_parallelism;
        self
    }

    /// Sets [`steer_max_queries`](Self::steer_max_queries).
    #[must_use]
    pub fn with_steer_max_queries(mut self, steer_max_queries: u16) -> Self {
        self.steer_max_queries = steer_max_queries;
        self
    }

    /// Sets [`max_pending_lookups`](Self::max_pending_lookups).
    #[must_use]
    pub fn with_max_pending_lookups(mut self, max_pending_lookups: usize) -> Self {
        self.max_pending_lookups = max_pending_lookups;
        self
    }

    /// Sets [`max_hops`](Self::max_hops).
    #[must_use]
    pub fn with_max_hops(mut self, max_hops: u16) -> Self {
        self.max_hops = max_hops;
        self
    }

    /// Sets [`tombstone_ttl`](Self::tombstone_ttl).
    #[must_use]
    pub fn with_tombstone_ttl(mut self, tombstone_ttl: Duration) -> Self {
        self.tombstone_ttl = tombstone_ttl;
        self
    }

    /// Sets [`max_tombstones`](Self::max_tombstones).
    #[must_use]
    pub fn with_max_tombstones(mut self, max_tombstones: usize) -> Self {
        self.max_tombstones = max_tombstones;
        self
    }

    /// Sets [`link_idle`](Self::link_idle).
    #[must_use]
    pub fn with_link_idle(mut self, link_idle: Duration) -> Self {
        self.link_idle = link_idle;
        self
    }

    /// Sets [`seen_ttl`](Self::seen_ttl).
    #[must_use]
    pub fn with_seen_ttl(mut self, seen_ttl: Duration) -> Self {
        self.seen_ttl = seen_ttl;
        self
    }

    /// Sets [`max_seen`](Self::max_seen).
    #[must_use]
    pub fn with_max_seen(mut self, max_seen: usize) -> Self {
        self.max_seen = max_seen;
        self
    }

    /// Sets [`record_ttl`](Self::record_ttl).
    #[must_use]
    pub fn with_record_ttl(mut self, record_ttl: Duration) -> Self {
        self.record_ttl = record_ttl;
        self
    }

    /// Sets [`adjacency_ttl`](Self::adjacency_ttl).
    #[must_use]
    pub fn with_adjacency_ttl(mut self, adjacency_ttl: Duration) -> Self {
        self.adjacency_ttl = adjacency_ttl;
        self
    }

    /// Sets [`max_clock_skew`](Self::max_clock_skew).
    #[must_use]
    pub fn with_max_clock_skew(mut self, max_clock_skew: Duration) -> Self {
        self.max_clock_skew = max_clock_skew;
        self
    }

    /// Sets [`rejoin_interval`](Self::rejoin_interval).
    #[must_use]
    pub fn with_rejoin_interval(mut self, rejoin_interval: Duration) -> Self {
        self.rejoin_interval = rejoin_interval;
        self
    }

    /// Sets [`merge_probe_interval`](Self::merge_probe_interval).
    #[must_use]
    pub fn with_merge_probe_interval(mut self, merge_probe_interval: Duration) -> Self {
        self.merge_probe_interval = merge_probe_interval;
        self
    }

    /// Sets [`peer_message_rate`](Self::peer_message_rate).
    #[must_use]
    pub fn with_peer_message_rate(mut self, peer_message_rate: Rate) -> Self {
        self.peer_message_rate = peer_message_rate;
        self
    }

    /// Sets [`seed`](Self::seed).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A configuration value out of range.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// Envelopes could not be told apart from replays.
    #[error("max_clock_skew must be shorter than seen_ttl")]
    SkewOverSeen,
}

impl Config {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("stabilize_interval", self.stabilize_interval),
            ("stabilize_timeout", self.stabilize_timeout),
            ("finger_refresh_period", self.finger_refresh_period),
            ("join_timeout", self.join_timeout),
            ("lookup_timeout", self.lookup_timeout),
            ("seen_ttl", self.seen_ttl),
            ("record_ttl", self.record_ttl),
            ("adjacency_ttl", self.adjacency_ttl),
            ("rejoin_interval", self.rejoin_interval),
            ("merge_probe_interval", self.merge_probe_interval),
        ];
        for (name, d) in durations {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        let counts = [
            ("list_len", self.list_len),
            ("join_attempts", self.join_attempts as usize),
            ("lookup_attempts", self.lookup_attempts as usize),
            ("steer_parallelism", self.steer_parallelism),
            ("steer_max_queries", self.steer_max_queries as usize),
            ("max_pending_lookups", self.max_pending_lookups),
            ("max_hops", self.max_hops as usize),
            ("max_seen", self.max_seen),
            (
                "peer_message_rate.per_sec",
                self.peer_message_rate.per_sec as usize,
            ),
            (
                "peer_message_rate.burst",
                self.peer_message_rate.burst as usize,
            ),
        ];
        for (name, n) in counts {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_clock_skew >= self.seen_ttl {
            return Err(ConfigError::SkewOverSeen);
        }
        Ok(())
    }
}
