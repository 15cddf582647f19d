//! The node's side of the control channel: the socket file's life cycle and the request loop.
//! The protocol is described in `crate::control::protocol`.

use crate::control::client::request;
use crate::control::protocol::{
    parse_raw_key, ring_key, LookupAnswer, Request, Response, MAX_BATCH, MAX_REQUEST_BYTES,
    MAX_WATCH_STREAMS, REQUEST_READ_TIMEOUT,
};
use crate::control::socket::{current_uid, prepare_socket_dir};
use crate::node_ids::{known_ids, parse_id_arg, resolve_prefix, IdArg, RecentSenders};
use anyhow::{bail, Context, Result};
use p2ps::dict::PutOptions;
use p2ps::{Node, NodeId, RingId};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Requests served at once; more wait in the socket's backlog. (`watch` streams are counted
/// apart, up to [`MAX_WATCH_STREAMS`].)
const MAX_CONNECTIONS: usize = 64;
/// Lookups of one `lookup_many` request in flight at once.
const BATCH_WINDOW: usize = 128;
/// How long writing an answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound control socket, before the async runtime takes it over.
pub(super) struct ControlSocket {
    listener: std::os::unix::net::UnixListener,
    file: SocketFile,
}

/// The socket file: removed when dropped, if it is still the one this node created.
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl ControlSocket {
    /// Binds the control socket at `path`: refuses if a live node holds it, removes a stale
    /// socket file, and makes the new one reachable by this user only. Call it before the
    /// async runtime starts (it changes the process's umask for a moment).
    pub(super) fn bind(path: &Path, is_default: bool) -> Result<ControlSocket> {
        let dir = path.parent().unwrap_or(Path::new("."));
        prepare_socket_dir(dir, is_default)?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => bail!(
                "{} exists and is not a socket; refusing to replace it with the control socket",
                path.display()
            ),
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    let who = request(path, &Request::Status {}, Duration::from_secs(2))
                        .ok()
                        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(String::from))
                        .map(|id| format!(" (id {id})"))
                        .unwrap_or_default();
                    bail!(
                        "another node{who} is already running with the control socket {}; stop \
                         it with `p2ps leave --control {}`, or give this one another --name or \
                         --control",
                        path.display(),
                        path.display()
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    info!(path = %path.display(), "removing a stale control socket");
                    std::fs::remove_file(path).with_context(|| {
                        format!("removing the stale control socket {}", path.display())
                    })?;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("checking the existing control socket {}", path.display())
                    })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("checking the control socket {}", path.display()))
            }
        }
        // Created 0600 from the start (no window where others could connect), and again
        // explicitly in case the file system ignores the umask.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = std::os::unix::net::UnixListener::bind(path);
        rustix::process::umask(old);
        let listener =
            bound.with_context(|| format!("creating the control socket {}", path.display()))?;
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("checking the control socket {}", path.display()))?;
        let file = SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting the control socket {}", path.display()))?;
        Ok(ControlSocket { listener, file })
    }

    /// The listener for the async runtime (call inside it) and the socket file's guard.
    pub(super) fn into_parts(self) -> Result<(UnixListener, SocketFile)> {
        self.listener
            .set_nonblocking(true)
            .context("configuring the control socket")?;
        let l = UnixListener::from_std(self.listener).context("registering the control socket")?;
        Ok((l, self.file))
    }
}

/// A `leave` request handed to the node's main loop: it answers on `left` once the node has
/// left, and waits (briefly) on `written` for the answer to reach the client.
pub(super) struct LeaveRequest {
    pub(super) left: oneshot::Sender<()>,
    pub(super) written: oneshot::Receiver<()>,
}

/// Serves control requests until the task is aborted; `recent` is who sent the node messages
/// lately (for id prefixes).
pub(super) async fn serve(
    listener: UnixListener,
    node: Node,
    stop: mpsc::Sender<LeaveRequest>,
    recent: Arc<RecentSenders>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let watches = Arc::new(Semaphore::new(MAX_WATCH_STREAMS));
    let uid = current_uid();
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == uid => {}
            Ok(c) => {
                warn!(
                    uid = c.uid(),
                    "control socket: refused a caller of another user"
                );
                continue;
            }
            Err(e) => {
                warn!(error = %e, "control socket: cannot tell who is calling; refused");
                continue;
            }
        }
        let (node, stop, recent) = (node.clone(), stop.clone(), recent.clone());
        let watches = watches.clone();
        tokio::spawn(async move {
            let server = Server {
                node: &node,
                stop: &stop,
                recent: &recent,
                watches: &watches,
            };
            handle(stream, server, permit).await;
        });
    }
}

/// What a connection's handler works with.
#[derive(Clone, Copy)]
struct Server<'a> {
    node: &'a Node,
    stop: &'a mpsc::Sender<LeaveRequest>,
    recent: &'a RecentSenders,
    /// Room for `watch` streams.
    watches: &'a Arc<Semaphore>,
}

/// Reads one request line, carries it out, writes one answer line (or, for `watch`, a stream
/// of them); `permit` is the connection's place among the requests served at once, given back
/// when a `watch` starts streaming (streams have places of their own).
async fn handle(stream: UnixStream, server: Server<'_>, permit: OwnedSemaphorePermit) {
    let Server {
        node,
        stop,
        recent,
        watches,
    } = server;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
    let mut line = Vec::new();
    let mut after_write = None;
    let response =
        match tokio::time::timeout(REQUEST_READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await
        {
            Err(_) => Response::err(format!(
                "no request line within {} s",
                REQUEST_READ_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Response::err(format!("reading the request: {e}")),
            Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => {
                Response::err(format!("request larger than {MAX_REQUEST_BYTES} bytes"))
            }
            Ok(Ok(_)) => match serde_json::from_slice::<Request>(line.trim_ascii()) {
                Err(e) => Response::err(format!("malformed request: {e}")),
                Ok(Request::Watch { key }) => {
                    drop(permit);
                    let read = reader.into_inner();
                    super::watch_stream::serve(read, write, node, key, watches).await;
                    return;
                }
                Ok(Request::WatchNode { node: id }) => {
                    drop(permit);
                    let read = reader.into_inner();
                    let id = addressee(&id, node, recent).await;
                    super::node_watch_stream::serve(read, write, node, id, watches).await;
                    return;
                }
                Ok(req) => {
                    debug!(?req, "control request");
                    let (resp, done) = execute(req, node, stop, recent).await;
                    after_write = done;
                    resp
                }
            },
        };
    let mut text = serde_json::to_vec(&response)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"cannot encode the answer"}"#.to_vec());
    text.push(b'\n');
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        write.write_all(&text).await?;
        write.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        debug!("control socket: the client did not take the answer");
    }
    if let Some(done) = after_write {
        let _ = done.send(());
    }
    drop(permit);
}

/// Carries out one request; for `leave`, also the sender that tells the node's main loop the
/// answer has been written.
async fn execute(
    req: Request,
    node: &Node,
    stop: &mpsc::Sender<LeaveRequest>,
    recent: &RecentSenders,
) -> (Response, Option<oneshot::Sender<()>>) {
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
        Request::Lookup { key, raw_key } => match ring_key(key.as_deref(), raw_key.as_deref()) {
            Err(e) => Response::err(e),
            Ok(k) => {
                let a = lookup(node, k).await;
                match a.error {
                    Some(e) => Response::err(e),
                    None => Response::ok(a),
                }
            }
        },
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
        Request::Broadcast { payload } => cast_answer(node.broadcast(payload.into_bytes()).await),
        Request::Range { lo, hi, payload } => match (parse_raw_key(&lo), parse_raw_key(&hi)) {
            (Ok(lo), Ok(hi)) => {
                cast_answer(node.multicast_range(lo, hi, payload.into_bytes()).await)
            }
            (Err(e), _) | (_, Err(e)) => Response::err(e),
        },
        Request::GroupJoin { group } => match node.join_group(&group).await {
            Ok(()) => Response::ok(serde_json::json!({"group": group, "member": true})),
            Err(e) => Response::err(e.to_string()),
        },
        Request::GroupLeave { group } => match node.leave_group(&group).await {
            Ok(()) => Response::ok(serde_json::json!({"group": group, "member": false})),
            Err(e) => Response::err(e.to_string()),
        },
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
                    let (value, version) = match found.and_then(|r| r.value.map(|v| (v, r.version)))
                    {
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
        Request::Del { key, acks } => {
            let d = node.dict();
            let opts = PutOptions {
                w: acks,
                ..PutOptions::default()
            };
            match d.delete_key_with(d.open_key(key.clone()), opts).await {
                Ok((version, replicas)) => Response::ok(
                    serde_json::json!({"key": key, "version": version, "replicas": replicas}),
                ),
                Err(e) => Response::err(dict_error(&key, None, &e)),
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
        Request::GroupSend { group, payload } => {
            let bytes = payload.len();
            match node.send_group(&group, payload.into_bytes()).await {
                Ok(()) => Response::ok(serde_json::json!({"group": group, "bytes": bytes})),
                Err(e) => Response::err(e.to_string()),
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
pub(super) async fn addressee(
    to: &str,
    node: &Node,
    recent: &RecentSenders,
) -> Result<NodeId, String> {
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
