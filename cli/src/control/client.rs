//! The client's side of the control channel: one request to a running node, bounded in time
//! and size, and the flags that say which node.

use super::protocol::{Request, Response};
use super::socket::control_path;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest response line a client reads.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// How long a client waits for an answer (a lookup retries for up to about 9 s by default).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends one request to the node at `path` and returns its result.
pub(crate) fn request(path: &Path, req: &Request, timeout: Duration) -> Result<serde_json::Value> {
    let stream = connect(path)?;
    stream
        .set_read_timeout(Some(timeout))
        .context("setting the socket timeout")?;
    stream
        .set_write_timeout(Some(timeout))
        .context("setting the socket timeout")?;
    let mut line = serde_json::to_vec(req).context("encoding the request")?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .with_context(|| format!("sending the request to {}", path.display()))?;
    let mut reader = BufReader::new(Read::take(&stream, MAX_RESPONSE_BYTES));
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .with_context(|| format!("reading the node's answer from {}", path.display()))?;
    if answer.trim().is_empty() {
        bail!(
            "the node at {} closed the connection without answering",
            path.display()
        );
    }
    let resp: Response = serde_json::from_str(answer.trim())
        .with_context(|| format!("the node at {} gave a malformed answer", path.display()))?;
    if resp.ok {
        Ok(resp.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(anyhow!(resp
            .error
            .unwrap_or_else(|| "the node refused the request".into())))
    }
}

/// Sends the streaming request `req` (`watch`) to the node at `path` and hands every result
/// line to `each` until it returns `false` (then the connection is closed, which ends the
/// stream at the node). Waits as long as the node keeps the stream open; fails when the node
/// answers an error line or closes the connection.
pub(crate) fn stream(
    path: &Path,
    req: &Request,
    mut each: impl FnMut(serde_json::Value) -> Result<bool>,
) -> Result<()> {
    let stream = connect(path)?;
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .context("setting the socket timeout")?;
    let mut line = serde_json::to_vec(req).context("encoding the request")?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .with_context(|| format!("sending the request to {}", path.display()))?;
    let mut reader = BufReader::new(&stream);
    loop {
        let mut answer = String::new();
        let n = (&mut reader)
            .take(MAX_RESPONSE_BYTES)
            .read_line(&mut answer)
            .with_context(|| format!("reading from the node at {}", path.display()))?;
        if n == 0 {
            bail!(
                "the node at {} closed the connection (did it stop?)",
                path.display()
            );
        }
        let resp: Response = serde_json::from_str(answer.trim())
            .with_context(|| format!("the node at {} sent a malformed line", path.display()))?;
        if !resp.ok {
            return Err(anyhow!(resp
                .error
                .unwrap_or_else(|| "the node ended the stream".into())));
        }
        if !each(resp.result.unwrap_or(serde_json::Value::Null))? {
            return Ok(());
        }
    }
}

/// Connects to the node at `path`, saying plainly when none runs there or it is not ours.
fn connect(path: &Path) -> Result<UnixStream> {
    use std::io::ErrorKind;
    match UnixStream::connect(path) {
        Ok(s) => Ok(s),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            bail!(
                "no node running at {}; start one with `p2ps node --create` (or pass the \
                 node's --control PATH / --name NAME)",
                path.display()
            )
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => bail!(
            "cannot reach the node at {}: permission denied (a node of another user?)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("connecting to the node at {}", path.display())),
    }
}

/// Which node to talk to (same flags as `p2ps node`).
#[derive(Debug, Clone, clap::Args)]
pub struct ControlOpts {
    /// The node's control socket (default: `$XDG_RUNTIME_DIR/p2ps/<NAME>.sock`, or
    /// `/tmp/p2ps-<uid>/<NAME>.sock`).
    // The help text is written out: clap would show the backticks above.
    #[arg(
        long,
        value_name = "PATH",
        env = "P2PS_CONTROL",
        help = "The node's control socket [default: $XDG_RUNTIME_DIR/p2ps/<NAME>.sock, or \
                /tmp/p2ps-<uid>/<NAME>.sock]"
    )]
    control: Option<PathBuf>,
    /// The node's name on this machine (picks the default control socket).
    #[arg(long, value_name = "NAME", env = "P2PS_NAME", default_value = "node")]
    name: String,
}

impl ControlOpts {
    /// Sends `req` to the node these flags name and returns its result.
    pub(crate) fn call(&self, req: &Request) -> Result<serde_json::Value> {
        let (path, _) = control_path(self.control.as_deref(), &self.name)?;
        request(&path, req, CLIENT_TIMEOUT)
    }

    /// Sends the streaming request `req` to the node these flags name (see [`stream`]).
    pub(crate) fn stream(
        &self,
        req: &Request,
        each: impl FnMut(serde_json::Value) -> Result<bool>,
    ) -> Result<()> {
        let (path, _) = control_path(self.control.as_deref(), &self.name)?;
        stream(&path, req, each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_node_is_reported_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let e = request(
            &tmp.path().join("none.sock"),
            &Request::Status {},
            CLIENT_TIMEOUT,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no node running at"), "{e}");
        assert!(e.contains("p2ps node --create"), "{e}");
    }
}
