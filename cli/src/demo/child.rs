//! The crash step's victim: `p2ps node`, run from this very program in a child process with
//! its own scratch directory (key, control socket, ticket and log), and killed when dropped so
//! that no child outlives the demo.

use super::crash::CRASH_CHECK;
use super::output::short_ticket;
use super::Demo;
use anyhow::{Context, Result};
use p2ps::{NodeId, Ticket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The child node the crash step kills.
pub(super) struct Victim {
    /// The child process (dropped first: killed before its directory goes).
    pub(super) child: ChildGuard,
    /// Its scratch directory.
    _dir: TempDir,
    /// Its node id, from the ticket it wrote.
    pub(super) id: NodeId,
    /// When it was started.
    pub(super) spawned: Instant,
}

impl Demo {
    /// Starts `exe node` (whose `--help` text is `help`) joining through a random live node, and
    /// waits up to 20 s for the ticket it writes. If it exits or writes none, records the crash
    /// check as failed and returns `None`.
    pub(super) async fn start_victim(&mut self, exe: &Path, help: &str) -> Result<Option<Victim>> {
        // Start the victim as a child process joining through a random live node.
        let live_idx = self.live_idx();
        let via = live_idx[self.rng.below(live_idx.len())];
        let ticket = self.nodes[via].ticket();
        let dir = TempDir::new()?;
        let ticket_file = dir.0.join("child.ticket");
        let log_file = dir.0.join("child.log");
        let log = std::fs::File::create(&log_file).context("creating the child's log file")?;
        let log2 = log
            .try_clone()
            .context("cloning the child's log file handle")?;
        let mut cmd = Command::new(exe);
        cmd.arg("node")
            .args(["--join", &ticket.to_string()])
            .args(["--listen", "127.0.0.1:0"])
            .arg("--ticket-file")
            .arg(&ticket_file);
        // Options `p2ps node` takes are passed when its help lists them: its own key file and
        // control socket (never a user's default ones), a name, and the demo's short intervals.
        let key_file = dir.0.join("child.key");
        let control = dir.0.join("child.sock");
        let optional: [(&str, &std::ffi::OsStr); 7] = [
            ("--key", key_file.as_os_str()),
            ("--control", control.as_os_str()),
            ("--name", "demo-crash-victim".as_ref()),
            ("--stabilize-interval-ms", "300".as_ref()),
            ("--stabilize-timeout-ms", "1500".as_ref()),
            ("--finger-refresh-ms", "5000".as_ref()),
            ("--idle-timeout-ms", "2000".as_ref()),
        ];
        for (opt, value) in optional {
            if help.contains(&format!("{opt} ")) || help.contains(&format!("{opt}=")) {
                cmd.arg(opt).arg(value);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let t_spawn = Instant::now();
        let mut child = ChildGuard(Some(cmd.spawn().context("starting the child node")?));
        self.p.say(format!(
            "started a child process `p2ps node --join {} --listen 127.0.0.1:0 --ticket-file \
             …` (pid {})",
            short_ticket(&ticket),
            child.0.as_ref().map(Child::id).unwrap_or(0)
        ));

        // Its ticket names it.
        let victim = loop {
            if let Ok(s) = std::fs::read_to_string(&ticket_file) {
                if let Ok(t) = s.trim().parse::<Ticket>() {
                    break Some(t);
                }
            }
            if let Some(st) = child.exited() {
                self.check(
                    CRASH_CHECK,
                    false,
                    t_spawn.elapsed(),
                    format!(
                        "the child node exited ({st}) before writing its ticket: {}",
                        tail(&log_file)
                    ),
                );
                return Ok(None);
            }
            if t_spawn.elapsed() > Duration::from_secs(20) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let Some(victim) = victim else {
            self.check(
                CRASH_CHECK,
                false,
                t_spawn.elapsed(),
                format!("the child wrote no ticket within 20 s: {}", tail(&log_file)),
            );
            return Ok(None);
        };
        Ok(Some(Victim {
            child,
            _dir: dir,
            id: victim.id,
            spawned: t_spawn,
        }))
    }
}

/// Kills its child process (SIGKILL on Unix) when dropped, so no child outlives the demo.
pub(super) struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Kills the child (SIGKILL) and reaps it.
    pub(super) fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.0.take() {
            c.kill().context("killing the child node")?;
            c.wait().context("reaping the child node")?;
        }
        Ok(())
    }

    /// How the child ended, if it has.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `exe node --help` (bounded to 10 s) and returns its text if `p2ps node` takes the
/// options the crash step needs, or why not.
pub(super) fn probe_node_command(exe: &Path) -> std::result::Result<String, String> {
    let mut child = Command::new(exe)
        .args(["node", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("`p2ps node --help` did not finish in 10 s".into());
            }
            Err(e) => return Err(format!("waiting for `p2ps node --help`: {e}")),
        }
    };
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
    }
    if !status.success() {
        return Err(format!("`p2ps node --help` exited with {status}"));
    }
    let missing: Vec<&str> = ["--join", "--listen", "--ticket-file"]
        .into_iter()
        .filter(|o| !text.contains(o))
        .collect();
    if !missing.is_empty() {
        return Err(format!("`p2ps node` has no {}", missing.join(", ")));
    }
    Ok(text)
}

/// A scratch directory for the child's ticket and log files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory under the system's temporary directory.
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("p2ps-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The last five lines of the file at `path` (the child's log), joined for one line.
fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
