//! A hostile peer for the multi-process tests, and the checks that judge what it did.
//!
//! [`Hostile`] is a peer with its own fresh identity and QUIC transport that speaks the real
//! wire protocol ([`Wire`], protocol 3) but follows none of its rules: it connects to the
//! `p2ps node` processes at the ids and addresses their status reports ([`address_of`]) and
//! sends whatever a test crafts, once ([`Hostile::send`], [`Hostile::send_all`]) or in a spray
//! bounded in messages and in time ([`Hostile::spray`]). It signs what it can sign — its own
//! record ([`Hostile::record`]) and envelopes naming itself ([`Hostile::seal`]) — and forges
//! what it cannot ([`forge`]: an envelope naming another origin, signed with its own key). It
//! takes part in the overlay only as a test tells it to: a [`Responder`] set with
//! [`Hostile::respond`] answers what it receives (for example a routed lookup with a false
//! claim); otherwise it answers nothing. It keeps the last messages it received
//! ([`Hostile::captured`]), so that a test can replay them.
//!
//! Crafting helpers: [`grind_identity`] generates identities until one lands where the attacker
//! wants to sit on the ring (bounded attempts); [`fake_id_at`] and [`fakes_beside`] make node
//! ids nobody holds a key for, at chosen ring positions; [`bare`] mentions an id without a
//! proof; [`mis_signed`] is a record signed by one key that names another id; [`DeadNodes`]
//! are fresh keys whose records are properly signed but that run no node; [`Blackhole`] is a
//! UDP socket that never answers, an address to give fake contacts so that dialing them hangs
//! until the dial times out.
//!
//! Checks: [`tally_lookups`] and [`tally_lookups_in`] ask every node who holds each key and
//! count the answers that agree with the true ring without panicking, so that a failure can
//! quote numbers; [`ring_errors`] and [`wait_ring_quietly`] compare the nodes' neighbour lists
//! with the true ring; [`entries_naming`] finds given ids in the nodes' lists and fingers;
//! [`counters_of`] and [`service_counter`] read the nodes' and their services' counters;
//! [`freeze`] and [`thaw`] stop and continue a node process.
//!
//! Every wait is bounded, and only `127.0.0.1` addresses are used.

use crate::{responsible, true_ring, NodeProc};
use p2ps::wire::Wire;
use p2ps::{Identity, KeySigner, NodeId, NodeState, OverlayId, RingId, Status};
use p2ps_overlay::{Adjacency, Body, Class, Contact, Dir, Envelope, Message, Sealed, Signer, Time};
use p2ps_transport::{Event, SigningKey, StreamClass, Transport, TransportConfig};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An overlay message as nodes exchange them.
pub type Msg = Message<OverlayId>;

/// A contact (a record, a bare mention) as messages carry them.
pub type Record = Contact<OverlayId>;

/// What a hostile peer does with a message it received (from the node given): the messages
/// to send in answer, each with its addressee. Called on the peer's event task: keep it quick.
pub type Responder = Box<dyn FnMut(NodeId, &Msg) -> Vec<(NodeId, Msg)> + Send>;

/// Longest wait for one connection to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one message to be queued.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Problems a [`Tally`] quotes.
const EXAMPLES: usize = 6;
/// Kinds of the messages a hostile peer remembers receiving (the first ones).
const KEEP_KINDS: usize = 10_000;
/// Received messages a hostile peer keeps for replay (the last ones).
const KEEP_MESSAGES: usize = 4_096;

/// What a hostile peer received from the nodes, and how it answers.
#[derive(Default)]
struct Inbox {
    messages: AtomicU64,
    kinds: Mutex<BTreeMap<&'static str, u64>>,
    connected: Mutex<BTreeSet<NodeId>>,
    kept: Mutex<VecDeque<(NodeId, Msg)>>,
    responder: Mutex<Option<Responder>>,
    responses: AtomicU64,
}

impl Inbox {
    /// Counts and keeps `msg` from `peer`; returns the responder's answers to it.
    fn take(&self, peer: NodeId, msg: &Msg) -> Vec<(NodeId, Msg)> {
        let n = self.messages.fetch_add(1, Ordering::Relaxed);
        if n < KEEP_KINDS as u64 {
            if let Ok(mut k) = self.kinds.lock() {
                *k.entry(msg.kind()).or_default() += 1;
            }
        }
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() >= KEEP_MESSAGES {
                kept.pop_front();
            }
            kept.push_back((peer, msg.clone()));
        }
        let out = match self.responder.lock() {
            Ok(mut r) => r.as_mut().map(|f| f(peer, msg)).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        self.responses
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }
}

/// A peer with its own identity and transport that sends crafted overlay messages.
pub struct Hostile {
    rt: tokio::runtime::Runtime,
    transport: Transport<Wire>,
    signer: Arc<KeySigner>,
    inbox: Arc<Inbox>,
}

impl Hostile {
    /// A hostile peer with a fresh identity, bound to `127.0.0.1` on a port the OS picks.
    pub fn new() -> Result<Hostile, String> {
        let id = Identity::generate().map_err(|e| format!("generating an identity: {e}"))?;
        Hostile::with_identity(id)
    }

    /// A hostile peer with identity `identity` (for example one from [`grind_identity`]).
    pub fn with_identity(identity: Identity) -> Result<Hostile, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("starting the hostile peer's runtime: {e}"))?;
        let signer = Arc::new(KeySigner(
            SigningKey::new(&identity).map_err(|e| format!("the identity's signing key: {e}"))?,
        ));
        let cfg = TransportConfig::new(identity, SocketAddr::from(([127, 0, 0, 1], 0)));
        let (transport, mut events) = {
            let _guard = rt.enter();
            Transport::<Wire>::bind(cfg).map_err(|e| format!("binding the hostile peer: {e}"))?
        };
        let inbox = Arc::new(Inbox::default());
        let seen = inbox.clone();
        let t = transport.clone();
        // Drain every event: an undrained event channel would stall the connections.
        rt.spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    Event::Message { peer, msg, .. } => {
                        let m = match msg {
                            Wire::Overlay(m) | Wire::Forward { msg: m, .. } => m,
                            Wire::Forwarded { msg: m, .. } => m,
                        };
                        for (to, out) in seen.take(peer, &m) {
                            tokio::spawn(send_one(t.clone(), to, out));
                        }
                    }
                    Event::Connected { peer, .. } => {
                        if let Ok(mut c) = seen.connected.lock() {
                            c.insert(peer);
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(Hostile {
            rt,
            transport,
            signer,
            inbox,
        })
    }

    /// Its node id.
    pub fn id(&self) -> NodeId {
        self.transport.node_id()
    }

    /// Its ring position.
    pub fn pos(&self) -> RingId {
        p2ps::id::ring_id_of(&self.id())
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.transport
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Its signer, to sign in closures ([`Hostile::spray`], [`Hostile::respond`]).
    pub fn signer(&self) -> Arc<KeySigner> {
        self.signer.clone()
    }

    /// Its own record, signed now, as a node would advertise it.
    pub fn record(&self) -> Record {
        Contact::signed(&*self.signer, vec![self.addr()], None, p2ps::wall_clock())
    }

    /// An envelope naming itself as origin, made and signed now.
    pub fn seal(&self, key: RingId, body: Body<OverlayId>) -> Sealed<OverlayId> {
        forge(&self.signer, self.record(), key, body, p2ps::wall_clock())
    }

    /// Connects to every node in `peers` (each within 10 s).
    pub fn connect(&self, peers: &[(NodeId, SocketAddr)]) -> Result<(), String> {
        for (id, addr) in peers {
            if !addr.ip().is_loopback() {
                return Err(format!("refusing to dial {addr}: tests stay on 127.0.0.1"));
            }
            let t = self.transport.clone();
            let (id, addr) = (*id, *addr);
            self.rt
                .block_on(async move {
                    tokio::time::timeout(CONNECT_TIMEOUT, t.connect(id, addr)).await
                })
                .map_err(|_| format!("connecting to {} at {addr}: timed out", id.short()))?
                .map_err(|e| format!("connecting to {} at {addr}: {e}", id.short()))?;
        }
        Ok(())
    }

    /// Sends `msg` to `to` (connected with [`Hostile::connect`]) on its class's stream.
    pub fn send(&self, to: NodeId, msg: Msg) -> Result<(), String> {
        let t = self.transport.clone();
        self.rt.block_on(send_one(t, to, msg))
    }

    /// Sends `msg` to every node in `to`.
    pub fn send_all(&self, to: &[NodeId], msg: &Msg) -> Result<(), String> {
        for id in to {
            self.send(*id, msg.clone())?;
        }
        Ok(())
    }

    /// From now on, answers every message it receives with what `responder` returns.
    pub fn respond(&self, responder: Responder) {
        if let Ok(mut r) = self.inbox.responder.lock() {
            *r = Some(responder);
        }
    }

    /// Messages its [`Responder`] sent (queued for sending) so far.
    pub fn responses(&self) -> u64 {
        self.inbox.responses.load(Ordering::Relaxed)
    }

    /// Starts a spray in the background: round after round, `round(i)` gives the messages of
    /// round `i` (each with its addressee), which are sent, then the spray pauses
    /// `limits.pause`. It ends after `limits.max_messages` messages or `limits.max_time`,
    /// whichever comes first, or when [`Spray::stop`] is called.
    pub fn spray<F>(&self, limits: SprayLimits, mut round: F) -> Spray
    where
        F: FnMut(usize) -> Vec<(NodeId, Msg)> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let t = self.transport.clone();
        let task = self.rt.spawn(async move {
            let start = Instant::now();
            let mut r = SprayReport::default();
            'rounds: while !halt.load(Ordering::Relaxed) && start.elapsed() < limits.max_time {
                for (to, msg) in round(r.rounds) {
                    if r.sent + r.failed >= limits.max_messages
                        || start.elapsed() >= limits.max_time
                        || halt.load(Ordering::Relaxed)
                    {
                        break 'rounds;
                    }
                    match send_one(t.clone(), to, msg).await {
                        Ok(()) => r.sent += 1,
                        Err(e) => {
                            r.failed += 1;
                            r.first_error.get_or_insert(e);
                        }
                    }
                }
                r.rounds += 1;
                if r.sent + r.failed >= limits.max_messages {
                    break;
                }
                if limits.pause.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(limits.pause).await;
                }
            }
            r.elapsed = start.elapsed();
            r
        });
        Spray {
            stop,
            task,
            handle: self.rt.handle().clone(),
        }
    }

    /// Overlay messages received from the nodes so far.
    pub fn received(&self) -> u64 {
        self.inbox.messages.load(Ordering::Relaxed)
    }

    /// Received messages by kind (the first 10 000).
    pub fn received_kinds(&self) -> BTreeMap<&'static str, u64> {
        self.inbox
            .kinds
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default()
    }

    /// The last messages received (up to 4 096), oldest first, with their senders.
    pub fn captured(&self) -> Vec<(NodeId, Msg)> {
        self.inbox
            .kept
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Nodes that connected to it or that it connected to.
    pub fn peers_seen(&self) -> BTreeSet<NodeId> {
        self.inbox
            .connected
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Closes every connection and stops the peer (bounded by the transport's shutdown
    /// timeout).
    pub fn shutdown(self) {
        if let Ok(mut r) = self.inbox.responder.lock() {
            *r = None;
        }
        let t = self.transport.clone();
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), t.shutdown("bye")).await;
        });
        self.rt.shutdown_timeout(Duration::from_secs(2));
    }
}

async fn send_one(t: Transport<Wire>, to: NodeId, msg: Msg) -> Result<(), String> {
    let class = match msg.class() {
        Class::Routing => StreamClass::Routing,
        Class::Tree => StreamClass::Tree,
        Class::User => StreamClass::User,
    };
    let kind = msg.kind();
    match tokio::time::timeout(SEND_TIMEOUT, t.send(to, class, &Wire::Overlay(msg))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("sending {kind} to {}: {e}", to.short())),
        Err(_) => Err(format!("sending {kind} to {}: timed out", to.short())),
    }
}

/// A one-hop message of a tree service (casts, groups) from the attacker, carrying `sealed`
/// if given: what a tree neighbour would send.
pub fn one_hop(
    service: p2ps_overlay::service::ServiceId,
    data: bytes::Bytes,
    sealed: Option<Sealed<OverlayId>>,
) -> Msg {
    Message::Service(p2ps_overlay::ServiceMessage {
        service,
        class: Class::Tree,
        data,
        sealed: sealed.map(Box::new),
    })
}

/// An envelope with origin `origin`, message number random, made at `issued`, signed by
/// `signer`. When `origin` names another node than the signer, the signature is not the
/// origin's: a forgery every receiver must drop. With `issued` far from now it is stale.
pub fn forge(
    signer: &KeySigner,
    origin: Record,
    key: RingId,
    body: Body<OverlayId>,
    issued: Time,
) -> Sealed<OverlayId> {
    let env = Envelope {
        origin,
        seq: rand::random::<u64>().max(1),
        issued,
        key,
        body,
    };
    Sealed::seal(signer, env)
}

/// Bounds of a spray.
#[derive(Clone, Copy, Debug)]
pub struct SprayLimits {
    /// Most messages sent in all.
    pub max_messages: usize,
    /// Longest time it runs.
    pub max_time: Duration,
    /// Pause after each round (zero: only yield).
    pub pause: Duration,
}

/// What a spray did.
#[derive(Clone, Debug, Default)]
pub struct SprayReport {
    /// Messages queued for sending.
    pub sent: usize,
    /// Messages that could not be queued.
    pub failed: usize,
    /// Rounds completed.
    pub rounds: usize,
    /// How long it ran.
    pub elapsed: Duration,
    /// The first sending error.
    pub first_error: Option<String>,
}

impl std::fmt::Display for SprayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages sent in {} rounds over {:.1} s",
            self.sent,
            self.rounds,
            self.elapsed.as_secs_f64()
        )?;
        if self.failed > 0 {
            write!(f, ", {} failed", self.failed)?;
        }
        if let Some(e) = &self.first_error {
            write!(f, " (first error: {e})")?;
        }
        Ok(())
    }
}

/// A spray running in the background (see [`Hostile::spray`]).
pub struct Spray {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<SprayReport>,
    handle: tokio::runtime::Handle,
}

impl Spray {
    /// Stops it now and returns what it did.
    pub fn stop(self) -> SprayReport {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }

    /// Waits until it reaches its limits and returns what it did.
    pub fn wait(self) -> SprayReport {
        self.handle.block_on(self.task).unwrap_or_default()
    }
}

/// A responder that answers every `Ping` with its `Pong` and nothing else: a hostile peer that
/// stays in the nodes' tables (a silent one is found dead and dropped) without doing more.
pub fn answer_pings() -> Responder {
    Box::new(|from, m| match m {
        Message::Ping { nonce } => vec![(from, Message::Pong { nonce: *nonce })],
        _ => Vec::new(),
    })
}

/// Generates identities until one's ring position satisfies `want`; gives up after
/// `max_attempts`. Returns the identity and how many were generated.
pub fn grind_identity(
    want: impl Fn(RingId) -> bool,
    max_attempts: usize,
) -> Result<(Identity, usize), String> {
    for attempt in 1..=max_attempts {
        let id = Identity::generate().map_err(|e| format!("generating an identity: {e}"))?;
        if want(p2ps::id::ring_id_of(&id.node_id())) {
            return Ok((id, attempt));
        }
    }
    Err(format!(
        "no identity landed where wanted in {max_attempts} attempts"
    ))
}

/// A node id nobody holds a key for, at ring position `pos` (the rest of it random).
pub fn fake_id_at(pos: RingId) -> NodeId {
    use rand::Rng;
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&pos.0.to_be_bytes());
    rand::thread_rng().fill(&mut b[16..]);
    NodeId::from_bytes(b)
}

/// `n` fake node ids at random distances in `1..=within` from `pos` in direction `dir`, nearest
/// first.
pub fn fakes_beside(pos: RingId, dir: Dir, n: usize, within: u128) -> Vec<NodeId> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut d: Vec<u128> = (0..n).map(|_| rng.gen_range(1..=within.max(1))).collect();
    d.sort_unstable();
    d.into_iter()
        .map(|d| fake_id_at(pos.step(dir, d)))
        .collect()
}

/// A bare mention of `id` at `addrs`: no proof, so no receiver may take it into its tables.
pub fn bare(id: NodeId, addrs: Vec<SocketAddr>) -> Record {
    Contact {
        addrs,
        ..Contact::bare(OverlayId(id))
    }
}

/// A record signed now by `signer` that names `id` instead: its signature does not match.
pub fn mis_signed(signer: &KeySigner, id: NodeId, addrs: Vec<SocketAddr>) -> Record {
    Contact {
        id: OverlayId(id),
        ..Contact::signed(signer, addrs, None, p2ps::wall_clock())
    }
}

/// Fresh keys that run no node: their records are properly signed (by themselves), but
/// nobody answers at their addresses. The records of nodes that crashed, as far as anyone can
/// tell.
pub struct DeadNodes {
    /// Their signers, in the order of `records`.
    pub signers: Vec<KeySigner>,
    /// Their records, signed when made.
    pub records: Vec<Record>,
}

impl DeadNodes {
    /// `n` dead nodes whose records give `addrs`.
    pub fn new(n: usize, addrs: Vec<SocketAddr>) -> Result<DeadNodes, String> {
        DeadNodes::ground(n, addrs, |_| true, n)
    }

    /// `n` dead nodes whose ring positions satisfy `want` (keys are ground for them, at most
    /// `max_attempts` in all), with records that give `addrs`.
    pub fn ground(
        n: usize,
        addrs: Vec<SocketAddr>,
        want: impl Fn(RingId) -> bool,
        max_attempts: usize,
    ) -> Result<DeadNodes, String> {
        let mut signers = Vec::with_capacity(n);
        let mut records = Vec::with_capacity(n);
        let mut left = max_attempts;
        while records.len() < n {
            let (id, tried) = grind_identity(&want, left)?;
            left -= tried;
            let s = KeySigner(SigningKey::new(&id).map_err(|e| format!("signing key: {e}"))?);
            records.push(Contact::signed(&s, addrs.clone(), None, p2ps::wall_clock()));
            signers.push(s);
        }
        Ok(DeadNodes { signers, records })
    }

    /// The dead nodes of `self` and then of `other`.
    pub fn and(mut self, other: DeadNodes) -> DeadNodes {
        self.signers.extend(other.signers);
        self.records.extend(other.records);
        self
    }

    /// Their ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.records.iter().map(|r| r.id.0).collect()
    }
}

/// A bound UDP socket on `127.0.0.1` that never answers: dialing it hangs until the dial times
/// out.
pub struct Blackhole {
    socket: UdpSocket,
}

impl Blackhole {
    /// Binds one.
    pub fn new() -> Result<Blackhole, String> {
        UdpSocket::bind("127.0.0.1:0")
            .map(|socket| Blackhole { socket })
            .map_err(|e| format!("binding a UDP socket: {e}"))
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9)))
    }
}

/// The node's status, or why it could not be had (no panic).
pub fn try_status(node: &NodeProc) -> Result<Status, String> {
    node.request(&serde_json::json!({"op": "status"}))
        .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
}

/// A node's id and the address it listens on, as its status reports them.
pub fn address_of(node: &NodeProc) -> Result<(NodeId, SocketAddr), String> {
    let s = try_status(node)?;
    let addr = s
        .addrs
        .iter()
        .find(|a| a.ip().is_loopback())
        .copied()
        .ok_or_else(|| {
            format!(
                "node {} reports no loopback address: {:?}",
                node.name, s.addrs
            )
        })?;
    Ok((s.id, addr))
}

/// Sends SIGSTOP to process `pid`.
pub fn freeze(pid: u32) {
    signal(pid, rustix::process::Signal::STOP);
}

/// Sends SIGCONT to process `pid`.
pub fn thaw(pid: u32) {
    signal(pid, rustix::process::Signal::CONT);
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Counted lookup answers of several nodes, compared with a ring.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Lookups asked.
    pub asked: usize,
    /// Answers naming the node the ring makes responsible.
    pub correct: usize,
    /// Lookups that failed (timeout, or the node did not answer its control socket).
    pub failed: usize,
    /// Wrong answers by the node they named.
    pub wrong_by_node: BTreeMap<NodeId, usize>,
    /// Per asking node: (name, correct, asked).
    pub per_node: Vec<(String, usize, usize)>,
    /// The first problems, in words.
    pub examples: Vec<String>,
}

impl Tally {
    /// Whether every answer was correct.
    pub fn all_correct(&self) -> bool {
        self.correct == self.asked
    }

    /// Wrong answers that named `id`.
    pub fn named(&self, id: &NodeId) -> usize {
        self.wrong_by_node.get(id).copied().unwrap_or(0)
    }

    /// "83 of 100 lookups correct (…)": the counts, per node, and the first problems.
    pub fn summary(&self) -> String {
        let per: Vec<String> = self
            .per_node
            .iter()
            .map(|(n, c, a)| format!("{n} {c}/{a}"))
            .collect();
        let named: Vec<String> = self
            .wrong_by_node
            .iter()
            .map(|(id, k)| format!("{k} named {}", id.short()))
            .collect();
        format!(
            "{} of {} lookups correct, {} wrong ({} failed{}{}); per asking node: {}{}",
            self.correct,
            self.asked,
            self.asked - self.correct,
            self.failed,
            if named.is_empty() { "" } else { ", " },
            named.join(", "),
            per.join(", "),
            if self.examples.is_empty() {
                String::new()
            } else {
                format!("; first problems:\n  {}", self.examples.join("\n  "))
            }
        )
    }
}

/// Asks every node in `nodes` (in parallel, one batch each) who holds each of `keys`, and
/// compares the answers with the node responsible among `ring`. Never panics: a node that
/// cannot answer counts as failed lookups.
pub fn tally_lookups(nodes: &[&NodeProc], keys: &[String], ring: &[NodeId]) -> Tally {
    tally_lookups_in(nodes, keys, &[ring])
}

/// Like [`tally_lookups`], but an answer is correct if it names the node responsible for the
/// key in any of `rings` (for example the honest nodes, and the honest nodes with a live
/// attacker among them).
pub fn tally_lookups_in(nodes: &[&NodeProc], keys: &[String], rings: &[&[NodeId]]) -> Tally {
    let expected: Vec<Vec<NodeId>> = keys
        .iter()
        .map(|k| {
            let mut ok: Vec<NodeId> = rings
                .iter()
                .map(|r| responsible(r, p2ps::key_of(k)))
                .collect();
            ok.sort();
            ok.dedup();
            ok
        })
        .collect();
    let answers: Vec<(String, Result<serde_json::Value, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let r = n.request(&serde_json::json!({"op": "lookup_many", "keys": keys}));
                    (n.name.clone(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (String::from("?"), Err("thread panicked".into())))
            })
            .collect()
    });
    let mut t = Tally::default();
    let mut wrong_quoted = 0;
    for (name, r) in answers {
        let mut ok = 0;
        t.asked += keys.len();
        let items = match r {
            Ok(v) => v.as_array().cloned().unwrap_or_default(),
            Err(e) => {
                t.failed += keys.len();
                if t.examples.len() < EXAMPLES {
                    t.examples.push(format!("{name}: lookup_many failed: {e}"));
                }
                t.per_node.push((name, 0, keys.len()));
                continue;
            }
        };
        for (i, want) in expected.iter().enumerate() {
            let item = items.get(i);
            let got: Option<NodeId> = item
                .and_then(|it| it.get("node"))
                .and_then(|n| n.as_str())
                .and_then(|n| n.parse().ok());
            match got {
                Some(g) if want.contains(&g) => ok += 1,
                Some(g) => {
                    *t.wrong_by_node.entry(g).or_default() += 1;
                    // Wrong answers are quoted before failures.
                    if wrong_quoted < EXAMPLES {
                        t.examples.insert(
                            wrong_quoted,
                            format!(
                                "{name}: key {:?} (at {}) answered {}, expected {}",
                                keys[i],
                                p2ps::key_of(&keys[i]),
                                g.short(),
                                shorts(want)
                            ),
                        );
                        wrong_quoted += 1;
                        t.examples.truncate(EXAMPLES.max(wrong_quoted));
                    }
                }
                None => {
                    t.failed += 1;
                    if t.examples.len() < EXAMPLES {
                        let e = item
                            .and_then(|it| it.get("error"))
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "no answer".into());
                        t.examples
                            .push(format!("{name}: key {:?} failed: {e}", keys[i]));
                    }
                }
            }
        }
        t.correct += ok;
        t.per_node.push((name, ok, keys.len()));
    }
    t
}

/// The node ids in ring order.
pub fn ring_order(ids: &[NodeId]) -> Vec<NodeId> {
    true_ring(ids).members().to_vec()
}

/// `n` ids of `ring` following `id` in direction `dir` (`id` need not be in `ring`), nearest
/// first.
pub fn true_list(ring: &[NodeId], id: NodeId, dir: Dir, n: usize) -> Vec<NodeId> {
    let with_id: Vec<NodeId> = ring
        .iter()
        .copied()
        .filter(|x| *x != id)
        .chain([id])
        .collect();
    let truth = true_ring(&with_id);
    match dir {
        Dir::Cw => truth.successors(&id, n),
        Dir::Ccw => truth.predecessors(&id, n),
    }
}

/// A proof of responsibility for `key` forged by `signer`: its own signature over "`signer`
/// follows the key's true predecessor in `ring`", in that predecessor's name. Receivers must
/// refuse it (the signature is not the predecessor's).
pub fn forged_word(signer: &KeySigner, ring: &[NodeId], key: RingId) -> Adjacency<OverlayId> {
    let me = signer.id();
    let before = ring
        .iter()
        .filter(|id| p2ps::id::ring_id_of(id) != key)
        .min_by_key(|id| p2ps::id::ring_id_of(id).cw_to(key))
        .copied()
        .unwrap_or(me.0);
    let mut word = Adjacency::sign(signer, me, p2ps::wall_clock());
    word.pred = OverlayId(before);
    word
}

/// Short ids, for messages.
pub fn shorts(ids: &[NodeId]) -> String {
    let v: Vec<String> = ids.iter().map(|i| i.short().to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// Every way the nodes' state differs from the true ring of `ring`: not joined, or nearest
/// successor or predecessor not the true one, or a list naming a node outside `ring`. Empty
/// when the ring is right. A node that cannot answer is reported too.
pub fn ring_errors(nodes: &[&NodeProc], ring: &[NodeId]) -> Vec<String> {
    let live: BTreeSet<NodeId> = ring.iter().copied().collect();
    let mut wrong = Vec::new();
    for n in nodes {
        let s = match try_status(n) {
            Ok(s) => s,
            Err(e) => {
                wrong.push(format!("{}: no status: {e}", n.name));
                continue;
            }
        };
        let succ = true_list(ring, s.id, Dir::Cw, 1);
        let pred = true_list(ring, s.id, Dir::Ccw, 1);
        let strangers: Vec<NodeId> = s
            .successors
            .iter()
            .chain(&s.predecessors)
            .filter(|i| !live.contains(i))
            .copied()
            .collect();
        if s.state != NodeState::Joined
            || s.successors.first() != succ.first()
            || s.predecessors.first() != pred.first()
            || !strangers.is_empty()
        {
            wrong.push(format!(
                "{} ({}): state {}, successors {} (want {} first), predecessors {} (want {} \
                 first){}",
                n.name,
                s.id.short(),
                s.state,
                shorts(&s.successors),
                shorts(&succ),
                shorts(&s.predecessors),
                shorts(&pred),
                if strangers.is_empty() {
                    String::new()
                } else {
                    format!(", {} entries naming non-members", strangers.len())
                }
            ));
        }
    }
    wrong
}

/// Waits up to `timeout` for [`ring_errors`] to be empty; returns how long it took, or the
/// last errors.
pub fn wait_ring_quietly(
    nodes: &[&NodeProc],
    ring: &[NodeId],
    timeout: Duration,
) -> Result<Duration, Vec<String>> {
    wait_ring_watching(nodes, ring, timeout, || {})
}

/// [`wait_ring_quietly`], calling `on_poll` before each look at the ring (every 200 ms, at most
/// `timeout / 200 ms + 1` times), to note what the nodes show meanwhile.
pub fn wait_ring_watching(
    nodes: &[&NodeProc],
    ring: &[NodeId],
    timeout: Duration,
    mut on_poll: impl FnMut(),
) -> Result<Duration, Vec<String>> {
    let start = Instant::now();
    loop {
        on_poll();
        let errs = ring_errors(nodes, ring);
        if errs.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(errs);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every entry of the nodes' successor and predecessor lists (and, with `fingers`, finger
/// slots) that names one of `ids`: per node name, the ids found (empty nodes left out). A node
/// that cannot answer is skipped.
pub fn entries_naming(
    nodes: &[&NodeProc],
    ids: &BTreeSet<NodeId>,
    fingers: bool,
) -> BTreeMap<String, Vec<NodeId>> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let Ok(s) = try_status(n) else { continue };
        let mut found: Vec<NodeId> = s
            .successors
            .iter()
            .chain(&s.predecessors)
            .copied()
            .chain(s.fingers.iter().filter(|_| fingers).map(|f| f.node))
            .filter(|i| ids.contains(i))
            .collect();
        found.sort();
        found.dedup();
        if !found.is_empty() {
            out.insert(n.name.clone(), found);
        }
    }
    out
}

/// The counters of every node in `nodes` (zeros for one that cannot answer), in order.
pub fn counters_of(nodes: &[&NodeProc]) -> Vec<p2ps::status::Counters> {
    nodes
        .iter()
        .map(|n| try_status(n).map(|s| s.counters).unwrap_or_default())
        .collect()
}

/// Counter `counter` of service `service` (say `p2ps/groups`, `refused_counts`) on `node`, as
/// its status reports it; `None` if the node cannot answer or reports no such counter.
pub fn service_counter(node: &NodeProc, service: &str, counter: &str) -> Option<u64> {
    try_status(node)
        .ok()?
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.counters.get(counter).copied())
}
