//! The life of a `p2ps node`: the key, the node, `create` or `join`, the control socket's
//! server, then messages and events until a signal or `p2ps leave`, and a graceful leave.
//!
//! A start that fails, or is stopped before the node is part of a network, leaves nothing
//! behind: no socket file, and no key file, data directory or dictionary file if it made them.

use super::args::NodeArgs;
use super::config_file::FileConfig;
use super::control_server;
use super::http::events::DeliveryFeed;
use super::output::Output;
use super::requests::{LeaveRequest, Requests};
use super::settings::{resolve, Dirs, Settings, DICT_FILE};
use anyhow::{bail, Context, Result};
use p2ps::{Identity, Node, NodeEvent, Ticket};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

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

/// What a start made in the data directory, to remove if the start fails.
#[derive(Debug, Default)]
struct Made {
    dir: Option<std::path::PathBuf>,
    dict: Option<std::path::PathBuf>,
}

impl Made {
    /// Removes what was made (the directory only if nothing else is in it).
    fn remove(self) {
        if let Some(f) = self.dict {
            if let Err(e) = std::fs::remove_file(&f) {
                warn!("could not remove the unused file {}: {e}", f.display());
            }
        }
        if let Some(d) = self.dir {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// Creates the data directory (0700) if needed; what it made, and what the node will.
fn prepare_data_dir(s: &Settings) -> Result<Made> {
    let Some(dir) = &s.data_dir else {
        return Ok(Made::default());
    };
    let mut made = Made::default();
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        made.dir = Some(dir.clone());
    }
    let dict = dir.join(DICT_FILE);
    if !dict.exists() {
        made.dict = Some(dict.clone());
    }
    info!("dictionary kept in {}", dict.display());
    Ok(made)
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
    let made = match prepare_data_dir(&settings) {
        Ok(m) => m,
        Err(e) => {
            if new_key {
                let _ = std::fs::remove_file(&settings.key);
            }
            return Err(e);
        }
    };
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
    // A start that failed, or was stopped (Ctrl-C, SIGTERM, `p2ps leave`) before the node was
    // part of a network, leaves nothing behind: the key it made is nobody's id yet.
    let never_joined = !joined.load(Ordering::SeqCst);
    if never_joined {
        made.remove();
    }
    if never_joined && new_key {
        if let Err(e) = std::fs::remove_file(&key) {
            warn!(
                "could not remove the unused key file {}: {e}",
                key.display()
            );
        }
    }
    result
}

/// How the node becomes part of a network.
pub(super) enum Mode {
    /// `--create`: a new network of its own.
    Create,
    /// `--join`: the network of the node whose ticket this is.
    Join(Ticket),
}

/// Why the node stops.
enum Stop {
    /// SIGTERM or SIGINT (Ctrl-C), by name.
    Signal(&'static str),
    /// `p2ps leave`, answered once the node has left.
    Leave(LeaveRequest),
}

/// Starts the node, serves the control socket, creates or joins a network and prints what
/// arrives until told to stop, then leaves; `joined` is set once the node is part of a network.
async fn run_node(
    s: Settings,
    identity: Identity,
    socket: control_server::ControlSocket,
    mode: Mode,
    joined: &AtomicBool,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let cfg = s.config.node_config(identity);
    let node = Node::start(cfg)
        .await
        .with_context(|| format!("starting the node on {}", s.config.listen))?;
    let out = Output::new(s.json);
    out.started(&node, &s.control);
    // Subscribe before joining so that no neighbour change is missed.
    let mut events = node.events();
    let (stop_tx, mut stop_rx) = mpsc::channel::<LeaveRequest>(4);
    let (listener, socket_file) = socket.into_parts()?;
    let recent = std::sync::Arc::new(crate::node_ids::RecentSenders::default());
    let requests = Requests::new(node.clone(), stop_tx, recent.clone());
    let (deliveries, _) = broadcast::channel(super::http::events::DELIVERY_BUFFER);
    let http_task = match &s.http {
        Some(h) => {
            let listener = match super::http::bind(h).await {
                Ok(l) => l,
                Err(e) => {
                    node.shutdown().await;
                    return Err(e);
                }
            };
            if let Ok(addr) = listener.local_addr() {
                out.http(addr);
            }
            Some(tokio::spawn(super::http::serve(
                listener,
                requests.clone(),
                h.token.clone(),
                deliveries.clone(),
            )))
        }
        None => None,
    };
    // The HTTP interface stops with this function, however it ends.
    let _http = AbortOnDrop(http_task);
    let control_task = tokio::spawn(control_server::serve(listener, requests));

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
    tokio::pin!(started);
    // Meanwhile, how the join is going (on stderr) and any other event.
    let mut events_open = true;
    let stop = loop {
        tokio::select! {
            r = &mut started => {
                if let Err(e) = r {
                    node.shutdown().await;
                    control_task.abort();
                    drop(socket_file);
                    return Err(e);
                }
                // The steps reported just before the join ended come first.
                while let Ok(e) = events.try_recv() {
                    show(&out, &e);
                }
                break None;
            }
            ev = events.recv(), if events_open => match ev {
                Ok(e) => show(&out, &e),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            stop = &mut wait_stop => break Some(stop),
        }
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
            message_loop(
                &node,
                &out,
                &recent,
                &deliveries,
                &mut events,
                &mut wait_stop,
            )
            .await?
        }
    };
    let was_joined = joined.load(Ordering::SeqCst);
    match stop {
        Stop::Signal(name) => {
            info!("{name}: leaving the network");
            node.shutdown().await;
            out.left(was_joined);
        }
        Stop::Leave(req) => {
            node.shutdown().await;
            out.left(was_joined);
            let _ = req.left.send(());
            // Let the control task write its answer before the process ends.
            let _ = tokio::time::timeout(Duration::from_secs(2), req.written).await;
        }
    }
    control_task.abort();
    drop(socket_file);
    Ok(())
}

/// Prints an event while the node creates or joins its network.
fn show(out: &Output, e: &NodeEvent) {
    match e {
        NodeEvent::Joining(step) => out.join_step(step),
        e => out.event(e),
    }
}

/// Prints messages (remembering their senders in `recent`, and handing them to the HTTP
/// interface's event streams through `deliveries`) and events until something asks the node
/// to stop.
async fn message_loop(
    node: &Node,
    out: &Output,
    recent: &crate::node_ids::RecentSenders,
    deliveries: &DeliveryFeed,
    events: &mut broadcast::Receiver<NodeEvent>,
    wait_stop: &mut (impl std::future::Future<Output = Stop> + Unpin),
) -> Result<Stop> {
    let mut events_open = true;
    let mut summaries = tokio::time::interval(super::flood::WINDOW);
    summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = summaries.tick() => out.flood_summary(),
            m = node.recv() => match m {
                Some(m) => {
                    recent.record(m.from);
                    out.message(&m);
                    // Never waits: a stream that falls behind loses the oldest messages.
                    if deliveries.receiver_count() > 0 {
                        let _ = deliveries.send(std::sync::Arc::new(m));
                    }
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

/// Aborts a task when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2ps::NodeId;

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
