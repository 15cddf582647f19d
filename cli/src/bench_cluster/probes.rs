//! What `p2ps bench cluster` reads off the nodes and the machine: counters summed over nodes
//! (bytes, dials, trouble), connection RTTs, the process's RSS, and a bare UDP round trip.

use crate::demo::ring_check::status_of;
use anyhow::{Context, Result};
use p2ps::Node;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Round trips of a 64-byte datagram between two UDP sockets on loopback, echoed by a task on
/// this runtime (µs each; a ping with no echo within 1 s is left out).
pub(super) async fn udp_echo_rtt(count: usize) -> Result<Vec<f64>> {
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .context("binding a UDP socket")?;
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .context("binding a UDP socket")?;
    let b_addr = b.local_addr().context("UDP socket address")?;
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((len, from)) = b.recv_from(&mut buf).await {
            if b.send_to(&buf[..len], from).await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let ping = [(i % 251) as u8; 64];
        let t = Instant::now();
        a.send_to(&ping, b_addr)
            .await
            .context("sending a UDP ping")?;
        if let Ok(Ok((len, _))) = timeout(Duration::from_secs(1), a.recv_from(&mut buf)).await {
            if buf[..len] == ping[..] {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    echo.abort();
    Ok(out)
}

#[derive(Clone, Copy, Debug, Default)]
/// Traffic counters summed over nodes.
pub(super) struct Totals {
    /// Frames handed to QUIC, bytes.
    pub(super) bytes: u64,
    /// UDP payload bytes sent.
    pub(super) udp_bytes: u64,
    /// Frames of the routing class, bytes.
    pub(super) routing_bytes: u64,
    /// Frames sent.
    pub(super) messages: u64,
}

/// The traffic counters of `nodes`, summed.
pub(super) async fn totals(nodes: &[Node]) -> Result<Totals> {
    let mut t = Totals::default();
    for n in nodes {
        let c = status_of(n).await?.counters;
        t.bytes += c.bytes_out;
        t.udp_bytes += c.udp_bytes_out;
        t.routing_bytes += c.routing_bytes_out;
        t.messages += c.messages_out;
    }
    Ok(t)
}

/// Connections dialled so far, summed over the nodes.
pub(super) async fn dials(nodes: &[Node]) -> Result<u64> {
    let mut d = 0;
    for n in nodes {
        d += status_of(n).await?.counters.connections_dialed;
    }
    Ok(d)
}

/// How many trouble counters [`trouble`] sums.
pub(super) const TROUBLE: usize = 16;

/// The dictionary's counter `name` on the node of status `s` (0 without one).
pub(super) fn dict_counter(s: &p2ps::Status, name: &str) -> u64 {
    s.services
        .iter()
        .filter(|svc| svc.name == p2ps_dict::service::NAME)
        .filter_map(|svc| svc.counters.get(name))
        .sum()
}

/// Counters that point at trouble, summed over `nodes`.
pub(super) async fn trouble(nodes: &[Node]) -> Result<[u64; TROUBLE]> {
    let mut t = [0u64; TROUBLE];
    for n in nodes {
        let s = status_of(n).await?;
        let c = &s.counters;
        let v = [
            c.dropped,
            c.send_failed,
            c.send_queue_full,
            c.peers_failed,
            c.peers_timed_out,
            c.lookups_failed,
            c.handshakes_failed,
            c.frame_errors,
            c.inbox_dropped,
            c.forged,
            c.stale,
            c.bad_answers,
            c.forwards_refused,
            c.rate_limited,
            dict_counter(&s, "dropped"),
            dict_counter(&s, "refused"),
        ];
        for (a, b) in t.iter_mut().zip(v) {
            *a += b;
        }
    }
    Ok(t)
}

/// The trouble counters that moved from `before` to `after`, in words.
pub(super) fn trouble_text(before: [u64; TROUBLE], after: [u64; TROUBLE]) -> String {
    const NAMES: [&str; TROUBLE] = [
        "routed messages dropped",
        "sends failed",
        "sends dropped on full queues",
        "peers declared failed",
        "connections timed out",
        "lookups failed",
        "handshakes failed",
        "frame errors",
        "messages dropped on a full inbox",
        "forgeries dropped",
        "stale envelopes dropped",
        "answers refused",
        "forwards refused",
        "messages over a peer's rate dropped",
        "malformed dictionary messages dropped",
        "dictionary records refused",
    ];
    let parts: Vec<String> = NAMES
        .iter()
        .zip(before.iter().zip(after.iter()))
        .filter(|(_, (b, a))| a > b)
        .map(|(n, (b, a))| format!("{} {n}", a - b))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Every connection's RTT (ms), the number of connections and of fingers, over all nodes.
pub(super) async fn rtt_sample(nodes: &[Node]) -> Result<(Vec<f64>, usize, usize)> {
    let mut rtts = Vec::new();
    let mut fingers = 0;
    for n in nodes {
        let s = status_of(n).await?;
        rtts.extend(s.connections.iter().map(|c| c.rtt_ms));
        fingers += s.fingers.len();
    }
    let conns = rtts.len();
    Ok((rtts, conns, fingers))
}

/// Resident set size of this process, in KiB (`VmRSS` of `/proc/self/status`).
pub(super) fn rss_kib() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/self/status")?;
    line.split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()
        .context("malformed VmRSS value")
}
