//! Real `p2ps node` processes on loopback, driven through tickets, the control socket and the
//! client subcommands.
//!
//! Every wait is bounded; a failure panics with the node's own output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::p2ps::{self, Identity, NodeId, Ticket};
use p2ps_interop_tests::{
    check_lookups, control_raw, control_request, random_keys, responsible, run_p2ps, wait_for,
    wait_ring, NodeProc, Start, TestNet, FAST,
};
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(30);
const RING_WAIT: Duration = Duration::from_secs(30);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `p2ps args`, which must fail, and returns what it printed on stderr.
fn fails(args: &[&str], timeout: Duration) -> String {
    let out = run_p2ps(args, timeout);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "p2ps {args:?} should have failed: {err}"
    );
    err
}

/// Runs the client command `p2ps args` against node `n`; it must fail. Returns its stderr.
fn cli_fails(n: &mut NodeProc, args: &[&str]) -> String {
    let out = n.cli(args);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "p2ps {args:?} should have failed: {err}"
    );
    err
}

fn refs(nodes: &mut [NodeProc]) -> Vec<&mut NodeProc> {
    nodes.iter_mut().collect()
}

/// (a) 12 processes join through tickets and agree with the true ring on 1 000 random keys;
/// (b) `p2ps send` and `p2ps route` reach their targets, `p2ps lookup` and `p2ps status` tell
/// the truth; (c) after SIGKILL of 3 nodes the ring repairs and lookups are consistent again and
/// never name a dead node; (d) `p2ps leave` makes a node leave gracefully, its neighbours take
/// over at once (faster than crash detection) and lookups stay consistent.
#[test]
fn twelve_processes_agree_deliver_repair_and_leave() {
    let t0 = Instant::now();
    let net = TestNet::new();
    let mut nodes = net.spawn_network(12, FAST, JOIN_WAIT);
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        12,
        "ids unique"
    );
    wait_ring(&mut refs(&mut nodes), RING_WAIT);
    eprintln!(
        "[{:?}] 12 nodes joined and the ring is settled",
        t0.elapsed()
    );

    // (a) 1 000 random keys, every node, compared with the true ring.
    let keys = random_keys(1000);
    check_lookups(&mut refs(&mut nodes), &keys);
    eprintln!("[{:?}] 12 x 1000 lookups agree", t0.elapsed());

    // (b) send: from n02 to n09, checked on n09's stdout.
    let (from, to) = (2, 9);
    let out = nodes[from].cli(&["send", &ids[to].to_string(), "hello nine, from two"]);
    assert!(
        out.status.success(),
        "p2ps send failed: {}",
        text(&out.stderr)
    );
    let want = format!("message from {} (", ids[from].short());
    let line = nodes[to].wait_line(Duration::from_secs(10), "with the sent message", |l| {
        l.starts_with(&want) && l.ends_with("to node): hello nine, from two")
    });
    assert!(line.contains(" hops, "), "{line}");

    // route: to whoever holds the key, from n05; lookup agrees with the true holder.
    let key = "colour:blue";
    let holder = responsible(&ids, p2ps::key_of(key));
    let out = nodes[5].cli(&["lookup", key, "--json"]);
    assert!(
        out.status.success(),
        "p2ps lookup failed: {}",
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["node"], holder.to_string(), "lookup --json: {v}");
    assert_eq!(v["key"], p2ps::key_of(key).to_string());
    let out = nodes[5].cli(&["lookup", key]);
    assert!(
        text(&out.stdout).starts_with(&holder.to_string()),
        "{}",
        text(&out.stdout)
    );
    let out = nodes[5].cli(&["route", key, "for the holder of colour:blue"]);
    assert!(
        out.status.success(),
        "p2ps route failed: {}",
        text(&out.stderr)
    );
    let h = ids.iter().position(|i| *i == holder).unwrap();
    let want = format!("message from {} (", ids[5].short());
    nodes[h].wait_line(Duration::from_secs(10), "with the routed message", |l| {
        l.starts_with(&want) && l.ends_with("to key): for the holder of colour:blue")
    });
    // Raw ring positions work too.
    let raw = format!("{}", p2ps::key_of(key));
    let v = nodes[7]
        .request(&serde_json::json!({"op": "lookup", "raw_key": raw}))
        .unwrap();
    assert_eq!(v["node"], holder.to_string());

    // status: the human view and the JSON agree with the node.
    let out = nodes[3].cli(&["status"]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.contains(&format!("id:            {}", ids[3])), "{s}");
    assert!(s.contains("state:         joined"), "{s}");
    assert!(
        s.contains("successors:") && s.contains("connections:"),
        "{s}"
    );
    let out = nodes[3].cli(&["status", "--json"]);
    let st: p2ps::Status = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st.id, ids[3]);
    assert!(st.counters.lookups_ok >= 1000, "{:?}", st.counters);
    eprintln!(
        "[{:?}] send, route, lookup and status checked",
        t0.elapsed()
    );

    // (c) SIGKILL three nodes (two of them ring neighbours), then repair.
    let mut ring: Vec<usize> = (0..12).collect();
    ring.sort_by_key(|&i| p2ps::id::ring_id_of(&ids[i]));
    let victims = [ring[2], ring[3], ring[8]];
    for &v in &victims {
        nodes[v].kill();
    }
    let killed_at = Instant::now();
    let dead: Vec<NodeId> = victims.iter().map(|&v| ids[v]).collect();
    let mut survivors: Vec<NodeProc> = Vec::new();
    for (i, n) in nodes.into_iter().enumerate() {
        if !victims.contains(&i) {
            survivors.push(n);
        }
    }
    wait_ring(&mut refs(&mut survivors), RING_WAIT);
    eprintln!(
        "[{:?}] ring repaired {:?} after 3 crashes",
        t0.elapsed(),
        killed_at.elapsed()
    );
    let keys = random_keys(1000);
    check_lookups(&mut refs(&mut survivors), &keys);
    eprintln!("[{:?}] lookups consistent after the crashes", t0.elapsed());
    // Deeper list entries and connections go once the crash is detected: QUIC's 5 s idle
    // timeout, then the next stabilisation. Allow that plus a margin.
    let purged = wait_for(Duration::from_secs(12), || {
        let mut stale = Vec::new();
        for n in &mut survivors {
            let s = n.status();
            let mentions = |d: &NodeId| {
                s.successors.contains(d)
                    || s.predecessors.contains(d)
                    || s.fingers.iter().any(|f| f.node == *d)
                    || s.connections.iter().any(|c| c.node == *d)
            };
            for d in dead.iter().filter(|d| mentions(d)) {
                stale.push(format!("{} still knows {}", n.name, d.short()));
            }
        }
        stale.is_empty().then_some(())
    });
    assert!(
        purged.is_some(),
        "dead nodes still in routing tables or connections {:?} after the crashes",
        killed_at.elapsed()
    );
    eprintln!(
        "[{:?}] dead nodes purged {:?} after the crashes",
        t0.elapsed(),
        killed_at.elapsed()
    );

    // (d) graceful leave through `p2ps leave`.
    let leaver_idx = 4;
    let leaver_id = survivors[leaver_idx].id();
    let leave_at = Instant::now();
    let out = survivors[leaver_idx].cli(&["leave"]);
    assert!(
        out.status.success(),
        "p2ps leave failed: {}",
        text(&out.stderr)
    );
    let status = survivors[leaver_idx].wait_exit(Duration::from_secs(10));
    assert!(status.success(), "a node that left must exit 0: {status}");
    survivors[leaver_idx].wait_line(Duration::from_secs(1), "`left the network`", |l| {
        l == "left the network"
    });
    let sock = survivors[leaver_idx].control.clone();
    assert!(
        !sock.exists(),
        "the control socket {} should be removed",
        sock.display()
    );
    let err = fails(
        &["status", "--control", &sock.to_string_lossy()],
        Duration::from_secs(10),
    );
    assert!(err.contains("no node running at"), "{err}");
    let mut rest: Vec<NodeProc> = survivors;
    rest.remove(leaver_idx);
    wait_ring(&mut refs(&mut rest), RING_WAIT);
    let took = leave_at.elapsed();
    // A crash is noticed after the 5 s idle timeout; a graceful leave must be repaired sooner.
    assert!(
        took < Duration::from_secs(4),
        "repair after a graceful leave took {took:?}"
    );
    let keys = random_keys(300);
    check_lookups(&mut refs(&mut rest), &keys);
    for n in &mut rest {
        let s = n.status();
        assert!(!s.successors.contains(&leaver_id), "{}: {s:?}", n.name);
    }
    eprintln!("[{:?}] graceful leave repaired in {took:?}", t0.elapsed());
}

/// (e) A node stopped with SIGTERM exits 0 after leaving; restarted with the same key file (here
/// through a `--config` file) it has the same id and rejoins. Killed with SIGKILL, it leaves a
/// stale control socket behind, which the restart removes; it rejoins again with the same id.
#[test]
fn restart_with_the_same_key_keeps_the_id_and_rejoins() {
    let net = TestNet::new();
    let mut a = net.spawn("a", Start::Create, FAST);
    let ta = a.wait_ticket(JOIN_WAIT);
    let mut b = net.spawn("b", Start::Join(ta.clone()), FAST);
    b.wait_ticket(JOIN_WAIT);

    // Node r takes everything from a config file (relative paths are relative to it).
    let config = net.path().join("r.toml");
    std::fs::write(
        &config,
        "key = \"r.key\"\ncontrol = \"r.sock\"\nticket_file = \"r.ticket\"\n\
         listen = \"127.0.0.1:0\"\nstrategy = \"tango\"\nstabilize_interval_ms = 300\n\
         stabilize_timeout_ms = 1500\nfinger_refresh_ms = 5000\nlookup_timeout_ms = 1000\n",
    )
    .unwrap();
    let cfg = config.to_string_lossy().into_owned();
    let spawn_r = |ticket: &str| {
        NodeProc::spawn_raw(
            "r",
            vec![
                "node".into(),
                "--config".into(),
                cfg.clone(),
                "--join".into(),
                ticket.into(),
            ],
            net.path().join("r.sock"),
            net.path().join("r.ticket"),
        )
    };
    let mut r = spawn_r(&ta);
    r.wait_ticket(JOIN_WAIT);
    let rid = r.id();
    assert!(net.path().join("r.key").is_file());
    wait_ring(&mut [&mut a, &mut b, &mut r], RING_WAIT);

    // SIGTERM: graceful leave, exit 0.
    r.terminate();
    let st = r.wait_exit(Duration::from_secs(10));
    assert!(
        st.success(),
        "SIGTERM must end in exit 0, got {st}\n{}",
        r.describe()
    );
    assert!(
        r.stdout().iter().any(|l| l == "left the network"),
        "{}",
        r.describe()
    );
    wait_ring(&mut [&mut a, &mut b], RING_WAIT);
    std::fs::remove_file(net.path().join("r.ticket")).unwrap();

    // Restart: same id, back in the ring (through b this time).
    let tb = std::fs::read_to_string(&b.ticket_file).unwrap();
    let mut r2 = spawn_r(tb.trim());
    r2.wait_ticket(JOIN_WAIT);
    assert_eq!(r2.id(), rid, "same key file, same id");
    wait_ring(&mut [&mut a, &mut b, &mut r2], RING_WAIT);

    // SIGKILL leaves the socket file behind; the next start removes it and rejoins.
    r2.kill();
    assert!(
        net.path().join("r.sock").exists(),
        "a killed node cannot remove its socket"
    );
    std::fs::remove_file(net.path().join("r.ticket")).unwrap();
    let mut r3 = spawn_r(&ta);
    r3.wait_ticket(JOIN_WAIT);
    assert_eq!(r3.id(), rid);
    wait_ring(&mut [&mut a, &mut b, &mut r3], RING_WAIT);
    check_lookups(&mut [&mut a, &mut b, &mut r3], &random_keys(200));
}

/// (f) Bad input fails clearly: malformed and truncated tickets, an unreachable bootstrap node
/// (within the bounded join retries), a second node on a taken control socket, a client with
/// no node, and malformed, oversized or silent control requests (the node carries on).
#[test]
fn bad_input_fails_clearly() {
    let t0 = Instant::now();
    let net = TestNet::new();
    let dir = net.path().to_string_lossy().into_owned();
    let key = format!("{dir}/bad.key");
    let control = format!("{dir}/bad.sock");
    let quick = Duration::from_secs(15);

    let node = |extra: &[&str]| -> Vec<String> {
        ["node", "--key", &key, "--control", &control]
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect()
    };
    let fails_with = |args: Vec<String>, timeout: Duration| {
        fails(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            timeout,
        )
    };

    // Malformed ticket.
    let err = fails_with(node(&["--join", "hello"]), quick);
    assert!(err.contains("not a P2PS ticket"), "{err}");

    eprintln!("[{:?}] malformed ticket checked", t0.elapsed());
    // Truncated ticket (a real one, cut).
    let real = Ticket::new(
        Identity::generate().unwrap().node_id(),
        vec!["127.0.0.1:9".parse().unwrap()],
    )
    .to_string();
    let cut = &real[..real.len() - 6];
    let err = fails_with(node(&["--join", cut]), quick);
    assert!(
        err.contains("truncated") || err.contains("checksum"),
        "{err}"
    );

    eprintln!("[{:?}] truncated ticket checked", t0.elapsed());
    // Neither --create nor --join.
    let err = fails_with(node(&[]), quick);
    assert!(err.contains("--create"), "{err}");

    eprintln!("[{:?}] no mode checked", t0.elapsed());
    // Unreachable bootstrap: a port where a UDP socket we hold never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ghost = Ticket::new(
        Identity::generate().unwrap().node_id(),
        vec![silent.local_addr().unwrap()],
    )
    .to_string();
    let started = Instant::now();
    let err = fails_with(
        node(&[
            "--join",
            &ghost,
            "--join-attempts",
            "2",
            "--join-timeout-ms",
            "500",
        ]),
        Duration::from_secs(40),
    );
    let took = started.elapsed();
    assert!(err.contains("joining the network through"), "{err}");
    assert!(
        err.contains("cannot reach the bootstrap node") || err.contains("no answer"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the join gave up only after {took:?}"
    );
    assert!(
        !std::path::Path::new(&control).exists(),
        "socket left behind after a failed join"
    );

    eprintln!("[{:?}] unreachable bootstrap checked", t0.elapsed());
    // Client with no node.
    let err = fails(&["status", "--control", &control], quick);
    assert!(
        err.contains("no node running at") && err.contains("p2ps node --create"),
        "{err}"
    );

    eprintln!("[{:?}] no node checked", t0.elapsed());
    // A node, then a second process on its control socket: refused, the first carries on.
    let mut a = net.spawn("a", Start::Create, FAST);
    a.wait_ticket(JOIN_WAIT);
    let aid = a.id();
    let a_control = a.control.to_string_lossy().into_owned();
    let err = fails(
        &[
            "node",
            "--create",
            "--key",
            &format!("{dir}/other.key"),
            "--control",
            &a_control,
        ],
        quick,
    );
    assert!(err.contains("already running"), "{err}");
    assert!(
        err.contains(&aid.to_string()),
        "the refusal should name the running node: {err}"
    );
    assert_eq!(a.status().id, aid);

    eprintln!("[{:?}] second node refused checked", t0.elapsed());
    // Malformed, unknown and oversized requests get error answers; a silent client does not
    // hold up others.
    let silent_client = std::os::unix::net::UnixStream::connect(&a.control).unwrap();
    let ans = control_raw(&a.control, "hello\n").unwrap();
    assert!(
        ans.contains("\"ok\":false") && ans.contains("malformed request"),
        "{ans}"
    );
    let e = control_request(&a.control, &serde_json::json!({"op": "explode"})).unwrap_err();
    assert!(e.contains("malformed request"), "{e}");
    let e = control_request(
        &a.control,
        &serde_json::json!({"op": "send", "to": "zz", "payload": "x"}),
    )
    .unwrap_err();
    assert!(e.contains("not a node id"), "{e}");
    let e = control_request(
        &a.control,
        &serde_json::json!({"op": "lookup", "raw_key": "1".repeat(33)}),
    )
    .unwrap_err();
    assert!(e.contains("1 to 32 hex digits"), "{e}");
    // Just over the request limit (6 MiB + 64 KiB: room for a 1 MiB payload however JSON
    // escapes it), and by less than a socket buffer, so that the whole request is written.
    let big = format!(
        "{{\"op\":\"lookup\",\"key\":\"{}\"}}\n",
        "x".repeat(6 * 1024 * 1024 + 64 * 1024 + 16)
    );
    let ans = control_raw(&a.control, &big).unwrap();
    assert!(ans.contains("larger than"), "{ans}");
    assert_eq!(a.status().id, aid, "the node carries on after bad requests");
    drop(silent_client);

    eprintln!("[{:?}] bad requests checked", t0.elapsed());
    // Bad client arguments.
    let err = cli_fails(&mut a, &["send", "not-an-id", "x"]);
    assert!(err.contains("not a node id"), "{err}");
    let err = cli_fails(&mut a, &["lookup", "--raw-key", "xyz"]);
    assert!(err.contains("32 hex digits"), "{err}");

    eprintln!("[{:?}] bad client args checked", t0.elapsed());
    // Ctrl-C (SIGINT) ends it gracefully too. Not joined to anyone, so it just stops.
    a.interrupt();
    let st = a.wait_exit(Duration::from_secs(10));
    assert!(
        st.success(),
        "SIGINT must end in exit 0: {st}\n{}",
        a.describe()
    );
    assert!(wait_for(Duration::from_secs(2), || (!a.control.exists())
        .then_some(()))
    .is_some());
}

/// A node speaking another protocol version cannot join: the handshake is refused and the
/// joiner says why; the network it tried to join carries on.
#[test]
fn other_protocol_version_is_refused() {
    let net = TestNet::new();
    let mut first = net.spawn("ours", Start::Create, FAST);
    let ticket = first.wait_ticket(Duration::from_secs(20));
    let other = (p2ps_transport::PROTOCOL_VERSION + 1).to_string();
    let mut newer = net.spawn(
        "newer",
        Start::Join(ticket.clone()),
        &[
            "--protocol-version",
            &other,
            "--join-attempts",
            "2",
            "--join-timeout-ms",
            "500",
        ],
    );
    let status = newer.wait_exit(Duration::from_secs(40));
    assert!(
        !status.success(),
        "a node of protocol version {other} joined a network of version {}",
        p2ps_transport::PROTOCOL_VERSION
    );
    let err = newer.stderr();
    assert!(err.contains("protocol version"), "unclear error: {err}");
    // The network still serves a node of its own version.
    let mut ok = net.spawn("ours-too", Start::Join(ticket), FAST);
    ok.wait_ticket(Duration::from_secs(20));
    assert_eq!(first.status().state, p2ps::NodeState::Joined);
}
