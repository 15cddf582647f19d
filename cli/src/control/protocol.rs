//! The control protocol: what a client may ask a running node and what it answers. The node's
//! HTTP interface takes the same requests (`POST /api`, one request as the body, the same
//! answer; the streams as server-sent events: `GET /watch?key=K`, `GET /watch-node?node=ID`).
//!
//! One connection carries one request and one response, each a single line of JSON (except
//! `watch`, below). Requests (at most [`MAX_REQUEST_BYTES`], about 6 MiB: room for the largest
//! payload, 1 MiB, however JSON escapes it; sent within [`REQUEST_READ_TIMEOUT`]):
//!
//! ```text
//! {"op":"status"}
//! {"op":"send","to":"<64 hex digits, or a unique prefix of 4 or more>","payload":"text"}
//! {"op":"route","key":"text","payload":"text"}          (or "raw_key":"<1 to 32 hex digits>")
//! {"op":"lookup","key":"text"}                          (or "raw_key")
//! {"op":"lookup_many","keys":["a","b"],"raw_keys":["<hex>"]}   (at most 4096 in all)
//! {"op":"leave"}
//! {"op":"put","key":"text","value":"text"}   {"op":"get","key":"text"}   {"op":"del","key":"text"}
//!     put, optionally: "acks":W, "ttl_secs":S, "if_version":V, "republish":true;
//!     get: "quorum":R;  del: "acks":W, "if_version":V
//! {"op":"dict_replicas","key":"text"}
//! {"op":"watch","key":"text"}                           (a stream: see below)
//! {"op":"watch_node","node":"<64 hex digits, or a unique prefix of 4 or more>"}   (a stream)
//! {"op":"metrics"}                                      (the OpenMetrics text, as one string)
//! {"op":"census"}   {"op":"census","rows":N}             (rows: per-node rows, at most 4096)
//! ```
//!
//! A text key is placed on the ring with `p2ps::key_of` (first 128 bits of its SHA-256); a raw
//! key is the ring position itself. Responses are `{"ok":true,"result":…}` or
//! `{"ok":false,"error":"…"}`. Results: `status` gives the node's [`p2ps::Status`]; `lookup` gives
//! `{"key","node","hops"}`; `lookup_many` a list of those in request order (`keys` first, then
//! `raw_keys`), an entry that failed holding `"error"` instead of `node` and `hops`; `send` and
//! `route` give what was sent; `leave` answers once the node has left; `put` and `del` give
//! `{"key","version","replicas"}`, `get` gives `{"key","value","version"}` (`value` null when the
//! key holds nothing or was deleted); `dict_replicas` gives `{"key","version","current",
//! "answered","replicas"}`; `census` gives a [`p2ps::CensusReport`] (`nodes`, `complete`,
//! `seconds`, `estimate`, `mean_estimate`, `nat`, `versions`, `table_sizes`, `loads`, `keys`,
//! `bytes`, `rows`).
//!
//! Dictionary options: `acks` is how many replicas must hold a write before it is answered
//! (default: a majority; more than the key's replicas counts as all of them), `quorum` how many
//! a read asks (1: a fast read, which may miss the newest write), `ttl_secs` how long the value
//! lives (1 s up to the node's longest, 24 h by default), and `if_version` makes the put a
//! compare-and-swap: it is written, as version `V + 1`, only if the key is at version `V` now
//! (0: holds nothing); otherwise the error names the version the key is at. `republish` makes
//! the node write the value again (same version, new expiry) before it expires, for as long as
//! the node runs or until the key is written again without it.
//!
//! `watch` is the one streaming request: the node keeps the connection open and writes one
//! response line per event, `{"ok":true,"result":{"key","state","value","version"}}`, the first
//! for the state the key is in when the watch starts, then one for every change: `state` is
//! `"set"` (with `value` and `version`), `"deleted"` (`value` null, the deletion's `version`)
//! or `"empty"` (the key holds nothing, e.g. its value expired: `value` and `version` null).
//! Intermediate versions may be skipped when changes come faster than the node hears of them;
//! the newest is never skipped. An expiry is reported when it happens (the node holding a
//! watched key looks at it again when its record expires). The watch follows the key when the
//! nodes responsible for it change. The client sends nothing more after its request: closing the connection (or
//! writing anything) ends the watch. A node serves at most [`MAX_WATCH_STREAMS`] watches at
//! once and refuses more with an error line; a watch that cannot start, or that the node ends
//! (because it stops), ends with an error line too, and the connection is closed.
//!
//! `watch_node` streams the same way, sharing the [`MAX_WATCH_STREAMS`] places: one line
//! `{"ok":true,"result":{"node","event":"watching"}}` once the watched node answered, then one
//! final line, `"event":"failed"` (with `reported_by`, the neighbour that reported it or null,
//! `probe_ms`, how long the node's own confirming probe waited, and `at_unix_ms`) or
//! `"event":"left"` (with `at_unix_ms`), after which the node closes the connection.

use anyhow::Result;
use p2ps::RingId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest request line the node reads: room for the largest message
/// ([`crate::payload::MAX_PAYLOAD_BYTES`]) even if JSON escapes every byte of it as `\u00XX`
/// (6 bytes), plus 64 KiB for the rest of the request.
pub(crate) const MAX_REQUEST_BYTES: usize = 6 * crate::payload::MAX_PAYLOAD_BYTES + 64 * 1024;
/// How long the node waits for a request line once a client has connected.
pub(crate) const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most keys in one `lookup_many` request.
pub(crate) const MAX_BATCH: usize = 4096;
/// Most `watch` streams a node serves at once (they do not count against the requests served
/// at once).
pub(crate) const MAX_WATCH_STREAMS: usize = 32;

/// A request to a running node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// The node's [`Status`](p2ps::Status). (Empty struct variants, unlike unit ones, refuse unknown fields.)
    Status {},
    /// Send `payload` to node `to` (64 hex digits, or a prefix of at least 4 that names one
    /// node the node knows).
    Send {
        /// Addressee.
        to: String,
        /// Text to send.
        payload: String,
    },
    /// Send `payload` to whichever node holds a key.
    Route {
        /// Text key, hashed with `key_of`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Ring position, 1 to 32 hex digits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_key: Option<String>,
        /// Text to send.
        payload: String,
    },
    /// Who holds a key?
    Lookup {
        /// Text key, hashed with `key_of`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Ring position, 1 to 32 hex digits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_key: Option<String>,
    },
    /// Who holds each of these keys?
    LookupMany {
        /// Text keys.
        #[serde(default)]
        keys: Vec<String>,
        /// Ring positions.
        #[serde(default)]
        raw_keys: Vec<String>,
    },
    /// Leave the network gracefully and stop.
    Leave {},
    /// Send `payload` to every node.
    Broadcast {
        /// Text to send.
        payload: String,
    },
    /// Send `payload` to the nodes responsible for ring positions `lo..=hi` (1 to 32 hex digits
    /// each).
    Range {
        /// Lower end.
        lo: String,
        /// Upper end.
        hi: String,
        /// Text to send.
        payload: String,
    },
    /// Join a group.
    GroupJoin {
        /// Group name.
        group: String,
        /// A closed group's secret (64 hex characters; see `p2ps group key new`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Leave a group.
    GroupLeave {
        /// Group name.
        group: String,
        /// A closed group's secret (64 hex characters; see `p2ps group key new`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Send `payload` to the members of a group.
    GroupSend {
        /// Group name.
        group: String,
        /// A closed group's secret (64 hex characters; see `p2ps group key new`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Text to send.
        payload: String,
    },
    /// Write `value` under the dictionary's open key `key`.
    Put {
        /// Key name.
        key: String,
        /// Value (text).
        value: String,
        /// Replicas that must hold the value before the answer (default: the write quorum).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acks: Option<u8>,
        /// Time to live in seconds (default: the node's, 10 min).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
        /// Compare-and-swap: write only if the key is at this version now (0: holds nothing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_version: Option<u64>,
        /// The node writes the value again before it expires, for as long as it runs.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        republish: bool,
    },
    /// Read the dictionary's open key `key`.
    Get {
        /// Key name.
        key: String,
        /// Replicas asked (default: the read quorum; 1: a fast read).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quorum: Option<u8>,
    },
    /// Delete the dictionary's open key `key`.
    Del {
        /// Key name.
        key: String,
        /// Replicas that must hold the deletion before the answer (default: the write quorum).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acks: Option<u8>,
        /// Compare-and-swap: delete only if the key is at this version now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_version: Option<u64>,
    },
    /// Stream every change of the dictionary's open key `key` (see the module documentation).
    Watch {
        /// Key name.
        key: String,
    },
    /// The node's metrics in the OpenMetrics text format (what `/metrics` serves), as one
    /// JSON string.
    Metrics {},
    /// Stream what becomes of the node `node` (see the module documentation).
    WatchNode {
        /// The node's id, or a unique prefix of it.
        node: String,
    },
    /// How many replicas of the dictionary's open key `key` hold its newest version.
    DictReplicas {
        /// Key name.
        key: String,
    },
    /// A census of every node of the network.
    Census {
        /// Per-node rows wanted (default 0: sums only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u32>,
    },
}

/// The node's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Response {
    /// Success, with `result` (or a failure if it cannot be encoded).
    pub(crate) fn ok(result: impl Serialize) -> Response {
        match serde_json::to_value(result) {
            Ok(v) => Response {
                ok: true,
                error: None,
                result: Some(v),
            },
            Err(e) => Response::err(format!("cannot encode the answer: {e}")),
        }
    }

    /// Failure, saying why.
    pub(crate) fn err(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(error.into()),
            result: None,
        }
    }
}

/// The answer to one lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LookupAnswer {
    /// The key's ring position (32 hex digits).
    pub key: String,
    /// The responsible node (64 hex digits), if the lookup succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Overlay hops the lookup took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hops: Option<u16>,
    /// Why the lookup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a watched key holds, in a `watch` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeyState {
    /// A value.
    Set,
    /// A deletion.
    Deleted,
    /// Nothing (never written, or expired).
    Empty,
}

/// One event of a `watch` stream: the state of the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WatchEvent {
    /// The key's name.
    pub key: String,
    /// What it holds.
    pub state: KeyState,
    /// Its value (text; bytes that are not UTF-8 replaced), when [`KeyState::Set`].
    pub value: Option<String>,
    /// The version of its value or deletion; `None` when [`KeyState::Empty`].
    pub version: Option<u64>,
}

impl WatchEvent {
    /// The event for `record`, the state of key `key` (`None`: nothing there).
    pub(crate) fn of(key: &str, record: Option<&p2ps::dict::Record<p2ps::OverlayId>>) -> Self {
        let (state, value, version) = match record {
            None => (KeyState::Empty, None, None),
            Some(r) => match &r.value {
                Some(v) => (
                    KeyState::Set,
                    Some(String::from_utf8_lossy(v).into_owned()),
                    Some(r.version),
                ),
                None => (KeyState::Deleted, None, Some(r.version)),
            },
        };
        WatchEvent {
            key: key.to_string(),
            state,
            value,
            version,
        }
    }
}

/// What became of a watched node, in a `watch_node` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NodeFate {
    /// It answered: alive, and watched.
    Watching,
    /// It failed (confirmed by the watching node's own probe).
    Failed,
    /// It left gracefully.
    Left,
}

/// One event of a `watch_node` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeWatchLine {
    /// The watched node (64 hex digits).
    pub node: String,
    /// What became of it.
    pub event: NodeFate,
    /// For `failed`: the neighbour that reported it (null: the watching node's own evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<String>,
    /// For `failed`: how long the confirming probe waited, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_ms: Option<u64>,
    /// For `failed` and `left`: when it was concluded, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_unix_ms: Option<u64>,
}

impl NodeWatchLine {
    /// The line for `e`.
    pub(crate) fn of(e: &p2ps::NodeWatchEvent) -> Self {
        let ms = |t: &std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .ok()
        };
        let mut line = NodeWatchLine {
            node: e.node().to_string(),
            event: NodeFate::Watching,
            reported_by: None,
            probe_ms: None,
            at_unix_ms: None,
        };
        match e {
            p2ps::NodeWatchEvent::Failed {
                reported_by,
                probe,
                at,
                ..
            } => {
                line.event = NodeFate::Failed;
                line.reported_by = reported_by.map(|r| r.to_string());
                line.probe_ms = Some(probe.as_millis() as u64);
                line.at_unix_ms = ms(at);
            }
            p2ps::NodeWatchEvent::Left { at, .. } => {
                line.event = NodeFate::Left;
                line.at_unix_ms = ms(at);
            }
            _ => {}
        }
        line
    }
}

/// Parses a ring position written as 1 to 32 hex digits (a shorter one is left-padded with
/// zeros: `8` is `000…08`, not `800…0`).
pub(crate) fn parse_raw_key(s: &str) -> Result<RingId, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a ring position: expected 1 to 32 hex digits (a shorter one is \
             left-padded with zeros)"
        ));
    }
    u128::from_str_radix(s, 16)
        .map(RingId)
        .map_err(|e| format!("raw key {s:?}: {e}"))
}

/// The ring position named by a text key or a raw key (exactly one of them).
pub(crate) fn ring_key(key: Option<&str>, raw_key: Option<&str>) -> Result<RingId, String> {
    match (key, raw_key) {
        (Some(k), None) => Ok(p2ps::key_of(k.as_bytes())),
        (None, Some(r)) => parse_raw_key(r),
        (Some(_), Some(_)) => Err("give either `key` or `raw_key`, not both".into()),
        (None, None) => Err("missing `key` (or `raw_key`)".into()),
    }
}

/// A status with every typed field set to something other than its first value, for tests.
/// Request lines of every kind, as examples (and seeds for `p2ps fuzz`).
pub(crate) const EXAMPLES: &[&str] = &[
    r#"{"op":"status"}"#,
    r#"{"op":"send","to":"d67394b546","payload":"hi"}"#,
    r#"{"op":"route","raw_key":"ff00","payload":"x"}"#,
    r#"{"op":"lookup","key":"colour"}"#,
    r#"{"op":"lookup_many","keys":["a","b"],"raw_keys":["0"]}"#,
    r#"{"op":"leave"}"#,
    r#"{"op":"put","key":"k","value":"v","acks":3,"ttl_secs":60,"if_version":0,"republish":true}"#,
    r#"{"op":"get","key":"k","quorum":1}"#,
    r#"{"op":"del","key":"k"}"#,
    r#"{"op":"dict_replicas","key":"k"}"#,
    r#"{"op":"watch","key":"k"}"#,
];

/// Whether `line` parses as a request, the way a running node reads it.
pub(crate) fn parses(line: &[u8]) -> bool {
    serde_json::from_slice::<Request>(line.trim_ascii()).is_ok()
}

#[cfg(test)]
pub(crate) fn sample_status() -> p2ps::Status {
    use p2ps::status::{Counters, FingerEntry, GroupEntry, PeerEntry};
    use p2ps::{Dir, FingerStrategy, NodeId, NodeState, PortMapping, Reachability};
    let node = |b: u8| NodeId::from_bytes([b; 32]);
    p2ps::Status {
        id: node(1),
        ring_position: RingId(0x2a),
        addrs: vec!["192.168.1.10:4433".parse().unwrap()],
        reachability: Reachability::PortMapped,
        external_addrs: vec!["203.0.113.7:4433".parse().unwrap()],
        port_mapping: PortMapping::Mapped {
            external: "203.0.113.7:4433".parse().unwrap(),
            gateway: "192.168.1.1:5000".parse().unwrap(),
            renewals: 2,
        },
        relay: vec![node(9)],
        state: NodeState::Rejoining,
        strategy: FingerStrategy::TangoPlus,
        successors: vec![node(2)],
        predecessors: vec![node(3)],
        fingers: vec![
            FingerEntry {
                dir: Dir::Cw,
                level: 0,
                node: node(2),
            },
            FingerEntry {
                dir: Dir::Ccw,
                level: 3,
                node: node(4),
            },
        ],
        distinct_neighbours: 3,
        connections: vec![PeerEntry {
            node: node(2),
            addr: "192.168.1.11:4433".parse().unwrap(),
            outbound: true,
            relayed_by: vec![],
            rtt_ms: 0.25,
        }],
        groups: vec![GroupEntry {
            name: Some("chess".into()),
            position: RingId(7),
            member: true,
            closed: false,
            root: false,
            parent: vec![node(3)],
            children: vec![],
        }],
        casts_in_progress: 1,
        network_size_estimate: Some(12),
        services: vec![p2ps::status::ServiceEntry {
            name: "p2ps/cast".into(),
            id: 7,
            counters: [("delivered".to_string(), 3)].into_iter().collect(),
        }],
        counters: Counters {
            rejoins: 1,
            ..Counters::default()
        },
        uptime_secs: 12.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_match_the_documented_form() {
        let cases = [
            (r#"{"op":"status"}"#, Request::Status {}),
            (r#"{"op":"leave"}"#, Request::Leave {}),
            (
                r#"{"op":"send","to":"ab","payload":"hi"}"#,
                Request::Send {
                    to: "ab".into(),
                    payload: "hi".into(),
                },
            ),
            (
                r#"{"op":"route","key":"k","payload":"p"}"#,
                Request::Route {
                    key: Some("k".into()),
                    raw_key: None,
                    payload: "p".into(),
                },
            ),
            (
                r#"{"op":"lookup","raw_key":"00"}"#,
                Request::Lookup {
                    key: None,
                    raw_key: Some("00".into()),
                },
            ),
            (
                r#"{"op":"broadcast","payload":"p"}"#,
                Request::Broadcast {
                    payload: "p".into(),
                },
            ),
            (
                r#"{"op":"group_send","group":"g","payload":"p"}"#,
                Request::GroupSend {
                    group: "g".into(),
                    key: None,
                    payload: "p".into(),
                },
            ),
            (
                r#"{"op":"put","key":"k","value":"v","acks":3,"ttl_secs":60,"if_version":0}"#,
                Request::Put {
                    key: "k".into(),
                    value: "v".into(),
                    acks: Some(3),
                    ttl_secs: Some(60),
                    if_version: Some(0),
                    republish: false,
                },
            ),
            (
                r#"{"op":"put","key":"k","value":"v"}"#,
                Request::Put {
                    key: "k".into(),
                    value: "v".into(),
                    acks: None,
                    ttl_secs: None,
                    if_version: None,
                    republish: false,
                },
            ),
            (
                r#"{"op":"get","key":"k","quorum":1}"#,
                Request::Get {
                    key: "k".into(),
                    quorum: Some(1),
                },
            ),
            (
                r#"{"op":"del","key":"k","acks":1,"if_version":4}"#,
                Request::Del {
                    key: "k".into(),
                    acks: Some(1),
                    if_version: Some(4),
                },
            ),
            (
                r#"{"op":"watch","key":"k"}"#,
                Request::Watch { key: "k".into() },
            ),
            (r#"{"op":"metrics"}"#, Request::Metrics {}),
            (
                r#"{"op":"watch_node","node":"abcd"}"#,
                Request::WatchNode {
                    node: "abcd".into(),
                },
            ),
            (
                r#"{"op":"lookup_many","keys":["a"]}"#,
                Request::LookupMany {
                    keys: vec!["a".into()],
                    raw_keys: vec![],
                },
            ),
        ];
        for (text, req) in cases {
            let parsed: Request = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, req, "{text}");
            let again: Request =
                serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
            assert_eq!(again, req);
        }
        for bad in [
            r#"{"op":"explode"}"#,
            r#"{"op":"send","to":"ab"}"#,
            r#"{"op":"status","extra":1}"#,
            r#"{"op":"get","key":"k","quorum":256}"#,
            r#"{"op":"put","key":"k","value":"v","if_version":-1}"#,
            r#"{"op":"watch","key":"k","quorum":1}"#,
            r#"[1,2]"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_status_round_trips_through_a_response_line() {
        let status = sample_status();
        let line = serde_json::to_string(&Response::ok(&status)).unwrap();
        // Typed values travel as plain names where one fits.
        for part in [
            r#""reachability":"port-mapped""#,
            r#""state":"rejoining""#,
            r#""strategy":"tango-plus""#,
            r#""dir":"+""#,
            r#""dir":"-""#,
            r#""port_mapping":{"mapped":{"external":"203.0.113.7:4433","#,
        ] {
            assert!(line.contains(part), "{part} not in {line}");
        }
        let back: Response = serde_json::from_str(&line).unwrap();
        assert!(back.ok);
        let again: p2ps::Status = serde_json::from_value(back.result.unwrap()).unwrap();
        assert_eq!(again, status);
        // Every port mapping state and reachability class survives the trip too.
        for port_mapping in [
            p2ps::PortMapping::Off,
            p2ps::PortMapping::Searching,
            p2ps::PortMapping::Useless {
                gateway: "192.168.1.1:5000".parse().unwrap(),
                external_ip: None,
                reason: "double NAT".into(),
            },
        ] {
            let s = p2ps::Status {
                port_mapping,
                reachability: p2ps::Reachability::Symmetric,
                ..sample_status()
            };
            let text = serde_json::to_string(&Response::ok(&s)).unwrap();
            let back: Response = serde_json::from_str(&text).unwrap();
            let again: p2ps::Status = serde_json::from_value(back.result.unwrap()).unwrap();
            assert_eq!(again, s);
        }
    }

    #[test]
    fn keys_hash_or_parse() {
        assert_eq!(ring_key(Some("a"), None), Ok(p2ps::key_of("a")));
        assert_eq!(
            ring_key(None, Some("0000000000000000000000000000002a")),
            Ok(RingId(42))
        );
        assert_eq!(
            parse_raw_key("ffffffffffffffffffffffffffffffff"),
            Ok(RingId(u128::MAX))
        );
        // Short positions are left-padded with zeros.
        assert_eq!(parse_raw_key("2a"), Ok(RingId(42)));
        assert_eq!(parse_raw_key("0"), Ok(RingId(0)));
        assert_eq!(parse_raw_key(" 8 "), Ok(RingId(8)));
        for bad in [
            "",
            "0x2a",
            "+2",
            "-1",
            "fffffffffffffffffffffffffffffffff",
            "12 34",
        ] {
            let e = parse_raw_key(bad).unwrap_err();
            assert!(e.contains("1 to 32 hex digits"), "{bad:?}: {e}");
        }
        assert!(parse_raw_key("+0000000000000000000000000000002").is_err());
        assert!(parse_raw_key("g000000000000000000000000000002a").is_err());
        assert!(ring_key(None, None).is_err());
        assert!(ring_key(Some("a"), Some("0000000000000000000000000000002a")).is_err());
    }
}
