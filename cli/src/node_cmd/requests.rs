//! Carrying out control-protocol requests (`crate::control::protocol`), for both of the
//! node's front ends: the control socket (`control_server`) and the HTTP JSON API
//! (`http::api`). Each front end reads and checks a request its own way, then hands it here,
//! so that a command means the same on both and its dispatch is written once.

use crate::control::protocol::{
    parse_raw_key, ring_key, LookupAnswer, Request, Response, MAX_BATCH, MAX_WATCH_STREAMS,
};
use crate::node_ids::{known_ids, parse_id_arg, resolve_prefix, IdArg, RecentSenders};
use p2ps::dict::PutOptions;
use p2ps::{Node, NodeId, RingId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tracing::warn;

/// Lookups of one `lookup_many` request in flight at once.
const BATCH_WINDOW: usize = 128;

/// A `leave` request handed to the node's main loop: it answers on `left` once the node has
/// left, and waits (briefly) on `written` for the answer to reach the client.
pub(super) struct LeaveRequest {
    pub(super) left: oneshot::Sender<()>,
    pub(super) written: oneshot::Receiver<()>,
}

/// What requests are carried out with; cheap to clone, one per node, shared by the front ends.
#[derive(Clone)]
pub(super) struct Requests {
    /// The node.
    pub(super) node: Node,
    /// Where `leave` goes.
    stop: mpsc::Sender<LeaveRequest>,
    /// Who sent the node messages lately (for id prefixes).
    recent: Arc<RecentSenders>,
    /// Room for watch streams (`watch`, `watch_node`), shared by both front ends.
    pub(super) watches: Arc<Semaphore>,
}

impl Requests {
    /// The requests of `node`; `leave` is handed to `stop`, id prefixes resolved with `recent`.
    pub(super) fn new(
        node: Node,
        stop: mpsc::Sender<LeaveRequest>,
        recent: Arc<RecentSenders>,
    ) -> Requests {
        Requests {
            node,
            stop,
            recent,
            watches: Arc::new(Semaphore::new(MAX_WATCH_STREAMS)),
        }
    }

    /// The node a request names by `to`: a whole id, or a prefix of one it knows.
    pub(super) async fn addressee(&self, to: &str) -> Result<NodeId, String> {
        addressee(to, &self.node, &self.recent).await
    }

    /// Carries out one request (not `watch` or `watch_node`, which are streams: each front end
    /// serves them its own way); for `leave`, also the sender that tells the node's main loop
    /// the answer has been written.
    pub(super) async fn execute(&self, req: Request) -> (Response, Option<oneshot::Sender<()>>) {
        let (node, stop, recent) = (&self.node, &self.stop, &*self.recent);
        let resp = match req {
            Request::Status {} => match node.status().await {
                Ok(s) => Response::ok(s),
                Err(e) => Response::err(e.to_string()),
            },
            Request::Metrics {} => match node.metrics_text().await {
                Ok(text) => Response::ok(text),
                Err(e) => Response::err(e.to_string()),
            },
            Request::Census { rows } => match node.census(rows.unwrap_or(0)).await {
                Ok(r) => Response::ok(r),
                Err(e) => Response::err(format!("census: {e}")),
            },
            Request::Send { to, payload } => match addressee(&to, node, recent).await {
                Err(e) => Response::err(e),
                Ok(id) => {
                    let bytes = payload.len();
                    match node.send(id, payload.into_bytes()).await {
                        Ok(()) => {
                            Response::ok(serde_json::json!({"to": id.to_string(), "bytes": bytes}))
                        }
                        Err(e) => Response::err(e.to_string()),
                    }
                }
            },
            Request::Route {
                key,
                raw_key,
                payload,
            } => match ring_key(key.as_deref(), raw_key.as_deref()) {
                Err(e) => Response::err(e),
                Ok(k) => {
                    let bytes = payload.len();
                    match node.route(k, payload.into_bytes()).await {
                        Ok(()) => {
                            Response::ok(serde_json::json!({"key": k.to_string(), "bytes": bytes}))
                        }
                        Err(e) => Response::err(e.to_string()),
                    }
                }
            },
            Request::Lookup { key, raw_key } => {
                match ring_key(key.as_deref(), raw_key.as_deref()) {
                    Err(e) => Response::err(e),
                    Ok(k) => {
                        let a = lookup(node, k).await;
                        match a.error {
                            Some(e) => Response::err(e),
                            None => Response::ok(a),
                        }
                    }
                }
            }
            Request::LookupMany { keys, raw_keys } => {
                if keys.len() + raw_keys.len() > MAX_BATCH {
                    Response::err(format!("at most {MAX_BATCH} keys per lookup_many request"))
                } else {
                    let mut ring = Vec::with_capacity(keys.len() + raw_keys.len());
                    let mut bad = None;
                    for k in &keys {
                        ring.push(p2ps::key_of(k.as_bytes()));
                    }
                    for r in &raw_keys {
                        match parse_raw_key(r) {
                            Ok(k) => ring.push(k),
                            Err(e) => {
                                bad = Some(e);
                                break;
                            }
                        }
                    }
                    match bad {
                        Some(e) => Response::err(e),
                        None => Response::ok(lookup_many(node, ring).await),
                    }
                }
            }
            Request::Broadcast { payload } => {
                cast_answer(node.broadcast(payload.into_bytes()).await)
            }
            Request::Range { lo, hi, payload } => match (parse_raw_key(&lo), parse_raw_key(&hi)) {
                (Ok(lo), Ok(hi)) => {
                    cast_answer(node.multicast_range(lo, hi, payload.into_bytes()).await)
                }
                (Err(e), _) | (_, Err(e)) => Response::err(e),
            },
            Request::GroupJoin { group, key } => {
                let r = match group_secret(key) {
                    Err(e) => Err(e),
                    Ok(None) => node.join_group(&group).await.map_err(|e| e.to_string()),
                    Ok(Some(s)) => node
                        .join_closed_group(&group, s)
                        .await
                        .map_err(|e| e.to_string()),
                };
                match r {
                    Ok(()) => Response::ok(serde_json::json!({"group": group, "member": true})),
                    Err(e) => Response::err(e),
                }
            }
            Request::GroupLeave { group, key } => {
                let r = match group_secret(key) {
                    Err(e) => Err(e),
                    Ok(None) => node.leave_group(&group).await.map_err(|e| e.to_string()),
                    Ok(Some(s)) => node
                        .leave_closed_group(&group, s)
                        .await
                        .map_err(|e| e.to_string()),
                };
                match r {
                    Ok(()) => Response::ok(serde_json::json!({"group": group, "member": false})),
                    Err(e) => Response::err(e),
                }
            }
            Request::Put {
                key,
                value,
                acks,
                ttl_secs,
                if_version,
                republish,
            } => {
                let d = node.dict();
                let opts = PutOptions {
                    ttl: ttl_secs.map(Duration::from_secs),
                    w: acks,
                    expect: if_version,
                    republish,
                };
                match d
                    .put_key(d.open_key(key.clone()), value.into_bytes(), opts)
                    .await
                {
                    Ok((version, replicas)) => Response::ok(
                        serde_json::json!({"key": key, "version": version, "replicas": replicas}),
                    ),
                    Err(e) => Response::err(dict_error(&key, if_version, &e)),
                }
            }
            Request::Get { key, quorum } => {
                let d = node.dict();
                match d.get_record(d.open_key(key.clone()), quorum).await {
                    Ok(found) => {
                        let (value, version) =
                            match found.and_then(|r| r.value.map(|v| (v, r.version))) {
                                Some((v, ver)) => {
                                    (Some(String::from_utf8_lossy(&v).into_owned()), Some(ver))
                                }
                                None => (None, None),
                            };
                        Response::ok(
                            serde_json::json!({"key": key, "value": value, "version": version}),
                        )
                    }
                    Err(e) => Response::err(dict_error(&key, None, &e)),
                }
            }
            Request::Del {
                key,
                acks,
                if_version,
            } => {
                let d = node.dict();
                let opts = PutOptions {
                    w: acks,
                    expect: if_version,
                    ..PutOptions::default()
                };
                match d.delete_key_with(d.open_key(key.clone()), opts).await {
                    Ok((version, replicas)) => Response::ok(
                        serde_json::json!({"key": key, "version": version, "replicas": replicas}),
                    ),
                    Err(e) => Response::err(dict_error(&key, if_version, &e)),
                }
            }
            // Served as a stream by `handle`, never here.
            Request::Watch { .. } => Response::err("`watch` is a streaming request"),
            Request::WatchNode { .. } => Response::err("`watch_node` is a streaming request"),
            Request::DictReplicas { key } => match node.dict().replicas(key.clone()).await {
                Ok(h) => Response::ok(serde_json::json!({
                    "key": key,
                    "version": h.version,
                    "current": h.current,
                    "answered": h.answered,
                    "replicas": h.replicas,
                })),
                Err(e) => Response::err(e.to_string()),
            },
            Request::GroupSend {
                group,
                key,
                payload,
            } => {
                let bytes = payload.len();
                let r = match group_secret(key) {
                    Err(e) => Err(e),
                    Ok(None) => node
                        .send_group(&group, payload.into_bytes())
                        .await
                        .map_err(|e| e.to_string()),
                    Ok(Some(s)) => node
                        .send_closed_group(&group, s, payload.into_bytes())
                        .await
                        .map_err(|e| e.to_string()),
                };
                match r {
                    Ok(c) => Response::ok(serde_json::json!({
                        "group": group,
                        "bytes": bytes,
                        "seq": c.seq,
                        "members": c.members,
                        "complete": c.complete,
                    })),
                    Err(e) => Response::err(e),
                }
            }
            Request::Leave {} => {
                let (left_tx, left_rx) = oneshot::channel();
                let (written_tx, written_rx) = oneshot::channel();
                let req = LeaveRequest {
                    left: left_tx,
                    written: written_rx,
                };
                if stop.send(req).await.is_err() {
                    return (Response::err("the node is already stopping"), None);
                }
                return match tokio::time::timeout(Duration::from_secs(30), left_rx).await {
                    Ok(Ok(())) => (
                        Response::ok(serde_json::json!({"left": true})),
                        Some(written_tx),
                    ),
                    _ => (Response::err("the node did not confirm that it left"), None),
                };
            }
        };
        (resp, None)
    }
}

/// A dictionary failure as the client is told: a failed compare-and-swap names the version the
/// key is at, a quota the setting that sets it.
fn dict_error(key: &str, expected: Option<u64>, e: &p2ps::NodeError) -> String {
    use p2ps::dict::{DictError, QuotaExceeded};
    match (e, expected) {
        (p2ps::NodeError::Dict(DictError::Conflict { current }), Some(expected)) => format!(
            "compare-and-swap refused: {key} is at version {current}, not {expected} (read it \
             again and retry with --if-version {current})"
        ),
        (p2ps::NodeError::Dict(DictError::Quota(q)), _) => {
            let setting = match q {
                QuotaExceeded::NodeKeys(_) => "--dict-max-keys",
                QuotaExceeded::NodeBytes(_) => "--dict-max-bytes",
                QuotaExceeded::WriterKeys(_) => "--dict-max-keys-per-writer",
                QuotaExceeded::WriterBytes(_) => "--dict-max-bytes-per-writer",
                _ => return e.to_string(),
            };
            format!("{e} (the replica's {setting} quota)")
        }
        _ => e.to_string(),
    }
}

/// The node a `send` names: a whole id as it is, a prefix looked up among the ids the node
/// knows (see [`crate::node_ids`]).
async fn addressee(to: &str, node: &Node, recent: &RecentSenders) -> Result<NodeId, String> {
    match parse_id_arg(to)? {
        IdArg::Full(id) => Ok(id),
        IdArg::Prefix(prefix) => {
            let status = node.status().await.map_err(|e| e.to_string())?;
            let mut known = known_ids(&status);
            known.extend(recent.ids());
            resolve_prefix(&prefix, known)
        }
    }
}

/// The answer to `broadcast` and `range`: the cast's sequence number, how many nodes it
/// reached, and whether that count is complete.
/// The closed group's secret a request carries, if any (its hex checked).
fn group_secret(key: Option<String>) -> Result<Option<p2ps_overlay::groups::GroupSecret>, String> {
    key.map(|k| p2ps::group_key::parse(&k).map_err(|e| e.to_string()))
        .transpose()
}

fn cast_answer(r: Result<p2ps::CastReport, p2ps::NodeError>) -> Response {
    match r {
        Ok(c) => Response::ok(serde_json::json!({
            "seq": c.seq,
            "delivered": c.delivered,
            "complete": c.complete,
        })),
        Err(e) => Response::err(e.to_string()),
    }
}

/// Looks up one key; a failure is part of the answer (`lookup_many` reports keys one by one).
async fn lookup(node: &Node, key: RingId) -> LookupAnswer {
    match node.lookup(key).await {
        Ok(r) => LookupAnswer {
            key: key.to_string(),
            node: Some(r.node.to_string()),
            hops: Some(r.hops),
            error: None,
        },
        Err(e) => LookupAnswer {
            key: key.to_string(),
            node: None,
            hops: None,
            error: Some(e.to_string()),
        },
    }
}

/// Looks up every key, [`BATCH_WINDOW`] at a time; answers in request order.
async fn lookup_many(node: &Node, keys: Vec<RingId>) -> Vec<LookupAnswer> {
    let mut answers: Vec<Option<LookupAnswer>> = vec![None; keys.len()];
    let mut set = JoinSet::new();
    let mut next = 0;
    loop {
        while set.len() < BATCH_WINDOW && next < keys.len() {
            let (n, k, i) = (node.clone(), keys[next], next);
            set.spawn(async move { (i, lookup(&n, k).await) });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok((i, a))) => answers[i] = Some(a),
            Some(Err(e)) => warn!(error = %e, "a lookup task failed"),
            None => break,
        }
    }
    answers
        .into_iter()
        .zip(keys)
        .map(|(a, k)| {
            a.unwrap_or_else(|| LookupAnswer {
                key: k.to_string(),
                node: None,
                hops: None,
                error: Some("lookup task failed".into()),
            })
        })
        .collect()
}
