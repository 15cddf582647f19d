//! Floods against real `p2ps node` processes on loopback (issue #12, items 1 and 2).
//!
//! The attacker is this test process with its own QUIC client (quinn, one UDP socket) that
//! speaks the transport's handshake with a fresh identity per connection, as the attacker of
//! the issue did:
//!
//! * `partial_frames_keep_memory_bounded`: 12 connections x 15 streams, each stream holding a
//!   partial 1 MiB frame (after one complete, valid frame, so that the connection counts as
//!   useful). The node's RSS (`VmRSS` in `/proc/PID/status`) must stay within 64 MiB of its
//!   idle figure during the attack and come back within 16 MiB of it 30 s after the attacker
//!   closed its connections.
//! * `connection_flood_leaves_room_for_an_honest_join`: the attacker, bound to 127.0.0.2,
//!   holds as many connections to a node as it can get (fresh ids, re-dialing what is closed);
//!   the node runs without the loopback exemption, and an honest node at 127.1.0.3 must still
//!   join through it, after which lookups through it must be correct.
//!
//! Every flood is bounded in count and time and only loopback addresses are used. Run with
//! `P2PS_BIN=target/debug/p2ps cargo test -p p2ps-interop-tests --test resource_limits --
//! --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::hostile::address_of;
use p2ps_interop_tests::p2ps::wire::Wire;
use p2ps_interop_tests::p2ps::OverlayId;
use p2ps_interop_tests::raw_quic::Attacker;
use p2ps_interop_tests::{check_lookups, random_keys, wait_ring, NodeProc, Start, TestNet, FAST};
use p2ps_overlay::Message;
use p2ps_transport::{frame, quinn, StreamClass};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;

/// Flags that make the node under attack treat loopback like any other address.
const NO_LOOPBACK_EXEMPTION: &[&str] = &["--limit-loopback"];

/// The resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// A frame the node decodes without complaint: an answer to a join request it never made.
fn harmless_frame() -> Vec<u8> {
    let msg: Message<OverlayId> = Message::JoinReply {
        req: 0x5eed,
        succs: Vec::new(),
        preds: Vec::new(),
    };
    frame::encode(&Wire::Overlay(msg), 4096)
        .expect("encoding a small frame")
        .as_bytes()
        .to_vec()
}

/// One stream of the partial-frame attack: class tag, a complete harmless frame, then a header
/// announcing `len` bytes and all of them but the last.
async fn hold_partial_frame(conn: quinn::Connection, len: usize) -> Result<(), String> {
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    let mut head = vec![StreamClass::User.tag()];
    head.extend_from_slice(&harmless_frame());
    head.extend_from_slice(&(len as u32).to_be_bytes());
    send.write_all(&head).await.map_err(|e| e.to_string())?;
    let body = vec![0x55u8; 64 * 1024];
    let mut left = len - 1;
    while left > 0 {
        let n = left.min(body.len());
        send.write_all(&body[..n])
            .await
            .map_err(|e| e.to_string())?;
        left -= n;
    }
    // Keep the stream (and its partial frame) open until the connection closes.
    let _ = conn.closed().await;
    drop(send);
    Ok(())
}

#[test]
fn partial_frames_keep_memory_bounded() {
    const CONNECTIONS: usize = 12;
    const STREAMS: usize = 15;
    const FRAME: usize = 1024 * 1024;
    let net = TestNet::new();
    let mut node = net.spawn("victim", Start::Create, FAST);
    node.wait_ticket(JOIN_WAIT);
    let (id, addr) = address_of(&node).expect("the node's address");
    let pid = node.pid();
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss(pid);

    let attacker = Attacker::new("127.0.0.1:0", id, addr).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        let (e, a) = (attacker.endpoint.clone(), attacker.addr);
        match attacker.rt.block_on(Attacker::dial(e, attacker.target, a)) {
            Ok(c) => conns.push(c),
            Err(e) => panic!("the attacker could not connect: {e}"),
        }
    }
    for c in &conns {
        for _ in 0..STREAMS {
            let (c, done, refused) = (c.clone(), done.clone(), refused.clone());
            attacker.rt.spawn(async move {
                if hold_partial_frame(c, FRAME).await.is_err() {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
    // Hold the attack for 12 s, sampling the node's memory.
    let start = Instant::now();
    let mut peak = idle;
    while start.elapsed() < Duration::from_secs(12) {
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused_streams = refused.load(Ordering::Relaxed);
    attacker.close_all();
    drop(conns);
    let closed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(30).saturating_sub(closed_at.elapsed()));
    let after = rss(pid);
    let alive = node.try_exit().is_none();
    println!(
        "partial-frame attack ({CONNECTIONS} connections x {STREAMS} streams x {} MiB): idle \
         {:.1} MiB, peak during the attack {:.1} MiB (+{:.1}), 30 s after closing {:.1} MiB \
         (+{:.1}); streams refused by the node: {refused_streams}",
        FRAME / 1024 / 1024,
        mib(idle),
        mib(peak),
        mib(peak.saturating_sub(idle)),
        mib(after),
        mib(after.saturating_sub(idle)),
    );
    assert!(alive, "the node died: {}", node.describe());
    assert!(
        peak <= idle + 64 * MIB,
        "RSS rose from {:.1} MiB to {:.1} MiB during the attack (allowed: idle + 64 MiB)",
        mib(idle),
        mib(peak)
    );
    assert!(
        after <= idle + 16 * MIB,
        "RSS was {:.1} MiB 30 s after the attack, idle was {:.1} MiB (allowed: idle + 16 MiB)",
        mib(after),
        mib(idle)
    );
    // The node still answers.
    node.status();
}

/// What the connection flood achieved.
#[derive(Default)]
struct Flood {
    attempts: AtomicUsize,
    accepted: AtomicUsize,
    held: AtomicUsize,
    peak: AtomicUsize,
    stop: AtomicBool,
}

impl Flood {
    fn summary(&self) -> String {
        format!(
            "{} handshakes tried, {} completed, {} held now, at most {} held at once",
            self.attempts.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
            self.peak.load(Ordering::Relaxed),
        )
    }
}

/// Keeps up to `want` connections to the target open with `workers` dialers, re-dialing those
/// the node closes; stops after `max_attempts` handshakes, at `deadline`, or when told.
fn start_flood(
    attacker: &Attacker,
    want: usize,
    workers: usize,
    max_attempts: usize,
    deadline: Instant,
) -> Arc<Flood> {
    let flood = Arc::new(Flood::default());
    let deadline = tokio::time::Instant::from_std(deadline);
    for _ in 0..workers {
        let (f, e, target, addr) = (
            flood.clone(),
            attacker.endpoint.clone(),
            attacker.target,
            attacker.addr,
        );
        attacker.rt.spawn(async move {
            loop {
                if f.stop.load(Ordering::Relaxed) || tokio::time::Instant::now() >= deadline {
                    break;
                }
                if f.held.load(Ordering::Relaxed) >= want {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                if f.attempts.fetch_add(1, Ordering::Relaxed) >= max_attempts {
                    break;
                }
                match Attacker::dial(e.clone(), target, addr).await {
                    Ok(conn) => {
                        f.accepted.fetch_add(1, Ordering::Relaxed);
                        let now = f.held.fetch_add(1, Ordering::Relaxed) + 1;
                        f.peak.fetch_max(now, Ordering::Relaxed);
                        let f = f.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = conn.closed() => {}
                                _ = tokio::time::sleep_until(deadline) => {}
                            }
                            f.held.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
    }
    flood
}

#[test]
fn connection_flood_leaves_room_for_an_honest_join() {
    let net = TestNet::new();
    let args: Vec<&str> = FAST.iter().chain(NO_LOOPBACK_EXEMPTION).copied().collect();
    let mut n0 = net.spawn_at(None, "n0", Start::Create, "127.0.0.1:0", &args);
    let ticket = n0.wait_ticket(JOIN_WAIT);
    let mut n1 = net.spawn("n1", Start::Join(ticket.clone()), FAST);
    let mut n2 = net.spawn("n2", Start::Join(ticket.clone()), FAST);
    n1.wait_ticket(JOIN_WAIT);
    n2.wait_ticket(JOIN_WAIT);
    wait_ring(&mut [&mut n0, &mut n1, &mut n2], Duration::from_secs(30));
    let (id, addr) = address_of(&n0).expect("n0's address");
    let idle = rss(n0.pid());

    // The attacker takes every connection it can get (bounded: 5000 handshakes, 90 s).
    let attacker = Attacker::new("127.0.0.2:0", id, addr).unwrap();
    let started = Instant::now();
    let flood = start_flood(&attacker, 700, 24, 5000, started + Duration::from_secs(90));
    // Until it holds all it wants, or it has stopped gaining for 3 s (at most 30 s).
    let mut last = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(250));
        let held = flood.held.load(Ordering::Relaxed);
        if held >= 700 {
            break;
        }
        if held != last.0 {
            last = (held, Instant::now());
        } else if held > 0 && last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    println!(
        "after {:.1} s of flooding: {}; n0's RSS {:.1} MiB (idle {:.1} MiB)",
        started.elapsed().as_secs_f64(),
        flood.summary(),
        mib(rss(n0.pid())),
        mib(idle),
    );

    // An honest node at another address joins through n0 while the attacker holds on.
    let mut j = net.spawn_at(None, "j", Start::Join(ticket), "127.1.0.3:0", FAST);
    let join_started = Instant::now();
    j.wait_ticket(JOIN_WAIT);
    println!(
        "the honest node joined through n0 in {:.1} s; flood: {}",
        join_started.elapsed().as_secs_f64(),
        flood.summary()
    );
    wait_ring(
        &mut [&mut n0, &mut n1, &mut n2, &mut j],
        Duration::from_secs(30),
    );
    // Lookups through n0 (and from the newcomer) stay correct under the flood.
    let keys = random_keys(40);
    check_lookups(&mut [&mut n0, &mut j, &mut n1, &mut n2], &keys);
    println!("lookups correct; flood at the end: {}", flood.summary());
    flood.stop.store(true, Ordering::Relaxed);
    attacker.close_all();
    let mut nodes: Vec<&mut NodeProc> = vec![&mut n0, &mut n1, &mut n2, &mut j];
    for n in nodes.iter_mut() {
        if n.try_exit().is_some() {
            let name = n.name.clone();
            panic!("{name} died: {}", n.describe());
        }
    }
}
