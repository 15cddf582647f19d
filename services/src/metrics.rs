//! A node's metrics in the OpenMetrics text format (what Prometheus scrapes), written with
//! `prometheus-client`, the crate libp2p uses.
//!
//! Two kinds of figures. Most are figures the node keeps anyway (its counters, table sizes,
//! connections, each service's counters): they are read from a [`Status`] snapshot when a
//! scrape asks, so they cost nothing in between. The rest are distributions recorded as
//! operations end — lookup latency and hops, dictionary operations — in lock-free histograms
//! ([`Metrics`]), which a node started with `NodeConfig::metrics = false` does not record.
//!
//! Names start with `p2ps_`; counters end in `_total` and durations are in seconds, as the
//! OpenMetrics conventions ask.

use crate::status::Status;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Labels of one series: name, value pairs.
type Labels = Vec<(String, String)>;

/// What a dictionary operation was, for its latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DictOp {
    /// A put, delete or compare-and-swap.
    Write,
    /// A get.
    Read,
}

/// The distributions a node records as operations end. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    enabled: Arc<AtomicBool>,
    lookup_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    lookup_hops: Histogram,
    dict_seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

/// Latency buckets: 100 µs to about 13 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    /// Empty histograms; `enabled = false` records nothing.
    pub(crate) fn new(enabled: bool) -> Self {
        Metrics {
            enabled: Arc::new(AtomicBool::new(enabled)),
            lookup_seconds: Family::new_with_constructor(latency_histogram),
            lookup_hops: Histogram::new((0..=12).map(f64::from)),
            dict_seconds: Family::new_with_constructor(latency_histogram),
        }
    }

    /// Whether this node records its histograms.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Starts or stops recording the histograms (what they hold stays).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// A lookup ended after `took`: answered in `hops`, or failed (`None`).
    pub(crate) fn lookup(&self, took: Duration, hops: Option<u16>) {
        if !self.enabled() {
            return;
        }
        let result = if hops.is_some() { "ok" } else { "failed" };
        self.lookup_seconds
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .observe(took.as_secs_f64());
        if let Some(h) = hops {
            self.lookup_hops.observe(f64::from(h));
        }
    }

    /// A dictionary operation of this node's application ended after `took`.
    pub(crate) fn dict(&self, op: DictOp, took: Duration, ok: bool) {
        if !self.enabled() {
            return;
        }
        let op = match op {
            DictOp::Write => "write",
            DictOp::Read => "read",
        };
        let result = if ok { "ok" } else { "failed" };
        self.dict_seconds
            .get_or_create(&vec![
                ("op".to_string(), op.to_string()),
                ("result".to_string(), result.to_string()),
            ])
            .observe(took.as_secs_f64());
    }

    /// The node's metrics, from `status` and the histograms, in the OpenMetrics text format
    /// (ending in `# EOF`).
    pub fn render(&self, status: &Status) -> String {
        let mut reg = Registry::with_prefix("p2ps");
        self.register(&mut reg);
        register_status(&mut reg, status);
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = encode(&mut out, &reg);
        out
    }

    fn register(&self, reg: &mut Registry) {
        reg.register_with_unit(
            "lookup",
            "Time from a lookup call to its answer, as the application saw it",
            Unit::Seconds,
            self.lookup_seconds.clone(),
        );
        reg.register(
            "lookup_hops",
            "Hops of the lookups answered",
            self.lookup_hops.clone(),
        );
        reg.register_with_unit(
            "dict_operation",
            "Time from a dictionary call of this node's application to its answer",
            Unit::Seconds,
            self.dict_seconds.clone(),
        );
    }
}

/// A counter with no labels.
fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    reg.register(name, help, ConstCounter::new(v));
}

/// A gauge with no labels.
fn gauge(reg: &mut Registry, name: &str, help: &str, v: u64) {
    reg.register(
        name,
        help,
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
    );
}

/// A gauge per label value.
fn gauges(
    reg: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, v) in series {
        family
            .get_or_create(&labels)
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    reg.register(name, help, family);
}

/// A counter per label value.
fn counters(
    reg: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, prometheus_client::metrics::counter::Counter>::default();
    for (labels, v) in series {
        family.get_or_create(&labels).inc_by(v);
    }
    reg.register(name, help, family);
}

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

/// The figures of a status snapshot.
fn register_status(reg: &mut Registry, s: &Status) {
    let c = &s.counters;
    gauge(
        reg,
        "up",
        "1 while the node is part of a network",
        u64::from(s.state == crate::status::NodeState::Joined),
    );
    reg.register_with_unit(
        "uptime",
        "Time since the node started",
        Unit::Seconds,
        ConstGauge::<f64>::new(s.uptime_secs),
    );

    // Transport.
    let relayed = s
        .connections
        .iter()
        .filter(|p| !p.relayed_by.is_empty())
        .count() as u64;
    let direct = s.connections.len() as u64 - relayed;
    gauges(
        reg,
        "connections",
        "Open connections to peers, by path",
        [
            (label("path", "direct"), direct),
            (label("path", "relayed"), relayed),
        ],
    );
    counter(
        reg,
        "connections_dialed",
        "Connections this node dialled (handshakes it started)",
        c.connections_dialed,
    );
    counter(
        reg,
        "handshakes_failed",
        "Incoming handshakes refused",
        c.handshakes_failed,
    );
    counters(
        reg,
        "hole_punches",
        "Peers that could not be dialled directly, reached by hole punching or a relayed circuit, by result",
        [
            (label("result", "ok"), c.traversals.saturating_sub(c.traversals_failed)),
            (label("result", "failed"), c.traversals_failed),
        ],
    );
    counters(
        reg,
        "relay_forwarded",
        "Messages passed through a relay, by direction",
        [
            (label("dir", "via_relay"), c.forwarded_via_relay),
            (label("dir", "for_peers"), c.forwarded_for_peers),
        ],
    );
    counters(
        reg,
        "messages",
        "Overlay messages, by direction",
        [
            (label("dir", "out"), c.messages_out),
            (label("dir", "in"), c.messages_in),
        ],
    );
    counters(
        reg,
        "frame_bytes",
        "Bytes of whole frames, by direction",
        [
            (label("dir", "out"), c.bytes_out),
            (label("dir", "in"), c.bytes_in),
        ],
    );
    counters(
        reg,
        "udp_bytes",
        "UDP payload bytes as QUIC counts them (headers, acknowledgements, handshakes included), by direction",
        [(label("dir", "out"), c.udp_bytes_out), (label("dir", "in"), c.udp_bytes_in)],
    );
    counters(
        reg,
        "class_bytes_out",
        "Bytes sent, by stream class",
        [
            (label("class", "routing"), c.routing_bytes_out),
            (label("class", "user"), c.user_bytes_out),
            (label("class", "tree"), c.tree_bytes_out),
        ],
    );
    let rtt = latency_histogram();
    for p in &s.connections {
        rtt.observe(p.rtt_ms / 1e3);
    }
    reg.register_with_unit(
        "connection_rtt",
        "Smoothed QUIC round-trip time of the open connections, at the time of the scrape",
        Unit::Seconds,
        rtt,
    );

    // Overlay.
    gauges(
        reg,
        "table_entries",
        "Routing table entries, by part",
        [
            (label("part", "successors"), s.successors.len() as u64),
            (label("part", "predecessors"), s.predecessors.len() as u64),
            (label("part", "fingers"), s.fingers.len() as u64),
        ],
    );
    gauge(
        reg,
        "neighbours",
        "Distinct nodes in the routing table",
        s.distinct_neighbours as u64,
    );
    if let Some(n) = s.network_size_estimate {
        gauge(
            reg,
            "network_size_estimate",
            "Nodes in the network, estimated from the spacing of this node's ring lists",
            n,
        );
    }
    counters(
        reg,
        "lookups",
        "Lookups made by this node, by result",
        [
            (label("result", "ok"), c.lookups_ok),
            (label("result", "failed"), c.lookups_failed),
        ],
    );
    counter(
        reg,
        "forwarded",
        "Routed messages forwarded for others",
        c.forwarded,
    );
    counter(
        reg,
        "delivered",
        "Payloads delivered to the application",
        c.delivered,
    );
    counter(
        reg,
        "routed_dropped",
        "Routed messages dropped (no route, too many hops, addressee absent)",
        c.dropped,
    );
    counter(
        reg,
        "peers_failed",
        "Peers declared crashed by failure detection",
        c.peers_failed,
    );
    counter(
        reg,
        "peers_timed_out",
        "Connections that timed out",
        c.peers_timed_out,
    );
    counter(
        reg,
        "rejoins",
        "Times this node lost every neighbour and joined again",
        c.rejoins,
    );
    gauge(
        reg,
        "groups",
        "Groups this node is in or forwards for",
        s.groups.len() as u64,
    );
    gauge(
        reg,
        "casts_in_progress",
        "Broadcasts and range multicasts this node is taking part in",
        s.casts_in_progress as u64,
    );

    // Services: every counter a service reports, and the dictionary's by name.
    gauges(
        reg,
        "service",
        "Counters and gauges each service reports (keys and bytes held are gauges, the rest counts)",
        s.services.iter().flat_map(|svc| {
            svc.counters.iter().map(move |(k, v)| {
                (
                    vec![
                        ("service".to_string(), svc.name.clone()),
                        ("counter".to_string(), k.clone()),
                    ],
                    *v,
                )
            })
        }),
    );
    if let Some(dict) = s
        .services
        .iter()
        .find(|svc| svc.name == p2ps_dict::service::NAME)
    {
        let get = |k: &str| dict.counters.get(k).copied().unwrap_or(0);
        gauge(reg, "dict_keys", "Dictionary records held", get("keys"));
        gauge(
            reg,
            "dict_bytes",
            "Bytes of the dictionary records held",
            get("bytes"),
        );
        gauge(
            reg,
            "dict_under_replicated",
            "Keys this node is primary for that fewer replicas than wanted held current at its last check",
            get("under_replicated"),
        );
    }

    // Security and limits.
    counters(
        reg,
        "refused",
        "Input refused or dropped, by reason",
        [
            (label("reason", "forged"), c.forged),
            (label("reason", "stale"), c.stale),
            (label("reason", "unverified"), c.unverified),
            (label("reason", "bad_answer"), c.bad_answers),
            (label("reason", "forward_refused"), c.forwards_refused),
            (label("reason", "frame_error"), c.frame_errors),
        ],
    );
    counters(
        reg,
        "limits_hit",
        "Messages dropped because a bound was reached, by bound",
        [
            (label("limit", "send_queue"), c.send_queue_full),
            (label("limit", "tree_queue"), c.tree_queue_full),
            (label("limit", "inbox"), c.inbox_dropped),
            (label("limit", "peer_rate"), c.rate_limited),
        ],
    );
    counter(
        reg,
        "send_failed",
        "Messages that could not be sent (no address, shutting down)",
        c.send_failed,
    );
}
