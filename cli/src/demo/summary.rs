//! The demo's outcome: each check's result, the summary `--json` prints, and its text form.

use super::{Demo, DemoArgs};
use serde::Serialize;

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Check {
    /// What was checked.
    pub(super) name: String,
    /// `pass`, `fail` or `skip`.
    pub(super) result: &'static str,
    /// Time the step took, in seconds.
    pub(super) secs: f64,
    /// What was seen.
    pub(super) detail: String,
}

/// What `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Summary {
    /// Nodes started.
    nodes: usize,
    /// The `--seed` of the run.
    seed: u64,
    /// Checks passed.
    passed: usize,
    /// Checks failed.
    pub(super) failed: usize,
    /// Checks skipped.
    skipped: usize,
    /// Duration of the whole run, in seconds.
    total_secs: f64,
    /// From the first start until the ring formed, in seconds.
    formation_secs: Option<f64>,
    /// Mean hops of the first round of lookups.
    lookup_hops_mean: Option<f64>,
    /// Most hops a lookup of that round took.
    lookup_hops_max: Option<u16>,
    /// Median latency of that round, in microseconds.
    lookup_p50_us: Option<f64>,
    /// Median smoothed QUIC RTT over all connections, in milliseconds.
    median_rtt_ms: Option<f64>,
    /// From the graceful leave until both neighbours saw it, in seconds.
    leave_detect_secs: Option<f64>,
    /// From the graceful leave until the ring was repaired, in seconds.
    leave_repair_secs: Option<f64>,
    /// From the kill until both neighbours detected the crash, in seconds.
    crash_detect_secs: Option<f64>,
    /// From the kill until the ring was repaired, in seconds.
    crash_repair_secs: Option<f64>,
    /// Every check, in order.
    pub(super) checks: Vec<Check>,
}

impl Demo {
    /// The summary of the checks done so far.
    pub(super) fn summary(self, args: &DemoArgs) -> Summary {
        let count = |r: &str| self.checks.iter().filter(|c| c.result == r).count();
        Summary {
            nodes: args.nodes,
            seed: args.seed,
            passed: count("pass"),
            failed: count("fail"),
            skipped: count("skip"),
            total_secs: self.p.elapsed().as_secs_f64(),
            formation_secs: self.summary_formation,
            lookup_hops_mean: self.summary_hops.map(|h| h.0),
            lookup_hops_max: self.summary_hops.map(|h| h.1),
            lookup_p50_us: self.summary_hops.map(|h| h.2),
            median_rtt_ms: self.summary_rtt,
            leave_detect_secs: self.leave_times.0,
            leave_repair_secs: self.leave_times.1,
            crash_detect_secs: self.crash_times.0,
            crash_repair_secs: self.crash_times.1,
            checks: self.checks,
        }
    }
}

/// Prints the summary as a table of checks and a few lines of numbers.
pub(super) fn print_summary(s: &Summary) {
    println!();
    println!("{:<32} {:<6} {:>8}  detail", "check", "result", "time");
    println!("{}", "-".repeat(100));
    for c in &s.checks {
        println!(
            "{:<32} {:<6} {:>7.2}s  {}",
            c.name,
            c.result.to_uppercase(),
            c.secs,
            c.detail
        );
    }
    println!("{}", "-".repeat(100));
    let opt = |x: Option<f64>, unit: &str| {
        x.map(|v| format!("{v:.2} {unit}"))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "{} passed, {} failed, {} skipped; {} nodes, total {:.1} s",
        s.passed, s.failed, s.skipped, s.nodes, s.total_secs
    );
    println!(
        "ring formed after {}; lookup hops mean {} max {}; lookup p50 {}; median QUIC RTT {}",
        opt(s.formation_secs, "s"),
        s.lookup_hops_mean
            .map(|h| format!("{h:.2}"))
            .unwrap_or_else(|| "n/a".into()),
        s.lookup_hops_max
            .map(|h| h.to_string())
            .unwrap_or_else(|| "n/a".into()),
        opt(s.lookup_p50_us, "µs"),
        opt(s.median_rtt_ms, "ms")
    );
    println!(
        "leave: seen after {}, repaired after {}; crash: detected after {}, repaired after {}",
        opt(s.leave_detect_secs, "s"),
        opt(s.leave_repair_secs, "s"),
        opt(s.crash_detect_secs, "s"),
        opt(s.crash_repair_secs, "s")
    );
}
