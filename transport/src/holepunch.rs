//! Coordinated hole punching: a direct connection between two nodes that are both connected to
//! a third one, the introducer.
//!
//! Node A calls `Transport::punch(B, via C)`:
//!
//! 1. A → C `PunchRequest { target: B, A's advertised addresses }`.
//! 2. C checks that the request is within A's rate limit and that B is connected, then
//!    C → B `PunchOffer { from: A, [where C sees A] + A's addresses }`.
//! 3. B answers C with `PunchAccept { B's addresses }` (and starts dialing A at once) or
//!    `PunchDecline`.
//! 4. C → A `PunchGo { [where C sees B] + B's addresses }` (or `PunchRefused`), and A starts
//!    dialing B.
//!
//! Both sides dial from their one socket, so each outgoing handshake opens the mapping of its
//! own NAT towards the other side's external address, and the other side's handshake then gets
//! through. A dial session is bounded: a few rounds ([`PunchOptions::rounds`],
//! [`PunchOptions::interval`] apart) that (re)start a handshake to every candidate address not
//! already being tried, with a short initial RTT so that each handshake repeats its first packet
//! about every third of a second, all within [`PunchOptions::timeout`]. If both handshakes
//! complete, the usual duplicate rule (keep the connection initiated by the smaller node id)
//! leaves one connection per pair; a second connection of the same session in the same
//! direction is closed as a duplicate before it is used.
//!
//! The introducer could be abused as an amplifier (one request making the target send
//! handshakes to addresses of the requester's choosing), so it forwards at most
//! [`MAX_REQUESTS_PER_WINDOW`] requests per requester per [`RATE_WINDOW`], keeps at most
//! [`MAX_PENDING_INTRODUCTIONS`] introductions open, and a target runs at most
//! [`MAX_ACTIVE_OFFERS`] accepted punches at once, each to at most
//! 8 addresses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::connections::{lock, ConnCtx, Shared};
use crate::control::Control;
use crate::endpoint::Transport;
use crate::error::ConnectError;
use crate::event::CloseCode;
use crate::identity::NodeId;
use crate::reachability::{usable_candidate, MAX_ADVERTISED};
use crate::relay::is_relayed;
use crate::stats::bump;

/// Requests one requester may have forwarded per [`RATE_WINDOW`].
pub const MAX_REQUESTS_PER_WINDOW: usize = 8;
/// The window of the introducer's per-requester rate limit.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Introductions an introducer keeps open (waiting for the target's answer).
pub const MAX_PENDING_INTRODUCTIONS: usize = 256;
/// Accepted punches a target dials for at once.
pub const MAX_ACTIVE_OFFERS: usize = 8;
/// Our own punches waiting for their introducer at once.
pub const MAX_OWN_PUNCHES: usize = 16;
/// Requesters an introducer tracks for rate limiting.
const MAX_TRACKED_REQUESTERS: usize = 1024;
/// An introduction not answered by the target within this time is forgotten.
const INTRODUCTION_TTL: Duration = Duration::from_secs(30);
/// How often a dial session checks whether the peer's own dial got through.
const POLL: Duration = Duration::from_millis(25);
/// Initial RTT estimate of punch handshakes: the first packet is repeated after about three
/// times this, so the handshake keeps knocking while the other side opens its NAT.
const PUNCH_INITIAL_RTT: Duration = Duration::from_millis(100);

/// Settings of one punch. Start from `PunchOptions::default()` and change what you need with
/// the `with_*` setters or by assigning the public fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PunchOptions {
    /// Rounds of dialing (each starts a handshake to every candidate not already being tried).
    /// Default 4.
    pub rounds: u32,
    /// Time between rounds. Default 300 ms.
    pub interval: Duration,
    /// Upper bound on the whole punch, from the request to the connection. Default 10 s.
    pub timeout: Duration,
}

impl Default for PunchOptions {
    fn default() -> Self {
        Self {
            rounds: 4,
            interval: Duration::from_millis(300),
            timeout: Duration::from_secs(10),
        }
    }
}

impl PunchOptions {
    /// Sets [`rounds`](Self::rounds).
    #[must_use]
    pub fn with_rounds(mut self, rounds: u32) -> Self {
        self.rounds = rounds;
        self
    }

    /// Sets [`interval`](Self::interval).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A successful punch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchOutcome {
    /// The peer now directly connected.
    pub peer: NodeId,
    /// The peer's address on the direct connection.
    pub remote_addr: SocketAddr,
    /// Already directly connected: nothing was sent.
    pub already_connected: bool,
    /// Dial rounds started before the connection was up.
    pub rounds: u32,
    /// Time from the call to the connection.
    pub elapsed: Duration,
}

/// Why an introducer or a target refused a punch (wire codes in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PunchRefusal {
    /// The introducer has no connection to the target (1).
    TargetNotConnected,
    /// The introducer's rate limit for the requester was reached (2).
    RateLimited,
    /// The target does not accept punches (3).
    Declined,
    /// The introducer or the target has too many punches in progress (4).
    Busy,
    /// A code this version does not know.
    Other(u32),
}

impl PunchRefusal {
    /// The code on the wire.
    pub fn to_code(self) -> u32 {
        match self {
            PunchRefusal::TargetNotConnected => 1,
            PunchRefusal::RateLimited => 2,
            PunchRefusal::Declined => 3,
            PunchRefusal::Busy => 4,
            PunchRefusal::Other(n) => n,
        }
    }

    /// Decodes a wire code.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => PunchRefusal::TargetNotConnected,
            2 => PunchRefusal::RateLimited,
            3 => PunchRefusal::Declined,
            4 => PunchRefusal::Busy,
            n => PunchRefusal::Other(n),
        }
    }
}

impl std::fmt::Display for PunchRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PunchRefusal::TargetNotConnected => {
                f.write_str("the introducer is not connected to the target")
            }
            PunchRefusal::RateLimited => f.write_str("rate limited by the introducer"),
            PunchRefusal::Declined => f.write_str("declined by the target"),
            PunchRefusal::Busy => f.write_str("too many punches in progress"),
            PunchRefusal::Other(n) => write!(f, "refused with unknown code {n}"),
        }
    }
}

/// Where a punch was when it timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PunchStage {
    /// Waiting for the introducer's answer (the introducer or the target did not answer).
    Introduction,
    /// Dialing the target's addresses.
    Dialing,
}

/// Why a punch failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    /// Target, introducer and this node must be three distinct nodes.
    #[error("target, introducer and this node must be three distinct nodes")]
    InvalidPeers,
    /// No live connection to the introducer.
    #[error("not connected to the introducer {}", via.short())]
    IntroducerNotConnected {
        /// The introducer.
        via: NodeId,
    },
    /// The introducer has no connection to the target.
    #[error("the introducer {} is not connected to {}", via.short(), target.short())]
    TargetNotConnectedToIntroducer {
        /// The target.
        target: NodeId,
        /// The introducer.
        via: NodeId,
    },
    /// The introducer or the target refused.
    #[error("punch to {} refused: {reason}", target.short())]
    Refused {
        /// The target.
        target: NodeId,
        /// Why.
        reason: PunchRefusal,
    },
    /// The introducer's answer held no address we could dial.
    #[error("no usable address for {}", target.short())]
    NoCandidates {
        /// The target.
        target: NodeId,
    },
    /// The punch did not complete within [`PunchOptions::timeout`].
    #[error("punch to {} timed out after {after:?} ({stage:?}){}", target.short(),
        last_error.as_ref().map(|e| format!(", last dial error: {e}")).unwrap_or_default())]
    TimedOut {
        /// The target.
        target: NodeId,
        /// Where it was.
        stage: PunchStage,
        /// The time waited.
        after: Duration,
        /// The last failed handshake, if any.
        last_error: Option<Box<ConnectError>>,
    },
    /// [`MAX_OWN_PUNCHES`] punches are already waiting for their introducer.
    #[error("too many punches in progress (at most {limit})")]
    TooManyPunches {
        /// The limit.
        limit: usize,
    },
    /// The transport is shutting down.
    #[error("the transport is shutting down")]
    ShuttingDown,
}

/// The introducer's answer as the requester sees it: addresses or a refusal code.
type Reply = Result<Vec<SocketAddr>, u32>;

struct Waiting {
    via: NodeId,
    target: NodeId,
    reply: oneshot::Sender<Reply>,
}

/// Hole-punch state of one transport.
#[derive(Debug)]
pub(crate) struct PunchState {
    next_id: AtomicU64,
    /// Our own requests waiting for the introducer's reply, by id.
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// As introducer: rate limits and open introductions.
    introductions: Mutex<Introductions>,
    /// Whether we accept offers.
    accept: AtomicBool,
    /// Accepted offers whose dial session runs.
    active_offers: AtomicUsize,
    /// quinn settings of punch handshakes (short initial RTT), built on first use.
    quic: OnceLock<Arc<quinn::TransportConfig>>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("via", &self.via)
            .field("target", &self.target)
            .finish()
    }
}

impl Default for PunchState {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            introductions: Mutex::new(Introductions::default()),
            accept: AtomicBool::new(true),
            active_offers: AtomicUsize::new(0),
            quic: OnceLock::new(),
        }
    }
}

/// Removes a waiting request when the punch ends (or is cancelled).
struct WaitGuard<'a> {
    state: &'a PunchState,
    id: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        lock(&self.state.waiting).remove(&self.id);
    }
}

/// Releases an accepted offer's slot when its dial session ends.
struct OfferSlot<M>(Arc<Shared<M>>);

impl<M> Drop for OfferSlot<M> {
    fn drop(&mut self) {
        self.0
            .traversal
            .punch
            .active_offers
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// The introducer's bookkeeping: per-requester rate limits and introductions waiting for the
/// target's answer. Pure (time is a parameter), bounded.
#[derive(Debug, Default)]
pub(crate) struct Introductions {
    /// Times of recent requests, per requester (within [`RATE_WINDOW`]).
    recent: HashMap<NodeId, VecDeque<Instant>>,
    /// (requester, id) → (target, since).
    pending: HashMap<(NodeId, u64), (NodeId, Instant)>,
}

impl Introductions {
    /// Admits a request of `requester` (its id `id`) to be introduced to `target`, or says why
    /// not.
    pub(crate) fn admit(
        &mut self,
        requester: NodeId,
        id: u64,
        target: NodeId,
        now: Instant,
    ) -> Result<(), PunchRefusal> {
        self.expire(now);
        if self.pending.contains_key(&(requester, id)) {
            return Err(PunchRefusal::Busy);
        }
        if !self.recent.contains_key(&requester) && self.recent.len() >= MAX_TRACKED_REQUESTERS {
            return Err(PunchRefusal::Busy);
        }
        let times = self.recent.entry(requester).or_default();
        if times.len() >= MAX_REQUESTS_PER_WINDOW {
            return Err(PunchRefusal::RateLimited);
        }
        if self.pending.len() >= MAX_PENDING_INTRODUCTIONS {
            return Err(PunchRefusal::Busy);
        }
        times.push_back(now);
        self.pending.insert((requester, id), (target, now));
        Ok(())
    }

    /// The target `from` answered introduction `(requester, id)`: whether it was open (and
    /// from that target). Closes it.
    pub(crate) fn answer(
        &mut self,
        requester: NodeId,
        id: u64,
        from: NodeId,
        now: Instant,
    ) -> bool {
        self.expire(now);
        match self.pending.get(&(requester, id)) {
            Some((target, _)) if *target == from => {
                self.pending.remove(&(requester, id));
                true
            }
            _ => false,
        }
    }

    /// Forgets an introduction that could not be forwarded.
    pub(crate) fn cancel(&mut self, requester: NodeId, id: u64) {
        self.pending.remove(&(requester, id));
    }

    fn expire(&mut self, now: Instant) {
        self.pending
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < INTRODUCTION_TTL);
        self.recent.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
    }
}

/// Usable, distinct, direct addresses, at most [`MAX_ADVERTISED`], `first` (where the
/// introducer sees the node) leading.
fn candidates(first: Option<SocketAddr>, rest: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for a in first.into_iter().chain(rest) {
        if usable_candidate(&a) && !is_relayed(&a) && !out.contains(&a) {
            out.push(a);
            if out.len() == MAX_ADVERTISED {
                break;
            }
        }
    }
    out
}

impl<M> Transport<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Opens a direct connection to `target` with the help of `via`, a node both are connected
    /// to, by coordinated hole punching (see the module documentation). Uses
    /// [`PunchOptions::default`]. Succeeds at once if already directly connected.
    pub async fn punch(&self, target: NodeId, via: NodeId) -> Result<PunchOutcome, PunchError> {
        self.punch_with(target, via, PunchOptions::default()).await
    }

    /// [`Transport::punch`] with explicit options.
    pub async fn punch_with(
        &self,
        target: NodeId,
        via: NodeId,
        options: PunchOptions,
    ) -> Result<PunchOutcome, PunchError> {
        self.shared.punch(target, via, options).await
    }

    /// Whether this node accepts punch offers relayed by introducers (default: yes). When not,
    /// offers are declined and the requester gets [`PunchRefusal::Declined`].
    pub fn set_accept_punches(&self, accept: bool) {
        self.shared
            .traversal
            .punch
            .accept
            .store(accept, Ordering::Relaxed);
    }
}

impl<M> Shared<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// The current connection to `peer` if it is live and direct.
    fn direct_connection(&self, peer: &NodeId) -> Option<Arc<ConnCtx>> {
        self.current_connection(peer)
            .filter(|c| !is_relayed(&c.remote))
    }

    pub(crate) async fn punch(
        self: &Arc<Self>,
        target: NodeId,
        via: NodeId,
        options: PunchOptions,
    ) -> Result<PunchOutcome, PunchError> {
        let start = Instant::now();
        if target == self.node_id || via == self.node_id || target == via {
            return Err(PunchError::InvalidPeers);
        }
        if self.is_closing() {
            return Err(PunchError::ShuttingDown);
        }
        if let Some(c) = self.direct_connection(&target) {
            return Ok(PunchOutcome {
                peer: target,
                remote_addr: c.remote,
                already_connected: true,
                rounds: 0,
                elapsed: start.elapsed(),
            });
        }
        bump(&self.counters.punch_attempts);
        let result = self.punch_via(target, via, options, start).await;
        match &result {
            Ok(outcome) => {
                bump(&self.counters.punch_successes);
                info!(peer = %target.short(), via = %via.short(), remote = %outcome.remote_addr,
                    rounds = outcome.rounds, elapsed = ?outcome.elapsed, "hole punch succeeded");
            }
            Err(e) => {
                bump(&self.counters.punch_failures);
                info!(peer = %target.short(), via = %via.short(), error = %e, "hole punch failed");
            }
        }
        result
    }

    async fn punch_via(
        self: &Arc<Self>,
        target: NodeId,
        via: NodeId,
        options: PunchOptions,
        start: Instant,
    ) -> Result<PunchOutcome, PunchError> {
        let deadline = tokio::time::Instant::from_std(start + options.timeout);
        if self.current_connection(&via).is_none() {
            return Err(PunchError::IntroducerNotConnected { via });
        }
        let state = &self.traversal.punch;
        let (reply_tx, reply_rx) = oneshot::channel();
        let id = state.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = lock(&state.waiting);
            if waiting.len() >= MAX_OWN_PUNCHES {
                return Err(PunchError::TooManyPunches {
                    limit: MAX_OWN_PUNCHES,
                });
            }
            waiting.insert(
                id,
                Waiting {
                    via,
                    target,
                    reply: reply_tx,
                },
            );
        }
        let _guard = WaitGuard { state, id };
        let request = Control::PunchRequest {
            id,
            target: *target.as_bytes(),
            candidates: self.advertised_addrs(),
        };
        self.send_control(via, &request).await.map_err(|e| {
            debug!(via = %via.short(), error = %e, "could not send punch request");
            PunchError::IntroducerNotConnected { via }
        })?;
        let timed_out = |stage, last_error| PunchError::TimedOut {
            target,
            stage,
            after: start.elapsed(),
            last_error,
        };
        let reply = match tokio::time::timeout_at(deadline, reply_rx).await {
            Ok(Ok(reply)) => reply,
            // The state was dropped: the transport is going away.
            Ok(Err(_)) => return Err(PunchError::ShuttingDown),
            Err(_) => return Err(timed_out(PunchStage::Introduction, None)),
        };
        let addrs = match reply {
            Ok(addrs) => candidates(None, addrs),
            Err(code) => {
                return Err(match PunchRefusal::from_code(code) {
                    PunchRefusal::TargetNotConnected => {
                        PunchError::TargetNotConnectedToIntroducer { target, via }
                    }
                    reason => PunchError::Refused { target, reason },
                })
            }
        };
        if addrs.is_empty() {
            return Err(PunchError::NoCandidates { target });
        }
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(
            self.clone()
                .dial_session(target, addrs, options, deadline, done_tx),
        );
        match done_rx.await {
            Ok(Ok((remote_addr, rounds))) => Ok(PunchOutcome {
                peer: target,
                remote_addr,
                already_connected: false,
                rounds,
                elapsed: start.elapsed(),
            }),
            Ok(Err(last_error)) => Err(timed_out(PunchStage::Dialing, last_error.map(Box::new))),
            Err(_) => Err(PunchError::ShuttingDown),
        }
    }

    /// quinn settings of punch handshakes.
    fn punch_quic(&self) -> Arc<quinn::TransportConfig> {
        self.traversal
            .punch
            .quic
            .get_or_init(
                || match crate::endpoint::quic_transport_config(&self.config) {
                    Ok(mut t) => {
                        t.initial_rtt(PUNCH_INITIAL_RTT);
                        Arc::new(t)
                    }
                    // Validated at bind; fall back to the ordinary settings all the same.
                    Err(_) => self.quic.clone(),
                },
            )
            .clone()
    }

    /// Dials `peer` at `addrs` in rounds until a direct connection to it exists (ours or its
    /// own dial to us) or `deadline` passes. Reports the first outcome on `done` (the remote
    /// address and the rounds started, or the last dial error), then lets handshakes already
    /// under way finish so that both ends see the same connections (the duplicate rule sorts
    /// them out).
    ///
    /// Boxed: it registers connections, whose readers may start another session, and the
    /// compiler cannot see through that cycle that the future is `Send`.
    pub(crate) fn dial_session(
        self: Arc<Self>,
        peer: NodeId,
        addrs: Vec<SocketAddr>,
        options: PunchOptions,
        deadline: tokio::time::Instant,
        done: oneshot::Sender<Result<(SocketAddr, u32), Option<ConnectError>>>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.run_dial_session(peer, addrs, options, deadline, done))
    }

    async fn run_dial_session(
        self: Arc<Self>,
        peer: NodeId,
        addrs: Vec<SocketAddr>,
        options: PunchOptions,
        deadline: tokio::time::Instant,
        done: oneshot::Sender<Result<(SocketAddr, u32), Option<ConnectError>>>,
    ) {
        let quic = self.punch_quic();
        let mut done = Some(done);
        let mut attempts: JoinSet<(SocketAddr, Result<quinn::Connection, ConnectError>)> =
            JoinSet::new();
        let mut in_flight: HashSet<SocketAddr> = HashSet::new();
        let mut dead: HashSet<SocketAddr> = HashSet::new();
        let mut round = 0u32;
        let mut next_round = tokio::time::Instant::now();
        let mut registered = false;
        let mut last_error = None;
        loop {
            if let Some(c) = self.direct_connection(&peer) {
                if let Some(tx) = done.take() {
                    let _ = tx.send(Ok((c.remote, round)));
                }
            }
            if done.is_none() && attempts.is_empty() {
                return;
            }
            let launch = done.is_some() && round < options.rounds;
            tokio::select! {
                _ = tokio::time::sleep_until(next_round), if launch => {
                    round += 1;
                    next_round += options.interval;
                    for &addr in &addrs {
                        if in_flight.contains(&addr) || dead.contains(&addr) {
                            continue;
                        }
                        in_flight.insert(addr);
                        let this = self.clone();
                        let quic = quic.clone();
                        attempts.spawn(async move {
                            let dial = this.dial_with(peer, addr, quic);
                            let result = tokio::time::timeout_at(deadline, dial)
                                .await
                                .unwrap_or(Err(ConnectError::TimedOut { addr }));
                            (addr, result)
                        });
                    }
                    debug!(peer = %peer.short(), round, "punch round");
                }
                Some(joined) = attempts.join_next(), if !attempts.is_empty() => {
                    let Ok((addr, result)) = joined else { continue };
                    in_flight.remove(&addr);
                    match result {
                        Ok(conn) if registered && self.direct_connection(&peer).is_some() => {
                            // A second handshake of ours in the same direction: unused.
                            conn.close(CloseCode::Duplicate.varint(), b"duplicate connection");
                            bump(&self.counters.duplicates_closed);
                        }
                        Ok(conn) => {
                            registered = true;
                            lock(&self.addresses).promote(peer, addr);
                            self.register(conn, peer, true).await;
                        }
                        Err(e) => {
                            debug!(peer = %peer.short(), %addr, error = %e, "punch dial failed");
                            if matches!(
                                e,
                                ConnectError::PeerIdMismatch { .. }
                                    | ConnectError::Protocol { .. }
                                    | ConnectError::BadPeerCertificate { .. }
                            ) {
                                // Another node (or no P2PS node) answers there.
                                dead.insert(addr);
                            }
                            last_error = Some(e);
                        }
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(tx) = done.take() {
                        let _ = tx.send(Err(last_error));
                    }
                    return;
                }
            }
        }
    }

    /// As introducer: a connected peer asks to be introduced to `target`.
    pub(crate) async fn on_punch_request(
        self: &Arc<Self>,
        ctx: &Arc<ConnCtx>,
        id: u64,
        target: NodeId,
        addrs: Vec<SocketAddr>,
    ) {
        let requester = ctx.peer;
        let refuse = |reason: PunchRefusal| Control::PunchRefused {
            id,
            target: *target.as_bytes(),
            code: reason.to_code(),
        };
        let admitted = if target == requester || target == self.node_id {
            Err(PunchRefusal::Declined)
        } else {
            lock(&self.traversal.punch.introductions).admit(requester, id, target, Instant::now())
        };
        let reply = match admitted {
            Err(reason) => Some(refuse(reason)),
            Ok(()) => {
                let offer = Control::PunchOffer {
                    id,
                    from: *requester.as_bytes(),
                    candidates: candidates(Some(ctx.remote), addrs),
                };
                match self.send_control(target, &offer).await {
                    Ok(()) => {
                        bump(&self.counters.punch_introductions);
                        debug!(from = %requester.short(), to = %target.short(), "forwarded a punch offer");
                        None
                    }
                    Err(e) => {
                        debug!(to = %target.short(), error = %e, "could not forward a punch offer");
                        lock(&self.traversal.punch.introductions).cancel(requester, id);
                        Some(refuse(PunchRefusal::TargetNotConnected))
                    }
                }
            }
        };
        if let Some(reply) = reply {
            bump(&self.counters.punch_requests_refused);
            if let Err(e) = ctx.control.send(&ctx.conn, &reply).await {
                debug!(peer = %requester.short(), error = %e, "could not refuse a punch request");
            }
        }
    }

    /// As introducer: the target answered an offer; tell the requester.
    pub(crate) async fn on_punch_answer(
        self: &Arc<Self>,
        ctx: &Arc<ConnCtx>,
        id: u64,
        requester: NodeId,
        answer: Reply,
    ) {
        let target = ctx.peer;
        let open =
            lock(&self.traversal.punch.introductions).answer(requester, id, target, Instant::now());
        if !open {
            debug!(peer = %target.short(), "ignored an answer to an introduction that is not open");
            return;
        }
        let reply = match answer {
            Ok(addrs) => Control::PunchGo {
                id,
                target: *target.as_bytes(),
                candidates: candidates(Some(ctx.remote), addrs),
            },
            Err(code) => Control::PunchRefused {
                id,
                target: *target.as_bytes(),
                code,
            },
        };
        if let Err(e) = self.send_control(requester, &reply).await {
            debug!(peer = %requester.short(), error = %e, "could not pass on a punch answer");
        }
    }

    /// As target: an introducer offers a punch from `from`.
    pub(crate) async fn on_punch_offer(
        self: &Arc<Self>,
        ctx: &Arc<ConnCtx>,
        id: u64,
        from: NodeId,
        addrs: Vec<SocketAddr>,
    ) {
        bump(&self.counters.punch_offers);
        let state = &self.traversal.punch;
        let addrs = candidates(None, addrs);
        let refusal = if !state.accept.load(Ordering::Relaxed)
            || from == self.node_id
            || from == ctx.peer
            || addrs.is_empty()
        {
            Some(PunchRefusal::Declined)
        } else if state
            .active_offers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_ACTIVE_OFFERS).then_some(n + 1)
            })
            .is_err()
        {
            Some(PunchRefusal::Busy)
        } else {
            None
        };
        let answer = match refusal {
            Some(reason) => Control::PunchDecline {
                id,
                requester: *from.as_bytes(),
                code: reason.to_code(),
            },
            None => Control::PunchAccept {
                id,
                requester: *from.as_bytes(),
                candidates: self.advertised_addrs(),
            },
        };
        if let Err(e) = ctx.control.send(&ctx.conn, &answer).await {
            debug!(peer = %ctx.peer.short(), error = %e, "could not answer a punch offer");
        }
        if refusal.is_some() {
            return;
        }
        let slot = OfferSlot(self.clone());
        let options = PunchOptions::default();
        let deadline = tokio::time::Instant::now() + options.timeout;
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(
            self.clone()
                .dial_session(from, addrs, options, deadline, done_tx),
        );
        tokio::spawn(async move {
            let _slot = slot;
            match done_rx.await {
                Ok(Ok((remote, _))) => {
                    debug!(peer = %from.short(), %remote, "punch offer: connected")
                }
                Ok(Err(e)) => {
                    debug!(peer = %from.short(), error = ?e, "punch offer: no connection")
                }
                Err(_) => {}
            }
        });
    }

    /// As requester: the introducer's reply to one of our requests.
    pub(crate) fn on_punch_reply(&self, ctx: &ConnCtx, id: u64, target: NodeId, reply: Reply) {
        let mut waiting = lock(&self.traversal.punch.waiting);
        let ours = waiting
            .get(&id)
            .is_some_and(|w| w.via == ctx.peer && w.target == target);
        if !ours {
            debug!(peer = %ctx.peer.short(), "ignored a punch reply to no request of ours");
            return;
        }
        if let Some(w) = waiting.remove(&id) {
            let _ = w.reply.send(reply);
        }
    }

    /// The addresses worth advertising (see `Transport::advertised_addrs`).
    pub(crate) fn advertised_addrs(&self) -> Vec<SocketAddr> {
        let reach = lock(&self.traversal.reach);
        crate::reachability::advertised(
            &reach.status(),
            self.endpoint.local_addr().ok(),
            &reach.local_addrs(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    #[test]
    fn refusal_codes_round_trip() {
        for r in [
            PunchRefusal::TargetNotConnected,
            PunchRefusal::RateLimited,
            PunchRefusal::Declined,
            PunchRefusal::Busy,
            PunchRefusal::Other(99),
        ] {
            assert_eq!(PunchRefusal::from_code(r.to_code()), r);
        }
    }

    #[test]
    fn introducer_rate_limits_per_requester_and_recovers() {
        let mut intro = Introductions::default();
        let t0 = Instant::now();
        for i in 0..MAX_REQUESTS_PER_WINDOW as u64 {
            intro.admit(id(1), i, id(2), t0).unwrap();
        }
        assert_eq!(
            intro.admit(id(1), 100, id(2), t0),
            Err(PunchRefusal::RateLimited)
        );
        // Another requester is not affected.
        intro.admit(id(3), 0, id(2), t0).unwrap();
        // After the window the requester may ask again.
        intro.admit(id(1), 101, id(2), t0 + RATE_WINDOW).unwrap();
    }

    #[test]
    fn answers_close_only_open_introductions_from_their_target() {
        let mut intro = Introductions::default();
        let t0 = Instant::now();
        intro.admit(id(1), 7, id(2), t0).unwrap();
        assert_eq!(intro.admit(id(1), 7, id(2), t0), Err(PunchRefusal::Busy));
        assert!(!intro.answer(id(1), 7, id(9), t0), "wrong target");
        assert!(!intro.answer(id(1), 8, id(2), t0), "unknown id");
        assert!(intro.answer(id(1), 7, id(2), t0));
        assert!(!intro.answer(id(1), 7, id(2), t0), "answered once");
        intro.admit(id(1), 9, id(2), t0).unwrap();
        assert!(
            !intro.answer(id(1), 9, id(2), t0 + INTRODUCTION_TTL),
            "expired"
        );
    }

    #[test]
    fn pending_introductions_are_bounded() {
        let mut intro = Introductions::default();
        let t0 = Instant::now();
        let mut admitted = 0;
        for n in 0..=255u8 {
            for i in 0..2 {
                if intro.admit(id(n), i, id(0), t0).is_ok() {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, MAX_PENDING_INTRODUCTIONS);
        assert!(intro.pending.len() <= MAX_PENDING_INTRODUCTIONS);
    }

    #[test]
    fn candidates_are_usable_distinct_and_bounded() {
        let a: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let many: Vec<SocketAddr> = (1..30)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
            .collect();
        let out = candidates(
            Some(a),
            [vec![a, "0.0.0.0:1".parse().unwrap()], many].concat(),
        );
        assert_eq!(out[0], a);
        assert_eq!(out.len(), MAX_ADVERTISED);
        assert!(out.iter().all(usable_candidate));
    }
}
