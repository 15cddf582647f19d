//! `p2ps bench transport`: the P2PS transport against bare quinn, in one run, on loopback.
//!
//! Both sides use the same quinn version in the same process and runtime. Bare quinn gets its
//! own self-signed certificate that the client really verifies (it is the client's only trust
//! root), server authentication only, quinn's default transport settings and no framing layer.
//! P2PS runs with its defaults: mutual Ed25519 certificate authentication checked against the
//! expected node id, keep-alive, class streams, postcard frames, per-peer queues and the event
//! channel.
//!
//! Three measurements, each repeated `--repeats` times alternating the two sides; the medians
//! are compared:
//!
//! * bulk throughput over one stream (P2PS: a raw bidirectional stream from `open_bi`);
//! * small messages per second: length-prefixed frames written one by one on a bare quinn
//!   unidirectional stream, against `Transport::send` on the User class received as events;
//! * connection setup: sequential handshakes (P2PS: `connect`, which includes identity
//!   verification), median per run.
//!
//! With `--network-key-cost`, only connection setup is measured, P2PS in an open network
//! against P2PS in a private network (both nodes with a `NetworkKey`: the network's name in
//! the ALPN and the proof exchange after the handshake), alternating in the same run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use p2ps_transport::{Event, Events, Identity, NodeId, StreamClass, Transport, TransportConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

/// Arguments of `p2ps bench transport`.
#[derive(Debug, clap::Args)]
pub struct TransportBenchArgs {
    /// MiB sent over one stream in the bulk test.
    #[arg(long, default_value_t = 256)]
    pub bulk_mib: u64,
    /// Messages sent in the message-rate test.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Payload bytes per message in the message-rate test.
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Sequential handshakes per run in the connection-setup test.
    #[arg(long, default_value_t = 200)]
    pub handshakes: usize,
    /// Runs of each measurement per side, alternating bare quinn and P2PS; medians are compared.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Measure what a private network costs instead: connection setup (repeated and first
    /// contact) of P2PS nodes with a network key against P2PS nodes without one.
    #[arg(long)]
    pub network_key_cost: bool,
}

/// Targets: P2PS bulk throughput and message rate relative to bare quinn (at least), and
/// connection setup time relative to bare quinn (at most).
const BULK_TARGET: f64 = 0.90;
const MESSAGES_TARGET: f64 = 0.80;
const SETUP_TARGET: f64 = 1.20;
/// Target: connection setup in a private network relative to an open one (at most): the proof
/// exchange adds one round trip and two HMACs to a handshake.
const NETWORK_KEY_TARGET: f64 = 1.25;

/// Runs the benchmark (builds its own tokio runtime).
pub fn run(args: TransportBenchArgs) -> Result<()> {
    if args.repeats == 0 || args.messages == 0 || args.handshakes == 0 || args.bulk_mib == 0 {
        bail!("--repeats, --messages, --handshakes and --bulk-mib must be at least 1");
    }
    if args.message_bytes + 16 > p2ps_transport::DEFAULT_MAX_FRAME_SIZE {
        bail!("--message-bytes must stay below the 1 MiB frame limit");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    // Run the driver as a task so that it shares the worker threads with everything else.
    let report = if args.network_key_cost {
        runtime.block_on(async move { tokio::spawn(measure_network_key(args)).await })??
    } else {
        runtime.block_on(async move { tokio::spawn(measure(args)).await })??
    };
    report.print()?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// A message payload serialized as a byte string (one length prefix, one copy).
#[derive(Debug, Clone)]
struct Payload(Bytes);

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(Bytes::from(v)))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// The message type of the P2PS side.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum BenchMsg {
    Data(Payload),
}

struct Samples {
    bare: Vec<f64>,
    p2ps: Vec<f64>,
}

impl Samples {
    fn new() -> Self {
        Self {
            bare: Vec::new(),
            p2ps: Vec::new(),
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

struct Report {
    args: TransportBenchArgs,
    /// What is compared: bare quinn against P2PS, or P2PS open against P2PS private.
    kind: Kind,
    bulk: Samples,
    messages: Samples,
    /// Repeated connections between the same two nodes.
    setup: Samples,
    /// First contacts: no resumption, certificates never seen before.
    cold: Samples,
}

/// What a report compares.
#[derive(Clone, Copy)]
enum Kind {
    /// P2PS against bare quinn (the default).
    AgainstQuinn,
    /// P2PS in a private network against P2PS in an open one (`--network-key-cost`).
    NetworkKey,
}

impl Kind {
    /// The baseline's and the measured side's names, as printed and as JSON keys.
    fn names(self) -> [(&'static str, &'static str); 2] {
        match self {
            Kind::AgainstQuinn => [("bare quinn", "bare_quinn"), ("P2PS", "p2ps")],
            Kind::NetworkKey => [
                ("open network", "p2ps_open"),
                ("private network", "p2ps_private"),
            ],
        }
    }
}

/// One compared measurement, ready to print.
struct Line {
    kind: Kind,
    key: &'static str,
    label: String,
    unit: &'static str,
    samples: Vec<f64>,
    bare: Vec<f64>,
    /// P2PS / bare quinn.
    ratio: f64,
    /// `true`: the ratio must be at least `target`; `false`: at most.
    higher_is_better: bool,
    target: f64,
    note: &'static str,
}

impl Line {
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: Kind,
        key: &'static str,
        label: String,
        unit: &'static str,
        s: &Samples,
        higher_is_better: bool,
        target: f64,
        note: &'static str,
    ) -> Self {
        Self {
            kind,
            key,
            label,
            unit,
            samples: s.p2ps.clone(),
            bare: s.bare.clone(),
            ratio: median(&s.p2ps) / median(&s.bare),
            higher_is_better,
            target,
            note,
        }
    }

    fn met(&self) -> bool {
        if self.higher_is_better {
            self.ratio >= self.target
        } else {
            self.ratio <= self.target
        }
    }

    fn json(&self) -> serde_json::Value {
        let [(_, base), (_, measured)] = self.kind.names();
        let mut m = serde_json::Map::new();
        m.insert("what".into(), self.label.clone().into());
        m.insert("unit".into(), self.unit.into());
        m.insert(base.into(), self.bare.clone().into());
        m.insert(measured.into(), self.samples.clone().into());
        m.insert(format!("{base}_median"), median(&self.bare).into());
        m.insert(format!("{measured}_median"), median(&self.samples).into());
        m.insert(format!("ratio_{measured}_to_{base}"), self.ratio.into());
        if let Kind::NetworkKey = self.kind {
            let added = median(&self.samples) - median(&self.bare);
            m.insert(format!("added_{}", self.unit), added.into());
        }
        let cmp = if self.higher_is_better { ">=" } else { "<=" };
        m.insert("target".into(), format!("{cmp} {:.2}", self.target).into());
        m.insert("met".into(), self.met().into());
        m.insert("note".into(), self.note.into());
        serde_json::Value::Object(m)
    }
}

impl Report {
    fn lines(&self) -> Vec<Line> {
        let a = &self.args;
        if let Kind::NetworkKey = self.kind {
            return vec![
                Line::new(
                    self.kind,
                    "setup_repeat",
                    format!(
                        "connection setup, repeated, median of {} handshakes",
                        a.handshakes
                    ),
                    "ms",
                    &self.setup,
                    false,
                    NETWORK_KEY_TARGET,
                    "same two nodes again and again, with and without a network key",
                ),
                Line::new(
                    self.kind,
                    "setup_first_contact",
                    format!(
                        "connection setup, first contact, median of {} handshakes",
                        a.handshakes
                    ),
                    "ms",
                    &self.cold,
                    false,
                    NETWORK_KEY_TARGET,
                    "each handshake from a new node, with and without a network key",
                ),
            ];
        }
        let kind = self.kind;
        vec![
            Line::new(
                kind,
                "bulk",
                format!("bulk throughput, one stream, {} MiB", a.bulk_mib),
                "MiB/s",
                &self.bulk,
                true,
                BULK_TARGET,
                "P2PS: raw bidirectional stream from open_bi",
            ),
            Line::new(
                kind,
                "messages",
                format!("{} B messages, {} per run", a.message_bytes, a.messages),
                "messages/s",
                &self.messages,
                true,
                MESSAGES_TARGET,
                "bare: length-prefixed writes on a uni stream; P2PS: send() on the User class, received as events",
            ),
            Line::new(
                kind,
                "setup_repeat",
                format!("connection setup, repeated, median of {} handshakes", a.handshakes),
                "ms",
                &self.setup,
                false,
                SETUP_TARGET,
                "same two nodes again and again: bare quinn resumes TLS sessions, P2PS does a full mutual handshake with its verified-certificate cache",
            ),
            Line::new(
                kind,
                "setup_first_contact",
                format!("connection setup, first contact, median of {} handshakes", a.handshakes),
                "ms",
                &self.cold,
                false,
                SETUP_TARGET,
                "each handshake from a new client endpoint: bare quinn without resumption (server auth only); P2PS from a new node (mutual auth, nothing cached)",
            ),
        ]
    }

    fn print(&self) -> Result<()> {
        let lines = self.lines();
        if self.args.json {
            let mut map = serde_json::Map::new();
            map.insert("quinn".into(), "0.11".into());
            map.insert("repeats".into(), self.args.repeats.into());
            for l in &lines {
                map.insert(l.key.into(), l.json());
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::Value::Object(map))?
            );
            return Ok(());
        }
        let [(base, _), (measured, _)] = self.kind.names();
        let title = match self.kind {
            Kind::AgainstQuinn => "P2PS transport vs bare quinn 0.11",
            Kind::NetworkKey => "P2PS transport, private network (network key) vs open network",
        };
        println!(
            "{title} on loopback, medians of {} runs per side (alternating)",
            self.args.repeats
        );
        for l in &lines {
            let (b, p) = (median(&l.bare), median(&l.samples));
            let fmt = |v: f64| {
                if l.unit == "ms" {
                    format!("{v:.3} {}", l.unit)
                } else {
                    format!("{v:.0} {}", l.unit)
                }
            };
            println!(
                "{}: {base} {}, {measured} {}, ratio {:.2} (target {} {:.2}: {})",
                l.label,
                fmt(b),
                fmt(p),
                l.ratio,
                if l.higher_is_better { ">=" } else { "<=" },
                l.target,
                if l.met() { "met" } else { "MISSED" }
            );
            if let Kind::NetworkKey = self.kind {
                println!("  added by the network key: {:.3} ms per connection", p - b);
            }
        }
        Ok(())
    }
}

async fn measure(args: TransportBenchArgs) -> Result<Report> {
    let bare = BareQuinn::start()?;
    let p2ps = P2psPair::start(None)?;
    let bulk_bytes = args.bulk_mib * 1024 * 1024;
    let chunk = Bytes::from(vec![0x5au8; 1024 * 1024]);
    let payload = Bytes::from(vec![0xa5u8; args.message_bytes]);

    let mut bulk = Samples::new();
    let mut messages = Samples::new();
    let mut setup = Samples::new();
    let mut cold = Samples::new();

    // One connection per side for the throughput tests, set up outside the timed sections.
    let bare_conn = bare.connect().await?;
    p2ps.a
        .connect(p2ps.b.node_id(), p2ps.b_addr)
        .await
        .context("P2PS connect")?;
    let mib = |bytes: u64, d: Duration| bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64();
    for _ in 0..args.repeats {
        let d = bare.bulk(&bare_conn, bulk_bytes, &chunk).await?;
        bulk.bare.push(mib(bulk_bytes, d));
        let d = p2ps.bulk(bulk_bytes, &chunk).await?;
        bulk.p2ps.push(mib(bulk_bytes, d));
    }
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    for _ in 0..args.repeats {
        let d = bare.messages(&bare_conn, args.messages, &payload).await?;
        messages.bare.push(rate(args.messages, d));
        let d = p2ps.messages(args.messages, &payload).await?;
        messages.p2ps.push(rate(args.messages, d));
    }
    bare_conn.close(0u32.into(), b"done");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for _ in 0..args.repeats {
        setup
            .bare
            .push(ms(bare.setup(args.handshakes, false).await?));
        setup.p2ps.push(ms(p2ps.setup(args.handshakes).await?));
    }
    for _ in 0..args.repeats {
        cold.bare.push(ms(bare.setup(args.handshakes, true).await?));
        cold.p2ps.push(ms(p2ps.cold_setup(args.handshakes).await?));
    }
    p2ps.a.shutdown("benchmark done").await;
    p2ps.b.shutdown("benchmark done").await;
    bare.client.close(0u32.into(), b"done");
    bare.server.close(0u32.into(), b"done");
    Ok(Report {
        args,
        kind: Kind::AgainstQuinn,
        bulk,
        messages,
        setup,
        cold,
    })
}

/// `--network-key-cost`: connection setup of two P2PS nodes without a network key (the
/// baseline, in `Samples::bare`) against two with one (in `Samples::p2ps`), alternating.
async fn measure_network_key(args: TransportBenchArgs) -> Result<Report> {
    let key = p2ps_transport::NetworkKey::generate().context("making a network key")?;
    let open = P2psPair::start(None)?;
    let private = P2psPair::start(Some(key))?;
    let mut setup = Samples::new();
    let mut cold = Samples::new();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for _ in 0..args.repeats {
        setup.bare.push(ms(open.setup(args.handshakes).await?));
        setup.p2ps.push(ms(private.setup(args.handshakes).await?));
    }
    for _ in 0..args.repeats {
        cold.bare.push(ms(open.cold_setup(args.handshakes).await?));
        cold.p2ps
            .push(ms(private.cold_setup(args.handshakes).await?));
    }
    for pair in [&open, &private] {
        if pair.b.stats().network_refused != 0 {
            bail!("a connection was refused for the network key during the benchmark");
        }
        pair.a.shutdown("benchmark done").await;
        pair.b.shutdown("benchmark done").await;
    }
    Ok(Report {
        args,
        kind: Kind::NetworkKey,
        bulk: Samples::new(),
        messages: Samples::new(),
        setup,
        cold,
    })
}

/// Writes `bytes` bytes in chunks of `chunk` and finishes the stream.
async fn write_bulk(send: &mut quinn::SendStream, bytes: u64, chunk: &Bytes) -> Result<()> {
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        send.write_chunk(chunk.slice(..n)).await?;
        left -= n as u64;
    }
    send.finish()?;
    Ok(())
}

/// Reads a stream to its end and returns how many bytes came.
async fn count_to_end(mut recv: quinn::RecvStream) -> Result<u64> {
    let mut n = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        n += chunk.bytes.len() as u64;
    }
    Ok(n)
}

/// Pause between handshakes (not timed) so that tearing down the previous connection does not
/// overlap the next handshake; the same for both sides.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Bare quinn: a server endpoint that counts what it receives, and a client endpoint.
struct BareQuinn {
    server: quinn::Endpoint,
    client: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    /// Same, with TLS session resumption off: every handshake verifies the certificate.
    cold_client_config: quinn::ClientConfig,
    server_addr: SocketAddr,
    bulk_done: tokio::sync::Mutex<mpsc::Receiver<u64>>,
    messages_done: tokio::sync::Mutex<mpsc::Receiver<u64>>,
}

impl BareQuinn {
    fn start() -> Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let cert = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_crypto = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        server_crypto.alpn_protocols = vec![b"bench".to_vec()];
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_crypto)?,
        ));
        let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert)?;
        let mut client_crypto = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_crypto.alpn_protocols = vec![b"bench".to_vec()];
        let mut cold_crypto = client_crypto.clone();
        cold_crypto.resumption = rustls::client::Resumption::disabled();
        let client_config = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client_crypto)?,
        ));
        let cold_client_config = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(cold_crypto)?,
        ));
        let client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let server_addr = server.local_addr()?;
        let (bulk_tx, bulk_rx) = mpsc::channel(16);
        let (msg_tx, msg_rx) = mpsc::channel(16);
        tokio::spawn(bare_server(server.clone(), bulk_tx, msg_tx));
        Ok(Self {
            server,
            client,
            client_config,
            cold_client_config,
            server_addr,
            bulk_done: tokio::sync::Mutex::new(bulk_rx),
            messages_done: tokio::sync::Mutex::new(msg_rx),
        })
    }

    async fn connect(&self) -> Result<quinn::Connection> {
        Ok(self
            .client
            .connect_with(self.client_config.clone(), self.server_addr, "localhost")?
            .await?)
    }

    async fn bulk(&self, conn: &quinn::Connection, bytes: u64, chunk: &Bytes) -> Result<Duration> {
        let mut done = self.bulk_done.lock().await;
        let start = Instant::now();
        let (mut send, _recv) = conn.open_bi().await?;
        write_bulk(&mut send, bytes, chunk).await?;
        let got = done.recv().await.context("bare server gone")?;
        let elapsed = start.elapsed();
        if got != bytes {
            bail!("bare quinn bulk: received {got} of {bytes} bytes");
        }
        Ok(elapsed)
    }

    async fn messages(
        &self,
        conn: &quinn::Connection,
        count: u64,
        payload: &Bytes,
    ) -> Result<Duration> {
        let mut done = self.messages_done.lock().await;
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        let mut send = conn.open_uni().await?;
        send.write_all(&count.to_be_bytes()).await?;
        let start = Instant::now();
        for _ in 0..count {
            send.write_all(&frame).await?;
        }
        send.finish()?;
        let got = done.recv().await.context("bare server gone")?;
        let elapsed = start.elapsed();
        if got != count {
            bail!("bare quinn messages: received {got} of {count}");
        }
        Ok(elapsed)
    }

    /// Median time of `n` sequential handshakes. `cold`: first contacts, each from a new client
    /// endpoint without session resumption (so the certificate is verified every time).
    async fn setup(&self, n: usize, cold: bool) -> Result<Duration> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let (endpoint, config) = if cold {
                (
                    quinn::Endpoint::client("127.0.0.1:0".parse()?)?,
                    &self.cold_client_config,
                )
            } else {
                (self.client.clone(), &self.client_config)
            };
            let start = Instant::now();
            let conn = endpoint
                .connect_with(config.clone(), self.server_addr, "localhost")?
                .await?;
            times.push(start.elapsed());
            conn.close(0u32.into(), b"bench");
            settle().await;
        }
        Ok(median_duration(times))
    }
}

async fn bare_server(
    server: quinn::Endpoint,
    bulk: mpsc::Sender<u64>,
    messages: mpsc::Sender<u64>,
) {
    while let Some(incoming) = server.accept().await {
        let (bulk, messages) = (bulk.clone(), messages.clone());
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            loop {
                tokio::select! {
                    bi = conn.accept_bi() => match bi {
                        Ok((_send, recv)) => {
                            let bulk = bulk.clone();
                            tokio::spawn(async move {
                                if let Ok(n) = count_to_end(recv).await {
                                    let _ = bulk.send(n).await;
                                }
                            });
                        }
                        Err(_) => break,
                    },
                    uni = conn.accept_uni() => match uni {
                        Ok(recv) => {
                            let messages = messages.clone();
                            tokio::spawn(async move {
                                if let Ok(n) = count_frames(recv).await {
                                    let _ = messages.send(n).await;
                                }
                            });
                        }
                        Err(_) => break,
                    },
                }
            }
        });
    }
}

/// Counts length-prefixed frames until the announced count (first 8 bytes) has arrived.
async fn count_frames(mut recv: quinn::RecvStream) -> Result<u64> {
    let mut header = [0u8; 8];
    recv.read_exact(&mut header).await?;
    let target = u64::from_be_bytes(header);
    let (mut count, mut skip, mut len_buf, mut len_have) = (0u64, 0usize, [0u8; 4], 0usize);
    while count < target {
        let Some(chunk) = recv.read_chunk(usize::MAX, true).await? else {
            break;
        };
        let mut b = &chunk.bytes[..];
        while !b.is_empty() {
            if skip > 0 {
                let k = skip.min(b.len());
                skip -= k;
                b = &b[k..];
                if skip == 0 {
                    count += 1;
                }
                continue;
            }
            let k = (4 - len_have).min(b.len());
            len_buf[len_have..len_have + k].copy_from_slice(&b[..k]);
            len_have += k;
            b = &b[k..];
            if len_have == 4 {
                len_have = 0;
                skip = u32::from_be_bytes(len_buf) as usize;
                if skip == 0 {
                    count += 1;
                }
            }
        }
    }
    Ok(count)
}

/// Receiving side state of the P2PS node `b`, fed by its event loop.
struct Sink {
    messages: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

/// Two P2PS transports on loopback; `a` sends, `b` receives.
struct P2psPair {
    /// The network both nodes (and the first-contact clients) are in; `None`: an open one.
    key: Option<p2ps_transport::NetworkKey>,
    a: Transport<BenchMsg>,
    b: Transport<BenchMsg>,
    b_addr: SocketAddr,
    sink: Arc<Sink>,
    bulk_done: tokio::sync::Mutex<mpsc::Receiver<u64>>,
}

impl P2psPair {
    fn start(key: Option<p2ps_transport::NetworkKey>) -> Result<Self> {
        let config = || -> Result<TransportConfig> {
            Ok(
                TransportConfig::new(Identity::generate()?, "127.0.0.1:0".parse()?)
                    .with_network_key(key.clone()),
            )
        };
        let (a, ea) = Transport::<BenchMsg>::bind(config()?)?;
        let (b, eb) = Transport::<BenchMsg>::bind(config()?)?;
        let b_addr = b.local_addr()?;
        let sink = Arc::new(Sink {
            messages: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
        });
        let (bulk_tx, bulk_rx) = mpsc::channel(16);
        tokio::spawn(discard_events(ea));
        tokio::spawn(p2ps_sink(eb, sink.clone(), bulk_tx));
        Ok(Self {
            key,
            a,
            b,
            b_addr,
            sink,
            bulk_done: tokio::sync::Mutex::new(bulk_rx),
        })
    }

    async fn bulk(&self, bytes: u64, chunk: &Bytes) -> Result<Duration> {
        let mut done = self.bulk_done.lock().await;
        let start = Instant::now();
        let (mut send, _recv) = self.a.open_bi(self.b.node_id()).await?;
        write_bulk(&mut send, bytes, chunk).await?;
        let got = done.recv().await.context("P2PS receiver gone")?;
        let elapsed = start.elapsed();
        if got != bytes {
            bail!("P2PS bulk: received {got} of {bytes} bytes");
        }
        Ok(elapsed)
    }

    async fn messages(&self, count: u64, payload: &Bytes) -> Result<Duration> {
        self.sink.messages.store(0, Ordering::SeqCst);
        self.sink.target.store(count, Ordering::SeqCst);
        let msg = BenchMsg::Data(Payload(payload.clone()));
        let to = self.b.node_id();
        let start = Instant::now();
        for _ in 0..count {
            self.a.send(to, StreamClass::User, &msg).await?;
        }
        tokio::time::timeout(Duration::from_secs(120), self.sink.reached.notified())
            .await
            .context("P2PS messages did not all arrive")?;
        let elapsed = start.elapsed();
        let got = self.sink.messages.load(Ordering::SeqCst);
        if got != count {
            bail!("P2PS messages: received {got} of {count}");
        }
        Ok(elapsed)
    }

    /// Median time of `n` sequential `connect` calls (handshake and identity verification).
    async fn setup(&self, n: usize) -> Result<Duration> {
        let peer: NodeId = self.b.node_id();
        self.a.disconnect(peer, "bench").await;
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            self.a.connect(peer, self.b_addr).await?;
            times.push(start.elapsed());
            self.a.disconnect(peer, "bench").await;
            settle().await;
        }
        Ok(median_duration(times))
    }
}

impl P2psPair {
    /// Median time of `n` first contacts: each handshake from a new node (fresh identity), so
    /// neither side has seen the other's certificate.
    async fn cold_setup(&self, n: usize) -> Result<Duration> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let config = TransportConfig::new(Identity::generate()?, "127.0.0.1:0".parse()?)
                .with_network_key(self.key.clone());
            let (client, events) = Transport::<BenchMsg>::bind(config)?;
            tokio::spawn(discard_events(events));
            let start = Instant::now();
            client.connect(self.b.node_id(), self.b_addr).await?;
            times.push(start.elapsed());
            drop(client);
            settle().await;
        }
        Ok(median_duration(times))
    }
}

async fn discard_events(mut events: Events<BenchMsg>) {
    while events.recv().await.is_some() {}
}

async fn p2ps_sink(mut events: Events<BenchMsg>, sink: Arc<Sink>, bulk: mpsc::Sender<u64>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Message { .. } => {
                let n = sink.messages.fetch_add(1, Ordering::SeqCst) + 1;
                if n == sink.target.load(Ordering::SeqCst) {
                    sink.reached.notify_one();
                }
            }
            Event::IncomingStream { recv, .. } => {
                let bulk = bulk.clone();
                tokio::spawn(async move {
                    if let Ok(n) = count_to_end(recv).await {
                        let _ = bulk.send(n).await;
                    }
                });
            }
            _ => {}
        }
    }
}
