//! The node's side of the control channel: the socket file's life cycle and the request loop.
//! The protocol is described in `crate::control::protocol`; requests are carried out by
//! `super::requests`, shared with the HTTP JSON API.

use super::requests::Requests;
use crate::control::client::request;
use crate::control::protocol::{Request, Response, MAX_REQUEST_BYTES, REQUEST_READ_TIMEOUT};
use crate::control::socket::{current_uid, prepare_socket_dir};
use anyhow::{bail, Context, Result};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

/// Requests served at once; more wait in the socket's backlog. (`watch` streams are counted
/// apart, up to `MAX_WATCH_STREAMS`.)
const MAX_CONNECTIONS: usize = 64;
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

/// Serves control requests until the task is aborted.
pub(super) async fn serve(listener: UnixListener, requests: Requests) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let requests = requests.clone();
        tokio::spawn(async move {
            handle(stream, &requests, permit).await;
        });
    }
}

/// Reads one request line, carries it out, writes one answer line (or, for `watch`, a stream
/// of them); `permit` is the connection's place among the requests served at once, given back
/// when a `watch` starts streaming (streams have places of their own).
async fn handle(stream: UnixStream, requests: &Requests, permit: OwnedSemaphorePermit) {
    let (node, watches) = (&requests.node, &requests.watches);
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
                    let id = requests.addressee(&id).await;
                    super::node_watch_stream::serve(read, write, node, id, watches).await;
                    return;
                }
                Ok(req) => {
                    debug!(?req, "control request");
                    let (resp, done) = requests.execute(req).await;
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
