//! `p2ps demo`: a whole network on loopback in one process, every primitive exercised and
//! checked against ground truth.
//!
//! N nodes start on 127.0.0.1, each with a fresh key, its own UDP socket and QUIC endpoint
//! (`p2ps::Node::start`). Node 0 creates the network and the others join through tickets of
//! nodes already in. Then the demo checks, with bounded waits, that:
//!
//! - the ring forms: every node's successor and predecessor (and then whole lists) are the true
//!   ones, computed from the node ids alone;
//! - lookups from random nodes name the node whose ring position is the first at or after the
//!   key (wrapping);
//! - `send` to a node id and `route` to a key are delivered to the right node, once;
//! - a broadcast reaches every other node once, and a group message exactly the members;
//! - a graceful leave (`leave` + `shutdown`) is seen by the leaver's neighbours and repaired;
//! - a crash (SIGKILL of a child process running `p2ps node`) is detected and repaired;
//! - every node shuts down cleanly.
//!
//! This file holds the demo's state and the order of its steps; each step lives in the module
//! named for it: `start` (nodes start and join), `formation` (the ring forms), `status`,
//! `lookups`, `send_route` (send, route, no stray deliveries), `cast` (broadcast and groups),
//! `leave`, `crash` (with the victim's child process in `child`), what both departures check
//! in `departure`, and `shutdown`. The events the checks wait for are collected in `events`;
//! the outcome is printed by `summary`. The parts `p2ps bench cluster` shares (progress lines
//! and output in `output`, the seeded choices in `rng`, ring checks in `ring_check`, lookup
//! rounds in `lookups`, `stats`) are public to the crate.

mod cast;
mod child;
mod crash;
mod departure;
mod dictionary;
mod events;
mod formation;
mod leave;
pub(crate) mod lookups;
pub(crate) mod output;
pub(crate) mod ring_check;
pub(crate) mod rng;
mod send_route;
mod shutdown;
mod start;
pub(crate) mod stats;
mod status;
mod summary;

use anyhow::{bail, Result};
use events::EventLog;
use output::{run_and_print, Progress};
use p2ps::{Node, NodeId};
use ring_check::true_ring;
use rng::Rng;
use std::time::{Duration, Instant};
use summary::{print_summary, Check, Summary};

/// Arguments of `p2ps demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Nodes to start in this process (at least 4: one leaves, one more crashes).
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    /// Seed for the demo's choices (keys, which node asks, who leaves); node keys are always
    /// fresh, so ring positions differ between runs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lookups per lookup check.
    #[arg(long, default_value_t = 200)]
    pub lookups: usize,
    /// Skip the crash step (which re-executes this binary as `p2ps node` in a child process).
    #[arg(long)]
    pub no_crash: bool,
    /// Print the summary as JSON on stdout (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Bound on each round of lookups in the demo.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// Runs the demo; fails (non-zero exit) if any check fails.
pub fn run(args: DemoArgs) -> Result<()> {
    if args.nodes < 4 {
        bail!("--nodes must be at least 4 (one node leaves and one more crashes)");
    }
    if args.lookups == 0 {
        bail!("--lookups must be at least 1");
    }
    let summary = run_and_print(demo(&args), args.json, "summary", print_summary)?;
    if summary.failed > 0 {
        bail!(
            "{} of {} checks failed",
            summary.failed,
            summary.checks.len()
        );
    }
    Ok(())
}

/// The demo's state: its nodes and which still run, the seeded choices, the checks so far and
/// the numbers for the summary.
struct Demo {
    p: Progress,
    rng: Rng,
    checks: Vec<Check>,
    nodes: Vec<Node>,
    alive: Vec<bool>,
    events: EventLog,
    list_len: usize,
    summary_formation: Option<f64>,
    summary_hops: Option<(f64, u16, f64)>,
    summary_rtt: Option<f64>,
    leave_times: (Option<f64>, Option<f64>),
    crash_times: (Option<f64>, Option<f64>),
}

impl Demo {
    /// A demo of no nodes yet, announced on the progress lines.
    fn new(args: &DemoArgs) -> Self {
        let p = Progress::new(args.json);
        p.say(format!(
            "p2ps demo: {} nodes on 127.0.0.1 in this process, seed {} (stabilize every 300 ms, \
             QUIC idle timeout 2 s)",
            args.nodes, args.seed
        ));
        Demo {
            p,
            rng: Rng::new(args.seed),
            checks: Vec::new(),
            nodes: Vec::new(),
            alive: Vec::new(),
            events: EventLog::new(),
            list_len: p2ps_overlay::Config::default().list_len,
            summary_formation: None,
            summary_hops: None,
            summary_rtt: None,
            leave_times: (None, None),
            crash_times: (None, None),
        }
    }

    /// Records a check's outcome and prints it on a progress line.
    fn check(&mut self, name: &str, ok: bool, took: Duration, detail: String) {
        let result = if ok { "pass" } else { "fail" };
        self.p.say(format!(
            "{} {name}: {detail}",
            if ok { "PASS" } else { "FAIL" }
        ));
        self.checks.push(Check {
            name: name.into(),
            result,
            secs: took.as_secs_f64(),
            detail,
        });
    }

    /// Records a skipped check and why.
    fn skip(&mut self, name: &str, detail: String) {
        self.p.say(format!("SKIP {name}: {detail}"));
        self.checks.push(Check {
            name: name.into(),
            result: "skip",
            secs: 0.0,
            detail,
        });
    }

    /// The nodes still running (joined, not left or crashed).
    fn live(&self) -> Vec<Node> {
        self.nodes
            .iter()
            .zip(&self.alive)
            .filter(|(_, a)| **a)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The indices (in `nodes`) of the nodes still running.
    fn live_idx(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.alive[*i]).collect()
    }

    /// The index (in `nodes`) of node `id`.
    fn idx_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id() == *id)
    }
}

async fn demo(args: &DemoArgs) -> Result<Summary> {
    let mut d = Demo::new(args);
    let outcome = steps(&mut d, args).await;
    // Whatever happened, every node still running is shut down.
    let shut = d.shutdown_all().await;
    d.events.stop();
    outcome?;
    shut?;
    Ok(d.summary(args))
}

/// The demo's steps, in order; each records its checks. A step returns an error only when the
/// demo cannot go on.
async fn steps(d: &mut Demo, args: &DemoArgs) -> Result<()> {
    let t_start = Instant::now();
    d.start_and_join(args, t_start).await?;
    let live = d.live();
    let truth = true_ring(live.iter().map(Node::id));
    d.check_formation(&live, &truth, args.nodes, t_start)
        .await?;
    d.check_status(&live).await?;
    d.check_lookups(&live, &truth, args).await;
    d.check_send(&live).await;
    d.check_route(&live, &truth, args).await?;
    d.check_no_strays(&live).await;
    d.cast_checks(&live).await;
    d.dictionary_checks(&live).await;
    let leaver = d.leave_step(&truth, args).await?;
    if args.no_crash {
        d.skip("crash detected and repaired", "--no-crash given".into());
    } else {
        d.crash_step(args, leaver).await?;
    }
    d.dictionary_after_crash().await;
    Ok(())
}
