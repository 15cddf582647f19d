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
//! * **Order.** Frames of one class to one peer arrive in the order they were queued, except
//!   across a switch between duplicate connections (the frames on either connection stay in
//!   order, the two sets may interleave).
//! * **A bad frame costs one stream, not the connection.** A reader that gets an oversized or
//!   undecodable frame stops that stream with a [`StreamStopCode`]; the writer on the other side
//!   sees the stop and opens a fresh stream for later messages.
//! * **Direct beats relayed.** A connection over a relay circuit (see `relay`) and a direct one
//!   to the same peer: both sides keep the direct one whoever dialed, and drain the relayed one
//!   like any duplicate (its circuit then closes). So a successful hole punch or any direct dial
//!   replaces a relayed path just by connecting.
//! * **Admission and budgets.** An incoming connection holds an [`AdmissionSlot`] (its place in
//!   the per-IP, per-subnet and per-node counts of `admission`) from before its handshake until
//!   it closes; a stranger's connection that sends nothing useful within the first-frame
//!   timeout is closed. Each class-stream reader charges its decoder's memory to the
//!   connection's and the node's byte budgets (`budget`) before taking bytes, and stops only its
//!   own stream when they are used up; each message queued for the application holds a share of
//!   the event queue's byte budget until it is read.
//! * **Private networks.** With a network key, a connection in either direction is handed to
//!   the rest of this module only after the network proof exchange (`network_proof`) succeeded,
//!   right after the handshake: before that no stream of the peer is accepted, and an incoming
//!   connection holds only its source's admission slot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, trace, warn};

use crate::addresses::AddressBook;
use crate::admission::{Admission, Refusal};
use crate::budget::{ByteBudget, Reservation};
use crate::class::{StreamClass, RAW_STREAM_PRIORITY};
use crate::config::TransportConfig;
use crate::error::{ConnectError, OpenStreamError, SendError, TrySendError};
use crate::event::{CloseCode, DisconnectReason, Event, EventSender, StreamStopCode};
use crate::frame::{self, FrameDecoder, HEADER_LEN};
use crate::identity::NodeId;
use crate::instance;
use crate::log_limit::LogLimit;
use crate::network_key::{NetworkKey, NetworkName, Role};
use crate::network_proof::{self, NetworkProofError};
use crate::relay::{self, PathKind, RelayState};
use crate::stats::{add, bump, Counters, PeerStats, TransportStats};
use crate::tls::{self, PeerServerVerifier, SERVER_NAME};
use crate::writer::{Link, PeerQueues, PushError};

/// The interval of the log budgets of lines peers can cause (see [`LogLimit`]).
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Log lines about failed incoming handshakes: anyone can cause them at will.
static HANDSHAKE_LOG: LogLimit<std::net::IpAddr> = LogLimit::new(LOG_INTERVAL, 10, 3);

/// Minimum time a duplicate connection is kept open after losing, so that the peer sees the
/// connection we kept before ours closes.
const DUPLICATE_LINGER: Duration = Duration::from_millis(300);

/// When a peer has several addresses, how long one dial runs alone before the next address is
/// tried alongside it (see [`Shared::dial_addresses`]). A handshake on a working path takes
/// one or two round trips, well under this.
const DIAL_STAGGER: Duration = Duration::from_millis(500);

/// Shortest wait for an answer from an older instance of a peer (see `instance`): a live one
/// acknowledges within a round trip and the acknowledgement delay.
const PROBE_MIN: Duration = Duration::from_secs(1);

/// Locks a mutex; a panic elsewhere while holding it does not make the table unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One QUIC connection to an authenticated peer, with what is needed to drain it.
pub(crate) struct ConnCtx {
    pub(crate) conn: quinn::Connection,
    pub(crate) peer: NodeId,
    pub(crate) outbound: bool,
    pub(crate) remote: SocketAddr,
    /// The peer's certificate: which process holding the peer's key is behind (see
    /// `instance`).
    cert: Option<CertificateDer<'static>>,
    /// Our class streams on this connection not yet finished and acknowledged.
    pub(crate) open_send: AtomicUsize,
    /// Our control stream on this connection (see `control`).
    pub(crate) control: crate::control::ConnControl,
    /// The peer's class streams on this connection not yet ended.
    open_recv: AtomicUsize,
    /// Signalled whenever one of the counters above drops.
    quiet: Notify,
    /// Set once the peer sent something useful: a complete message on a class stream or a
    /// tagged bidirectional stream (see `AdmissionLimits::first_frame_timeout`).
    pub(crate) useful: AtomicBool,
    /// Partial frames buffered for this connection (see `budget`).
    buffers: Arc<ByteBudget>,
    /// The admission counts this incoming connection holds, released when it closes.
    slot: Mutex<Option<AdmissionSlot>>,
}

impl ConnCtx {
    fn new(
        conn: quinn::Connection,
        peer: NodeId,
        outbound: bool,
        buffer_bytes: usize,
        slot: Option<AdmissionSlot>,
    ) -> Self {
        let remote = conn.remote_address();
        let cert = instance::peer_certificate(&conn);
        Self {
            conn,
            peer,
            outbound,
            remote,
            cert,
            open_send: AtomicUsize::new(0),
            control: Default::default(),
            open_recv: AtomicUsize::new(0),
            quiet: Notify::new(),
            useful: AtomicBool::new(false),
            buffers: Arc::new(ByteBudget::new(buffer_bytes)),
            slot: Mutex::new(slot),
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    fn is_quiet(&self) -> bool {
        self.open_send.load(Ordering::Acquire) == 0 && self.open_recv.load(Ordering::Acquire) == 0
    }

    pub(crate) fn send_stream_done(&self) {
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

/// The place of one incoming connection in the admission counts: its source address from
/// before the handshake, its node id once admitted after it. Released when dropped.
pub(crate) struct AdmissionSlot {
    admission: Arc<Mutex<Admission>>,
    remote: SocketAddr,
    peer: Option<NodeId>,
}

impl AdmissionSlot {
    /// Admits (and counts) a connection from `remote` before its handshake, the node holding
    /// `total` connections.
    pub(crate) fn admit_source(
        admission: &Arc<Mutex<Admission>>,
        remote: SocketAddr,
        total: usize,
    ) -> Result<AdmissionSlot, Refusal> {
        let mut a = lock(admission);
        a.check_source(&remote, total)?;
        a.add_source(&remote);
        Ok(AdmissionSlot {
            admission: admission.clone(),
            remote,
            peer: None,
        })
    }

    /// Admits (and counts) the authenticated `peer` on this connection, the node holding
    /// `total` connections (this one included).
    fn admit_peer(&mut self, peer: NodeId, total: usize) -> Result<(), Refusal> {
        let mut a = lock(&self.admission);
        a.check_peer(&peer, total)?;
        a.add_peer(peer);
        self.peer = Some(peer);
        Ok(())
    }
}

impl Drop for AdmissionSlot {
    fn drop(&mut self) {
        let mut a = lock(&self.admission);
        a.remove_source(&self.remote);
        if let Some(peer) = self.peer {
            a.remove_peer(peer);
        }
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
    pub(crate) cert_cache: Arc<tls::VerifiedCertCache>,
    pub(crate) quic: Arc<quinn::TransportConfig>,
    pub(crate) table: Mutex<Table>,
    pub(crate) addresses: Mutex<AddressBook>,
    pub(crate) events: EventSender<M>,
    /// Admission counts and the wanted peers (see `admission`).
    pub(crate) admission: Arc<Mutex<Admission>>,
    /// Partial frames buffered for all connections (see `budget`).
    pub(crate) buffers: Arc<ByteBudget>,
    /// Bytes of received messages waiting in the event channel.
    pub(crate) event_bytes: Arc<tokio::sync::Semaphore>,
    pub(crate) counters: Arc<Counters>,
    /// Observed addresses, reachability and hole punching (see `control`).
    pub(crate) traversal: crate::control::Traversal,
    /// Relayed circuits and relay service.
    pub(crate) relay: RelayState,
    /// Rate limit of the log lines about connections refused for the private network.
    pub(crate) network_refusals: LogLimit,
    pub(crate) closing: AtomicBool,
    /// Set once shut down, so that [`crate::Events::recv`] ends after the last event.
    pub(crate) closed: watch::Sender<bool>,
}

impl<M> Shared<M> {
    /// The ALPN identifier this node offers and requires.
    pub(crate) fn alpn(&self) -> String {
        String::from_utf8_lossy(&tls::alpn_for_network(
            self.config.protocol_version,
            self.network(),
        ))
        .into_owned()
    }

    /// The public name of this node's private network, if it is in one.
    pub(crate) fn network(&self) -> Option<NetworkName> {
        self.config.network_key.as_ref().map(NetworkKey::name)
    }

    /// Counts (and logs, rate-limited) an incoming connection refused for the private network.
    fn refused_for_network(&self, remote: SocketAddr, why: &dyn std::fmt::Display) {
        bump(&self.counters.handshakes_failed);
        bump(&self.counters.network_refused);
        if let Some(skipped) = self.network_refusals.check(()) {
            let network = match self.network() {
                Some(name) => format!("private network {name}"),
                None => "open network (no network key)".to_string(),
            };
            // Warn: the operator should know that someone knocks without the key; once per
            // interval at most, so a flood of refusals is one line.
            warn!(
                %remote,
                %network,
                more_since_last_line = skipped,
                "refused a connection from outside this node's network: {why}"
            );
        }
    }

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
        self.closed.send_replace(true);
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
            let queues = PeerQueues::new(
                peer,
                self.config.peer_queue_bytes,
                &link,
                &self.counters,
                self.config.shutdown_timeout,
            );
            PeerState {
                epoch: *next_epoch,
                queues: Arc::new(queues),
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
        self.register_with(conn, peer, outbound, None).await;
    }

    /// [`Shared::register`] for an incoming connection holding its admission slot.
    async fn register_with(
        self: &Arc<Self>,
        conn: quinn::Connection,
        peer: NodeId,
        outbound: bool,
        slot: Option<AdmissionSlot>,
    ) {
        let ctx = Arc::new(ConnCtx::new(
            conn,
            peer,
            outbound,
            self.config.memory.connection_buffer_bytes,
            slot,
        ));
        if !self.other_instance_gone(&ctx).await {
            return;
        }
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
                    // A direct connection beats a relayed one. Otherwise: same direction, the
                    // newer one wins (the peer restarted or re-dialed); opposite directions,
                    // keep the one initiated by the smaller node id.
                    let new_relayed = relay::is_relayed(&ctx.remote);
                    let keep_new = if new_relayed != relay::is_relayed(&existing.remote) {
                        !new_relayed
                    } else {
                        existing.outbound == outbound || outbound == (self.node_id < peer)
                    };
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
        if relay::is_relayed(&ctx.remote) {
            self.relay.socket.bind_connection(ctx.remote, &ctx.conn);
        }
        if announce {
            let _ = self
                .events
                .send(Event::Connected {
                    peer,
                    remote_addr: ctx.remote,
                    outbound,
                    relay: match self.relay.path(ctx.remote) {
                        PathKind::Relayed { relay, .. } => Some(relay),
                        PathKind::Direct(_) => None,
                    },
                })
                .await;
        }
        self.on_connection_up(&ctx);
        if !outbound && !self.config.relay.serve {
            if let Some(timeout) = self.config.admission.first_frame_timeout {
                tokio::spawn(self.clone().close_if_silent(ctx.clone(), timeout));
            }
        }
        tokio::spawn(self.clone().drive_connection(ctx));
        if let Some(l) = loser {
            tokio::spawn(self.clone().drain_duplicate(l));
        }
    }

    /// Before `ctx` joins the table: if another process with the peer's key (another
    /// certificate) holds a live connection, probes it (see `instance`). Still there: refuses
    /// `ctx` with [`CloseCode::IdInUse`] and returns false. Silent: closes the old connection
    /// (the process behind it is gone) and returns true.
    async fn other_instance_gone(&self, ctx: &ConnCtx) -> bool {
        let old = {
            let table = lock(&self.table);
            table
                .peers
                .get(&ctx.peer)
                .and_then(|st| st.live_current())
                .filter(|c| c.cert != ctx.cert)
                .cloned()
        };
        let Some(old) = old else {
            return true;
        };
        let wait = (old.conn.rtt() * 4).clamp(PROBE_MIN, self.config.idle_timeout);
        if instance::answers(&old.conn, wait).await {
            bump(&self.counters.id_in_use_refused);
            warn!(
                peer = %ctx.peer.short(),
                new = %ctx.remote,
                live = %old.remote,
                "refused a connection from a second process with the same node id: the one \
                 at the live address still answers (the same key in use twice?)"
            );
            ctx.conn.close(
                CloseCode::IdInUse.varint(),
                b"this node id is in use: another process with this key is connected",
            );
            return false;
        }
        info!(
            peer = %ctx.peer.short(),
            new = %ctx.remote,
            old = %old.remote,
            "the node restarted: its old connection is silent and is replaced"
        );
        old.conn.close(
            CloseCode::Duplicate.varint(),
            b"replaced by a newer instance",
        );
        true
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
                        // Application stream or relay circuit, by its tag (see `relay`).
                        tokio::spawn(self.clone().dispatch_bi(ctx.clone(), send, recv));
                    }
                    Err(_) => break,
                },
            }
        }
        let error = ctx.conn.closed().await;
        self.on_closed(&ctx, error).await;
    }

    /// Closes an incoming connection that sent nothing useful within `timeout` of the handshake,
    /// unless the application wants its peer (see `Transport::set_protected`).
    async fn close_if_silent(self: Arc<Self>, ctx: Arc<ConnCtx>, timeout: Duration) {
        tokio::select! {
            _ = ctx.conn.closed() => return,
            () = tokio::time::sleep(timeout) => {}
        }
        if ctx.useful.load(Ordering::Acquire)
            || !ctx.is_alive()
            || lock(&self.admission).is_protected(&ctx.peer)
        {
            return;
        }
        bump(&self.counters.connections_silent);
        debug!(peer = %ctx.peer.short(), remote = %ctx.remote, ?timeout, "closing a connection that sent no message");
        ctx.conn.close(
            CloseCode::Silent.varint(),
            b"no message within the first-frame timeout",
        );
    }

    /// Reads frames from one class stream of a peer and emits them as messages.
    async fn read_class_stream(self: Arc<Self>, guard: RecvGuard, mut recv: quinn::RecvStream) {
        let ctx = guard.0.clone();
        let mut tag = [0u8; 1];
        if recv.read_exact(&mut tag).await.is_err() {
            return;
        }
        if tag[0] == crate::control::CONTROL_TAG {
            // Lives as long as the connection: not a class stream that draining waits for.
            drop(guard);
            self.read_control_stream(ctx, recv).await;
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
        // What the decoder holds, charged to the connection's and the node's budgets.
        let mut reservation = Reservation::new(ctx.buffers.clone(), self.buffers.clone());
        let event_budget = self.config.memory.event_queue_bytes;
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
                // Charge the memory before the decoder takes it.
                if let Err(e) = reservation.resize(decoder.capacity_after_push(chunk.len())) {
                    let _ = recv.stop(StreamStopCode::OverBudget.varint());
                    bump(&self.counters.streams_over_budget);
                    // Debug, not warn: an attacker must not be able to flood the log.
                    debug!(peer = %ctx.peer.short(), ?class, error = %e, "stopped a stream: partial frames over budget");
                    return;
                }
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
                let wire_len = HEADER_LEN + body.len();
                let msg = match frame::decode::<M>(body) {
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
                ctx.useful.store(true, Ordering::Release);
                bump(&counters.messages_in);
                add(&counters.bytes_in, wire_len as u64);
                let event = Event::Message {
                    peer: ctx.peer,
                    class,
                    msg,
                };
                // The message's share of the event queue's bytes, held until it is read.
                let cost = u32::try_from(wire_len.min(event_budget)).unwrap_or(u32::MAX);
                let Ok(charge) = self.event_bytes.clone().acquire_many_owned(cost).await else {
                    return;
                };
                if self.events.send_charged(event, Some(charge)).await.is_err() {
                    // Nobody listens any more.
                    return;
                }
            }
            // Give back what the decoder freed.
            let _ = reservation.resize(decoder.capacity());
        }
    }

    pub(crate) fn refuse_stream(
        &self,
        ctx: &ConnCtx,
        recv: &mut quinn::RecvStream,
        class: Option<StreamClass>,
        code: StreamStopCode,
        error: &dyn std::fmt::Display,
    ) {
        let _ = recv.stop(code.varint());
        bump(&self.counters.frame_errors);
        // Any peer can send garbage at will: a few lines per peer, the rest counted.
        static LOG: LogLimit<NodeId> = LogLimit::new(LOG_INTERVAL, 10, 3);
        if let Some(suppressed) = LOG.check(ctx.peer) {
            warn!(
                peer = %ctx.peer.short(),
                ?class,
                ?code,
                %error,
                suppressed,
                "refused a frame: closed that stream, the connection stays up"
            );
        }
    }

    /// A connection ended: forget it, and the peer too if it was the peer's connection.
    async fn on_closed(self: &Arc<Self>, ctx: &Arc<ConnCtx>, error: quinn::ConnectionError) {
        // Its place in the admission counts is free again.
        drop(lock(&ctx.slot).take());
        let udp = ctx.conn.stats();
        add(&self.counters.udp_closed_bytes_out, udp.udp_tx.bytes);
        add(&self.counters.udp_closed_bytes_in, udp.udp_rx.bytes);
        add(
            &self.counters.udp_closed_datagrams_out,
            udp.udp_tx.datagrams,
        );
        add(&self.counters.udp_closed_datagrams_in, udp.udp_rx.datagrams);
        let reason = match self.relay.socket.take_end(&ctx.remote) {
            Some((relay, end)) => DisconnectReason::Relay { relay, end },
            None => disconnect_reason(&error),
        };
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
    /// for the same peer share one dial. The first caller dials in its own task (no hand-off on
    /// the connection setup path); if it is cancelled, a waiting caller takes over.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        peer: NodeId,
        addrs: Vec<SocketAddr>,
    ) -> Result<(), ConnectError> {
        loop {
            let role = {
                let mut table = lock(&self.table);
                if self.is_closing() {
                    return Err(ConnectError::ShuttingDown);
                }
                if peer == self.node_id {
                    return Err(ConnectError::SelfConnect);
                }
                // A relayed connection does not stop a dial to a direct address: the direct
                // connection replaces it (see "direct beats relayed").
                let upgrade = addrs.iter().any(|a| !relay::is_relayed(a));
                if table
                    .peers
                    .get(&peer)
                    .and_then(PeerState::live_current)
                    .is_some_and(|c| !(upgrade && relay::is_relayed(&c.remote)))
                {
                    return Ok(());
                }
                match table.dials.get(&peer) {
                    Some(rx) => DialRole::Wait(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        table.dials.insert(peer, rx);
                        DialRole::Lead(tx)
                    }
                }
            };
            match role {
                DialRole::Lead(tx) => {
                    let mut guard = DialGuard {
                        shared: self.clone(),
                        peer,
                        tx: Some(tx),
                    };
                    let result = self.dial_addresses(peer, &addrs).await;
                    if let Some(tx) = guard.tx.take() {
                        self.finish_dial(peer, tx, result.clone()).await;
                    }
                    return result;
                }
                DialRole::Wait(mut rx) => {
                    loop {
                        if let Some(result) = rx.borrow_and_update().clone() {
                            return result;
                        }
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                    if let Some(result) = rx.borrow().clone() {
                        return result;
                    }
                    // The dialing caller was cancelled without a result: try again.
                }
            }
        }
    }

    /// Starts a dial in the background (for `send` to a peer without a connection).
    fn start_dial(self: &Arc<Self>, table: &mut Table, peer: NodeId, addrs: Vec<SocketAddr>) {
        if table.dials.contains_key(&peer) {
            return;
        }
        let (tx, rx) = watch::channel(None);
        table.dials.insert(peer, rx);
        let this = self.clone();
        tokio::spawn(async move {
            let mut guard = DialGuard {
                shared: this.clone(),
                peer,
                tx: Some(tx),
            };
            let result = this.dial_addresses(peer, &addrs).await;
            if let Some(tx) = guard.tx.take() {
                this.finish_dial(peer, tx, result).await;
            }
        });
    }

    /// Publishes a dial's result; on failure gives up a peer state that only waited for it and
    /// reports [`Event::DialFailed`].
    async fn finish_dial(
        self: &Arc<Self>,
        peer: NodeId,
        tx: watch::Sender<DialResult>,
        result: Result<(), ConnectError>,
    ) {
        let mut event = None;
        {
            let mut table = lock(&self.table);
            remove_dial(&mut table, peer, &tx);
            if let Err(error) = &result {
                bump(&self.counters.dials_failed);
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

    /// Dials `addrs` in order of preference, racing them: the next address starts
    /// [`DIAL_STAGGER`] after the previous one unless that one already failed, and the first
    /// handshake to complete wins (the others are dropped). A stale first address then costs
    /// the stagger, not a whole connect timeout.
    async fn dial_addresses(
        self: &Arc<Self>,
        peer: NodeId,
        addrs: &[SocketAddr],
    ) -> Result<(), ConnectError> {
        let mut pending = addrs.iter().copied();
        let mut running = tokio::task::JoinSet::new();
        let mut last = None;
        let start = |running: &mut tokio::task::JoinSet<_>, addr: SocketAddr| {
            let this = self.clone();
            running.spawn(async move { (addr, this.dial_once(peer, addr).await) });
        };
        match pending.next() {
            Some(a) => start(&mut running, a),
            None => return Err(ConnectError::NoAddress { peer }),
        }
        loop {
            let stagger = async {
                if pending.len() > 0 {
                    tokio::time::sleep(DIAL_STAGGER).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                done = running.join_next() => {
                    let Some(done) = done else { break };
                    match done {
                        Ok((addr, Ok(conn))) => {
                            running.abort_all();
                            lock(&self.addresses).promote(peer, addr);
                            self.register(conn, peer, true).await;
                            return Ok(());
                        }
                        Ok((_, Err(
                            e @ (ConnectError::ShuttingDown
                            | ConnectError::TooManyConnections { .. }
                            | ConnectError::SelfConnect),
                        ))) => return Err(e),
                        Ok((addr, Err(e))) => {
                            debug!(peer = %peer.short(), %addr, error = %e, "dial failed");
                            last = Some(e);
                        }
                        Err(e) => debug!(peer = %peer.short(), error = %e, "dial task ended"),
                    }
                    if running.is_empty() {
                        match pending.next() {
                            Some(a) => start(&mut running, a),
                            None => break,
                        }
                    }
                }
                () = stagger => {
                    if let Some(a) = pending.next() {
                        start(&mut running, a);
                    }
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
        self.dial_with(peer, addr, self.quic.clone()).await
    }

    /// [`Shared::dial_once`] with other quinn settings (hole punching uses a short initial RTT).
    pub(crate) async fn dial_with(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::Connection, ConnectError> {
        if self.is_closing() {
            return Err(ConnectError::ShuttingDown);
        }
        let max = self.config.admission.max_connections;
        if self.endpoint.open_connections() >= max {
            return Err(ConnectError::TooManyConnections { limit: max });
        }
        let verifier = Arc::new(PeerServerVerifier::with_cache(
            Some(peer),
            self.cert_cache.clone(),
        ));
        let observed = verifier.observed();
        let alpn = self.alpn();
        let local_error = |reason: String| ConnectError::Protocol {
            addr,
            protocol: alpn.clone(),
            reason,
        };
        let crypto = tls::client_config(self.certified_key.clone(), verifier, alpn.as_bytes())
            .map_err(|e| local_error(e.to_string()))?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| local_error(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(transport);
        let connecting = self
            .endpoint
            .connect_with(client, addr, SERVER_NAME)
            .map_err(|source| ConnectError::Dial { addr, source })?;
        let conn = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Err(_) => return Err(ConnectError::TimedOut { addr }),
            Ok(Err(e)) => {
                let seen = observed.get().copied();
                return Err(handshake_error(
                    e,
                    addr,
                    peer,
                    seen,
                    &self.alpn(),
                    self.network(),
                ));
            }
            Ok(Ok(conn)) => conn,
        };
        let actual = match authenticate(&conn, &self.alpn()) {
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
        if let Some(key) = &self.config.network_key {
            let timeout = self.config.network_proof_timeout;
            network_proof::exchange(&conn, key, self.node_id, peer, Role::Dialer, timeout)
                .await
                .map_err(|source| ConnectError::NetworkKey {
                    addr,
                    network: key.name(),
                    source,
                })?;
        }
        bump(&self.counters.connections_dialed);
        Ok(conn)
    }

    /// Completes an incoming connection: handshake, authentication, registration.
    pub(crate) async fn handle_incoming(
        self: Arc<Self>,
        incoming: quinn::Incoming,
        mut slot: AdmissionSlot,
    ) {
        let remote = incoming.remote_address();
        let connecting = match incoming.accept() {
            Ok(c) => c,
            // The ClientHello comes in the first packet, so ALPN is decided here.
            Err(e) if is_no_common_alpn(&e) => {
                self.refused_for_network(remote, &NO_COMMON_ALPN);
                return;
            }
            Err(e) => {
                bump(&self.counters.handshakes_failed);
                debug!(%remote, error = %e, "could not accept incoming connection");
                return;
            }
        };
        let conn = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) if is_no_common_alpn(&e) => {
                self.refused_for_network(remote, &NO_COMMON_ALPN);
                return;
            }
            Ok(Err(e)) => {
                bump(&self.counters.handshakes_failed);
                if let Some(suppressed) = HANDSHAKE_LOG.check(remote.ip()) {
                    info!(%remote, error = %e, suppressed, "refused incoming connection: handshake failed");
                }
                return;
            }
            Err(_) => {
                bump(&self.counters.handshakes_failed);
                if let Some(suppressed) = HANDSHAKE_LOG.check(remote.ip()) {
                    info!(%remote, suppressed, "refused incoming connection: handshake timed out");
                }
                return;
            }
        };
        let peer = match authenticate(&conn, &self.alpn()) {
            Ok(peer) => peer,
            Err(reason) => {
                bump(&self.counters.handshakes_failed);
                if let Some(suppressed) = HANDSHAKE_LOG.check(remote.ip()) {
                    info!(%remote, %reason, suppressed, "refused incoming connection");
                }
                conn.close(CloseCode::ProtocolViolation.varint(), reason.as_bytes());
                return;
            }
        };
        if peer == self.node_id {
            conn.close(CloseCode::ProtocolViolation.varint(), b"connection to self");
            return;
        }
        // The network proof before anything else: until it checks out, no stream of the peer is
        // read and the connection holds only its source's admission slot.
        if let Some(key) = &self.config.network_key {
            let timeout = self.config.network_proof_timeout;
            let proof =
                network_proof::exchange(&conn, key, self.node_id, peer, Role::Acceptor, timeout)
                    .await;
            match proof {
                Ok(()) => {}
                // The peer went away (or closed the connection as soon as it had our proof):
                // nothing to refuse.
                Err(e @ NetworkProofError::ConnectionLost(_)) => {
                    debug!(%remote, peer = %peer.short(), error = %e, "connection ended during the network proof exchange");
                    return;
                }
                Err(e) => {
                    self.refused_for_network(remote, &format_args!("peer {}: {e}", peer.short()));
                    return;
                }
            }
        }
        // Now that the peer is known: its own quota, and the reserve for wanted peers.
        if let Err(refusal) = slot.admit_peer(peer, self.endpoint.open_connections()) {
            bump(&self.counters.connections_refused);
            debug!(%remote, peer = %peer.short(), %refusal, "refused incoming connection");
            conn.close(
                CloseCode::TooManyConnections.varint(),
                refusal.to_string().as_bytes(),
            );
            return;
        }
        bump(&self.counters.connections_accepted);
        self.register_with(conn, peer, false, Some(slot)).await;
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

    /// How the current connection to `peer` travels, if there is one.
    pub(crate) fn path(&self, peer: &NodeId) -> Option<PathKind> {
        let remote = self.current_connection(peer)?.remote;
        Some(self.relay.path(remote))
    }

    pub(crate) fn dialed(&self, peer: &NodeId) -> Option<bool> {
        Some(self.current_connection(peer)?.outbound)
    }

    pub(crate) fn current_connection(&self, peer: &NodeId) -> Option<Arc<ConnCtx>> {
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
        let (mut send, recv) = ctx
            .conn
            .open_bi()
            .await
            .map_err(|source| OpenStreamError::ConnectionLost { peer, source })?;
        let _ = send.set_priority(RAW_STREAM_PRIORITY);
        // The tag tells the peer this is an application stream (see `relay::protocol`).
        send.write_all(&[relay::protocol::TAG_RAW])
            .await
            .map_err(|source| match source {
                quinn::WriteError::ConnectionLost(source) => {
                    OpenStreamError::ConnectionLost { peer, source }
                }
                source => OpenStreamError::StreamRefused { peer, source },
            })?;
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
        // Closed connections' UDP totals, then the live ones (a connection is added to the
        // totals only after it closed, so it is never counted twice; one closing right now may
        // be missing from this snapshot).
        let mut stats = self
            .counters
            .snapshot(self.endpoint.open_connections(), Vec::new());
        let mut peers: Vec<PeerStats> = {
            let table = lock(&self.table);
            for st in table.peers.values() {
                for c in st.current.iter().chain(&st.draining) {
                    if c.conn.close_reason().is_none() {
                        stats.udp.add(&c.conn.stats());
                    }
                }
            }
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
        stats.connected_peers = peers.len();
        stats.peers = peers;
        stats.relay = self.relay.counters.snapshot();
        stats
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
        self.closed.send_replace(true);
        info!(node = %self.node_id.short(), "transport shut down");
    }
}

enum DialRole {
    /// This caller dials and publishes the result.
    Lead(watch::Sender<DialResult>),
    /// Another caller is dialing: wait for its result.
    Wait(watch::Receiver<DialResult>),
}

/// Withdraws an unfinished dial if the dialing future is dropped (waiters then retry).
struct DialGuard<M> {
    shared: Arc<Shared<M>>,
    peer: NodeId,
    tx: Option<watch::Sender<DialResult>>,
}

impl<M> Drop for DialGuard<M> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            remove_dial(&mut lock(&self.shared.table), self.peer, &tx);
        }
    }
}

/// Forgets the dial of `peer` if it is the one `tx` publishes to.
fn remove_dial(table: &mut Table, peer: NodeId, tx: &watch::Sender<DialResult>) {
    let ours = table
        .dials
        .get(&peer)
        .is_some_and(|rx| rx.same_channel(&tx.subscribe()));
    if ours {
        table.dials.remove(&peer);
    }
}

/// Checks ALPN and derives the peer's node id from its (already verified) certificate.
fn authenticate(conn: &quinn::Connection, alpn: &str) -> Result<NodeId, String> {
    let data = conn
        .handshake_data()
        .ok_or_else(|| "no handshake data".to_string())?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .map_err(|_| "unexpected handshake data type".to_string())?;
    if data.protocol.as_deref() != Some(alpn.as_bytes()) {
        return Err(format!(
            "ALPN {:?} negotiated, expected {alpn}",
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

/// Why an incoming connection without a common ALPN was refused, for the log.
const NO_COMMON_ALPN: &str =
    "no common ALPN (the peer has no network key, another one, or runs another protocol version)";

/// TLS alert `no_application_protocol` (120), as QUIC carries it.
const NO_APPLICATION_PROTOCOL: u8 = 0x78;

/// Whether a handshake failed because the two sides had no ALPN in common.
fn is_no_common_alpn(error: &quinn::ConnectionError) -> bool {
    let code = quinn::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL);
    match error {
        quinn::ConnectionError::ConnectionClosed(c) => c.error_code == code,
        quinn::ConnectionError::TransportError(t) => t.code == code,
        _ => false,
    }
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
    alpn: &str,
    network: Option<NetworkName>,
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
        e if is_no_common_alpn(e) => ConnectError::Protocol {
            addr,
            protocol: alpn.to_string(),
            reason: network_proof::no_common_alpn(network),
        },
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
