//! The OpenDHT side of `p2ps bench cluster --opendht`: a network of OpenDHT nodes on loopback
//! in one Python process (Debian's `python3-opendht` under `/usr/bin/python3`, driven by
//! `cli/bench/opendht_bench.py`, embedded here), on the same keys and values, with the same
//! number of requests in flight; and the side-by-side comparison with our numbers.
//!
//! OpenDHT runs with its request rate limits off and its defaults otherwise (8 replicas found
//! by an iterative Kademlia search, values unsigned since its nodes have no identity); its
//! numbers are what `put` and `get` of `opendht.DhtRunner` give a Python caller, callbacks
//! included. Its network runs after ours has shut down, so neither shares the machine with
//! the other.

use super::dict::DictReport;
use super::workload::Workload;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The interpreter Debian's python3-opendht is built for.
pub(super) const PYTHON: &str = "/usr/bin/python3";
/// The driver script.
const SCRIPT: &str = include_str!("../../bench/opendht_bench.py");
/// Put and get p50 target: ours at most this fraction of OpenDHT's.
pub(super) const LATENCY_FACTOR: f64 = 0.5;
/// Operations per second target: ours at least this many times OpenDHT's.
pub(super) const RATE_FACTOR: f64 = 5.0;
/// Longest the OpenDHT process may run.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Checks that `python3-opendht` can be imported; its version.
pub(super) fn check() -> Result<String> {
    let probe = "import importlib.metadata as m, opendht; print(m.version('opendht'))";
    let out = Command::new(PYTHON)
        .args(["-c", probe])
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "--opendht runs OpenDHT under {PYTHON}, which could not be started; install \
                 Debian's python3-opendht (`apt-get install python3-opendht`) or leave out \
                 --opendht"
            )
        })?;
    if !out.status.success() {
        bail!(
            "python3-opendht is not installed: `import opendht` failed under {PYTHON} ({}). \
             Install it with `apt-get install python3-opendht` (Debian), or leave out --opendht",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no error message")
                .trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Latency quantiles as the driver reports them, µs.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(super) struct Quantiles {
    /// Median.
    pub(super) p50_us: f64,
    /// 90th percentile.
    pub(super) p90_us: f64,
    /// 99th percentile.
    pub(super) p99_us: f64,
    /// Slowest.
    pub(super) max_us: f64,
}

/// How the gets of the one-at-a-time pass ended.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(super) struct GetOutcomes {
    /// The first value handed back was the one put.
    pub(super) correct: usize,
    /// Another value.
    pub(super) wrong: usize,
    /// The get ended without a value.
    pub(super) missing: usize,
    /// No value and no end of the get in time.
    pub(super) timeout: usize,
}

/// OpenDHT, one request at a time.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(super) struct OneInFlight {
    /// Puts planned, started, stored (done callback with success), failed.
    pub(super) puts_planned: usize,
    /// Puts started.
    pub(super) puts_asked: usize,
    /// Puts whose done callback reported success.
    pub(super) puts_ok: usize,
    /// Puts that failed or timed out.
    pub(super) puts_failed: usize,
    /// From `put` to its done callback.
    pub(super) put: Quantiles,
    /// Gets started.
    pub(super) gets_asked: usize,
    /// How they ended.
    pub(super) gets: GetOutcomes,
    /// From `get` to the first value (then the get is stopped).
    pub(super) get_first_value: Quantiles,
    /// From `get` to OpenDHT's end of it (its done callback).
    pub(super) get_done: Quantiles,
}

/// OpenDHT, many requests in flight.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(super) struct ManyInFlight {
    /// "put" or "get".
    pub(super) kind: String,
    /// Requests outstanding at once.
    pub(super) in_flight: usize,
    /// Requests started.
    pub(super) issued: usize,
    /// How they ended: "ok"/"failed" for puts, "correct"/"wrong"/"missing" for gets.
    pub(super) outcomes: std::collections::BTreeMap<String, usize>,
    /// Started and not ended when the driver stopped waiting.
    pub(super) unfinished: usize,
    /// From the first start to the last end, seconds.
    pub(super) secs: f64,
    /// From the first start to the last start, seconds.
    pub(super) loaded_secs: f64,
    /// Good answers within `loaded_secs`, per second (as ours are counted).
    pub(super) ops_per_sec: f64,
}

/// What the driver measured.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(super) struct OpenDhtRun {
    /// OpenDHT nodes.
    pub(super) nodes: usize,
    /// From the first start until the network was settled and warmed up, seconds.
    pub(super) network_secs: f64,
    /// Of which the wait for routing tables to fill, seconds.
    pub(super) settle_secs: f64,
    /// Fewest nodes that answered in one node's routing table.
    pub(super) good_nodes_min: i64,
    /// Mean of the same.
    pub(super) good_nodes_mean: f64,
    /// One request at a time.
    pub(super) one_in_flight: OneInFlight,
    /// Puts with many in flight.
    pub(super) many_puts: ManyInFlight,
    /// Gets with many in flight.
    pub(super) many_gets: ManyInFlight,
}

impl OpenDhtRun {
    /// Every OpenDHT operation succeeded and every read returned the value put.
    pub(super) fn all_correct(&self) -> bool {
        let one = &self.one_in_flight;
        let good = |m: &ManyInFlight, what: &str| {
            m.outcomes.get(what).copied().unwrap_or(0) == m.issued && m.unfinished == 0
        };
        one.puts_ok == one.puts_planned
            && one.gets.correct == one.puts_planned
            && good(&self.many_puts, "ok")
            && good(&self.many_gets, "correct")
            && self.many_gets.issued == self.many_puts.issued
    }
}

/// Ours against OpenDHT's, with the targets.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Comparison {
    /// `python3-opendht`'s version.
    pub(super) version: String,
    /// OpenDHT's numbers.
    pub(super) opendht: OpenDhtRun,
    /// Every OpenDHT operation succeeded and every read returned the value put.
    pub(super) opendht_all_correct: bool,
    /// Put p50 one at a time, ours / OpenDHT's; the target is <= LATENCY_FACTOR.
    pub(super) put_ratio: f64,
    /// Whether the put target is met.
    pub(super) put_pass: bool,
    /// Get p50 one at a time, ours / OpenDHT's time to the first value; the target is <=
    /// LATENCY_FACTOR.
    pub(super) get_ratio: f64,
    /// Whether the get target is met.
    pub(super) get_pass: bool,
    /// Puts/s with many in flight, ours / OpenDHT's; the target is >= RATE_FACTOR.
    pub(super) puts_rate_ratio: f64,
    /// Whether the puts/s target is met.
    pub(super) puts_rate_pass: bool,
    /// Gets/s with many in flight, ours / OpenDHT's; the target is >= RATE_FACTOR.
    pub(super) gets_rate_ratio: f64,
    /// Whether the gets/s target is met.
    pub(super) gets_rate_pass: bool,
}

impl Comparison {
    /// Ours (`d`) against OpenDHT's (`o`).
    pub(super) fn new(version: String, d: &DictReport, o: OpenDhtRun) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
        let one = &o.one_in_flight;
        let put_ratio = ratio(d.put.p50_us, one.put.p50_us);
        let get_ratio = ratio(d.get.p50_us, one.get_first_value.p50_us);
        let puts_rate_ratio = ratio(d.many_puts.per_sec, o.many_puts.ops_per_sec);
        let gets_rate_ratio = ratio(d.many_gets.per_sec, o.many_gets.ops_per_sec);
        Comparison {
            version,
            opendht_all_correct: o.all_correct(),
            put_pass: d.put.good > 0 && put_ratio <= LATENCY_FACTOR,
            get_pass: d.get.good > 0 && get_ratio <= LATENCY_FACTOR,
            puts_rate_pass: puts_rate_ratio >= RATE_FACTOR,
            gets_rate_pass: gets_rate_ratio >= RATE_FACTOR,
            put_ratio,
            get_ratio,
            puts_rate_ratio,
            gets_rate_ratio,
            opendht: o,
        }
    }
}

/// What the driver is asked to do.
#[derive(Serialize)]
struct Request<'a> {
    nodes: usize,
    seed: u64,
    one_in_flight: &'a [(String, String)],
    many_in_flight: &'a [(String, String)],
    in_flight: usize,
    op_timeout_secs: f64,
    phase_secs: f64,
    run_secs: f64,
}

/// Runs the driver: `nodes` OpenDHT nodes, workload `w`, `in_flight` requests outstanding in
/// the many-in-flight passes. Blocks (run it off the async runtime's workers).
pub(super) fn run(nodes: usize, w: &Workload, in_flight: usize, seed: u64) -> Result<OpenDhtRun> {
    let request = serde_json::to_vec(&Request {
        nodes,
        seed,
        one_in_flight: &w.one,
        many_in_flight: &w.many,
        in_flight,
        op_timeout_secs: 10.0,
        phase_secs: 120.0,
        run_secs: RUN_LIMIT.as_secs_f64() - 60.0,
    })
    .context("encoding the request to the OpenDHT driver")?;
    let mut child = Command::new(PYTHON)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting the OpenDHT driver under {PYTHON}"))?;
    let mut stdin = child.stdin.take().context("the driver's stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&request));
    let mut stdout = child.stdout.take().context("the driver's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the OpenDHT driver")? {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            // Ours to end: we started it.
            let _ = child.kill();
            let _ = child.wait();
            bail!("the OpenDHT driver did not finish within {RUN_LIMIT:?}; stopped it");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wrote = writer.join();
    let out = match reader.join() {
        Ok(r) => r.context("reading the OpenDHT driver's output")?,
        Err(_) => bail!("the thread reading the OpenDHT driver's output failed"),
    };
    if !status.success() {
        bail!(
            "the OpenDHT driver failed ({status}); its last output: {}",
            out.lines().last().unwrap_or("(none)")
        );
    }
    if !matches!(wrote, Ok(Ok(()))) {
        bail!("could not hand the workload to the OpenDHT driver");
    }
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("the OpenDHT driver printed no JSON")?;
    serde_json::from_str(line).context("reading the OpenDHT driver's JSON")
}
