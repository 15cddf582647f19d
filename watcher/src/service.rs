//! The watcher service: its settings, what it tells the application, its counters, and how its
//! messages reach the watcher's side (`watching.rs`) and the holders' side (`holding.rs`).

use crate::holding::Holding;
use crate::watching::Watching;
use crate::wire::{Wire, KINDS};
use p2ps_overlay::service::{
    decode, Context, Emits, Incoming, NeighbourChange, Service, ServiceId,
};
use p2ps_overlay::{Body, Class, PeerId, Routed, Time};
use std::collections::VecDeque;
use std::time::Duration;
use thiserror::Error;

/// The service's name.
pub const NAME: &str = "p2ps/watcher";

/// The service's id.
pub const WATCHER: ServiceId = ServiceId::named(NAME);

/// Settings of the watcher.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WatcherConfig {
    /// How long a holder keeps a watch without renewal; the watcher renews every third of it.
    /// Default: 30 s.
    pub lease: Duration,
    /// How long the watched node has to acknowledge a watch or its renewal before the watcher
    /// probes it. Default: 3 s.
    pub ack_timeout: Duration,
    /// How long a probe waits for the watched node's answer before the watcher reports it
    /// failed (the probe is sent again halfway). Default: 2 s.
    pub probe_timeout: Duration,
    /// After an answered probe, how long further reports of a failure wait before the next
    /// probe (what one lying reporter can cost). Default: 1 s.
    pub probe_quiet: Duration,
    /// Ring neighbours on each side the watched node hands its watches to. Default: 2.
    pub replicate_to: usize,
    /// Watches this node's application keeps at once. Default: 1024.
    pub max_watches: usize,
    /// Watches this node holds for one watcher. Default: 256.
    pub max_per_watcher: usize,
    /// Watches this node holds for others in all. Default: 16 384.
    pub max_held: usize,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            lease: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(2),
            probe_quiet: Duration::from_secs(1),
            replicate_to: 2,
            max_watches: 1024,
            max_per_watcher: 256,
            max_held: 16_384,
        }
    }
}

/// Why a watch could not start.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The node is not part of a network.
    #[error("the node is not part of a network")]
    NotJoined,
    /// A node does not watch itself.
    #[error("a node cannot watch itself")]
    Myself,
    /// The node keeps as many watches as it may.
    #[error("the node already keeps {max} watches of nodes, as many as it may")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// What the watcher tells its application about watch `req` of node `node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeWatchEvent<P> {
    /// The watched node answered: it is alive and holds the watch (once per watch).
    Watching {
        /// The watch id.
        req: u64,
        /// The watched node.
        node: P,
    },
    /// The node failed: a report of its failure (or a renewal it did not acknowledge) was
    /// confirmed by this node's own probe, which the node did not answer. The watch ends.
    Failed {
        /// The watch id.
        req: u64,
        /// The watched node.
        node: P,
        /// Who reported it (`None`: this node's own evidence, a missed renewal or a lost link).
        reported_by: Option<P>,
        /// When the probe that confirmed it started.
        suspected_at: Time,
        /// When the failure was concluded.
        at: Time,
    },
    /// The node left the network gracefully (its own signed word). The watch ends.
    Left {
        /// The watch id.
        req: u64,
        /// The watched node.
        node: P,
        /// When the word came.
        at: Time,
    },
}

/// Counters of the watcher on one node.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct WatcherStats {
    /// Probes started.
    pub probes: u64,
    /// Probes answered: the reported failure was not true (or the node came back).
    pub refuted: u64,
    /// Failures reported to the application.
    pub failed: u64,
    /// Leaves reported to the application.
    pub left: u64,
    /// Reports of failures sent to watchers, as a holder.
    pub suspects_sent: u64,
    /// Reports of failures ignored (a probe in flight, too soon after the last, no such watch).
    pub suspects_ignored: u64,
    /// Watches refused as a holder (over a bound), and words refused (wrong sender or signer).
    pub refused: u64,
    /// Malformed or unexpected messages dropped.
    pub dropped: u64,
}

/// The watcher service on one node: the watches its application keeps, and the watches it
/// holds for others (as the watched node, or as one of its neighbours).
pub struct Watcher<P: PeerId> {
    pub(crate) cfg: WatcherConfig,
    pub(crate) mine: Watching<P>,
    pub(crate) holding: Holding<P>,
    pub(crate) events: VecDeque<NodeWatchEvent<P>>,
    pub(crate) stats: WatcherStats,
}

impl<P: PeerId> Watcher<P> {
    /// The watcher with settings `cfg`.
    pub fn new(cfg: WatcherConfig) -> Self {
        Watcher {
            cfg,
            mine: Watching::default(),
            holding: Holding::default(),
            events: VecDeque::new(),
            stats: WatcherStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &WatcherConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> WatcherStats {
        self.stats
    }

    /// Watches this node's application keeps.
    pub fn watching(&self) -> usize {
        self.mine.len()
    }

    /// Watches this node holds for others (as the watched node or a neighbour of it).
    pub fn held(&self) -> usize {
        self.holding.len()
    }
}

impl<P: PeerId> Default for Watcher<P> {
    fn default() -> Self {
        Watcher::new(WatcherConfig::default())
    }
}

impl<P: PeerId> Emits for Watcher<P> {
    type Event = NodeWatchEvent<P>;

    fn poll_event(&mut self) -> Option<NodeWatchEvent<P>> {
        self.events.pop_front()
    }
}

impl<P: PeerId> Service<P> for Watcher<P> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn class(&self) -> Class {
        // Upkeep-like traffic: small, and late answers make false failures.
        Class::Routing
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("watching", self.mine.len() as u64),
            ("held", self.holding.len() as u64),
            ("probes", self.stats.probes),
            ("refuted", self.stats.refuted),
            ("failed", self.stats.failed),
            ("left", self.stats.left),
            ("suspects_sent", self.stats.suspects_sent),
            ("suspects_ignored", self.stats.suspects_ignored),
            ("refused", self.stats.refused),
            ("dropped", self.stats.dropped),
        ]
    }

    fn deliver(&mut self, ctx: &mut Context<'_, P>, msg: Routed<P>) {
        let Body::Service { data, target, .. } = &msg.sealed.env.body else {
            return;
        };
        let origin = msg.sealed.origin();
        // Everything of this service routed is addressed to one node.
        if *target != Some(ctx.me().id) {
            self.stats.dropped += 1;
            return;
        }
        match decode::<Wire<P>>(data) {
            Ok((Wire::Watch { req, lease_ms }, _)) => {
                self.hold(ctx, origin, req, lease_ms, msg.sealed.clone())
            }
            Ok((Wire::Unwatch { req }, _)) => self.holding.remove(origin, req),
            Ok((Wire::Probe { nonce }, _)) => self.answer_routed_probe(ctx, origin, nonce),
            Ok((Wire::Alive { nonce }, _)) => self.on_alive(ctx, origin, nonce),
            _ => self.stats.dropped += 1,
        }
    }

    fn receive(&mut self, ctx: &mut Context<'_, P>, msg: Incoming<P>) {
        let from = msg.from;
        match decode::<Wire<P>>(&msg.data) {
            Ok((Wire::Held { req }, _)) => self.on_held(ctx, from, req),
            Ok((Wire::Replica, _)) => self.on_replica(ctx, from, msg.sealed),
            Ok((Wire::Suspect { req, watched }, _)) => self.on_suspect(ctx, from, req, watched),
            Ok((Wire::Probe { nonce }, _)) => ctx.send(
                from,
                p2ps_overlay::service::encode(&Wire::<P>::Alive { nonce }, &[]),
            ),
            Ok((Wire::Alive { nonce }, _)) => self.on_alive(ctx, from, nonce),
            Ok((Wire::Leaving, _)) => self.on_leaving(ctx, msg.sealed),
            _ => self.stats.dropped += 1,
        }
    }

    fn neighbours(&mut self, ctx: &mut Context<'_, P>, change: &NeighbourChange<P>) {
        self.replicate_to_new(ctx, &change.up);
    }

    fn peer_failed(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        // As a holder: tell the watchers of `peer`. As a watcher: this node's own link to a
        // watched node failed, which is reason to probe it (through the ring as well).
        self.report_failure(ctx, peer);
        self.suspect_locally(ctx, peer);
    }

    fn leave(&mut self, ctx: &mut Context<'_, P>) {
        self.say_left(ctx);
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.mine
            .next_deadline()
            .into_iter()
            .chain(self.holding.next_expiry())
            .min()
    }

    fn handle_timeout(&mut self, ctx: &mut Context<'_, P>) {
        self.on_deadlines(ctx);
        self.holding.expire(ctx.now());
    }
}
