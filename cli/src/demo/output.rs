//! How the demo and `p2ps bench cluster` talk to the user: progress lines stamped with the
//! time, and the final outcome as text or JSON.

use anyhow::{Context, Result};
use p2ps::Ticket;
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

/// Runs `work` on a new multi-threaded runtime, then prints its outcome: as JSON on stdout with
/// `json` (`what` names it in errors), else with `print`.
pub(crate) fn run_and_print<T: Serialize>(
    work: impl std::future::Future<Output = Result<T>>,
    json: bool,
    what: &str,
    print: fn(&T),
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let out = rt.block_on(work)?;
    drop(rt);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).with_context(|| format!("encoding the {what}"))?
        );
    } else {
        print(&out);
    }
    Ok(out)
}

/// A ticket in short form for progress lines: `p2ps1abcdefgh…wxyz (118 chars)`.
pub(crate) fn short_ticket(t: &Ticket) -> String {
    let s = t.to_string();
    match (s.get(..13), s.get(s.len().saturating_sub(4)..)) {
        (Some(head), Some(tail)) if s.len() > 20 => format!("{head}…{tail} ({} chars)", s.len()),
        _ => s,
    }
}

/// Progress lines stamped with the time since the start.
pub(crate) struct Progress {
    start: Instant,
    to_stderr: bool,
}

impl Progress {
    /// Progress lines from now on, on stderr if `to_stderr` (else on stdout).
    pub(crate) fn new(to_stderr: bool) -> Self {
        Progress {
            start: Instant::now(),
            to_stderr,
        }
    }

    /// Time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Prints `msg` on one line, stamped with the time since the start.
    pub(crate) fn say(&self, msg: impl AsRef<str>) {
        let line = format!(
            "[{:>5.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            msg.as_ref()
        );
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    }
}
