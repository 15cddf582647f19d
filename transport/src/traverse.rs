//! One call that gets a connection to a peer whatever NATs are in the way:
//! [`Transport::connect_any`].
//!
//! The stages, each bounded in time, stop at the first that works:
//!
//! 1. **Direct**: a handshake to every address given (the peer's advertised addresses: its port
//!    mapping, its external and local addresses), all at once, within
//!    [`TraverseOptions::direct_timeout`]. Works when the peer is public, behind a full-cone NAT
//!    or has a port mapping. The failed handshakes are not wasted: they open our own NAT towards
//!    the peer, which the punch relies on.
//! 2. **Punch** (needs `via`, a node both are connected to): coordinated hole punching through
//!    `via` ([`Transport::punch_with`]). Works unless one NAT maps endpoint-dependently
//!    (symmetric) and the other filters by port.
//! 3. **Relay** (needs `via` to serve as relay, see [`crate::RelayConfig::serve`]): a circuit
//!    through `via` ([`Transport::connect_relayed`]). Works whenever both reach the relay.
//!
//! By default the punch waits for the direct stage to fail; with
//! [`TraverseOptions::punch_head_start`] it starts alongside the direct handshakes after a short
//! head start, which saves most of the direct timeout when the peer's NAT filters.
//!
//! After a relayed success the node keeps trying to punch in the background, a bounded number of
//! times ([`TraverseOptions::upgrade_attempts`]), while the connection is still relayed: a NAT
//! binding or a peer that refused a punch a moment ago may let one through later, and a direct
//! connection replaces the relayed one as soon as it registers. At most
//! [`MAX_UPGRADERS`] peers are being upgraded at once.
//!
//! Every stage's error is kept in [`TraverseError`], so a caller (or a log line) can tell why
//! no path worked; [`TraverseStats`] counts outcomes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::connections::{lock, Shared};
use crate::endpoint::Transport;
use crate::error::ConnectError;
use crate::holepunch::{PunchError, PunchOptions, PunchOutcome};
use crate::identity::NodeId;
use crate::reachability::{usable_candidate, MAX_ADVERTISED};
use crate::relay::{is_relayed, PathKind, RelayError};
use crate::stats::bump;

/// Peers whose relayed connection is being upgraded in the background at once.
pub const MAX_UPGRADERS: usize = 64;

/// Settings of [`Transport::connect_any_with`]. Start from `TraverseOptions::default()` and
/// change what you need with the `with_*` setters or by assigning the public fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraverseOptions {
    /// Upper bound on the direct stage (all addresses are tried at once). Default 3 s.
    pub direct_timeout: Duration,
    /// Settings of the punch stage and of background punches. Default
    /// [`PunchOptions::default`].
    pub punch: PunchOptions,
    /// Whether to fall back to a relayed circuit through `via`. Default true.
    pub relay: bool,
    /// After a relayed success, how many more punches to try in the background while the
    /// connection is still relayed. Default 3; 0 disables.
    pub upgrade_attempts: u32,
    /// Time before each background punch. Default 20 s.
    pub upgrade_interval: Duration,
    /// When set (and `via` is given), the punch starts this long after the direct handshakes
    /// if none has completed by then and runs alongside them (the first connection wins),
    /// instead of after [`direct_timeout`](Self::direct_timeout). Saves most of the direct
    /// timeout behind filtering NATs, at the price of an introduction through `via` even when
    /// a slow direct handshake would have won. Default `None`: one stage after the other.
    pub punch_head_start: Option<Duration>,
}

impl Default for TraverseOptions {
    fn default() -> Self {
        Self {
            direct_timeout: Duration::from_secs(3),
            punch: PunchOptions::default(),
            relay: true,
            upgrade_attempts: 3,
            upgrade_interval: Duration::from_secs(20),
            punch_head_start: None,
        }
    }
}

impl TraverseOptions {
    /// Sets [`direct_timeout`](Self::direct_timeout).
    #[must_use]
    pub fn with_direct_timeout(mut self, direct_timeout: Duration) -> Self {
        self.direct_timeout = direct_timeout;
        self
    }

    /// Sets [`punch`](Self::punch).
    #[must_use]
    pub fn with_punch(mut self, punch: PunchOptions) -> Self {
        self.punch = punch;
        self
    }

    /// Sets [`relay`](Self::relay).
    #[must_use]
    pub fn with_relay(mut self, relay: bool) -> Self {
        self.relay = relay;
        self
    }

    /// Sets [`upgrade_attempts`](Self::upgrade_attempts).
    #[must_use]
    pub fn with_upgrade_attempts(mut self, upgrade_attempts: u32) -> Self {
        self.upgrade_attempts = upgrade_attempts;
        self
    }

    /// Sets [`upgrade_interval`](Self::upgrade_interval).
    #[must_use]
    pub fn with_upgrade_interval(mut self, upgrade_interval: Duration) -> Self {
        self.upgrade_interval = upgrade_interval;
        self
    }

    /// Sets [`punch_head_start`](Self::punch_head_start).
    #[must_use]
    pub fn with_punch_head_start(mut self, punch_head_start: Option<Duration>) -> Self {
        self.punch_head_start = punch_head_start;
        self
    }
}

/// Which stage produced the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// A handshake to one of the given addresses (or an existing direct connection).
    Direct,
    /// Coordinated hole punching through the introducer.
    Punched,
    /// A circuit through the relay (or an existing relayed connection).
    Relayed,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Direct => "direct",
            Method::Punched => "punched",
            Method::Relayed => "relayed",
        })
    }
}

/// What [`Transport::connect_any`] achieved and how.
#[derive(Debug, Clone)]
pub struct PathReport {
    /// The peer.
    pub peer: NodeId,
    /// How the connection travels now.
    pub path: PathKind,
    /// The stage that produced it.
    pub method: Method,
    /// Time from the call to the connection.
    pub elapsed: Duration,
    /// The peer was already connected (directly, or relayed when no stage did better).
    pub already_connected: bool,
    /// Addresses the direct stage dialed (0: skipped).
    pub direct_attempts: usize,
    /// Dial rounds of the punch stage (0: not reached or not needed).
    pub punch_rounds: u32,
    /// The punch had been requested when the connection came up. With
    /// [`TraverseOptions::punch_head_start`], a direct handshake that completes after that
    /// (reported [`Method::Direct`]) may have got through the hole the punch opened in the
    /// peer's NAT.
    pub punch_started: bool,
    /// Why the direct stage failed, when a later stage connected (`None` as well when the
    /// punch won while the direct handshakes were still running, see
    /// [`TraverseOptions::punch_head_start`]).
    pub direct_error: Option<DirectError>,
    /// Why the punch failed, when the relay connected.
    pub punch_error: Option<PunchError>,
    /// Background punches were scheduled to replace the relayed connection by a direct one.
    pub upgrade_scheduled: bool,
}

/// Why the direct stage found no connection.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DirectError {
    /// No usable address was given.
    #[error("no usable address")]
    NoAddresses,
    /// No handshake completed within the stage's time.
    #[error("no handshake to {attempts} address(es) completed within {after:?}{}",
        last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Failed {
        /// Addresses dialed.
        attempts: usize,
        /// The time waited.
        after: Duration,
        /// The last handshake error, if any came back before the time ran out.
        last: Option<Box<ConnectError>>,
    },
}

/// Why [`Transport::connect_any`] found no path.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TraverseError {
    /// The peer (or `via`) is this node, or `via` is the peer.
    #[error("invalid peers: {0}")]
    InvalidPeers(&'static str),
    /// The transport is shutting down.
    #[error("the transport is shutting down")]
    ShuttingDown,
    /// Every stage tried failed; each one's error is kept.
    #[error(transparent)]
    NoPath(Box<NoPath>),
}

/// Every stage of [`Transport::connect_any`] failed: why each one did.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no path to {}: direct: {direct}; punch: {}; relay: {}", peer.short(),
    punch.as_ref().map_or_else(|| "not tried".to_string(), ToString::to_string),
    relay.as_ref().map_or_else(|| "not tried".to_string(), ToString::to_string))]
pub struct NoPath {
    /// The peer.
    pub peer: NodeId,
    /// Why the direct stage failed.
    pub direct: DirectError,
    /// Why the punch failed (None: not tried, no `via`).
    pub punch: Option<PunchError>,
    /// Why the relay failed (None: not tried, no `via` or relaying disabled).
    pub relay: Option<RelayError>,
    /// Time from the call to giving up.
    pub elapsed: Duration,
}

/// Counters of [`Transport::connect_any`] (see [`Transport::traverse_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraverseStats {
    /// Calls.
    pub calls: u64,
    /// Calls answered by the direct stage (or an existing direct connection).
    pub direct: u64,
    /// Calls answered by the punch stage.
    pub punched: u64,
    /// Calls answered by the relay stage (or an existing relayed connection).
    pub relayed: u64,
    /// Calls that found no path.
    pub failed: u64,
    /// Background punches tried on relayed connections.
    pub upgrade_punches: u64,
    /// Relayed connections that a background punch replaced by a direct one.
    pub upgrades: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    direct: AtomicU64,
    punched: AtomicU64,
    relayed: AtomicU64,
    failed: AtomicU64,
    upgrade_punches: AtomicU64,
    upgrades: AtomicU64,
}

/// The strategy's state of one transport: counters and the peers being upgraded.
#[derive(Debug, Default)]
pub(crate) struct TraverseState {
    counters: Counters,
    upgrading: Mutex<HashSet<NodeId>>,
}

impl<M> Transport<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Connects to `peer` by the first stage that works: directly at `addrs`, then (with `via`,
    /// a node both are connected to) by hole punching through `via`, then through `via` as
    /// relay; see the [module documentation](crate::traverse). Uses
    /// [`TraverseOptions::default`]. If the peer is already directly connected, returns at once;
    /// if it is connected through a relay, tries to do better and otherwise keeps that.
    pub async fn connect_any(
        &self,
        peer: NodeId,
        addrs: &[SocketAddr],
        via: Option<NodeId>,
    ) -> Result<PathReport, TraverseError> {
        self.connect_any_with(peer, addrs, via, TraverseOptions::default())
            .await
    }

    /// [`Transport::connect_any`] with explicit options.
    pub async fn connect_any_with(
        &self,
        peer: NodeId,
        addrs: &[SocketAddr],
        via: Option<NodeId>,
        options: TraverseOptions,
    ) -> Result<PathReport, TraverseError> {
        self.shared.connect_any(peer, addrs, via, options).await
    }

    /// Counters of [`Transport::connect_any`].
    pub fn traverse_stats(&self) -> TraverseStats {
        let c = &self.shared.traversal.traverse.counters;
        let g = crate::stats::get;
        TraverseStats {
            calls: g(&c.calls),
            direct: g(&c.direct),
            punched: g(&c.punched),
            relayed: g(&c.relayed),
            failed: g(&c.failed),
            upgrade_punches: g(&c.upgrade_punches),
            upgrades: g(&c.upgrades),
        }
    }
}

impl<M> Shared<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    async fn connect_any(
        self: &Arc<Self>,
        peer: NodeId,
        addrs: &[SocketAddr],
        via: Option<NodeId>,
        options: TraverseOptions,
    ) -> Result<PathReport, TraverseError> {
        let start = Instant::now();
        if peer == self.node_id {
            return Err(TraverseError::InvalidPeers("cannot connect to this node"));
        }
        if via == Some(peer) || via == Some(self.node_id) {
            return Err(TraverseError::InvalidPeers(
                "via must differ from the peer and this node",
            ));
        }
        if self.is_closing() {
            return Err(TraverseError::ShuttingDown);
        }
        let counters = &self.traversal.traverse.counters;
        bump(&counters.calls);
        let mut report = PathReport {
            peer,
            path: PathKind::Direct(SocketAddr::from(([0, 0, 0, 0], 0))),
            method: Method::Direct,
            elapsed: Duration::ZERO,
            already_connected: false,
            direct_attempts: 0,
            punch_rounds: 0,
            punch_started: false,
            direct_error: None,
            punch_error: None,
            upgrade_scheduled: false,
        };
        let existing = self.path(&peer);
        if let Some(path @ PathKind::Direct(_)) = existing {
            bump(&counters.direct);
            report.path = path;
            report.already_connected = true;
            report.elapsed = start.elapsed();
            return Ok(report);
        }

        // 1. Direct, then 2. the punch (or both at once after `punch_head_start`).
        if let Some((method, remote)) = self
            .direct_then_punch(peer, addrs, via, &options, &mut report)
            .await
        {
            bump(if method == Method::Direct {
                &counters.direct
            } else {
                &counters.punched
            });
            return Ok(self.finish(report, method, remote, start));
        }
        if self.is_closing() {
            return Err(TraverseError::ShuttingDown);
        }
        let Some(via) = via else {
            return self.no_path(report, None, None, start, existing);
        };

        // 3. Relay.
        if !options.relay {
            let punch = report.punch_error.take();
            return self.no_path(report, punch, None, start, existing);
        }
        match self.connect_relayed(peer, via).await {
            Ok(path) => {
                bump(&counters.relayed);
                report.already_connected = existing.is_some();
                report.path = path;
                report.method = if is_relayed_path(&path) {
                    Method::Relayed
                } else {
                    // A direct connection (the peer's own punch) registered meanwhile.
                    Method::Punched
                };
                report.elapsed = start.elapsed();
                if report.method == Method::Relayed && options.upgrade_attempts > 0 {
                    report.upgrade_scheduled = self.schedule_upgrade(peer, via, options);
                }
                info!(peer = %peer.short(), via = %via.short(), method = %report.method,
                    elapsed = ?report.elapsed, "connect_any: connected");
                Ok(report)
            }
            Err(e) => {
                let punch = report.punch_error.take();
                self.no_path(report, punch, Some(e), start, existing)
            }
        }
    }

    /// The direct stage, then the punch through `via` when the direct stage failed; with
    /// [`TraverseOptions::punch_head_start`], the punch starts alongside the direct handshakes
    /// once the head start has passed, and the first connection wins. Records each stage's
    /// outcome in `report`; returns the method and remote address of a direct connection.
    async fn direct_then_punch(
        self: &Arc<Self>,
        peer: NodeId,
        addrs: &[SocketAddr],
        via: Option<NodeId>,
        options: &TraverseOptions,
        report: &mut PathReport,
    ) -> Option<(Method, SocketAddr)> {
        let candidates = direct_candidates(addrs);
        report.direct_attempts = candidates.len();
        let mut direct =
            std::pin::pin!(self.direct_stage(peer, candidates, options.direct_timeout));
        let mut direct_done = false;
        if let Some((via, head_start)) = via.zip(options.punch_head_start) {
            let mut early = None;
            tokio::select! {
                r = &mut direct => early = Some(r),
                _ = tokio::time::sleep(head_start) => {}
            }
            if let Some(r) = early {
                direct_done = true;
                if let Some(ok) = note_direct(peer, r, report) {
                    return Some(ok);
                }
            } else {
                report.punch_started = true;
                let mut punch = std::pin::pin!(self.punch(peer, via, options.punch));
                let mut punch_done = false;
                while !(direct_done && punch_done) {
                    tokio::select! {
                        r = &mut direct, if !direct_done => {
                            direct_done = true;
                            if let Some(ok) = note_direct(peer, r, report) {
                                return Some(ok);
                            }
                        }
                        r = &mut punch, if !punch_done => {
                            punch_done = true;
                            if let Some(ok) = note_punch(peer, via, r, report) {
                                return Some(ok);
                            }
                        }
                    }
                }
                return None;
            }
        }
        if !direct_done {
            let r = direct.await;
            if let Some(ok) = note_direct(peer, r, report) {
                return Some(ok);
            }
        }
        let via = via?;
        if self.is_closing() {
            return None;
        }
        report.punch_started = true;
        let r = self.punch(peer, via, options.punch).await;
        note_punch(peer, via, r, report)
    }

    /// Dials every address of `candidates` at once, within `timeout`. Returns the remote
    /// address of the direct connection.
    async fn direct_stage(
        self: &Arc<Self>,
        peer: NodeId,
        candidates: Vec<SocketAddr>,
        timeout: Duration,
    ) -> Result<SocketAddr, DirectError> {
        let attempts = candidates.len();
        if attempts == 0 {
            return Err(DirectError::NoAddresses);
        }
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let options = PunchOptions {
            rounds: 1,
            interval: timeout,
            timeout,
        };
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(
            self.clone()
                .dial_session(peer, candidates, options, deadline, done_tx),
        );
        match done_rx.await {
            Ok(Ok((remote, _))) => Ok(remote),
            Ok(Err(last)) => Err(DirectError::Failed {
                attempts,
                after: start.elapsed(),
                last: last.map(Box::new),
            }),
            Err(_) => Err(DirectError::Failed {
                attempts,
                after: start.elapsed(),
                last: Some(Box::new(ConnectError::ShuttingDown)),
            }),
        }
    }

    /// Completes a report for a direct connection to `remote` (direct or punched).
    fn finish(
        &self,
        mut report: PathReport,
        method: Method,
        remote: SocketAddr,
        start: Instant,
    ) -> PathReport {
        report.method = method;
        report.path = self.path(&report.peer).unwrap_or(PathKind::Direct(remote));
        report.elapsed = start.elapsed();
        info!(peer = %report.peer.short(), %method, %remote, elapsed = ?report.elapsed,
            "connect_any: connected");
        report
    }

    /// No stage connected: keep the connection there is (an earlier relayed one, or one the
    /// peer's own punch registered meanwhile), else fail with every stage's error.
    fn no_path(
        &self,
        mut report: PathReport,
        punch: Option<PunchError>,
        relay: Option<RelayError>,
        start: Instant,
        existing: Option<PathKind>,
    ) -> Result<PathReport, TraverseError> {
        let counters = &self.traversal.traverse.counters;
        if let Some(path) = self.path(&report.peer) {
            report.path = path;
            report.already_connected = existing.is_some();
            report.punch_error = punch;
            report.elapsed = start.elapsed();
            report.method = if is_relayed_path(&path) {
                bump(&counters.relayed);
                Method::Relayed
            } else {
                bump(&counters.punched);
                Method::Punched
            };
            return Ok(report);
        }
        bump(&counters.failed);
        let direct = report
            .direct_error
            .take()
            .unwrap_or(DirectError::NoAddresses);
        let e = TraverseError::NoPath(Box::new(NoPath {
            peer: report.peer,
            direct,
            punch,
            relay,
            elapsed: start.elapsed(),
        }));
        info!(error = %e, "connect_any: no path");
        Err(e)
    }

    /// Starts background punches to replace the relayed connection to `peer` by a direct one;
    /// false if one already runs for `peer` or [`MAX_UPGRADERS`] run.
    fn schedule_upgrade(
        self: &Arc<Self>,
        peer: NodeId,
        via: NodeId,
        options: TraverseOptions,
    ) -> bool {
        {
            let mut upgrading = lock(&self.traversal.traverse.upgrading);
            if upgrading.len() >= MAX_UPGRADERS || !upgrading.insert(peer) {
                return false;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.upgrade(peer, via, options).await;
            lock(&this.traversal.traverse.upgrading).remove(&peer);
        });
        true
    }

    async fn upgrade(self: &Arc<Self>, peer: NodeId, via: NodeId, options: TraverseOptions) {
        let counters = &self.traversal.traverse.counters;
        for attempt in 1..=options.upgrade_attempts {
            tokio::time::sleep(options.upgrade_interval).await;
            if self.is_closing() {
                return;
            }
            match self.path(&peer) {
                Some(PathKind::Relayed { .. }) => {}
                // Gone, or already direct (the peer's own punch or dial).
                _ => return,
            }
            bump(&counters.upgrade_punches);
            match self.punch(peer, via, options.punch).await {
                Ok(outcome) => {
                    bump(&counters.upgrades);
                    info!(peer = %peer.short(), attempt, remote = %outcome.remote_addr,
                        "relayed connection replaced by a direct one");
                    return;
                }
                Err(PunchError::ShuttingDown) => return,
                Err(e) => {
                    debug!(peer = %peer.short(), attempt, error = %e, "background punch failed");
                }
            }
        }
    }
}

/// Records the direct stage's outcome; the connection's method and remote address on success.
fn note_direct(
    peer: NodeId,
    result: Result<SocketAddr, DirectError>,
    report: &mut PathReport,
) -> Option<(Method, SocketAddr)> {
    match result {
        Ok(remote) => Some((Method::Direct, remote)),
        Err(e) => {
            debug!(peer = %peer.short(), error = %e, "connect_any: direct stage failed");
            report.direct_error = Some(e);
            None
        }
    }
}

/// The addresses of `addrs` worth a direct handshake: dialable, not relayed, no duplicates, at
/// most [`MAX_ADVERTISED`].
fn direct_candidates(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut candidates: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if usable_candidate(a)
            && !is_relayed(a)
            && !candidates.contains(a)
            && candidates.len() < MAX_ADVERTISED
        {
            candidates.push(*a);
        }
    }
    candidates
}

/// Records the punch's outcome; the connection's method and remote address on success.
fn note_punch(
    peer: NodeId,
    via: NodeId,
    result: Result<PunchOutcome, PunchError>,
    report: &mut PathReport,
) -> Option<(Method, SocketAddr)> {
    match result {
        Ok(outcome) => {
            report.punch_rounds = outcome.rounds;
            Some((Method::Punched, outcome.remote_addr))
        }
        Err(e) => {
            debug!(peer = %peer.short(), via = %via.short(), error = %e, "connect_any: punch failed");
            report.punch_error = Some(e);
            None
        }
    }
}

fn is_relayed_path(path: &PathKind) -> bool {
    matches!(path, PathKind::Relayed { .. })
}
