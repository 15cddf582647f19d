//! `p2ps node`: runs one P2PS node in the foreground.
//!
//! Order of work: settings (flags over environment over `--config` file over defaults), then
//! the control socket (so that a second node on the same socket is refused before it touches
//! anything), then the key, the node, `create` or `join`, and finally a loop that prints
//! incoming messages and neighbour changes until Ctrl-C, SIGTERM or `p2ps leave`, each of which
//! leaves the network gracefully and exits 0.

use crate::control::socket::{check_name, control_path};
use anyhow::{bail, Context, Result};
use p2ps::{
    Delivery, FingerStrategy, Identity, LookupMode, Node, NodeConfig, NodeEvent, NodeId, Ticket,
    Via,
};
use serde::Deserialize;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

mod control_server;
mod limits;

const EXAMPLES: &str = "\
Examples:
  # Start a new network; the node prints its id and `ticket: p2ps1…`.
  p2ps node --create

  # On the same machine, a second node joins through that ticket.
  p2ps node --name second --join p2ps1…

  # Reachable from other machines, with a key kept elsewhere and the ticket saved for scripts.
  p2ps node --create --listen 0.0.0.0:4433 --advertise 192.0.2.7:4433 \\
      --key ~/p2ps/a.key --ticket-file /tmp/a.ticket

  # Every setting from a TOML file (flags and P2PS_* variables override it):
  #   key = \"/home/me/p2ps/a.key\"        listen = \"0.0.0.0:4433\"
  #   advertise = [\"192.0.2.7:4433\"]     name = \"a\"
  #   strategy = \"tango\"                 stabilize_interval_ms = 1000
  #   upnp = true   relay_serve = true     log = \"info\"
  #   and in a [limits] table: max_connections = 256, max_connections_per_ip = 8, …
  p2ps node --create --config node.toml

Then, from another terminal: `p2ps status`, `p2ps lookup KEY`, `p2ps send NODE_ID TEXT`,
`p2ps route KEY TEXT`, `p2ps leave` (with --name NAME or --control PATH for other nodes).

Output: `id: …` and `ticket: …` first, then one line per incoming message
(`message from <short id> (<hops> hops, to node|key): <text>`) and per neighbour change.
With --json every line is a JSON object with an \"event\" field. Logs go to stderr (--log).";

/// Arguments of `p2ps node`.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = EXAMPLES,
    group(clap::ArgGroup::new("mode").required(true).args(["create", "join"]))
)]
pub struct NodeArgs {
    /// Start a new network with this node as its first member.
    #[arg(long)]
    create: bool,
    /// Join the network of the node whose ticket this is (the `ticket: p2ps1…` line it printed).
    #[arg(long, value_name = "TICKET", value_parser = parse_ticket)]
    join: Option<Ticket>,
    /// The node's key file (created if missing; same key, same node id); default:
    /// `$XDG_DATA_HOME/p2ps/<NAME>.key` or `~/.local/share/p2ps/<NAME>.key`, that is `node.key`
    /// for the default name. An explicit path's directory must exist.
    // The help text is written out: clap would show the backticks above.
    #[arg(
        long,
        value_name = "FILE",
        env = "P2PS_KEY",
        help = "The node's key file (created if missing; same key, same node id) [default: \
                $XDG_DATA_HOME/p2ps/<NAME>.key or ~/.local/share/p2ps/<NAME>.key, that is \
                node.key for the default name]. An explicit path's directory must exist"
    )]
    key: Option<PathBuf>,
    /// UDP address to listen on, IP:PORT or HOST:PORT (a host name is resolved, its first
    /// IPv4 address preferred) [default: 127.0.0.1:0, loopback only on a free port; use e.g.
    /// 0.0.0.0:4433 to be reachable from other machines].
    #[arg(long, value_name = "ADDR", env = "P2PS_LISTEN", value_parser = resolve_listen)]
    listen: Option<SocketAddr>,
    /// Address to put in the ticket and tell peers (repeatable) [default: the bound address].
    #[arg(long, value_name = "ADDR")]
    advertise: Vec<SocketAddr>,
    /// Control socket for `p2ps status` and friends (default:
    /// `$XDG_RUNTIME_DIR/p2ps/<NAME>.sock`, or `/tmp/p2ps-<uid>/<NAME>.sock`).
    // The help text is written out: clap would show the backticks above.
    #[arg(
        long,
        value_name = "PATH",
        env = "P2PS_CONTROL",
        help = "Control socket for `p2ps status` and friends [default: \
                $XDG_RUNTIME_DIR/p2ps/<NAME>.sock, or /tmp/p2ps-<uid>/<NAME>.sock]"
    )]
    control: Option<PathBuf>,
    /// This node's name on this machine: picks the default key file and control socket
    /// [default: node].
    #[arg(long, value_name = "NAME", env = "P2PS_NAME")]
    name: Option<String>,
    /// Write the node's ticket to this file once it is part of a network.
    #[arg(long, value_name = "FILE")]
    ticket_file: Option<PathBuf>,
    /// A TOML file with any of these settings (key, listen, advertise, control, name,
    /// ticket_file, strategy, lookup_mode, upnp, relay_serve, log, and the overlay tunables
    /// with their flag names in snake_case; resource limits in a [limits] table, likewise).
    /// Relative paths in it are relative to the file. Flags and P2PS_* variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Finger strategy: tango, chord or tango+ [default: tango].
    #[arg(long, value_name = "NAME", value_parser = parse_strategy)]
    strategy: Option<FingerStrategy>,
    /// How lookups find the responsible node: `routed` (hop by hop through the overlay, the
    /// answer back along the route) or `steered` (this node asks the nodes nearest the key
    /// itself, taking only signed records and judging answers: sturdier against hostile nodes,
    /// about as many messages, a connection to each node asked) [default: routed].
    #[arg(long, value_name = "MODE", value_parser = parse_lookup_mode)]
    lookup_mode: Option<LookupMode>,
    /// Print machine-readable JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Protocol version to speak (for testing version handling: nodes of other versions refuse
    /// each other).
    #[arg(long, hide = true, value_name = "N")]
    protocol_version: Option<u32>,
    /// Ask the local UPnP gateway to forward the node's port (off by default: discovery sends
    /// SSDP multicast on the local network).
    #[arg(long)]
    upnp: bool,
    /// Relay traffic for nodes behind NATs that cannot be reached directly (end-to-end
    /// encrypted: this node sees only ciphertext).
    #[arg(long)]
    relay_serve: bool,
    #[command(flatten)]
    tunables: Tunables,
    #[command(flatten)]
    limits: limits::LimitArgs,
}

/// The overlay's and transport's timing knobs (defaults suit the internet; tests shorten them).
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Overlay tunables")]
struct Tunables {
    /// Exchange lists with the immediate neighbours this often [default: 2000].
    #[arg(long, value_name = "MS")]
    stabilize_interval_ms: Option<u64>,
    /// A neighbour silent this long after a stabilisation request is taken for crashed
    /// [default: 3000].
    #[arg(long, value_name = "MS")]
    stabilize_timeout_ms: Option<u64>,
    /// Re-probe every finger slot once per this period [default: 120000].
    #[arg(long, value_name = "MS")]
    finger_refresh_ms: Option<u64>,
    /// Successors kept, and as many predecessors [default: 8].
    #[arg(long, value_name = "N")]
    list_len: Option<usize>,
    /// Wait this long for an answer to a join request [default: 5000].
    #[arg(long, value_name = "MS")]
    join_timeout_ms: Option<u64>,
    /// Join attempts before giving up [default: 5].
    #[arg(long, value_name = "N")]
    join_attempts: Option<u32>,
    /// Wait this long for a lookup's answer before trying again [default: 3000].
    #[arg(long, value_name = "MS")]
    lookup_timeout_ms: Option<u64>,
    /// A peer silent this long is taken for crashed (QUIC idle timeout) [default: 5000].
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    /// Confirm this node's place in each group tree this often [default: 20000].
    #[arg(long, value_name = "MS")]
    group_refresh_ms: Option<u64>,
    /// Ask a node lost earlier (a partition may have healed) to route a join request for this
    /// node this often, so that rings that formed apart merge [default: 30000].
    #[arg(long, value_name = "MS")]
    merge_probe_ms: Option<u64>,
}

impl Tunables {
    /// `self`'s values, falling back to `other`'s.
    fn or(self, other: Tunables) -> Tunables {
        Tunables {
            stabilize_interval_ms: self.stabilize_interval_ms.or(other.stabilize_interval_ms),
            stabilize_timeout_ms: self.stabilize_timeout_ms.or(other.stabilize_timeout_ms),
            finger_refresh_ms: self.finger_refresh_ms.or(other.finger_refresh_ms),
            list_len: self.list_len.or(other.list_len),
            join_timeout_ms: self.join_timeout_ms.or(other.join_timeout_ms),
            join_attempts: self.join_attempts.or(other.join_attempts),
            lookup_timeout_ms: self.lookup_timeout_ms.or(other.lookup_timeout_ms),
            idle_timeout_ms: self.idle_timeout_ms.or(other.idle_timeout_ms),
            group_refresh_ms: self.group_refresh_ms.or(other.group_refresh_ms),
            merge_probe_ms: self.merge_probe_ms.or(other.merge_probe_ms),
        }
    }
}

/// Resolves a listening address: `IP:PORT` as it is, `HOST:PORT` through the system's resolver
/// (the first IPv4 address if there is one, since the default and most tickets are IPv4).
fn resolve_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?} (expected IP:PORT or HOST:PORT): {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

fn parse_ticket(s: &str) -> Result<Ticket, p2ps::TicketError> {
    s.parse()
}

fn parse_lookup_mode(s: &str) -> Result<LookupMode, String> {
    match s.trim() {
        "routed" => Ok(LookupMode::Routed),
        "steered" => Ok(LookupMode::Steered),
        other => Err(format!(
            "unknown lookup mode {other:?}: expected routed or steered"
        )),
    }
}

fn parse_strategy(s: &str) -> Result<FingerStrategy, String> {
    FingerStrategy::parse(s.trim())
        .ok_or_else(|| format!("unknown strategy {s:?}: expected tango, chord or tango+"))
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    key: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<Vec<SocketAddr>>,
    control: Option<PathBuf>,
    name: Option<String>,
    ticket_file: Option<PathBuf>,
    strategy: Option<String>,
    lookup_mode: Option<String>,
    upnp: Option<bool>,
    relay_serve: Option<bool>,
    /// The log filter, used when neither --log nor P2PS_LOG gives one.
    log: Option<String>,
    // The tunables, named as their flags (serde cannot flatten with deny_unknown_fields).
    stabilize_interval_ms: Option<u64>,
    stabilize_timeout_ms: Option<u64>,
    finger_refresh_ms: Option<u64>,
    list_len: Option<usize>,
    join_timeout_ms: Option<u64>,
    join_attempts: Option<u32>,
    lookup_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    group_refresh_ms: Option<u64>,
    merge_probe_ms: Option<u64>,
    /// The `[limits]` table: resource limits, named as their flags.
    limits: Option<limits::LimitArgs>,
}

impl FileConfig {
    fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let mut c: FileConfig = toml::from_str(&text)
            .with_context(|| format!("in the config file {}", path.display()))?;
        // Paths in the file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.key, &mut c.control, &mut c.ticket_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }

    fn tunables(&self) -> Tunables {
        Tunables {
            stabilize_interval_ms: self.stabilize_interval_ms,
            stabilize_timeout_ms: self.stabilize_timeout_ms,
            finger_refresh_ms: self.finger_refresh_ms,
            list_len: self.list_len,
            join_timeout_ms: self.join_timeout_ms,
            join_attempts: self.join_attempts,
            lookup_timeout_ms: self.lookup_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            group_refresh_ms: self.group_refresh_ms,
            merge_probe_ms: self.merge_probe_ms,
        }
    }
}

/// The log filter set by the `--config` file of `p2ps node`, if any (read before logging
/// starts; `run` reads the file again for everything else).
pub fn config_log(args: &NodeArgs) -> Result<Option<String>> {
    match &args.config {
        Some(p) => Ok(FileConfig::load(p)?.log),
        None => Ok(None),
    }
}

/// Where default files go, read from the environment once.
#[derive(Debug, Clone, Default)]
struct Dirs {
    data_home: Option<PathBuf>,
    home: Option<PathBuf>,
}

impl Dirs {
    fn from_env() -> Dirs {
        let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
        Dirs {
            data_home: abs(std::env::var_os("XDG_DATA_HOME")),
            home: abs(std::env::var_os("HOME")),
        }
    }

    fn key_dir(&self) -> Result<PathBuf> {
        match (&self.data_home, &self.home) {
            (Some(d), _) => Ok(d.join("p2ps")),
            (None, Some(h)) => Ok(h.join(".local/share/p2ps")),
            (None, None) => {
                bail!("neither XDG_DATA_HOME nor HOME is set: give the key file with --key")
            }
        }
    }
}

/// Everything `p2ps node` runs with, once flags, environment, file and defaults are merged.
#[derive(Debug)]
struct Settings {
    key: PathBuf,
    key_is_default: bool,
    control: PathBuf,
    control_is_default: bool,
    ticket_file: Option<PathBuf>,
    config: NodeConfigParts,
    json: bool,
}

/// The parts of a [`NodeConfig`] other than the identity.
#[derive(Debug, Clone)]
struct NodeConfigParts {
    listen: SocketAddr,
    advertise: Vec<SocketAddr>,
    overlay: p2ps_overlay::Config,
    groups: p2ps_overlay::groups::GroupConfig,
    idle_timeout: Option<Duration>,
    protocol_version: Option<u32>,
    upnp: bool,
    relay_serve: bool,
    limits: limits::LimitArgs,
}

fn resolve(args: &NodeArgs, file: FileConfig, dirs: &Dirs) -> Result<Settings> {
    let file_tunables = file.tunables();
    let name = args
        .name
        .clone()
        .or(file.name)
        .unwrap_or_else(|| "node".into());
    check_name(&name)?;
    let (key, key_is_default) = match args.key.clone().or(file.key) {
        Some(k) => (k, false),
        None => (dirs.key_dir()?.join(format!("{name}.key")), true),
    };
    let (control, control_is_default) =
        control_path(args.control.clone().or(file.control).as_deref(), &name)?;
    let strategy = match (args.strategy, file.strategy) {
        (Some(s), _) => Some(s),
        (None, Some(s)) => Some(parse_strategy(&s).map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    let t = args.tunables.clone().or(file_tunables);
    let mut overlay = p2ps_overlay::Config::default();
    if let Some(s) = strategy {
        overlay.strategy = s;
    }
    let lookup_mode = match (args.lookup_mode, file.lookup_mode) {
        (Some(m), _) => Some(m),
        (None, Some(m)) => Some(parse_lookup_mode(&m).map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    if let Some(m) = lookup_mode {
        overlay.lookup_mode = m;
    }
    let ms = Duration::from_millis;
    if let Some(v) = t.stabilize_interval_ms {
        overlay.stabilize_interval = ms(v);
    }
    if let Some(v) = t.stabilize_timeout_ms {
        overlay.stabilize_timeout = ms(v);
    }
    if let Some(v) = t.finger_refresh_ms {
        overlay.finger_refresh_period = ms(v);
    }
    if let Some(v) = t.list_len {
        overlay.list_len = v;
    }
    if let Some(v) = t.join_timeout_ms {
        overlay.join_timeout = ms(v);
    }
    if let Some(v) = t.join_attempts {
        overlay.join_attempts = v;
    }
    if let Some(v) = t.lookup_timeout_ms {
        overlay.lookup_timeout = ms(v);
    }
    let mut groups = p2ps_overlay::groups::GroupConfig::default();
    if let Some(v) = t.group_refresh_ms {
        groups.refresh = ms(v);
    }
    if let Some(v) = t.merge_probe_ms {
        overlay.merge_probe_interval = ms(v);
    }
    overlay.validate().context("invalid overlay settings")?;
    groups.validate().context("invalid group settings")?;
    if t.idle_timeout_ms == Some(0) {
        bail!("idle_timeout_ms must be greater than zero");
    }
    let advertise = if args.advertise.is_empty() {
        file.advertise.unwrap_or_default()
    } else {
        args.advertise.clone()
    };
    if advertise.len() > p2ps::ticket::MAX_TICKET_ADDRS {
        bail!(
            "{} advertised addresses: a ticket holds at most {}",
            advertise.len(),
            p2ps::ticket::MAX_TICKET_ADDRS
        );
    }
    let listen = match (args.listen, &file.listen) {
        (Some(a), _) => a,
        (None, Some(a)) => resolve_listen(a)
            .map_err(anyhow::Error::msg)
            .context("`listen` in the config file")?,
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    Ok(Settings {
        key,
        key_is_default,
        control,
        control_is_default,
        ticket_file: args.ticket_file.clone().or(file.ticket_file),
        config: NodeConfigParts {
            listen,
            advertise,
            overlay,
            groups,
            idle_timeout: t.idle_timeout_ms.map(ms),
            protocol_version: args.protocol_version,
            upnp: args.upnp || file.upnp.unwrap_or(false),
            relay_serve: args.relay_serve || file.relay_serve.unwrap_or(false),
            limits: args.limits.clone().or(file.limits.unwrap_or_default()),
        },
        json: args.json,
    })
}

/// Loads the key, creating the default key directory (0700) if needed.
fn load_identity(s: &Settings) -> Result<Identity> {
    if s.key_is_default {
        if let Some(dir) = s.key.parent() {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("creating the key directory {}", dir.display()))?;
            }
        }
    }
    Identity::load_or_create(&s.key)
        .with_context(|| format!("loading the node key {}", s.key.display()))
}

/// `p2ps node`: runs a node until Ctrl-C, SIGTERM or `p2ps leave`.
pub fn run(args: NodeArgs) -> Result<()> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let settings = resolve(&args, file, &Dirs::from_env())?;
    // First the control socket: a second node on the same socket stops here.
    let socket =
        control_server::ControlSocket::bind(&settings.control, settings.control_is_default)?;
    let new_key = !settings.key.exists();
    let identity = load_identity(&settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mode = match args.join {
        Some(t) => Mode::Join(t),
        None => Mode::Create,
    };
    let joined = AtomicBool::new(false);
    let key = settings.key.clone();
    let result = runtime.block_on(run_node(settings, identity, socket, mode, &joined));
    runtime.shutdown_timeout(Duration::from_secs(2));
    if result.is_err() && new_key && !joined.load(Ordering::SeqCst) {
        // A start that failed leaves nothing behind: the key it made is nobody's id yet.
        if let Err(e) = std::fs::remove_file(&key) {
            warn!(
                "could not remove the unused key file {}: {e}",
                key.display()
            );
        }
    }
    result
}

enum Mode {
    Create,
    Join(Ticket),
}

/// Why the node stops.
enum Stop {
    Signal(&'static str),
    Leave(control_server::LeaveRequest),
}

async fn run_node(
    s: Settings,
    identity: Identity,
    socket: control_server::ControlSocket,
    mode: Mode,
    joined: &AtomicBool,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut cfg = NodeConfig::new(identity, s.config.listen);
    // The limit the clients check, and the one the control socket's request size allows for.
    cfg.max_message_size = crate::payload::MAX_PAYLOAD_BYTES;
    cfg.advertise = s.config.advertise.clone();
    cfg.overlay = s.config.overlay.clone();
    cfg.groups = s.config.groups.clone();
    cfg.upnp = s.config.upnp;
    cfg.relay_serve = s.config.relay_serve;
    s.config.limits.apply(&mut cfg.admission, &mut cfg.memory);
    if let Some(v) = s.config.protocol_version {
        cfg.protocol_version = v;
    }
    if let Some(t) = s.config.idle_timeout {
        cfg.idle_timeout = t;
        cfg.keep_alive = cfg.keep_alive.min(t / 3);
    }
    let node = Node::start(cfg)
        .await
        .with_context(|| format!("starting the node on {}", s.config.listen))?;
    let out = Output { json: s.json };
    out.started(&node, &s.control);
    // Subscribe before joining so that no neighbour change is missed.
    let mut events = node.events();
    let (stop_tx, mut stop_rx) = mpsc::channel::<control_server::LeaveRequest>(4);
    let (listener, socket_file) = socket.into_parts()?;
    let recent = std::sync::Arc::new(crate::node_ids::RecentSenders::default());
    let control_task = tokio::spawn(control_server::serve(
        listener,
        node.clone(),
        stop_tx,
        recent.clone(),
    ));

    let wait_stop = async {
        tokio::select! {
            _ = sigterm.recv() => Stop::Signal("SIGTERM"),
            _ = sigint.recv() => Stop::Signal("SIGINT"),
            Some(req) = stop_rx.recv() => Stop::Leave(req),
        }
    };
    tokio::pin!(wait_stop);

    // Create or join, unless told to stop first.
    let started = async {
        match &mode {
            Mode::Create => node.create().await.context("creating a network"),
            Mode::Join(t) => node.join(t).await.with_context(|| {
                let addrs: Vec<String> = t.addrs.iter().map(|a| a.to_string()).collect();
                format!(
                    "joining the network through {} at {}",
                    t.id.short(),
                    addrs.join(", ")
                )
            }),
        }
    };
    let stop = tokio::select! {
        r = started => {
            if let Err(e) = r {
                node.shutdown().await;
                control_task.abort();
                drop(socket_file);
                return Err(e);
            }
            None
        }
        stop = &mut wait_stop => Some(stop),
    };
    let stop = match stop {
        Some(stop) => stop,
        None => {
            joined.store(true, Ordering::SeqCst);
            out.joined(&node, &mode);
            if let Some(path) = &s.ticket_file {
                if let Err(e) = write_ticket(path, &node.ticket()) {
                    node.shutdown().await;
                    control_task.abort();
                    return Err(e);
                }
            }
            message_loop(&node, &out, &recent, &mut events, &mut wait_stop).await?
        }
    };
    match stop {
        Stop::Signal(name) => {
            info!("{name}: leaving the network");
            node.shutdown().await;
            out.left();
        }
        Stop::Leave(req) => {
            node.shutdown().await;
            out.left();
            let _ = req.left.send(());
            // Let the control task write its answer before the process ends.
            let _ = tokio::time::timeout(Duration::from_secs(2), req.written).await;
        }
    }
    control_task.abort();
    drop(socket_file);
    Ok(())
}

/// Prints messages (remembering their senders in `recent`) and events until something asks
/// the node to stop.
async fn message_loop(
    node: &Node,
    out: &Output,
    recent: &crate::node_ids::RecentSenders,
    events: &mut broadcast::Receiver<NodeEvent>,
    wait_stop: &mut (impl std::future::Future<Output = Stop> + Unpin),
) -> Result<Stop> {
    let mut events_open = true;
    loop {
        tokio::select! {
            m = node.recv() => match m {
                Some(m) => {
                    recent.record(m.from);
                    out.message(&m);
                }
                None => bail!("the node stopped unexpectedly"),
            },
            ev = events.recv(), if events_open => match ev {
                Ok(e) => out.event(&e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!("{n} node events were missed (printing too slowly)");
                }
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            stop = &mut *wait_stop => return Ok(stop),
        }
    }
}

/// Writes the ticket atomically (a reader never sees half of it).
fn write_ticket(path: &Path, ticket: &Ticket) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("ticket file {} has no file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, format!("{ticket}\n"))
        .with_context(|| format!("writing the ticket file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("writing the ticket file {}", path.display()))
}

/// What the node prints on stdout: human lines, or JSON lines with `--json`.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn line(&self, human: impl FnOnce() -> String, json: impl FnOnce() -> serde_json::Value) {
        let text = if self.json {
            json().to_string()
        } else {
            human()
        };
        // A closed stdout must not stop the node.
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    fn started(&self, node: &Node, control: &Path) {
        let ticket = node.ticket().to_string();
        if self.json {
            self.line(String::new, || {
                serde_json::json!({
                    "event": "started",
                    "id": node.id().to_string(),
                    "ticket": ticket,
                    "addrs": node.addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "control": control.display().to_string(),
                })
            });
            return;
        }
        let addrs: Vec<String> = node.addrs().iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            std::io::stdout().lock(),
            "id: {}\nticket: {ticket}\naddresses: {}\ncontrol: {}",
            node.id(),
            addrs.join(" "),
            control.display()
        );
    }

    fn joined(&self, node: &Node, mode: &Mode) {
        let via = match mode {
            Mode::Create => None,
            Mode::Join(t) => Some(t.id),
        };
        self.line(
            || match via {
                None => "created a new network".to_string(),
                Some(v) => format!("joined the network through {}", v.short()),
            },
            || {
                serde_json::json!({
                    "event": "joined",
                    "id": node.id().to_string(),
                    "created": via.is_none(),
                    "via": via.map(|v| v.to_string()),
                })
            },
        );
    }

    fn message(&self, m: &Delivery) {
        let to = m.via.to_string();
        self.line(
            || {
                format!(
                    "message from {} ({} hops, to {to}): {}",
                    m.from.short(),
                    m.hops,
                    printable(&m.payload)
                )
            },
            || {
                serde_json::json!({
                    "event": "message",
                    "from": m.from.to_string(),
                    "hops": m.hops,
                    "to": to,
                    "group": match &m.via {
                        Via::Group(g) => Some(g.clone()),
                        _ => None,
                    },
                    "key": m.key.to_string(),
                    "payload": String::from_utf8_lossy(&m.payload),
                })
            },
        );
    }

    fn event(&self, e: &NodeEvent) {
        let (what, id): (&str, NodeId) = match e {
            NodeEvent::NeighbourUp(id) => ("neighbour_up", *id),
            NodeEvent::NeighbourDown(id) => ("neighbour_down", *id),
            NodeEvent::GroupChildDropped { group, peer } => {
                let group = group.to_string();
                self.line(
                    || {
                        format!(
                            "slow child {} dropped from group tree {group}",
                            peer.short()
                        )
                    },
                    || {
                        serde_json::json!({
                            "event": "group_child_dropped",
                            "group": group,
                            "node": peer.to_string(),
                        })
                    },
                );
                return;
            }
            NodeEvent::Isolated => {
                self.line(
                    || "isolated: lost every neighbour, joining again".to_string(),
                    || serde_json::json!({"event": "isolated"}),
                );
                return;
            }
            // Joining and leaving are printed where they happen (and events of newer versions
            // of the library are not printed).
            _ => return,
        };
        self.line(
            || format!("{}: {}", what.replace('_', " "), id.short()),
            || serde_json::json!({"event": what, "node": id.to_string()}),
        );
    }

    fn left(&self) {
        self.line(
            || "left the network".to_string(),
            || serde_json::json!({"event": "left"}),
        );
    }
}

/// A payload as one line of text: UTF-8 (lossy) with control characters escaped, so that a
/// peer can neither break the line structure nor send terminal escapes.
fn printable(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn parse(args: &[&str]) -> Result<NodeArgs, clap::Error> {
        let mut v = vec!["p2ps-node"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| c.node)
    }

    fn dirs() -> Dirs {
        Dirs {
            data_home: None,
            home: Some("/home/u".into()),
        }
    }

    #[test]
    fn exactly_one_of_create_and_join() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--create"]).is_ok());
        let t = Ticket::new(
            NodeId::from_bytes([3; 32]),
            vec!["127.0.0.1:1".parse().unwrap()],
        );
        assert!(parse(&["--join", &t.to_string()]).is_ok());
        assert!(parse(&["--create", "--join", &t.to_string()]).is_err());
        let e = parse(&["--join", "p2ps1abc"]).unwrap_err().to_string();
        assert!(e.contains("ticket"), "{e}");
        let e = parse(&["--create", "--strategy", "kademlia"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tango, chord or tango+"), "{e}");
    }

    #[test]
    fn defaults() {
        let a = parse(&["--create"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert_eq!(s.key, PathBuf::from("/home/u/.local/share/p2ps/node.key"));
        assert!(s.key_is_default);
        assert_eq!(s.config.listen, "127.0.0.1:0".parse().unwrap());
        assert!(s.control.ends_with("p2ps/node.sock") || s.control.ends_with("node.sock"));
        assert!(s.control_is_default);
        assert_eq!(s.config.overlay, p2ps_overlay::Config::default());
        let d = Dirs {
            data_home: Some("/data".into()),
            home: Some("/home/u".into()),
        };
        let a = parse(&["--create", "--name", "b"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &d).unwrap();
        assert_eq!(s.key, PathBuf::from("/data/p2ps/b.key"));
        assert!(s.control.ends_with("b.sock"));
        assert!(resolve(&a, FileConfig::default(), &Dirs::default()).is_err());
        let a = parse(&["--create", "--name", "../evil"]).unwrap();
        assert!(resolve(&a, FileConfig::default(), &d).is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.toml");
        std::fs::write(
            &path,
            r#"
key = "k.key"
listen = "127.0.0.1:5000"
advertise = ["10.0.0.1:5000"]
name = "filenode"
strategy = "chord"
lookup_mode = "steered"
stabilize_interval_ms = 300
list_len = 4
"#,
        )
        .unwrap();
        let file = FileConfig::load(&path).unwrap();
        let a = parse(&["--create", "--listen", "127.0.0.1:6000", "--list-len", "6"]).unwrap();
        let s = resolve(&a, file, &dirs()).unwrap();
        assert_eq!(s.key, tmp.path().join("k.key"));
        assert!(!s.key_is_default);
        assert_eq!(s.config.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(s.config.advertise, vec!["10.0.0.1:5000".parse().unwrap()]);
        assert!(s.control.ends_with("filenode.sock"));
        assert_eq!(s.config.overlay.strategy, FingerStrategy::Chord);
        assert_eq!(s.config.overlay.lookup_mode, LookupMode::Steered);
        assert!(parse(&["--create", "--lookup-mode", "iterative"]).is_err());
        assert_eq!(
            s.config.overlay.stabilize_interval,
            Duration::from_millis(300)
        );
        assert_eq!(s.config.overlay.list_len, 6);

        assert!(!s.config.upnp && !s.config.relay_serve);

        std::fs::write(&path, "stabilise_interval_ms = 3\n").unwrap();
        let e = format!("{:#}", FileConfig::load(&path).unwrap_err());
        assert!(e.contains("stabilise_interval_ms"), "{e}");
        std::fs::write(&path, "strategy = \"pastry\"\n").unwrap();
        let file = FileConfig::load(&path).unwrap();
        assert!(resolve(&parse(&["--create"]).unwrap(), file, &dirs()).is_err());
        let a = parse(&["--create", "--stabilize-interval-ms", "0"]).unwrap();
        assert!(resolve(&a, FileConfig::default(), &dirs()).is_err());
    }

    #[test]
    fn the_file_sets_upnp_relay_serve_and_log() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.toml");
        std::fs::write(
            &path,
            "upnp = true\nrelay_serve = true\nlog = \"info\"\nlisten = \"localhost:0\"\n",
        )
        .unwrap();
        let a = parse(&["--create", "--config", &path.to_string_lossy()]).unwrap();
        assert_eq!(config_log(&a).unwrap().as_deref(), Some("info"));
        let s = resolve(&a, FileConfig::load(&path).unwrap(), &dirs()).unwrap();
        assert!(s.config.upnp);
        assert!(s.config.relay_serve);
        assert!(s.config.listen.ip().is_loopback(), "{}", s.config.listen);
        assert_eq!(s.config.listen.port(), 0);
        // Flags still turn them on without a file.
        let a = parse(&["--create", "--upnp", "--relay-serve"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert!(s.config.upnp && s.config.relay_serve);
        assert_eq!(config_log(&a).unwrap(), None);
        std::fs::write(&path, "upnp = \"yes\"\n").unwrap();
        assert!(FileConfig::load(&path).is_err());
        std::fs::write(&path, "listen = \"localhost\"\n").unwrap();
        let e = format!(
            "{:#}",
            resolve(&a, FileConfig::load(&path).unwrap(), &dirs()).unwrap_err()
        );
        assert!(e.contains("cannot resolve") && e.contains("listen"), "{e}");
    }

    #[test]
    fn listen_addresses_may_name_a_host() {
        let a = parse(&["--create", "--listen", "localhost:0"]).unwrap();
        let l = a.listen.unwrap();
        assert!(l.ip().is_loopback() && l.port() == 0, "{l}");
        assert_eq!(
            resolve_listen("0.0.0.0:4433"),
            Ok("0.0.0.0:4433".parse().unwrap())
        );
        let e = parse(&["--create", "--listen", "localhost"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
    }

    #[test]
    fn payloads_print_on_one_line() {
        assert_eq!(printable(b"hello"), "hello");
        assert_eq!(printable(b"a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(printable(&[0xff, b'x']), "\u{fffd}x");
    }

    #[test]
    fn tickets_are_written_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t");
        let t = Ticket::new(
            NodeId::from_bytes([5; 32]),
            vec!["127.0.0.1:9".parse().unwrap()],
        );
        write_ticket(&p, &t).unwrap();
        let back: Ticket = std::fs::read_to_string(&p).unwrap().parse().unwrap();
        assert_eq!(back, t);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
