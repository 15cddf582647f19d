//! The local control channel of a running `p2ps node`, and the client subcommands that use it:
//! `p2ps status`, `send`, `route`, `lookup` and `leave`.
//!
//! # Where the socket is
//!
//! A Unix domain socket at `--control PATH`, or by default `$XDG_RUNTIME_DIR/p2ps/<name>.sock`
//! (falling back to `/tmp/p2ps-<uid>/<name>.sock`), `<name>` being `--name` (default `node`).
//! Only the node's user can reach it: its directory is owned by that user and not writable by
//! anyone else (the default directory is created `0700`), the socket file is `0600`, and the
//! node also checks each caller's uid (`SO_PEERCRED`).
//!
//! # Protocol
//!
//! One connection carries one request and one response, each a single line of JSON.
//! Requests (at most [`MAX_REQUEST_BYTES`], about 6 MiB: room for the largest payload, 1 MiB,
//! however JSON escapes it; sent within [`REQUEST_READ_TIMEOUT`]):
//!
//! ```text
//! {"op":"status"}
//! {"op":"send","to":"<64 hex digits, or a unique prefix of 4 or more>","payload":"text"}
//! {"op":"route","key":"text","payload":"text"}          (or "raw_key":"<1 to 32 hex digits>")
//! {"op":"lookup","key":"text"}                          (or "raw_key")
//! {"op":"lookup_many","keys":["a","b"],"raw_keys":["<hex>"]}   (at most 4096 in all)
//! {"op":"leave"}
//! ```
//!
//! A text key is placed on the ring with `p2ps::key_of` (first 128 bits of its SHA-256); a raw
//! key is the ring position itself. Responses are `{"ok":true,"result":…}` or
//! `{"ok":false,"error":"…"}`. Results: `status` gives the node's [`p2ps::Status`]; `lookup` gives
//! `{"key","node","hops"}`; `lookup_many` a list of those in request order (`keys` first, then
//! `raw_keys`), an entry that failed holding `"error"` instead of `node` and `hops`; `send` and
//! `route` give what was sent; `leave` answers once the node has left.

use anyhow::{anyhow, bail, Context, Result};
use p2ps::{NodeId, RingId, Status};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest request line the node reads: room for the largest message
/// ([`crate::payload::MAX_PAYLOAD_BYTES`]) even if JSON escapes every byte of it as `\u00XX`
/// (6 bytes), plus 64 KiB for the rest of the request.
pub(crate) const MAX_REQUEST_BYTES: usize = 6 * crate::payload::MAX_PAYLOAD_BYTES + 64 * 1024;
/// How long the node waits for a request line once a client has connected.
pub(crate) const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most keys in one `lookup_many` request.
pub(crate) const MAX_BATCH: usize = 4096;
/// Largest response line a client reads.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// How long a client waits for an answer (a lookup retries for up to about 9 s by default).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A request to a running node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// The node's [`Status`]. (Empty struct variants, unlike unit ones, refuse unknown fields.)
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
    },
    /// Leave a group.
    GroupLeave {
        /// Group name.
        group: String,
    },
    /// Send `payload` to the members of a group.
    GroupSend {
        /// Group name.
        group: String,
        /// Text to send.
        payload: String,
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

// ---------------------------------------------------------------------------------------------
// Paths

/// The current user's uid.
pub(crate) fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Checks a node name: it becomes a file name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!(
            "invalid node name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', \
             not starting with '.'"
        );
    }
    Ok(())
}

/// The directory that holds control sockets by default: `$XDG_RUNTIME_DIR/p2ps`, or
/// `/tmp/p2ps-<uid>` without it.
pub(crate) fn default_control_dir(runtime_dir: Option<&Path>, uid: u32) -> PathBuf {
    match runtime_dir {
        Some(d) if d.is_absolute() => d.join("p2ps"),
        _ => PathBuf::from(format!("/tmp/p2ps-{uid}")),
    }
}

/// Where the control socket is: `control` if given, else the default for `name`. The flag says
/// whether it is the default (whose directory may be created).
pub(crate) fn control_path(control: Option<&Path>, name: &str) -> Result<(PathBuf, bool)> {
    match control {
        Some(p) => Ok((p.to_path_buf(), false)),
        None => {
            check_name(name)?;
            let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
            let dir = default_control_dir(runtime.as_deref(), current_uid());
            Ok((dir.join(format!("{name}.sock")), true))
        }
    }
}

/// Makes sure the directory of a control socket is private to this user: creates it `0700` if
/// it is the default one and missing, and checks that it is owned by this user and writable by
/// nobody else (for the default directory: accessible by nobody else).
pub(crate) fn prepare_socket_dir(dir: &Path, is_default: bool) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if !dir.exists() {
        if !is_default {
            bail!(
                "directory {} for the control socket does not exist",
                dir.display()
            );
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the control socket directory {}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("checking the control socket directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} (for the control socket) is not a directory",
            dir.display()
        );
    }
    let uid = current_uid();
    if meta.uid() != uid {
        bail!(
            "the control socket directory {} belongs to uid {}, not to you (uid {uid}); \
             choose another one with --control",
            dir.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o777;
    let forbidden = if is_default { 0o077 } else { 0o022 };
    if mode & forbidden != 0 {
        let fix = if is_default {
            format!("chmod 700 {}", dir.display())
        } else {
            "use a directory only you can write to, or leave out --control for the default one"
                .to_string()
        };
        bail!(
            "the control socket directory {} has mode {mode:o}: other users could reach or \
             replace the socket ({fix})",
            dir.display()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client

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
    let mut reader = BufReader::new(std::io::Read::take(&stream, MAX_RESPONSE_BYTES));
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
    /// The node's control socket [default: $XDG_RUNTIME_DIR/p2ps/<NAME>.sock, or
    /// /tmp/p2ps-<uid>/<NAME>.sock].
    #[arg(long, value_name = "PATH", env = "P2PS_CONTROL")]
    control: Option<PathBuf>,
    /// The node's name on this machine (picks the default control socket).
    #[arg(long, value_name = "NAME", env = "P2PS_NAME", default_value = "node")]
    name: String,
}

impl ControlOpts {
    pub(crate) fn call(&self, req: &Request) -> Result<serde_json::Value> {
        let (path, _) = control_path(self.control.as_deref(), &self.name)?;
        request(&path, req, CLIENT_TIMEOUT)
    }
}

/// A key given as text (hashed) or as a raw ring position.
#[derive(Debug, Clone)]
struct KeyChoice {
    key: Option<String>,
    raw_key: Option<String>,
}

pub(crate) fn print_json(v: &impl Serialize) -> Result<()> {
    let s = serde_json::to_string(v).context("encoding JSON")?;
    write_stdout(&s)
}

fn write_stdout(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").context("writing to stdout")
}

// ---------------------------------------------------------------------------------------------
// p2ps status

/// Arguments of `p2ps status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps status\n  p2ps status --name second --json | jq .successors"
)]
pub struct StatusArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// Print the node's status as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps status`: shows a running node's state.
pub fn status(args: StatusArgs) -> Result<()> {
    let v = args.control.call(&Request::Status {})?;
    if args.json {
        return print_json(&v);
    }
    let s: Status = serde_json::from_value(v).context("the node's status is malformed")?;
    write_stdout(&render_status(&s))
}

fn short_list(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter()
        .map(|i| i.short().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The human view of a status.
pub(crate) fn render_status(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let addrs = s
        .addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(o, "id:            {}", s.id);
    let _ = writeln!(
        o,
        "state:         {} (strategy {}, up {:.1} s)",
        s.state, s.strategy, s.uptime_secs
    );
    let _ = writeln!(o, "addresses:     {addrs}");
    let external = s
        .external_addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(
        o,
        "reachability:  {} (seen at: {}; UPnP: {}; relay: {})",
        s.reachability,
        if external.is_empty() { "-" } else { &external },
        s.port_mapping,
        short_list(&s.relay)
    );
    let _ = writeln!(o, "ring position: {}", s.ring_position);
    let _ = writeln!(o, "successors:    {}", short_list(&s.successors));
    let _ = writeln!(o, "predecessors:  {}", short_list(&s.predecessors));
    let fingers = if s.fingers.is_empty() {
        "-".to_string()
    } else {
        s.fingers
            .iter()
            .map(|f| format!("{}{}:{}", f.dir, f.level, f.node.short()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(o, "fingers:       {fingers}");
    let _ = writeln!(o, "neighbours:    {} distinct", s.distinct_neighbours);
    let _ = writeln!(o, "connections:   {}", s.connections.len());
    for c in &s.connections {
        let path = if c.relayed_by.is_empty() {
            String::new()
        } else {
            format!("  relayed by {}", short_list(&c.relayed_by))
        };
        let _ = writeln!(
            o,
            "  {}  {:<22} {:<3}  rtt {:.2} ms{path}",
            c.node.short(),
            c.addr.to_string(),
            if c.outbound { "out" } else { "in" },
            c.rtt_ms
        );
    }
    let _ = writeln!(o, "groups:        {}", s.groups.len());
    for g in &s.groups {
        let role = match (g.member, g.root) {
            (true, true) => "member, root",
            (true, false) => "member",
            (false, true) => "forwarder, root",
            (false, false) => "forwarder",
        };
        let _ = writeln!(
            o,
            "  {:<20} {:<16} parent {}  children {}",
            g.name.as_deref().unwrap_or("(unnamed)"),
            role,
            short_list(&g.parent),
            short_list(&g.children)
        );
    }
    let c = &s.counters;
    let _ = writeln!(o, "counters:");
    let _ = writeln!(
        o,
        "  messages in/out  {} / {}   bytes in/out {} / {} (routing {}, tree {}, user {})   \
         UDP bytes in/out {} / {}",
        c.messages_in,
        c.messages_out,
        c.bytes_in,
        c.bytes_out,
        c.routing_bytes_out,
        c.tree_bytes_out,
        c.user_bytes_out,
        c.udp_bytes_in,
        c.udp_bytes_out
    );
    let _ = writeln!(
        o,
        "  routed           forwarded {}  delivered {}  dropped {}",
        c.forwarded, c.delivered, c.dropped
    );
    let _ = writeln!(
        o,
        "  lookups          ok {}  failed {}",
        c.lookups_ok, c.lookups_failed
    );
    let _ = writeln!(
        o,
        "  trust            forged {}  stale {}  unverified contacts {}  bad answers {}  \
         rejoins {}",
        c.forged, c.stale, c.unverified, c.bad_answers, c.rejoins
    );
    let _ = writeln!(
        o,
        "  NAT              traversals {} (failed {})  sent via a relay {}  passed on for \
         peers {}  forwards refused {}",
        c.traversals,
        c.traversals_failed,
        c.forwarded_via_relay,
        c.forwarded_for_peers,
        c.forwards_refused
    );
    let _ = write!(
        o,
        "  failures         peers failed {}  timed out {}  queue full {} (tree {})  send failed {}  \
         inbox dropped {}  frame errors {}  handshakes failed {}",
        c.peers_failed,
        c.peers_timed_out,
        c.send_queue_full,
        c.tree_queue_full,
        c.send_failed,
        c.inbox_dropped,
        c.frame_errors,
        c.handshakes_failed
    );
    o
}

// ---------------------------------------------------------------------------------------------
// p2ps send

/// Arguments of `p2ps send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  p2ps send d67394b546 'hello there'\n  \
                        p2ps send d67394b546 @notes.txt\n  date | p2ps send d673 -")]
pub struct SendArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The addressee's node id: all 64 hex digits, or a prefix of at least 4 (such as the short
    /// id `p2ps status` and incoming messages show) that names one node the running node
    /// knows (its routing table, connections, group trees or recent senders).
    #[arg(value_name = "NODE_ID", value_parser = crate::node_ids::parse_id_arg)]
    to: crate::node_ids::IdArg,
    #[arg(value_name = "TEXT", help = crate::payload::TEXT_HELP)]
    text: String,
}

/// `p2ps send`: sends a message from the running node to a node id.
pub fn send(args: SendArgs) -> Result<()> {
    let req = Request::Send {
        to: args.to.to_string(),
        payload: crate::payload::message(&args.text)?,
    };
    let v = args.control.call(&req)?;
    let to = v
        .get("to")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<NodeId>().ok())
        .with_context(|| format!("the node's answer is malformed: {v}"))?;
    eprintln!("sent to {} (best effort)", to.short());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// p2ps route

/// Arguments of `p2ps route`.
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "p2ps route [OPTIONS] KEY TEXT\n       p2ps route [OPTIONS] --raw-key HEX TEXT",
    after_help = "Examples:\n  p2ps route colour:blue 'who holds colour:blue gets this'\n  \
                  p2ps route --raw-key 80000000000000000000000000000000 'to the middle of the ring'"
)]
pub struct RouteArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key to route to (hashed onto the ring), then the message; with --raw-key, only the
    /// message. The message is sent as UTF-8 (at most 1 MiB): the text itself, `-` to read it
    /// from standard input, or `@FILE` to read a file (`@@…` for a text that starts with `@`).
    #[arg(value_name = "KEY TEXT", num_args = 1..=2, required = true)]
    args: Vec<String>,
    /// A ring position (1 to 32 hex digits, left-padded with zeros) instead of a key to hash.
    #[arg(long, value_name = "HEX")]
    raw_key: Option<String>,
}

/// `p2ps route`: sends a message from the running node to whoever holds a key.
pub fn route(args: RouteArgs) -> Result<()> {
    let (key, payload) = match (args.raw_key, args.args.as_slice()) {
        (None, [k, t]) => (
            KeyChoice {
                key: Some(k.clone()),
                raw_key: None,
            },
            crate::payload::message(t)?,
        ),
        (Some(r), [t]) => {
            parse_raw_key(&r).map_err(|e| anyhow!(e))?;
            (
                KeyChoice {
                    key: None,
                    raw_key: Some(r),
                },
                crate::payload::message(t)?,
            )
        }
        (None, _) => bail!("give a KEY and a TEXT (or --raw-key HEX and a TEXT)"),
        (Some(_), _) => bail!("with --raw-key, give only the TEXT"),
    };
    let req = Request::Route {
        key: key.key,
        raw_key: key.raw_key,
        payload,
    };
    let v = args.control.call(&req)?;
    let pos = v.get("key").and_then(|k| k.as_str()).unwrap_or("?");
    eprintln!("routed towards ring position {pos} (best effort)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// p2ps lookup

/// Arguments of `p2ps lookup`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps lookup colour:blue\n  p2ps lookup --raw-key 1 --json",
    // KEY or --raw-key, one of them required: the usage line shows `<KEY|--raw-key <HEX>>`.
    group(clap::ArgGroup::new("target").required(true).args(["key", "raw_key"]))
)]
pub struct LookupArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key (hashed onto the ring with SHA-256); required unless --raw-key is given.
    #[arg(value_name = "KEY")]
    key: Option<String>,
    /// A ring position (1 to 32 hex digits, left-padded with zeros) instead of a key to hash.
    #[arg(long, value_name = "HEX", value_parser = |s: &str| parse_raw_key(s).map(|_| s.to_string()))]
    raw_key: Option<String>,
    /// Print `{"key","node","hops"}` as JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps lookup`: asks the running node who holds a key.
pub fn lookup(args: LookupArgs) -> Result<()> {
    let req = Request::Lookup {
        key: args.key,
        raw_key: args.raw_key,
    };
    let v = args.control.call(&req)?;
    if args.json {
        return print_json(&v);
    }
    let a: LookupAnswer = serde_json::from_value(v).context("the node's answer is malformed")?;
    match (a.node, a.hops) {
        (Some(node), Some(hops)) => write_stdout(&format!("{node} ({hops} hops)")),
        _ => bail!(a.error.unwrap_or_else(|| "the lookup failed".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// p2ps leave

/// Arguments of `p2ps leave`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  p2ps leave --name second")]
pub struct LeaveArgs {
    #[command(flatten)]
    control: ControlOpts,
}

/// `p2ps leave`: makes the running node leave gracefully and stop.
pub fn leave(args: LeaveArgs) -> Result<()> {
    args.control.call(&Request::Leave {})?;
    eprintln!("the node left its network and stopped");
    Ok(())
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
                    payload: "p".into(),
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
            r#"[1,2]"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
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

    #[test]
    fn default_paths() {
        assert_eq!(
            default_control_dir(Some(Path::new("/run/user/1000")), 1000),
            PathBuf::from("/run/user/1000/p2ps")
        );
        assert_eq!(default_control_dir(None, 7), PathBuf::from("/tmp/p2ps-7"));
        // A relative XDG_RUNTIME_DIR is ignored, as the spec says.
        assert_eq!(
            default_control_dir(Some(Path::new("rel")), 7),
            PathBuf::from("/tmp/p2ps-7")
        );
        assert!(check_name("node").is_ok());
        assert!(check_name("n-1_a.b").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn socket_dirs_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        // Explicit paths are not created; default ones are, 0700.
        assert!(prepare_socket_dir(&d, false).is_err());
        prepare_socket_dir(&d, true).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(prepare_socket_dir(&d, false).is_ok());
        let e = prepare_socket_dir(&d, true).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_socket_dir(&d, false).unwrap_err().to_string();
        assert!(e.contains("only you can write to"), "{e}");
    }

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
