//! The NAT matrix: one node behind every kind of NAT of the lab (two of each, for the same-kind
//! pairs), a public rendezvous node R that relays, and `connect_any` between every pair of
//! them with real packets through real (nftables) NATs and a real UPnP gateway (miniupnpd).
//!
//! Every node binds `0.0.0.0:0` inside its site's namespace (its own thread and tokio runtime,
//! [`NsRuntime`]), connects to R, learns its observed address from R (one reporter: the
//! address is advertised unconfirmed) and, behind a UPnP gateway, runs the port mapper and
//! feeds its mapping to the transport. Then, for every unordered pair {A, B} (A is the kind
//! listed first in [`NatKind::ALL`]), A calls `connect_any(B, B.advertised_addrs(), via R)`,
//! both send an application message (`StreamClass::User`) to the other, and the test records
//! how the pair connected and how long it took. It prints the matrix and asserts that every
//! pair connected with messages both ways, and that each pair connected exactly the way the
//! NATs' behaviour allows (see [`expected`]). A second run (in a fresh lab) starts the punch
//! 150 ms into the direct stage (`TraverseOptions::punch_head_start`) and checks that the paths
//! stay the same while punched pairs connect well before the direct stage's timeout.
//!
//! Needs root (network namespaces, nftables, miniupnpd); without root it prints
//! "SKIPPED: needs root", except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::natlab::{require_root, NatKind, NatLab, NsRuntime, Site};
use p2ps_transport::portmap::{MappingState, PortMapConfig, PortMapper};
use p2ps_transport::{
    Event, Identity, Method, NodeId, PathKind, PathReport, PunchOptions, Reachability, StreamClass,
    Transport, TransportConfig, TraverseOptions,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Msg = String;

/// Upper bound on any one step run on a node (bind, connect, connect_any, send).
const STEP: Duration = Duration::from_secs(20);
/// Upper bound on waiting for a node's reachability (and port mapping) to settle.
const SETTLE: Duration = Duration::from_secs(20);
/// Upper bound on a message's arrival, and on the target seeing the connection.
const ARRIVAL: Duration = Duration::from_secs(5);
/// Upper bound on the whole test.
const TOTAL: Duration = Duration::from_secs(90);

/// The strategy's settings in the lab: short stages (the lab's round-trip time is well under a
/// millisecond), one stage after the other, and a couple of background punches after a
/// relayed success.
fn options() -> TraverseOptions {
    TraverseOptions::default()
        .with_direct_timeout(Duration::from_secs(1))
        .with_punch(PunchOptions::default().with_timeout(Duration::from_secs(4)))
        .with_relay(true)
        .with_upgrade_attempts(2)
        .with_upgrade_interval(Duration::from_secs(2))
        .with_punch_head_start(None)
}

/// The punch head start of the second run.
const HEAD_START: Duration = Duration::from_millis(150);

/// Only one lab at a time: the two tests of this file would otherwise share the CPU and
/// distort each other's times.
static ONE_LAB: Mutex<()> = Mutex::new(());

/// How a pair ended up connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// The direct stage, to an ordinary address of B.
    Direct,
    /// The direct stage, to B's UPnP port mapping.
    Mapped,
    /// Hole punching through R.
    Punched,
    /// The direct stage's handshake, completed after the punch started (head start only): it
    /// got through the hole the punch opened in B's NAT.
    PunchOpened,
    /// A circuit through R.
    Relayed,
}

impl Label {
    fn name(self) -> &'static str {
        match self {
            Label::Direct => "direct",
            Label::Mapped => "mapped",
            Label::Punched => "punched",
            Label::PunchOpened => "punched*",
            Label::Relayed => "relayed",
        }
    }
}

/// How the pair {A, B} must connect, A being the kind listed first in [`NatKind::ALL`] (the one
/// that calls `connect_any`), from the NATs' behaviour (see `natlab::rules`):
///
/// - B behind UPnP: A's first address of B is B's port mapping, which lets anyone in: mapped.
/// - B public or behind a full cone: B's observed address lets anyone in: direct.
/// - Otherwise B's NAT drops A's unsolicited handshake and the pair needs the punch, where both
///   dial each other's address as R saw it at the same time. That works unless one side is
///   symmetric and the other filters by port: the symmetric NAT gives the connection to B a
///   new random port, so (1) the symmetric side's address as R saw it is not where it can be
///   reached from B, and (2) B's NAT only lets in the exact address and port B sent to, which
///   the symmetric side's new port is not. So symmetric × symmetric, symmetric ×
///   port-restricted and symmetric × double NAT (the carrier NAT filters by port, and the home
///   router's UPnP mapping is useless behind it) need port prediction, which the transport does
///   not do: relayed.
/// - Symmetric × address-restricted punches: the address-restricted NAT lets in any port of an
///   address its host sent to, so the symmetric side's new port gets through once B dialed
///   its address. Symmetric × public / full cone punches too (B's address lets anyone in; the
///   symmetric side, dialed at its R-observed port first, dials back in the punch).
fn expected(a: NatKind, b: NatKind) -> Label {
    use NatKind::*;
    let port_filtering = |k| matches!(k, Symmetric | PortRestricted | DoubleNat);
    match (a, b) {
        (_, Upnp) => Label::Mapped,
        (_, None | FullCone) => Label::Direct,
        (Symmetric, k) | (k, Symmetric) if port_filtering(k) => Label::Relayed,
        _ => Label::Punched,
    }
}

/// Messages a node received, for the test thread to wait on.
#[derive(Default)]
struct Inbox {
    msgs: Mutex<Vec<(NodeId, Msg)>>,
    arrived: Condvar,
}

impl Inbox {
    fn push(&self, from: NodeId, msg: Msg) {
        self.msgs.lock().unwrap().push((from, msg));
        self.arrived.notify_all();
    }

    /// Whether `msg` from `from` arrives within `timeout`.
    fn wait_for(&self, from: NodeId, msg: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut msgs = self.msgs.lock().unwrap();
        loop {
            if msgs.iter().any(|(f, m)| *f == from && m == msg) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            msgs = self.arrived.wait_timeout(msgs, left).unwrap().0;
        }
    }
}

/// A node running in its site's namespace.
struct Node {
    name: String,
    kind: NatKind,
    site: Site,
    t: Transport<Msg>,
    inbox: Arc<Inbox>,
    /// States the port mapper went through (UPnP sites only).
    mapping: Arc<Mutex<Vec<MappingState>>>,
    rt: NsRuntime,
}

impl Node {
    fn id(&self) -> NodeId {
        self.t.node_id()
    }

    /// Runs `f(transport)` on the node's runtime and returns its output.
    fn run<F, Fut>(&self, what: &str, f: F) -> Fut::Output
    where
        F: FnOnce(Transport<Msg>) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.rt
            .run(STEP, f(self.t.clone()))
            .unwrap_or_else(|e| panic!("{}: {what}: {e}", self.name))
    }

    fn last_mapping(&self) -> Option<MappingState> {
        self.mapping.lock().unwrap().last().cloned()
    }
}

fn start_node(lab: &NatLab, site: Site, name: String, serve: bool) -> Node {
    let rt = lab.runtime(&site).unwrap();
    let inbox = Arc::new(Inbox::default());
    let pump = inbox.clone();
    let t = rt
        .run(STEP, async move {
            let mut config = TransportConfig::new(
                Identity::generate().map_err(|e| e.to_string())?,
                "0.0.0.0:0"
                    .parse()
                    .map_err(|e: std::net::AddrParseError| e.to_string())?,
            );
            config.relay.serve = serve;
            config.connect_timeout = Duration::from_secs(5);
            let (t, mut events) = Transport::<Msg>::bind(config).map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if let Event::Message { peer, msg, .. } = event {
                        pump.push(peer, msg);
                    }
                }
            });
            Ok::<_, String>(t)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{name}: bind: {e}"));
    let mapping = Arc::new(Mutex::new(Vec::new()));
    if site.kind.has_upnp() {
        // The node's own port mapper, inside the site: its mapping goes to the transport.
        let states = mapping.clone();
        let t = t.clone();
        rt.handle().spawn(async move {
            let Ok(port) = t.local_addr().map(|a| a.port()) else {
                return;
            };
            let config = PortMapConfig::default()
                .with_discovery_timeout(Duration::from_millis(1500))
                .with_call_timeout(Duration::from_secs(2))
                .with_retry_interval(Duration::from_secs(60))
                .with_description("p2ps nat matrix".into());
            let mapper = match PortMapper::start(config, port) {
                Ok(m) => m,
                Err(e) => {
                    states.lock().unwrap().push(MappingState::Failed {
                        reason: e.to_string(),
                    });
                    return;
                }
            };
            let mut watch = mapper.watch();
            loop {
                let state = watch.borrow_and_update().clone();
                t.set_port_mapping(state.external());
                states.lock().unwrap().push(state);
                if watch.changed().await.is_err() {
                    break;
                }
            }
            drop(mapper);
        });
    }
    Node {
        name,
        kind: site.kind,
        site,
        t,
        inbox,
        mapping,
        rt,
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; whether it held.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The outcome of one pair.
struct Outcome {
    a: usize,
    b: usize,
    report: Result<PathReport, String>,
    label: Option<Label>,
    /// B's view of the connection once it registered.
    b_path: Option<PathKind>,
    a_to_b: bool,
    b_to_a: bool,
}

fn label_of(report: &PathReport, b: &Node) -> Label {
    match report.method {
        Method::Direct => {
            let mapped = b.t.reachability().port_mapping.map(|m| m.external);
            match report.path {
                PathKind::Direct(addr) if Some(addr) == mapped => Label::Mapped,
                _ if report.punch_started => Label::PunchOpened,
                _ => Label::Direct,
            }
        }
        Method::Punched => Label::Punched,
        Method::Relayed => Label::Relayed,
        other => panic!("a traversal method this test does not know: {other}"),
    }
}

fn run_pair(
    nodes: &[Node],
    a: usize,
    b: usize,
    relay: NodeId,
    options: TraverseOptions,
) -> Outcome {
    let (na, nb) = (&nodes[a], &nodes[b]);
    let addrs = nb.t.advertised_addrs();
    let peer = nb.id();
    let report = na
        .run("connect_any", move |t| async move {
            t.connect_any_with(peer, &addrs, Some(relay), options).await
        })
        .map_err(|e| e.to_string());
    let mut outcome = Outcome {
        a,
        b,
        label: report.as_ref().ok().map(|r| label_of(r, nb)),
        report,
        b_path: None,
        a_to_b: false,
        b_to_a: false,
    };
    if outcome.report.is_err() {
        return outcome;
    }
    // B registers the connection a moment after A (the handshake completes at A first).
    wait_until(ARRIVAL, || nb.t.path(na.id()).is_some());
    outcome.b_path = nb.t.path(na.id());
    let (ida, idb) = (na.id(), nb.id());
    let to_b = format!("{} -> {}", na.name, nb.name);
    let to_a = format!("{} -> {}", nb.name, na.name);
    let (m1, m2) = (to_b.clone(), to_a.clone());
    let sent_ab = na.run("send", move |t| async move {
        t.send(idb, StreamClass::User, &m1).await
    });
    let sent_ba = nb.run("send", move |t| async move {
        t.send(ida, StreamClass::User, &m2).await
    });
    outcome.a_to_b = sent_ab.is_ok() && nb.inbox.wait_for(ida, &to_b, ARRIVAL);
    outcome.b_to_a = sent_ba.is_ok() && na.inbox.wait_for(idb, &to_a, ARRIVAL);
    outcome
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The matrix (rows and columns: kinds; the diagonal is the same-kind pair) and a line per pair.
fn render(nodes: &[Node], outcomes: &[Outcome]) -> String {
    let kinds = NatKind::ALL;
    let mut cell: HashMap<(NatKind, NatKind), String> = HashMap::new();
    for o in outcomes {
        let (ka, kb) = (nodes[o.a].kind, nodes[o.b].kind);
        let text = match (&o.report, o.label) {
            (Ok(r), Some(l)) => format!("{} {}ms", l.name(), ms(r.elapsed)),
            _ => "FAILED".to_string(),
        };
        cell.insert((ka, kb), text.clone());
        cell.insert((kb, ka), text);
    }
    let width = 20;
    let mut s = String::new();
    let _ = write!(s, "| {:<width$} |", "A \\ B");
    for k in kinds {
        let _ = write!(s, " {:<width$} |", k.to_string());
    }
    s.push('\n');
    let _ = write!(s, "|{}|", "-".repeat(width + 2));
    for _ in kinds {
        let _ = write!(s, "{}|", "-".repeat(width + 2));
    }
    s.push('\n');
    for ka in kinds {
        let _ = write!(s, "| {:<width$} |", ka.to_string());
        for kb in kinds {
            let text = cell.get(&(ka, kb)).map(String::as_str).unwrap_or("-");
            let _ = write!(s, " {text:<width$} |");
        }
        s.push('\n');
    }
    s.push_str(
        "\nPer pair (A calls connect_any; time to connection; time to a direct connection):\n\n",
    );
    for o in outcomes {
        let (na, nb) = (&nodes[o.a], &nodes[o.b]);
        let _ = write!(s, "- {} x {}: ", na.name, nb.name);
        match &o.report {
            Ok(r) => {
                let label = o.label.map(Label::name).unwrap_or("?");
                let direct_after = if r.method == Method::Relayed {
                    "none (relayed)".to_string()
                } else {
                    format!("{} ms", ms(r.elapsed))
                };
                let _ = write!(
                    s,
                    "{label}, {} ms, direct after {direct_after}; {} address(es) dialed",
                    ms(r.elapsed),
                    r.direct_attempts
                );
                if r.punch_rounds > 0 {
                    let _ = write!(s, ", punch rounds {}", r.punch_rounds);
                }
                if let Some(e) = &r.punch_error {
                    let _ = write!(s, "; punch failed: {e}");
                }
                let _ = write!(
                    s,
                    "; messages A->B {}, B->A {}",
                    if o.a_to_b { "ok" } else { "LOST" },
                    if o.b_to_a { "ok" } else { "LOST" }
                );
            }
            Err(e) => {
                let _ = write!(s, "FAILED: {e}");
            }
        }
        s.push('\n');
    }
    s
}

/// The lab with R and two nodes of every kind, connected to R, their reachability settled.
/// Field order is drop order: the nodes go before the lab.
struct World {
    nodes: Vec<Node>,
    r: Node,
    started: Instant,
    lab_ready: Duration,
    settled: Duration,
    _lab: NatLab,
}

fn build_world() -> World {
    let started = Instant::now();
    let mut lab = NatLab::new().unwrap();
    let relay_site = lab.add_public_host().unwrap();
    let mut sites = Vec::new();
    for copy in 1..=2 {
        for kind in NatKind::ALL {
            sites.push((kind, copy, lab.add_site(kind).unwrap()));
        }
    }
    let lab_ready = started.elapsed();

    let r = start_node(&lab, relay_site.clone(), "R".into(), true);
    let r_port = r.t.local_addr().unwrap().port();
    let r_addr = SocketAddr::new(relay_site.public_ip.into(), r_port);
    let r_id = r.id();
    let nodes: Vec<Node> = sites
        .into_iter()
        .map(|(kind, copy, site)| start_node(&lab, site, format!("{kind}#{copy}"), false))
        .collect();
    for n in &nodes {
        n.run("connect to R", move |t| async move {
            t.connect(r_id, r_addr).await
        })
        .unwrap_or_else(|e| panic!("{} could not connect to R: {e}", n.name));
    }
    // Reachability settles: R's report arrived everywhere, UPnP mappings are in place, and the
    // double NAT's mapper found its gateway useless.
    let settled = wait_until(SETTLE, || {
        nodes.iter().all(|n| {
            let reach = n.t.reachability();
            reach.reporters >= 1
                && match n.kind {
                    NatKind::Upnp => reach.port_mapping.is_some(),
                    NatKind::DoubleNat => n.last_mapping().is_some_and(|m| m.is_settled()),
                    _ => true,
                }
        })
    });
    for n in &nodes {
        let reach = n.t.reachability();
        println!(
            "{:<22} host {:<15} class {:?}, mapping {:?}, advertised {:?}{}",
            n.name,
            n.site.host_ip.to_string(),
            reach.class,
            reach.port_mapping.map(|m| (m.external, m.state)),
            n.t.advertised_addrs(),
            match n.last_mapping() {
                Some(m) => format!(", port mapper: {m:?}"),
                None => String::new(),
            }
        );
    }
    assert!(settled, "reachability did not settle within {SETTLE:?}");
    for n in &nodes {
        let reach = n.t.reachability();
        match n.kind {
            NatKind::None => assert_eq!(reach.class, Reachability::Public, "{}", n.name),
            NatKind::Upnp => assert_eq!(reach.class, Reachability::PortMapped, "{}", n.name),
            NatKind::DoubleNat => {
                assert!(
                    matches!(n.last_mapping(), Some(MappingState::Useless { .. })),
                    "{}: the mapping behind a carrier NAT must be useless: {:?}",
                    n.name,
                    n.mapping.lock().unwrap()
                );
                assert!(reach.port_mapping.is_none(), "{}", n.name);
            }
            _ => {}
        }
    }
    World {
        nodes,
        r,
        started,
        lab_ready,
        settled: started.elapsed(),
        _lab: lab,
    }
}

/// Runs every unordered pair with `options`, prints the matrix and checks it: every pair
/// connected with messages both ways, exactly as [`expected`], relayed pairs marked relayed on
/// both ends. Returns the outcomes for further checks.
fn run_matrix(world: &World, title: &str, options: TraverseOptions) -> Vec<Outcome> {
    let (nodes, r_id) = (&world.nodes, world.r.id());
    // The 21 pairs of distinct kinds (first node of each kind), then the 7 same-kind pairs
    // (first and second node of the kind). One after the other, so that each pair's time is
    // its own.
    let k = NatKind::ALL.len();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for i in 0..k {
        for j in i + 1..k {
            pairs.push((i, j));
        }
    }
    for i in 0..k {
        pairs.push((i, i + k));
    }
    let outcomes: Vec<Outcome> = pairs
        .iter()
        .map(|&(a, b)| {
            let o = run_pair(nodes, a, b, r_id, options);
            println!(
                "{} x {}: {:?} ({})",
                nodes[a].name,
                nodes[b].name,
                o.label,
                o.report
                    .as_ref()
                    .map(|r| format!("{} ms", ms(r.elapsed)))
                    .unwrap_or_else(|e| e.clone())
            );
            o
        })
        .collect();
    let pairs_done = world.started.elapsed();

    println!("\n{title}\n\n{}", render(nodes, &outcomes));
    let stats: Vec<String> = nodes
        .iter()
        .map(|n| {
            let s = n.t.traverse_stats();
            format!(
                "{}: calls {} direct {} punched {} relayed {} failed {} upgrade punches {} upgrades {}",
                n.name, s.calls, s.direct, s.punched, s.relayed, s.failed, s.upgrade_punches, s.upgrades
            )
        })
        .filter(|line| !line.contains("calls 0 "))
        .collect();
    println!("connect_any counters:\n  {}", stats.join("\n  "));
    let r_stats = world.r.t.stats();
    println!(
        "R: circuits served {}, bytes relayed {}, punch introductions {}",
        r_stats.relay.circuits_served, r_stats.relay.bytes_relayed, r_stats.punch_introductions
    );
    println!(
        "times: lab {} ms, nodes + reachability {} ms, {} pairs {} ms, total {} ms",
        ms(world.lab_ready),
        ms(world.settled - world.lab_ready),
        outcomes.len(),
        ms(pairs_done - world.settled),
        ms(world.started.elapsed())
    );

    let mut failures = Vec::new();
    for o in &outcomes {
        let (na, nb) = (&nodes[o.a], &nodes[o.b]);
        let pair = format!("{} x {}", na.name, nb.name);
        let Ok(report) = &o.report else {
            failures.push(format!("{pair}: not connected"));
            continue;
        };
        if !(o.a_to_b && o.b_to_a) {
            failures.push(format!(
                "{pair}: messages A->B {} B->A {}",
                o.a_to_b, o.b_to_a
            ));
        }
        let want = expected(na.kind, nb.kind);
        // With a head start, the direct handshake may win the race through the punch's hole.
        let same = o.label == Some(want)
            || (want == Label::Punched
                && o.label == Some(Label::PunchOpened)
                && options.punch_head_start.is_some());
        if !same {
            failures.push(format!(
                "{pair}: expected {}, got {:?}",
                want.name(),
                o.label
            ));
        }
        // Relayed pairs are marked relayed, on both ends; the others are direct on both ends.
        let relayed_a = matches!(report.path, PathKind::Relayed { relay, .. } if relay == r_id);
        let relayed_b = matches!(o.b_path, Some(PathKind::Relayed { relay, .. }) if relay == r_id);
        let is_relayed = report.method == Method::Relayed;
        if relayed_a != is_relayed || relayed_b != is_relayed {
            failures.push(format!(
                "{pair}: method {} but paths A {:?}, B {:?}",
                report.method, report.path, o.b_path
            ));
        }
        if is_relayed && report.punch_error.is_none() {
            failures.push(format!("{pair}: relayed without a punch error"));
        }
    }
    assert!(
        failures.is_empty(),
        "NAT matrix failures:\n{}",
        failures.join("\n")
    );
    assert!(
        world.started.elapsed() < TOTAL,
        "took {:?} (limit {TOTAL:?})",
        world.started.elapsed()
    );
    outcomes
}

/// Shuts the nodes down inside their namespaces before the lab goes away.
fn shut_down(world: &World) {
    for n in world.nodes.iter().chain(std::iter::once(&world.r)) {
        n.run("shutdown", |t| async move { t.shutdown("test over").await });
    }
}

#[test]
fn every_nat_pair_connects_by_the_best_possible_path() {
    if !require_root() {
        println!("SKIPPED: needs root");
        return;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
    let world = build_world();
    run_matrix(
        &world,
        "NAT matrix, stages one after the other (direct 1 s, punch 4 s, relay):",
        options(),
    );
    shut_down(&world);
}

/// The same matrix with the punch started 150 ms into the direct stage: the same paths, and
/// every punched pair connects well before the direct stage's timeout would have passed.
#[test]
fn a_punch_head_start_keeps_the_paths_and_saves_the_direct_timeout() {
    if !require_root() {
        println!("SKIPPED: needs root");
        return;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
    let world = build_world();
    let options = options().with_punch_head_start(Some(HEAD_START));
    let outcomes = run_matrix(
        &world,
        "NAT matrix, punch started 150 ms into the direct stage (direct 1 s, punch 4 s, relay):",
        options,
    );
    for o in &outcomes {
        if let Ok(r) = &o.report {
            if r.punch_started && r.method != Method::Relayed {
                assert!(
                    r.elapsed < options.direct_timeout,
                    "{} x {}: punched after {:?}, no faster than without a head start",
                    world.nodes[o.a].name,
                    world.nodes[o.b].name,
                    r.elapsed
                );
            }
        }
    }
    shut_down(&world);
}
