//! Helpers for P2PS's multi-process tests: run real `p2ps node` processes and talk to them.
//!
//! * [`p2ps_bin`] finds (and if needed builds) the `p2ps` binary of this workspace.
//! * [`TestNet`] is a private temporary directory holding the nodes' key files, control sockets
//!   and ticket files; [`TestNet::spawn`] starts a node in it on `127.0.0.1` with a port the OS
//!   picks.
//! * [`NodeProc`] is one running node: its stdout and stderr are collected line by line, it
//!   answers control requests ([`NodeProc::request`], [`NodeProc::status`],
//!   [`NodeProc::lookup_many`]) and runs client subcommands ([`NodeProc::cli`]); it is killed
//!   when dropped.
//! * [`responsible`] and [`wait_ring`] give the expected answers from the live nodes' ids.
//!
//! Every wait is bounded, and every failure panics with what the node printed, so that a
//! failing test explains itself.
//!
//! [`http`] is a small client for a node's HTTP interface: requests and server-sent events.
//!
//! [`natlab`] builds an emulated internet with NATs and a UPnP gateway in network namespaces.
//!
//! [`hostile`] is a peer that speaks the wire protocol but not its rules, for the hostile-peer
//! tests, with the non-panicking checks that judge what it did; [`raw_quic`] is an attacker below
//! the wire protocol (its own QUIC endpoint, for partial frames and garbage).

pub mod hostile;
pub mod http;
pub mod natlab;
pub mod raw_quic;

use p2ps::{NodeId, NodeState, RingId, Status};
use p2ps_overlay::TrueRing;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use p2ps;

/// Overlay settings that make a loopback network form and repair quickly.
pub const FAST: &[&str] = &[
    "--stabilize-interval-ms",
    "300",
    "--stabilize-timeout-ms",
    "1500",
    "--finger-refresh-ms",
    "5000",
    "--lookup-timeout-ms",
    "1000",
    "--group-refresh-ms",
    "2000",
];

/// The `p2ps` binary: `$P2PS_BIN` if set, else `target/<profile>/p2ps` next to the running test
/// executable, brought up to date with `cargo build -p p2ps-cli --bin p2ps` (a no-op when it is
/// fresh) so that a stale binary is never tested. Panics with the build's output if there is no
/// binary to run.
pub fn p2ps_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(locate_bin) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn locate_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("P2PS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the test executable: {e}"))?;
    // target/<profile>/deps/<test> → target/<profile>
    let mut profile_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    let bin = profile_dir.join("p2ps");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let target_dir = profile_dir.parent().map(Path::to_path_buf);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "p2ps-cli", "--bin", "p2ps"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(t) = &target_dir {
        cmd.arg("--target-dir").arg(t);
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let t = std::time::Instant::now();
    let built = cmd.output();
    eprintln!(
        "[p2ps-interop-tests] `cargo build -p p2ps-cli --bin p2ps` took {:?}",
        t.elapsed()
    );
    let fresh = bin.is_file();
    match built {
        Ok(out) if out.status.success() && fresh => Ok(bin),
        Ok(out) if fresh => {
            eprintln!(
                "warning: `cargo build -p p2ps-cli --bin p2ps` failed; testing the existing {} \
                 (it may be stale):\n{}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(bin)
        }
        Ok(out) => Err(format!(
            "the p2ps binary is not at {} and `cargo build -p p2ps-cli --bin p2ps` did not make \
             it (status {}):\n{}\nBuild it first, or set P2PS_BIN to its path.",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) if fresh => {
            eprintln!(
                "warning: cannot run cargo ({e}); testing the existing {}",
                bin.display()
            );
            Ok(bin)
        }
        Err(e) => Err(format!(
            "the p2ps binary is not at {} and cargo could not be run to build it: {e}. Run \
             `cargo build -p p2ps-cli --bin p2ps` first, or set P2PS_BIN to its path.",
            bin.display()
        )),
    }
}

/// `p2ps` with `args`, no stdin, piped output, and none of the `P2PS_*` settings of the
/// environment the tests run in (so they cannot redirect a test node).
fn p2ps_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    p2ps_command_in(None, args)
}

/// `p2ps <args>`, run inside network namespace `netns` (with `ip netns exec`, which execs the
/// program, so the child is the node itself) when given.
fn p2ps_command_in<S: AsRef<std::ffi::OsStr>>(netns: Option<&str>, args: &[S]) -> Command {
    let mut c = match netns {
        None => Command::new(p2ps_bin()),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(p2ps_bin());
            c
        }
    };
    c.args(args)
        .env_remove("P2PS_CONTROL")
        .env_remove("P2PS_NAME")
        .env_remove("P2PS_KEY")
        .env_remove("P2PS_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `p2ps` with `args` to completion, within `timeout` (killed and reported past it).
pub fn run_p2ps(args: &[&str], timeout: Duration) -> Output {
    run_p2ps_with(args, None, &[], timeout)
}

/// Like [`run_p2ps`], with `stdin` written to its standard input (closed after it; none when
/// `None`) and `env` added to its environment.
pub fn run_p2ps_with(
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let mut cmd = p2ps_command(args);
    cmd.envs(env.iter().copied());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run p2ps {args:?}: {e}"));
    let feeder = stdin.map(|bytes| {
        let bytes = bytes.to_vec();
        let pipe = child.stdin.take();
        std::thread::spawn(move || {
            if let Some(mut p) = pipe {
                // The command may refuse the input before reading all of it.
                let _ = p.write_all(&bytes);
            }
        })
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("p2ps {args:?} did not finish within {timeout:?}");
            }
            Err(e) => panic!("waiting for p2ps {args:?}: {e}"),
        }
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let join = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    }
}

fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits up to `timeout` for `f` to give a value, polling every 50 ms.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How a node starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// `--create`.
    Create,
    /// `--join TICKET`.
    Join(String),
}

/// A private temporary directory for a set of nodes (removed when dropped).
pub struct TestNet {
    dir: tempfile::TempDir,
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl TestNet {
    /// A fresh directory (mode 0700).
    pub fn new() -> TestNet {
        let dir = tempfile::Builder::new()
            .prefix("p2ps-it-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        TestNet { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `p2ps node` named `name`: key `<dir>/<name>.key`, control socket
    /// `<dir>/<name>.sock`, ticket file `<dir>/<name>.ticket`, listening on `127.0.0.1:0`,
    /// with `extra` arguments after those.
    pub fn spawn(&self, name: &str, start: Start, extra: &[&str]) -> NodeProc {
        self.spawn_at(None, name, start, "127.0.0.1:0", extra)
    }

    /// Like [`TestNet::spawn`], but inside network namespace `netns` (with `ip netns exec`)
    /// when given, listening on `listen`.
    pub fn spawn_at(
        &self,
        netns: Option<&str>,
        name: &str,
        start: Start,
        listen: &str,
        extra: &[&str],
    ) -> NodeProc {
        let d = self.path();
        let key = d.join(format!("{name}.key"));
        let control = d.join(format!("{name}.sock"));
        let ticket_file = d.join(format!("{name}.ticket"));
        let mut args: Vec<String> = vec![
            "node".into(),
            "--key".into(),
            path_str(&key),
            "--control".into(),
            path_str(&control),
            "--ticket-file".into(),
            path_str(&ticket_file),
            "--listen".into(),
            listen.into(),
        ];
        match start {
            Start::Create => args.push("--create".into()),
            Start::Join(t) => {
                args.push("--join".into());
                args.push(t);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        NodeProc::spawn_in(netns, name, args, control, ticket_file)
    }

    /// Three nodes named `names` in a ring (the first creates it, with `--http 127.0.0.1:0`
    /// besides `extra`; the others join through it), and the first one's HTTP address.
    pub fn spawn_three_with_http(
        &self,
        names: [&str; 3],
        extra: &[&str],
        timeout: Duration,
    ) -> ([NodeProc; 3], std::net::SocketAddr) {
        let mut a = self.spawn(
            names[0],
            Start::Create,
            &[extra, &["--http", "127.0.0.1:0"]].concat(),
        );
        let ticket = a.wait_ticket(timeout);
        let mut b = self.spawn(names[1], Start::Join(ticket.clone()), extra);
        let mut c = self.spawn(names[2], Start::Join(ticket), extra);
        b.wait_ticket(timeout);
        c.wait_ticket(timeout);
        wait_ring(&mut [&mut a, &mut b, &mut c], timeout);
        let addr = a.http_addr(timeout);
        ([a, b, c], addr)
    }

    /// A node named `name` that creates a network and serves HTTP on loopback with a bearer
    /// token (`--http-token`, the file made by the node): the node, its HTTP address and the
    /// token.
    pub fn spawn_with_http_token(
        &self,
        name: &str,
        timeout: Duration,
    ) -> (NodeProc, std::net::SocketAddr, String) {
        let token_file = self.path().join(format!("{name}.http.token"));
        let tf = token_file.to_string_lossy().into_owned();
        let mut a = self.spawn(
            name,
            Start::Create,
            &[FAST, &["--http", "127.0.0.1:0", "--http-token", &tf]].concat(),
        );
        a.wait_ticket(timeout);
        let addr = a.http_addr(timeout);
        let token = match std::fs::read_to_string(&token_file) {
            Ok(t) => t.trim().to_string(),
            Err(e) => panic!("reading {tf}: {e}"),
        };
        (a, addr, token)
    }

    /// Starts `n` nodes named `n00`, `n01`, …: the first creates the network, three join
    /// through it, the rest join concurrently through those four. Returns once every node has
    /// printed its ticket (joined), waiting at most `join_wait` for each.
    pub fn spawn_network(&self, n: usize, extra: &[&str], join_wait: Duration) -> Vec<NodeProc> {
        let mut nodes = vec![self.spawn("n00", Start::Create, extra)];
        let first = nodes[0].wait_ticket(join_wait);
        let seeds = n.min(4);
        for i in 1..seeds {
            nodes.push(self.spawn(&format!("n{i:02}"), Start::Join(first.clone()), extra));
        }
        let mut tickets = vec![first];
        for node in &mut nodes[1..seeds] {
            tickets.push(node.wait_ticket(join_wait));
        }
        for i in seeds..n {
            let via = tickets[i % tickets.len()].clone();
            nodes.push(self.spawn(&format!("n{i:02}"), Start::Join(via), extra));
        }
        for node in &mut nodes[seeds..] {
            node.wait_ticket(join_wait);
        }
        nodes
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Lines a child printed, shared with the thread that reads them.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    more: Condvar,
}

impl Lines {
    fn collect(r: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut v) = l.lines.lock() {
                    v.push(line);
                }
                l.more.notify_all();
            }
        });
        lines
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A running `p2ps node` process (SIGKILLed when dropped).
pub struct NodeProc {
    /// Its name (also the base of its file names).
    pub name: String,
    /// Its control socket.
    pub control: PathBuf,
    /// Where it writes its ticket once joined.
    pub ticket_file: PathBuf,
    args: Vec<String>,
    child: Child,
    exit: Option<ExitStatus>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
}

impl NodeProc {
    /// Starts `p2ps <args>` (logs at `info` to stderr), given where its control socket and
    /// ticket file will be.
    pub fn spawn_raw(
        name: &str,
        args: Vec<String>,
        control: PathBuf,
        ticket_file: PathBuf,
    ) -> NodeProc {
        Self::spawn_in(None, name, args, control, ticket_file)
    }

    /// Like [`NodeProc::spawn_raw`], inside network namespace `netns` when given.
    pub fn spawn_in(
        netns: Option<&str>,
        name: &str,
        args: Vec<String>,
        control: PathBuf,
        ticket_file: PathBuf,
    ) -> NodeProc {
        let mut cmd = p2ps_command_in(netns, &args);
        let mut child = cmd
            .env("P2PS_LOG", "info")
            // An error's backtrace would push the node's last log lines out of `describe`.
            .env("RUST_BACKTRACE", "0")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {name} (p2ps {args:?}): {e}"));
        let stdout = child.stdout.take().map(Lines::collect).unwrap_or_default();
        let stderr = child.stderr.take().map(Lines::collect).unwrap_or_default();
        NodeProc {
            name: name.to_string(),
            control,
            ticket_file,
            args,
            child,
            exit: None,
            stdout,
            stderr,
        }
    }

    /// What the node printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    /// What the node printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.snapshot().join("\n")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A description for panic messages: command, exit status and output.
    pub fn describe(&mut self) -> String {
        let state = match self.try_exit() {
            Some(s) => {
                // Give the reader threads a moment to collect the last lines it wrote.
                std::thread::sleep(Duration::from_millis(300));
                format!("exited with {s}")
            }
            None => "running".into(),
        };
        let err = self.stderr.snapshot();
        let tail = err[err.len().saturating_sub(60)..].join("\n");
        format!(
            "node {} (pid {}, {state}), p2ps {}\n--- stdout ---\n{}\n--- stderr (last 60 lines) \
             ---\n{tail}\n---",
            self.name,
            self.child.id(),
            self.args.join(" "),
            self.stdout().join("\n"),
        )
    }

    /// The exit status, if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exit = Some(s);
            }
        }
        self.exit
    }

    /// The address of the node's HTTP interface (`--http`), from the line it prints
    /// (`http: http://ADDR`), waiting up to `timeout` for it.
    pub fn http_addr(&mut self, timeout: Duration) -> std::net::SocketAddr {
        let line = self.wait_line(timeout, "`http: …`", |l| l.starts_with("http: http://"));
        match line.trim_start_matches("http: http://").parse() {
            Ok(a) => a,
            Err(e) => panic!("{line:?} names no address: {e}"),
        }
    }

    /// Waits up to `timeout` for a stdout line satisfying `pred`; panics (with the node's
    /// output) if none comes or the process ends first.
    pub fn wait_line(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stdout().into_iter().find(|l| pred(l)) {
                return l;
            }
            let exited = self.try_exit().is_some();
            if exited || Instant::now() >= deadline {
                // The reader thread may still be draining the last lines of an ended process.
                std::thread::sleep(Duration::from_millis(100));
                if let Some(l) = self.stdout().into_iter().find(|l| pred(l)) {
                    return l;
                }
                let d = self.describe();
                panic!("no stdout line {what} within {timeout:?}\n{d}");
            }
            let guard = self.stdout.lines.lock();
            if let Ok(g) = guard {
                let _ = self.stdout.more.wait_timeout(g, Duration::from_millis(50));
            }
        }
    }

    /// The node id it printed (`id: <64 hex>`).
    pub fn id(&mut self) -> NodeId {
        let line = self.wait_line(Duration::from_secs(20), "`id: …`", |l| {
            l.starts_with("id: ")
        });
        line["id: ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("node {} printed a bad id line {line:?}: {e}", self.name))
    }

    /// Waits (up to `timeout`) for its ticket file, written once it is part of a network.
    pub fn wait_ticket(&mut self, timeout: Duration) -> String {
        let path = self.ticket_file.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(t) = std::fs::read_to_string(&path) {
                let t = t.trim().to_string();
                if t.starts_with("p2ps1") {
                    return t;
                }
            }
            if self.try_exit().is_some() || Instant::now() >= deadline {
                let d = self.describe();
                panic!(
                    "node {} wrote no ticket to {} within {timeout:?}\n{d}",
                    self.name,
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends one control request (a JSON value) and returns the `result`, or the node's
    /// error text.
    pub fn request(&self, req: &serde_json::Value) -> Result<serde_json::Value, String> {
        control_request(&self.control, req)
    }

    /// The node's status; panics with the node's output if it cannot be had.
    pub fn status(&mut self) -> Status {
        let r = self.request(&serde_json::json!({"op": "status"}));
        match r.and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string())) {
            Ok(s) => s,
            Err(e) => {
                let d = self.describe();
                panic!("status of node {} failed: {e}\n{d}", self.name)
            }
        }
    }

    /// Looks up every text key (hashed with `key_of`) in one batch and returns the responsible
    /// nodes in order; panics if any lookup fails.
    pub fn lookup_many(&mut self, keys: &[String]) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let r = self.request(&serde_json::json!({"op": "lookup_many", "keys": chunk}));
            let v = match r {
                Ok(v) => v,
                Err(e) => {
                    let d = self.describe();
                    panic!("lookup_many at node {} failed: {e}\n{d}", self.name)
                }
            };
            let items = v.as_array().cloned().unwrap_or_default();
            assert_eq!(items.len(), chunk.len(), "node {}: answers {v}", self.name);
            for (item, key) in items.iter().zip(chunk) {
                let node = item
                    .get("node")
                    .and_then(|n| n.as_str())
                    .and_then(|n| n.parse().ok());
                match node {
                    Some(n) => out.push(n),
                    None => {
                        let d = self.describe();
                        panic!("node {}: lookup of {key:?} failed: {item}\n{d}", self.name)
                    }
                }
            }
        }
        out
    }

    /// Runs the client subcommand `p2ps <args> --control <this node's socket>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut v: Vec<&str> = args.to_vec();
        let control = path_str(&self.control);
        v.push("--control");
        v.push(&control);
        run_p2ps(&v, Duration::from_secs(60))
    }

    /// Like [`NodeProc::cli`], with `stdin` fed to the command and `env` added to its
    /// environment.
    pub fn cli_with(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
        let mut v: Vec<&str> = args.to_vec();
        let control = path_str(&self.control);
        v.push("--control");
        v.push(&control);
        run_p2ps_with(&v, stdin, env, Duration::from_secs(60))
    }

    /// Sends a signal (TERM or KILL).
    fn signal(&self, sig: rustix::process::Signal) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// SIGTERM: the node should leave gracefully and exit 0.
    pub fn terminate(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// SIGINT (as Ctrl-C): the node should leave gracefully and exit 0.
    pub fn interrupt(&self) {
        self.signal(rustix::process::Signal::INT);
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            self.signal(rustix::process::Signal::KILL);
            if let Ok(s) = self.child.wait() {
                self.exit = Some(s);
            }
        }
    }

    /// Waits up to `timeout` for the process to end; panics with its output if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            if Instant::now() >= deadline {
                let d = self.describe();
                panic!("node {} did not exit within {timeout:?}\n{d}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request to the control socket at `path`: the `result`, or the node's error text (or
/// why the socket could not be used).
pub fn control_request(path: &Path, req: &serde_json::Value) -> Result<serde_json::Value, String> {
    let raw = control_raw(path, &format!("{req}\n"))?;
    let v: serde_json::Value =
        serde_json::from_str(raw.trim()).map_err(|e| format!("malformed answer {raw:?}: {e}"))?;
    if v.get("ok").and_then(|o| o.as_bool()) == Some(true) {
        Ok(v.get("result").cloned().unwrap_or(serde_json::Value::Null))
    } else {
        Err(v
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no error text")
            .to_string())
    }
}

/// Writes `bytes` to the control socket at `path` and returns the answer line as is.
pub fn control_raw(path: &Path, bytes: &str) -> Result<String, String> {
    let s = UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
    let t = Some(Duration::from_secs(60));
    s.set_read_timeout(t).map_err(|e| e.to_string())?;
    s.set_write_timeout(t).map_err(|e| e.to_string())?;
    (&s).write_all(bytes.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    Ok(line)
}

/// The ring as it should be for the nodes `ids`, from their ids alone.
pub fn true_ring(ids: &[NodeId]) -> TrueRing<NodeId> {
    ids.iter()
        .map(|id| (p2ps::id::ring_id_of(id), *id))
        .collect()
}

/// The node responsible for `key` among `ids`: the first at or after `key` clockwise.
pub fn responsible(ids: &[NodeId], key: RingId) -> NodeId {
    true_ring(ids)
        .responsible(key)
        .unwrap_or_else(|| panic!("no nodes to be responsible for {key}"))
}

/// `n` random text keys.
pub fn random_keys(n: usize) -> Vec<String> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| format!("key-{:016x}", rng.gen::<u64>()))
        .collect()
}

/// Waits (up to `timeout`) until every node is joined and its nearest successor and
/// predecessor are the true ones among exactly these nodes; panics with the lists if not.
pub fn wait_ring(nodes: &mut [&mut NodeProc], timeout: Duration) {
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();
    let truth = true_ring(&ids);
    let first = |v: &[NodeId]| {
        v.first()
            .map_or_else(|| "none".to_string(), |i| i.short().to_string())
    };
    let deadline = Instant::now() + timeout;
    loop {
        let mut wrong = Vec::new();
        for n in nodes.iter_mut() {
            let s = n.status();
            let succ = truth.successors(&s.id, 1);
            let pred = truth.predecessors(&s.id, 1);
            if s.state != NodeState::Joined
                || s.successors.first() != succ.first()
                || s.predecessors.first() != pred.first()
            {
                wrong.push(format!(
                    "{} ({}): state {}, successors {:?} (want {}), predecessors {:?} (want {})",
                    n.name,
                    s.id.short(),
                    s.state,
                    s.successors
                        .iter()
                        .map(|i| i.short().to_string())
                        .collect::<Vec<_>>(),
                    first(&succ),
                    s.predecessors
                        .iter()
                        .map(|i| i.short().to_string())
                        .collect::<Vec<_>>(),
                    first(&pred)
                ));
            }
        }
        if wrong.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "the ring did not settle within {timeout:?}:\n{}",
                wrong.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asks every node who holds each key (in parallel, one batch per node) and checks that all
/// agree, that the answer is the true one among `nodes`, and that nobody names a node outside
/// them. Panics with the first disagreements.
pub fn check_lookups(nodes: &mut [&mut NodeProc], keys: &[String]) {
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();
    let live: BTreeSet<NodeId> = ids.iter().copied().collect();
    let expected: Vec<NodeId> = keys
        .iter()
        .map(|k| responsible(&ids, p2ps::key_of(k)))
        .collect();
    let answers: Vec<(String, Vec<NodeId>)> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter_mut()
            .map(|n| s.spawn(move || (n.name.clone(), n.lookup_many(keys))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a lookup thread panicked (see above)"))
            })
            .collect()
    });
    // A node that has just seen a neighbour join can name the old holder for a moment (its
    // proof of responsibility is still fresh): a disagreeing lookup is asked once more, two
    // seconds later, and only an answer that stays wrong counts.
    let wrong: Vec<(usize, usize)> = answers
        .iter()
        .enumerate()
        .flat_map(|(n, (_, got))| {
            got.iter()
                .zip(&expected)
                .enumerate()
                .filter(|(_, (g, want))| g != want)
                .map(move |(i, _)| (n, i))
        })
        .collect();
    let mut answers = answers;
    if !wrong.is_empty() {
        std::thread::sleep(Duration::from_secs(2));
        for (n, i) in wrong {
            let again = nodes[n].lookup_many(std::slice::from_ref(&keys[i]));
            if let Some(a) = again.first() {
                answers[n].1[i] = *a;
            }
        }
    }
    let mut bad = Vec::new();
    for (name, got) in &answers {
        for (i, (g, want)) in got.iter().zip(&expected).enumerate() {
            if g != want {
                let note = if live.contains(g) {
                    ""
                } else {
                    " — not a live node!"
                };
                bad.push(format!(
                    "{name}: key {:?} ({}): answered {}{note}, expected {}",
                    keys[i],
                    p2ps::key_of(&keys[i]),
                    g.short(),
                    want.short()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} lookups disagree with the ring; first ones:\n{}",
        bad.len(),
        keys.len() * answers.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
