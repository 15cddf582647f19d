//! The connection manager: one connection per peer, per-peer send queues, class streams.
//!
//! Design, and why:
//!
//! * **One live connection per pair of nodes.** When two nodes dial each other at the same time
//!   both connections complete. Each side then keeps the connection *initiated by the smaller
//!   node id* (both sides compute the same answer without talking), and closes the other with
//!   [`CloseCode::Duplicate`] once it is drained: our class streams on it are finished and
//!   acknowledged and the peer's class streams on it have ended, bounded by the idle timeout.
//!   Messages already written on the losing connection are therefore still delivered, and queued
//!   messages simply continue on the kept one. A second connection in the *same* direction
//!   (a peer that restarted and dialed again while we still hold its old connection) replaces
//!   the old one. If a peer closes our current connection as a duplicate before we have seen the
//!   one it kept, we wait an idle timeout for it before declaring the peer disconnected.
//! * **Queues belong to the peer, not to the connection.** Each peer has one queue per traffic
//!   class, bounded in bytes by a semaphore; `send` waits for room, `try_send` fails at once.
//!   A writer task per class drains its queue in batches (many frames per quinn call) onto the
//!   class stream of whatever connection is current, so a connection switch loses nothing that
//!   was still queued, and a slow class never blocks another.
//! * **A bad frame costs one stream, not the connection.** A reader that gets an oversized or
//!   undecodable frame stops that stream with a [`StreamStopCode`]; the writer on the other side
//!   sees the stop and opens a fresh stream for later messages.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use crate::addresses::AddressBook;
use crate::class::{StreamClass, RAW_STREAM_PRIORITY};
use crate::config::TransportConfig;
use crate::error::{ConnectError, OpenStreamError, SendError, TrySendError};
use crate::event::{CloseCode, DisconnectReason, Event, StreamStopCode};
use crate::frame::{self, FrameDecoder, HEADER_LEN};
use crate::identity::NodeId;
use crate::stats::{add, bump, Counters, PeerStats, TransportStats};
use crate::tls::{self, PeerServerVerifier, ALPN, ALPN_STR, SERVER_NAME};

/// Most bytes gathered into one write on a class stream.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most frames gathered into one write on a class stream.
const MAX_BATCH_FRAMES: usize = 1024;
/// Minimum time a duplicate connection is kept open after losing, so that the peer sees the
/// connection we kept before ours closes.
const DUPLICATE_LINGER: Duration = Duration::from_millis(300);
/// How often a writer reopens a class stream for the same batch without progress before it
/// drops the frame at the front (a peer that refuses every stream must not make us spin).
const MAX_REOPENS_WITHOUT_PROGRESS: u32 = 3;

/// Locks a mutex; a panic elsewhere while holding it does not make the table unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One QUIC connection to an authenticated peer, with what is needed to drain it.
pub(crate) struct ConnCtx {
    pub(crate) conn: quinn::Connection,
    pub(crate) peer: NodeId,
    pub(crate) outbound: bool,
    pub(crate) remote: SocketAddr,
    /// Our class streams on this connection not yet finished and acknowledged.
    open_send: AtomicUsize,
    /// The peer's class streams on this connection not yet ended.
    open_recv: AtomicUsize,
    /// Signalled whenever one of the counters above drops.
    quiet: Notify,
}

impl ConnCtx {
    fn new(conn: quinn::Connection, peer: NodeId, outbound: bool) -> Self {
        let remote = conn.remote_address();
        Self {
            conn,
            peer,
            outbound,
            remote,
            open_send: AtomicUsize::new(0),
            open_recv: AtomicUsize::new(0),
            quiet: Notify::new(),
        }
    }

    fn is_alive(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    fn is_quiet(&self) -> bool {
        self.open_send.load(Ordering::Acquire) == 0 && self.open_recv.load(Ordering::Acquire) == 0
    }

    fn send_stream_done(&self) {
        self.open_send.fetch_sub(1, Ordering::AcqRel);
        self.quiet.notify_waiters();
    }
}

/// Decrements the open receive-stream count of a connection when a reader ends.
struct RecvGuard(Arc<ConnCtx>);

impl Drop for RecvGuard {
    fn drop(&mut self) {
        self.0.open_recv.fetch_sub(1, Ordering::AcqRel);
        self.0.quiet.notify_waiters();
    }
}

/// What writers follow: the connection currently used for a peer, if any.
type Link = Option<Arc<ConnCtx>>;

/// A byte-bounded queue of encoded frames for one class of one peer.
pub(crate) struct ClassQueue {
    tx: mpsc::UnboundedSender<Bytes>,
    budget: Arc<Semaphore>,
    capacity: usize,
    /// The writer task, started with the first frame (most peers never use every class).
    seed: Mutex<Option<Writer>>,
    started: AtomicBool,
}

enum PushError {
    Full,
    Closed,
}

fn cost(len: usize, capacity: usize) -> u32 {
    // capacity <= u32::MAX is checked by TransportConfig::validate. A frame larger than the whole
    // budget takes the whole budget (it waits for an empty queue) instead of never fitting.
    u32::try_from(len.min(capacity)).unwrap_or(u32::MAX)
}

impl ClassQueue {
    async fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let permit = self
            .budget
            .acquire_many(cost(frame.len(), self.capacity))
            .await
            .map_err(|_| PushError::Closed)?;
        permit.forget();
        self.tx.send(frame).map_err(|_| PushError::Closed)
    }

    fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        match self
            .budget
            .try_acquire_many(cost(frame.len(), self.capacity))
        {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(PushError::Full),
            Err(TryAcquireError::Closed) => return Err(PushError::Closed),
        }
        self.tx.send(frame).map_err(|_| PushError::Closed)
    }
}

/// The three class queues of one peer.
pub(crate) struct PeerQueues {
    classes: [ClassQueue; 3],
    writers: Mutex<Vec<JoinHandle<()>>>,
}

impl PeerQueues {
    /// The queue of `class`, its writer task started.
    fn get(&self, class: StreamClass) -> &ClassQueue {
        let q = &self.classes[class.index()];
        if !q.started.load(Ordering::Acquire) {
            if let Some(writer) = lock(&q.seed).take() {
                q.started.store(true, Ordering::Release);
                lock(&self.writers).push(tokio::spawn(writer.run()));
            }
        }
        q
    }

    fn close(&self) {
        for q in &self.classes {
            q.budget.close();
        }
    }

    fn take_writers(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.writers))
    }
}

/// Everything known about one peer.
struct PeerState {
    /// Distinguishes successive states of the same peer in delayed tasks.
    epoch: u64,
    queues: Arc<PeerQueues>,
    link: watch::Sender<Link>,
    current: Option<Arc<ConnCtx>>,
    /// Connections that lost a duplicate race and are being drained.
    draining: Vec<Arc<ConnCtx>>,
    /// Whether `Connected` was emitted (and so `Disconnected` is owed).
    announced: bool,
}

impl PeerState {
    fn set_current(&mut self, ctx: Arc<ConnCtx>) {
        self.current = Some(ctx.clone());
        self.link.send_replace(Some(ctx));
    }

    fn live_current(&self) -> Option<&Arc<ConnCtx>> {
        self.current.as_ref().filter(|c| c.is_alive())
    }

    /// Closes every connection of the peer with `code` and stops accepting frames for it.
    fn close(&self, code: CloseCode, reason: &str) {
        for c in self.current.iter().chain(self.draining.iter()) {
            c.conn.close(code.varint(), reason.as_bytes());
        }
        self.queues.close();
    }
}

type DialResult = Option<Result<(), ConnectError>>;

#[derive(Default)]
pub(crate) struct Table {
    peers: HashMap<NodeId, PeerState>,
    dials: HashMap<NodeId, watch::Receiver<DialResult>>,
    next_epoch: u64,
}

/// State shared by the transport handle and its tasks.
pub(crate) struct Shared<M> {
    pub(crate) node_id: NodeId,
    pub(crate) config: TransportConfig,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) certified_key: Arc<CertifiedKey>,
    pub(crate) quic: Arc<quinn::TransportConfig>,
    pub(crate) table: Mutex<Table>,
    pub(crate) addresses: Mutex<AddressBook>,
    pub(crate) events: mpsc::Sender<Event<M>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) closing: AtomicBool,
}

impl<M> Shared<M> {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Last handle dropped without `shutdown`: close everything without waiting.
    pub(crate) fn abort(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.endpoint
            .close(CloseCode::Shutdown.varint(), b"transport dropped");
        let states: Vec<PeerState> = {
            let mut table = lock(&self.table);
            table.dials.clear();
            table.peers.drain().map(|(_, st)| st).collect()
        };
        for st in states {
            st.close(CloseCode::Shutdown, "transport dropped");
        }
    }
}

impl<M> Shared<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// The state of `peer`, created (with its writer tasks) if needed.
    fn peer_entry<'a>(&self, table: &'a mut Table, peer: NodeId) -> &'a mut PeerState {
        let next_epoch = &mut table.next_epoch;
        table.peers.entry(peer).or_insert_with(|| {
            *next_epoch += 1;
            let (link, _) = watch::channel(None);
            let capacity = self.config.peer_queue_bytes;
            let classes = StreamClass::ALL.map(|class| {
                let (tx, rx) = mpsc::unbounded_channel();
                let budget = Arc::new(Semaphore::new(capacity));
                let writer = Writer {
                    peer,
                    class,
                    rx,
                    budget: budget.clone(),
                    capacity,
                    link: link.subscribe(),
                    link_open: true,
                    counters: self.counters.clone(),
                    finish_timeout: self.config.shutdown_timeout,
                };
                ClassQueue {
                    tx,
                    budget,
                    capacity,
                    seed: Mutex::new(Some(writer)),
                    started: AtomicBool::new(false),
                }
            });
            PeerState {
                epoch: *next_epoch,
                queues: Arc::new(PeerQueues {
                    classes,
                    writers: Mutex::new(Vec::new()),
                }),
                link,
                current: None,
                draining: Vec::new(),
                announced: false,
            }
        })
    }

    /// Installs a freshly authenticated connection, resolving duplicates.
    pub(crate) async fn register(
        self: &Arc<Self>,
        conn: quinn::Connection,
        peer: NodeId,
        outbound: bool,
    ) {
        let ctx = Arc::new(ConnCtx::new(conn, peer, outbound));
        let mut announce = false;
        let mut loser = None;
        {
            let mut table = lock(&self.table);
            if self.is_closing() {
                ctx.conn
                    .close(CloseCode::Shutdown.varint(), b"shutting down");
                return;
            }
            let st = self.peer_entry(&mut table, peer);
            match st.current.clone() {
                Some(existing) if existing.is_alive() => {
                    // Same direction: the newer one wins (the peer restarted or re-dialed).
                    // Opposite directions: keep the one initiated by the smaller node id.
                    let keep_new =
                        existing.outbound == outbound || outbound == (self.node_id < peer);
                    if keep_new {
                        st.set_current(ctx.clone());
                        loser = Some(existing);
                    } else {
                        loser = Some(ctx.clone());
                    }
                }
                _ => st.set_current(ctx.clone()),
            }
            if let Some(l) = &loser {
                st.draining.push(l.clone());
            }
            if !st.announced {
                st.announced = true;
                announce = true;
            }
        }
        debug!(
            peer = %peer.short(),
            remote = %ctx.remote,
            outbound,
            duplicate = loser.is_some(),
            "connection established"
        );
        if announce {
            let _ = self
                .events
                .send(Event::Connected {
                    peer,
                    remote_addr: ctx.remote,
                    outbound,
                })
                .await;
        }
        tokio::spawn(self.clone().drive_connection(ctx));
        if let Some(l) = loser {
            tokio::spawn(self.clone().drain_duplicate(l));
        }
    }

    /// Accepts the peer's streams on one connection until it closes, then updates the table.
    async fn drive_connection(self: Arc<Self>, ctx: Arc<ConnCtx>) {
        loop {
            tokio::select! {
                uni = ctx.conn.accept_uni() => match uni {
                    Ok(recv) => {
                        ctx.open_recv.fetch_add(1, Ordering::AcqRel);
                        let guard = RecvGuard(ctx.clone());
                        tokio::spawn(self.clone().read_class_stream(guard, recv));
                    }
                    Err(_) => break,
                },
                bi = ctx.conn.accept_bi() => match bi {
                    Ok((send, recv)) => {
                        let _ = self
                            .events
                            .send(Event::IncomingStream { peer: ctx.peer, send, recv })
                            .await;
                    }
                    Err(_) => break,
                },
            }
        }
        let error = ctx.conn.closed().await;
        self.on_closed(&ctx, error).await;
    }

    /// Reads frames from one class stream of a peer and emits them as messages.
    async fn read_class_stream(self: Arc<Self>, guard: RecvGuard, mut recv: quinn::RecvStream) {
        let ctx = guard.0.clone();
        let mut tag = [0u8; 1];
        if recv.read_exact(&mut tag).await.is_err() {
            return;
        }
        let Some(class) = StreamClass::from_tag(tag[0]) else {
            let error = format!("unknown stream class tag {:#04x}", tag[0]);
            self.refuse_stream(&ctx, &mut recv, None, StreamStopCode::UnknownClass, &error);
            return;
        };
        trace!(peer = %ctx.peer.short(), ?class, "class stream opened by peer");
        let counters = self.counters.class(class);
        let mut decoder = FrameDecoder::new(self.config.max_frame_size);
        // Several chunks per call: one lock of the connection state for many packets.
        let mut chunks: [Bytes; 16] = Default::default();
        loop {
            let n = match recv.read_chunks(&mut chunks).await {
                Ok(Some(n)) => n,
                Ok(None) => {
                    if let Err(e) = decoder.finish() {
                        self.refuse_stream(
                            &ctx,
                            &mut recv,
                            Some(class),
                            StreamStopCode::MalformedFrame,
                            &e,
                        );
                    }
                    return;
                }
                Err(e) => {
                    trace!(peer = %ctx.peer.short(), ?class, error = %e, "class stream ended");
                    return;
                }
            };
            for chunk in &mut chunks[..n] {
                decoder.push(chunk);
                *chunk = Bytes::new();
            }
            loop {
                let body = match decoder.next_frame() {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(e) => {
                        self.refuse_stream(
                            &ctx,
                            &mut recv,
                            Some(class),
                            StreamStopCode::FrameTooLarge,
                            &e,
                        );
                        return;
                    }
                };
                let msg = match frame::decode::<M>(&body) {
                    Ok(msg) => msg,
                    Err(e) => {
                        self.refuse_stream(
                            &ctx,
                            &mut recv,
                            Some(class),
                            StreamStopCode::MalformedFrame,
                            &e,
                        );
                        return;
                    }
                };
                bump(&counters.messages_in);
                add(&counters.bytes_in, (HEADER_LEN + body.len()) as u64);
                let event = Event::Message {
                    peer: ctx.peer,
                    class,
                    msg,
                };
                if self.events.send(event).await.is_err() {
                    // Nobody listens any more.
                    return;
                }
            }
        }
    }

    fn refuse_stream(
        &self,
        ctx: &ConnCtx,
        recv: &mut quinn::RecvStream,
        class: Option<StreamClass>,
        code: StreamStopCode,
        error: &dyn std::fmt::Display,
    ) {
        let _ = recv.stop(code.varint());
        bump(&self.counters.frame_errors);
        warn!(
            peer = %ctx.peer.short(),
            ?class,
            ?code,
            %error,
            "refused a frame: closed that stream, the connection stays up"
        );
    }

    /// A connection ended: forget it, and the peer too if it was the peer's connection.
    async fn on_closed(self: &Arc<Self>, ctx: &Arc<ConnCtx>, error: quinn::ConnectionError) {
        let reason = disconnect_reason(&error);
        let mut event = None;
        {
            let mut table = lock(&self.table);
            let Some(st) = table.peers.get_mut(&ctx.peer) else {
                return;
            };
            st.draining.retain(|c| !Arc::ptr_eq(c, ctx));
            if !st.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, ctx)) {
                return;
            }
            // Another live connection to the peer (one we were draining): use it instead.
            if let Some(pos) = st.draining.iter().position(|c| c.is_alive()) {
                let other = st.draining.remove(pos);
                debug!(peer = %ctx.peer.short(), "current connection closed, switching to the other one");
                st.set_current(other);
                return;
            }
            if matches!(
                reason,
                DisconnectReason::Remote {
                    code: CloseCode::Duplicate,
                    ..
                }
            ) {
                // The peer kept another connection that we have not seen yet: wait for it.
                st.current = None;
                st.link.send_replace(None);
                let epoch = st.epoch;
                tokio::spawn(self.clone().expire_if_not_replaced(ctx.peer, epoch, reason));
                return;
            }
            if let Some(st) = table.peers.remove(&ctx.peer) {
                st.queues.close();
                if st.announced {
                    event = Some(Event::Disconnected {
                        peer: ctx.peer,
                        reason: reason.clone(),
                    });
                }
            }
        }
        if let Some(event) = event {
            info!(peer = %ctx.peer.short(), ?reason, "peer disconnected");
            let _ = self.events.send(event).await;
        }
    }

    /// After a peer closed our current connection as a duplicate: if the connection it kept does
    /// not show up within the idle timeout, the peer is gone.
    async fn expire_if_not_replaced(
        self: Arc<Self>,
        peer: NodeId,
        epoch: u64,
        reason: DisconnectReason,
    ) {
        tokio::time::sleep(self.config.idle_timeout).await;
        let event = {
            let mut table = lock(&self.table);
            let expired = table
                .peers
                .get(&peer)
                .is_some_and(|st| st.epoch == epoch && st.current.is_none())
                && !table.dials.contains_key(&peer);
            if !expired {
                return;
            }
            match table.peers.remove(&peer) {
                Some(st) => {
                    st.queues.close();
                    Event::Disconnected { peer, reason }
                }
                None => return,
            }
        };
        info!(peer = %peer.short(), "peer disconnected (duplicate connection never replaced)");
        let _ = self.events.send(event).await;
    }

    /// Closes a connection that lost a duplicate race once nothing is in flight on it.
    async fn drain_duplicate(self: Arc<Self>, ctx: Arc<ConnCtx>) {
        let deadline = tokio::time::Instant::now() + self.config.idle_timeout;
        tokio::time::sleep(DUPLICATE_LINGER).await;
        loop {
            let quiet = ctx.quiet.notified();
            if ctx.is_quiet() || !ctx.is_alive() {
                break;
            }
            if tokio::time::timeout_at(deadline, quiet).await.is_err() {
                break;
            }
        }
        let still_loser = {
            let table = lock(&self.table);
            table
                .peers
                .get(&ctx.peer)
                .is_none_or(|st| !st.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &ctx)))
        };
        if still_loser && ctx.is_alive() {
            debug!(peer = %ctx.peer.short(), outbound = ctx.outbound, "closing duplicate connection");
            ctx.conn
                .close(CloseCode::Duplicate.varint(), b"duplicate connection");
            bump(&self.counters.duplicates_closed);
        }
    }

    /// Connects to `peer` (trying `addrs` in order) unless already connected. Concurrent calls
    /// for the same peer share one dial.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        peer: NodeId,
        addrs: Vec<SocketAddr>,
    ) -> Result<(), ConnectError> {
        let mut rx = {
            let mut table = lock(&self.table);
            if self.is_closing() {
                return Err(ConnectError::ShuttingDown);
            }
            if peer == self.node_id {
                return Err(ConnectError::SelfConnect);
            }
            if table
                .peers
                .get(&peer)
                .and_then(PeerState::live_current)
                .is_some()
            {
                return Ok(());
            }
            self.start_dial(&mut table, peer, addrs)
        };
        loop {
            if let Some(result) = rx.borrow_and_update().clone() {
                return result;
            }
            if rx.changed().await.is_err() {
                return rx
                    .borrow()
                    .clone()
                    .unwrap_or(Err(ConnectError::ShuttingDown));
            }
        }
    }

    fn start_dial(
        self: &Arc<Self>,
        table: &mut Table,
        peer: NodeId,
        addrs: Vec<SocketAddr>,
    ) -> watch::Receiver<DialResult> {
        if let Some(rx) = table.dials.get(&peer) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        table.dials.insert(peer, rx.clone());
        tokio::spawn(self.clone().dial_task(peer, addrs, tx));
        rx
    }

    async fn dial_task(
        self: Arc<Self>,
        peer: NodeId,
        addrs: Vec<SocketAddr>,
        tx: watch::Sender<DialResult>,
    ) {
        let result = self.dial_addresses(peer, &addrs).await;
        let mut event = None;
        {
            let mut table = lock(&self.table);
            table.dials.remove(&peer);
            if let Err(error) = &result {
                bump(&self.counters.dials_failed);
                // A state created only to queue messages for this dial is given up.
                let abandoned = table
                    .peers
                    .get(&peer)
                    .is_some_and(|st| st.current.is_none() && !st.announced);
                if abandoned {
                    if let Some(st) = table.peers.remove(&peer) {
                        st.queues.close();
                    }
                }
                event = Some(Event::DialFailed {
                    peer,
                    error: error.clone(),
                });
            }
        }
        tx.send_replace(Some(result));
        if let Some(event) = event {
            let _ = self.events.send(event).await;
        }
    }

    async fn dial_addresses(
        self: &Arc<Self>,
        peer: NodeId,
        addrs: &[SocketAddr],
    ) -> Result<(), ConnectError> {
        let mut last = None;
        for &addr in addrs {
            match self.dial_once(peer, addr).await {
                Ok(conn) => {
                    lock(&self.addresses).promote(peer, addr);
                    self.register(conn, peer, true).await;
                    return Ok(());
                }
                Err(
                    e @ (ConnectError::ShuttingDown
                    | ConnectError::TooManyConnections { .. }
                    | ConnectError::SelfConnect),
                ) => return Err(e),
                Err(e) => {
                    debug!(peer = %peer.short(), %addr, error = %e, "dial failed");
                    last = Some(e);
                }
            }
        }
        match last {
            None => Err(ConnectError::NoAddress { peer }),
            Some(e) if addrs.len() == 1 => Err(e),
            Some(e) => Err(ConnectError::AllAddressesFailed {
                peer,
                attempts: addrs.len(),
                last: Box::new(e),
            }),
        }
    }

    /// One handshake with `addr`, expecting `peer`.
    async fn dial_once(
        &self,
        peer: NodeId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, ConnectError> {
        if self.is_closing() {
            return Err(ConnectError::ShuttingDown);
        }
        if self.endpoint.open_connections() >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections {
                limit: self.config.max_connections,
            });
        }
        let verifier = Arc::new(PeerServerVerifier::new(Some(peer)));
        let observed = verifier.observed();
        let local_error = |reason: String| ConnectError::Protocol {
            addr,
            protocol: ALPN_STR,
            reason,
        };
        let crypto = tls::client_config(self.certified_key.clone(), verifier)
            .map_err(|e| local_error(e.to_string()))?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| local_error(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(self.quic.clone());
        let connecting = self
            .endpoint
            .connect_with(client, addr, SERVER_NAME)
            .map_err(|source| ConnectError::Dial { addr, source })?;
        let conn = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Err(_) => return Err(ConnectError::TimedOut { addr }),
            Ok(Err(e)) => return Err(handshake_error(e, addr, peer, observed.get().copied())),
            Ok(Ok(conn)) => conn,
        };
        let actual = match authenticate(&conn) {
            Ok(id) => id,
            Err(reason) => {
                conn.close(CloseCode::ProtocolViolation.varint(), reason.as_bytes());
                return Err(local_error(reason));
            }
        };
        if actual != peer {
            // The verifier already refuses this inside the handshake; checked again here so that
            // no code path can hand out a connection to the wrong peer.
            conn.close(CloseCode::PeerIdMismatch.varint(), b"unexpected node id");
            return Err(ConnectError::PeerIdMismatch {
                addr,
                expected: peer,
                actual,
            });
        }
        bump(&self.counters.connections_dialed);
        Ok(conn)
    }

    /// Completes an incoming connection: handshake, authentication, registration.
    pub(crate) async fn handle_incoming(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                bump(&self.counters.handshakes_failed);
                debug!(%remote, error = %e, "could not accept incoming connection");
                return;
            }
        };
        let conn = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                bump(&self.counters.handshakes_failed);
                info!(%remote, error = %e, "refused incoming connection: handshake failed");
                return;
            }
            Err(_) => {
                bump(&self.counters.handshakes_failed);
                info!(%remote, "refused incoming connection: handshake timed out");
                return;
            }
        };
        let peer = match authenticate(&conn) {
            Ok(peer) => peer,
            Err(reason) => {
                bump(&self.counters.handshakes_failed);
                info!(%remote, %reason, "refused incoming connection");
                conn.close(CloseCode::ProtocolViolation.varint(), reason.as_bytes());
                return;
            }
        };
        if peer == self.node_id {
            conn.close(CloseCode::ProtocolViolation.varint(), b"connection to self");
            return;
        }
        bump(&self.counters.connections_accepted);
        self.register(conn, peer, false).await;
    }

    /// The queues of `peer`, starting a dial from the address book if it is not connected.
    fn queues_for(self: &Arc<Self>, peer: NodeId) -> Result<Arc<PeerQueues>, SendError> {
        if peer == self.node_id {
            return Err(SendError::SelfSend);
        }
        if self.is_closing() {
            return Err(SendError::ShuttingDown);
        }
        let mut table = lock(&self.table);
        if let Some(st) = table.peers.get(&peer) {
            return Ok(st.queues.clone());
        }
        let addrs = lock(&self.addresses).get(&peer);
        if addrs.is_empty() {
            return Err(SendError::NoAddress { peer });
        }
        let queues = self.peer_entry(&mut table, peer).queues.clone();
        self.start_dial(&mut table, peer, addrs);
        Ok(queues)
    }

    pub(crate) async fn send_bytes(
        self: &Arc<Self>,
        peer: NodeId,
        class: StreamClass,
        frame: Bytes,
    ) -> Result<(), SendError> {
        let queues = self.queues_for(peer)?;
        queues
            .get(class)
            .push(frame)
            .await
            .map_err(|_| SendError::Disconnected { peer })
    }

    pub(crate) fn try_send_bytes(
        self: &Arc<Self>,
        peer: NodeId,
        class: StreamClass,
        frame: Bytes,
    ) -> Result<(), TrySendError> {
        let queues = self.queues_for(peer)?;
        match queues.get(class).try_push(frame) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => {
                bump(&self.counters.queue_full);
                Err(TrySendError::QueueFull { peer, class })
            }
            Err(PushError::Closed) => Err(SendError::Disconnected { peer }.into()),
        }
    }

    fn current_connection(&self, peer: &NodeId) -> Option<Arc<ConnCtx>> {
        lock(&self.table)
            .peers
            .get(peer)
            .and_then(PeerState::live_current)
            .cloned()
    }

    pub(crate) async fn open_bi(
        self: &Arc<Self>,
        peer: NodeId,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), OpenStreamError> {
        let ctx = match self.current_connection(&peer) {
            Some(ctx) => ctx,
            None => {
                let addrs = lock(&self.addresses).get(&peer);
                if addrs.is_empty() {
                    return Err(ConnectError::NoAddress { peer }.into());
                }
                self.connect(peer, addrs).await?;
                self.current_connection(&peer)
                    .ok_or(ConnectError::NoAddress { peer })?
            }
        };
        let (send, recv) = ctx
            .conn
            .open_bi()
            .await
            .map_err(|source| OpenStreamError::ConnectionLost { peer, source })?;
        let _ = send.set_priority(RAW_STREAM_PRIORITY);
        Ok((send, recv))
    }

    pub(crate) async fn disconnect(self: &Arc<Self>, peer: NodeId, reason: &str) -> bool {
        let st = lock(&self.table).peers.remove(&peer);
        let Some(st) = st else {
            return false;
        };
        st.close(CloseCode::Normal, reason);
        if st.announced {
            let _ = self
                .events
                .send(Event::Disconnected {
                    peer,
                    reason: DisconnectReason::Local {
                        code: CloseCode::Normal,
                        reason: reason.to_owned(),
                    },
                })
                .await;
        }
        true
    }

    pub(crate) fn connected_peers(&self) -> Vec<NodeId> {
        let table = lock(&self.table);
        let mut peers: Vec<NodeId> = table
            .peers
            .iter()
            .filter(|(_, st)| st.live_current().is_some())
            .map(|(id, _)| *id)
            .collect();
        peers.sort_unstable();
        peers
    }

    pub(crate) fn stats(&self) -> TransportStats {
        let mut peers: Vec<PeerStats> = {
            let table = lock(&self.table);
            table
                .peers
                .iter()
                .filter_map(|(id, st)| {
                    st.live_current().map(|c| PeerStats {
                        peer: *id,
                        remote_addr: c.remote,
                        outbound: c.outbound,
                        rtt: c.conn.rtt(),
                    })
                })
                .collect()
        };
        peers.sort_unstable_by_key(|p| p.peer);
        self.counters
            .snapshot(self.endpoint.open_connections(), peers)
    }

    /// Flushes queued frames (bounded), closes every connection and waits for the endpoint.
    pub(crate) async fn shutdown(self: &Arc<Self>, reason: &str) {
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        if self.closing.swap(true, Ordering::AcqRel) {
            let _ = tokio::time::timeout_at(deadline, self.endpoint.wait_idle()).await;
            return;
        }
        self.endpoint.set_server_config(None);
        let states: Vec<(NodeId, PeerState)> = {
            let mut table = lock(&self.table);
            table.dials.clear();
            table.peers.drain().collect()
        };
        let mut writers = Vec::new();
        let mut links = Vec::new();
        let mut announced = Vec::new();
        for (peer, st) in states {
            let PeerState {
                queues,
                link,
                announced: a,
                ..
            } = st;
            // Refuse new frames; writers deliver what is queued, finish their streams and end.
            queues.close();
            writers.extend(queues.take_writers());
            drop(queues);
            links.push(link);
            if a {
                announced.push(peer);
            }
        }
        for w in writers {
            let _ = tokio::time::timeout_at(deadline, w).await;
        }
        self.endpoint
            .close(CloseCode::Shutdown.varint(), reason.as_bytes());
        drop(links);
        for peer in announced {
            let _ = self.events.try_send(Event::Disconnected {
                peer,
                reason: DisconnectReason::Local {
                    code: CloseCode::Shutdown,
                    reason: reason.to_owned(),
                },
            });
        }
        let drain_deadline = deadline.max(tokio::time::Instant::now() + Duration::from_millis(200));
        let _ = tokio::time::timeout_at(drain_deadline, self.endpoint.wait_idle()).await;
        info!(node = %self.node_id.short(), "transport shut down");
    }
}

/// Checks ALPN and derives the peer's node id from its (already verified) certificate.
fn authenticate(conn: &quinn::Connection) -> Result<NodeId, String> {
    let data = conn
        .handshake_data()
        .ok_or_else(|| "no handshake data".to_string())?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .map_err(|_| "unexpected handshake data type".to_string())?;
    if data.protocol.as_deref() != Some(ALPN) {
        return Err(format!(
            "ALPN {:?} negotiated, expected {ALPN_STR}",
            data.protocol.as_deref().map(String::from_utf8_lossy)
        ));
    }
    let certs = conn
        .peer_identity()
        .ok_or_else(|| "peer presented no certificate".to_string())?;
    let certs = certs
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type".to_string())?;
    let cert = certs
        .first()
        .ok_or_else(|| "empty certificate chain".to_string())?;
    tls::node_id_from_certificate(cert).map_err(|e| e.to_string())
}

fn is_crypto_error(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// Maps a failed handshake to the most useful [`ConnectError`].
fn handshake_error(
    error: quinn::ConnectionError,
    addr: SocketAddr,
    expected: NodeId,
    observed: Option<NodeId>,
) -> ConnectError {
    if let Some(actual) = observed {
        if actual != expected {
            return ConnectError::PeerIdMismatch {
                addr,
                expected,
                actual,
            };
        }
    }
    match &error {
        quinn::ConnectionError::TimedOut => ConnectError::TimedOut { addr },
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            ConnectError::Refused { addr }
        }
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::crypto(0x78) =>
        {
            ConnectError::Protocol {
                addr,
                protocol: ALPN_STR,
                reason: "the peer does not support this protocol version (no common ALPN)".into(),
            }
        }
        quinn::ConnectionError::ApplicationClosed(a) => ConnectError::Closed {
            addr,
            code: CloseCode::from_u64(a.error_code.into_inner()),
            reason: String::from_utf8_lossy(&a.reason).into_owned(),
        },
        quinn::ConnectionError::TransportError(t) if is_crypto_error(t.code) => {
            ConnectError::BadPeerCertificate {
                addr,
                reason: t.reason.clone(),
            }
        }
        _ => ConnectError::Handshake {
            addr,
            source: error,
        },
    }
}

fn disconnect_reason(error: &quinn::ConnectionError) -> DisconnectReason {
    match error {
        quinn::ConnectionError::ApplicationClosed(a) => DisconnectReason::Remote {
            code: CloseCode::from_u64(a.error_code.into_inner()),
            reason: String::from_utf8_lossy(&a.reason).into_owned(),
        },
        quinn::ConnectionError::LocallyClosed => DisconnectReason::Local {
            code: CloseCode::Normal,
            reason: "closed locally".into(),
        },
        quinn::ConnectionError::TimedOut => DisconnectReason::TimedOut,
        other => DisconnectReason::Error(other.to_string()),
    }
}

type StoppedFuture =
    Pin<Box<dyn Future<Output = Result<Option<quinn::VarInt>, quinn::StoppedError>> + Send>>;

/// Our open class stream on one connection.
struct ClassStream {
    ctx: Arc<ConnCtx>,
    send: quinn::SendStream,
    stopped: StoppedFuture,
}

/// Resolves when the peer stops the stream or the connection dies; never if there is no stream.
async fn stream_stopped(
    stream: &mut Option<ClassStream>,
) -> Result<Option<quinn::VarInt>, quinn::StoppedError> {
    match stream {
        Some(s) => s.stopped.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Finishes a stream we no longer write to and, once the peer acknowledged everything (or the
/// timeout passed), lets its connection know.
fn retire(mut stream: ClassStream, timeout: Duration) {
    tokio::spawn(async move {
        let _ = stream.send.finish();
        let _ = tokio::time::timeout(timeout, stream.stopped).await;
        stream.ctx.send_stream_done();
    });
}

struct NoConnection;

/// Drains one class queue of one peer onto the class stream of the peer's current connection.
struct Writer {
    peer: NodeId,
    class: StreamClass,
    rx: mpsc::UnboundedReceiver<Bytes>,
    budget: Arc<Semaphore>,
    capacity: usize,
    link: watch::Receiver<Link>,
    /// False once the peer state (the sending side of `link`) is gone.
    link_open: bool,
    counters: Arc<Counters>,
    finish_timeout: Duration,
}

impl Writer {
    async fn run(mut self) {
        let mut stream: Option<ClassStream> = None;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut lens: Vec<usize> = Vec::new();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    biased;
                    frame = self.rx.recv() => match frame {
                        Some(f) => batch.push(f),
                        None => {
                            // Peer state gone or shutdown: deliver nothing more, finish cleanly.
                            if let Some(s) = stream.take() {
                                self.finish(s).await;
                            }
                            return;
                        }
                    },
                    res = stream_stopped(&mut stream) => {
                        if let Some(s) = stream.take() {
                            self.on_stream_gone(s, res);
                        }
                    }
                    changed = self.link.changed(), if self.link_open => {
                        if changed.is_err() {
                            self.link_open = false;
                        }
                        let moved = stream.as_ref().is_some_and(|s| {
                            !self.current().is_some_and(|c| Arc::ptr_eq(&c, &s.ctx))
                        });
                        if moved {
                            if let Some(s) = stream.take() {
                                retire(s, self.finish_timeout);
                            }
                        }
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let mut bytes = batch[0].len();
                while bytes < MAX_BATCH_BYTES && batch.len() < MAX_BATCH_FRAMES {
                    match self.rx.try_recv() {
                        Ok(f) => {
                            bytes += f.len();
                            batch.push(f);
                        }
                        Err(_) => break,
                    }
                }
            }
            if self
                .write_batch(&mut stream, &mut batch, &mut lens)
                .await
                .is_err()
                && !self.wait_for_connection().await
            {
                let dropped = batch.len() as u64 + self.drain_queue();
                self.drop_frames(dropped);
                return;
            }
        }
    }

    /// The live connection writers should use now.
    fn current(&self) -> Option<Arc<ConnCtx>> {
        self.link
            .borrow()
            .as_ref()
            .filter(|c| c.is_alive())
            .cloned()
    }

    async fn wait_for_connection(&mut self) -> bool {
        loop {
            if self.current().is_some() {
                return true;
            }
            if !self.link_open {
                return false;
            }
            if self.link.changed().await.is_err() {
                self.link_open = false;
            }
        }
    }

    fn drain_queue(&mut self) -> u64 {
        self.rx.close();
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    fn drop_frames(&self, n: u64) {
        if n > 0 {
            add(&self.counters.frames_dropped, n);
            debug!(peer = %self.peer.short(), class = ?self.class, frames = n, "dropped queued frames: peer gone");
        }
    }

    /// Hands the frames to QUIC on the class stream of the current connection, opening a stream
    /// when needed. On return `batch` holds the frames not yet written.
    async fn write_batch(
        &mut self,
        stream: &mut Option<ClassStream>,
        batch: &mut Vec<Bytes>,
        lens: &mut Vec<usize>,
    ) -> Result<(), NoConnection> {
        let mut reopens = 0u32;
        loop {
            let ctx = self.current().ok_or(NoConnection)?;
            if stream.as_ref().is_some_and(|s| !Arc::ptr_eq(&s.ctx, &ctx)) {
                if let Some(old) = stream.take() {
                    retire(old, self.finish_timeout);
                }
            }
            if stream.is_none() {
                *stream = Some(self.open_stream(ctx).await?);
            }
            let Some(s) = stream.as_mut() else {
                return Err(NoConnection);
            };
            // quinn takes fully written frames out of `batch` and advances a partially written
            // one in place, so remember the lengths (for counters and queue budget).
            lens.clear();
            lens.extend(batch.iter().map(Bytes::len));
            let mut done = 0;
            let mut partial = false;
            let mut failure = None;
            while done < batch.len() {
                match s.send.write_chunks(&mut batch[done..]).await {
                    Ok(written) => {
                        self.sent(&lens[done..done + written.chunks]);
                        done += written.chunks;
                        partial = done < batch.len() && batch[done].len() < lens[done];
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            batch.drain(..done);
            lens.drain(..done);
            match failure {
                None => return Ok(()),
                Some(quinn::WriteError::Stopped(code)) => {
                    if let Some(s) = stream.take() {
                        self.on_stream_gone(s, Ok(Some(code)));
                    }
                    reopens = if done == 0 { reopens + 1 } else { 1 };
                    // A frame cut in the middle by the stop cannot be resent whole; so is a frame
                    // the peer keeps refusing.
                    if partial || (reopens >= MAX_REOPENS_WITHOUT_PROGRESS && !batch.is_empty()) {
                        batch.remove(0);
                        self.release(lens.remove(0));
                        self.drop_frames(1);
                        if !partial {
                            warn!(peer = %self.peer.short(), class = ?self.class, "peer keeps refusing a frame; dropped it");
                        }
                        reopens = 0;
                    }
                    if batch.is_empty() {
                        return Ok(());
                    }
                }
                Some(other) => {
                    if let Some(s) = stream.take() {
                        self.on_stream_gone(s, Ok(None));
                    }
                    if partial {
                        batch.remove(0);
                        self.release(lens.remove(0));
                        self.drop_frames(1);
                    }
                    if !matches!(other, quinn::WriteError::ClosedStream) {
                        // Connection lost: wait for the next one.
                        return Err(NoConnection);
                    }
                    if batch.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn open_stream(&self, ctx: Arc<ConnCtx>) -> Result<ClassStream, NoConnection> {
        let send = ctx.conn.open_uni().await.map_err(|_| NoConnection)?;
        ctx.open_send.fetch_add(1, Ordering::AcqRel);
        let _ = send.set_priority(self.class.priority());
        let stopped: StoppedFuture = Box::pin(send.stopped());
        let mut s = ClassStream { ctx, send, stopped };
        if s.send.write_all(&[self.class.tag()]).await.is_err() {
            s.ctx.send_stream_done();
            return Err(NoConnection);
        }
        trace!(peer = %self.peer.short(), class = ?self.class, "opened class stream");
        Ok(s)
    }

    fn on_stream_gone(
        &self,
        stream: ClassStream,
        result: Result<Option<quinn::VarInt>, quinn::StoppedError>,
    ) {
        if let Ok(Some(code)) = result {
            bump(&self.counters.streams_stopped_by_peer);
            info!(
                peer = %self.peer.short(),
                class = ?self.class,
                code = code.into_inner(),
                "peer stopped our class stream; later frames go on a fresh stream"
            );
        }
        stream.ctx.send_stream_done();
    }

    /// Accounts frames of these lengths as handed to QUIC.
    fn sent(&self, frames: &[usize]) {
        if frames.is_empty() {
            return;
        }
        let bytes: usize = frames.iter().sum();
        let permits: usize = frames
            .iter()
            .map(|len| cost(*len, self.capacity) as usize)
            .sum();
        let k = self.counters.class(self.class);
        add(&k.messages_out, frames.len() as u64);
        add(&k.bytes_out, bytes as u64);
        self.budget.add_permits(permits);
    }

    fn release(&self, len: usize) {
        self.budget.add_permits(cost(len, self.capacity) as usize);
    }

    async fn finish(&self, mut s: ClassStream) {
        let _ = s.send.finish();
        let _ = tokio::time::timeout(self.finish_timeout, s.stopped.as_mut()).await;
        s.ctx.send_stream_done();
    }
}
