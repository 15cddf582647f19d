//! `p2ps top`: a live view of one running node, redrawn every second: its neighbours,
//! connections by path, message and byte rates (differences of its counters), lookup latency
//! (the median of the lookups of the last ten seconds, from its metrics' histogram), and what
//! its dictionary and watcher hold.
//!
//! Plain ANSI (home the cursor, clear the screen, print the frame): the view is a dozen lines
//! redrawn whole, with no keys to read (Ctrl-C ends it), which a terminal UI crate (crossterm,
//! ratatui) would not make better. `--once` prints one frame (two samples a second apart, so
//! that the rates are real) and exits; `--json` prints frames as JSON lines.

use crate::control::client::ControlOpts;
use crate::control::protocol::Request;
use crate::control::render::{print_json, write_stdout};
use anyhow::{Context, Result};
use p2ps::Status;
use serde::Serialize;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Arguments of `p2ps top`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  p2ps top\n  p2ps top --once\n  p2ps top --json --once")]
pub struct TopArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// Print one frame (sampled over one interval) and exit.
    #[arg(long)]
    once: bool,
    /// Print each frame as one line of JSON instead of drawing it.
    #[arg(long)]
    json: bool,
    /// Time between frames, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    interval_ms: u64,
}

/// Lookup latency over this many frames.
const LATENCY_WINDOW: usize = 10;

/// One sample of the node.
struct Sample {
    at: Instant,
    status: Status,
    /// Cumulative lookup latency histogram: (upper bound in seconds, count).
    lookups: Vec<(f64, u64)>,
}

/// What one frame shows.
#[derive(Debug, Serialize, PartialEq)]
struct Frame {
    id: String,
    state: String,
    uptime_secs: f64,
    successors: usize,
    predecessors: usize,
    fingers: usize,
    distinct_neighbours: usize,
    connections_direct: usize,
    connections_relayed: usize,
    /// Median round-trip time of the connections, in milliseconds.
    rtt_ms_p50: Option<f64>,
    messages_in_per_sec: f64,
    messages_out_per_sec: f64,
    bytes_in_per_sec: f64,
    bytes_out_per_sec: f64,
    /// Median latency of the lookups of the last ten frames (or, if there were none, of every
    /// lookup since the node started), in milliseconds: the upper bound of the histogram
    /// bucket it falls in.
    lookup_ms_p50: Option<f64>,
    /// How many lookups the median is of.
    lookups_counted: u64,
    /// Whether those are the recent ones (`false`: every one since the start).
    lookups_recent: bool,
    lookups_ok: u64,
    lookups_failed: u64,
    dict_keys: u64,
    dict_bytes: u64,
    nodes_watched: u64,
    watches_held: u64,
}

/// Runs `p2ps top`.
pub fn run(args: TopArgs) -> Result<()> {
    let interval = Duration::from_millis(args.interval_ms);
    let draw = !args.json && std::io::stdout().is_terminal();
    let mut history: VecDeque<Sample> = VecDeque::new();
    history.push_back(sample(&args.control)?);
    loop {
        std::thread::sleep(interval);
        history.push_back(sample(&args.control)?);
        while history.len() > LATENCY_WINDOW + 1 {
            history.pop_front();
        }
        let (Some(first), Some(prev), Some(now)) = (
            history.front(),
            history.get(history.len() - 2),
            history.back(),
        ) else {
            continue;
        };
        let f = frame(first, prev, now);
        if args.json {
            print_json(&f)?;
        } else {
            let text = render(&f);
            if draw {
                // Home, clear, frame: a whole redraw every time.
                let mut out = std::io::stdout().lock();
                write!(out, "\x1b[H\x1b[2J{text}").context("writing to stdout")?;
                out.flush().context("writing to stdout")?;
            } else {
                write_stdout(&text)?;
            }
        }
        if args.once {
            return Ok(());
        }
    }
}

fn sample(control: &ControlOpts) -> Result<Sample> {
    let v = control.call(&Request::Status {})?;
    let status: Status = serde_json::from_value(v).context("the node's status is malformed")?;
    let text = control.call(&Request::Metrics {})?;
    let text = text.as_str().unwrap_or_default();
    Ok(Sample {
        at: Instant::now(),
        status,
        lookups: lookup_buckets(text),
    })
}

/// The cumulative buckets of `p2ps_lookup_seconds` (every result), by upper bound.
fn lookup_buckets(text: &str) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("p2ps_lookup_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Some(le) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .and_then(|l| l.strip_suffix('"'))
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        let Ok(count) = value.trim().parse::<f64>() else {
            continue;
        };
        match out.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, c)) => *c += count as u64,
            None => out.push((bound, count as u64)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The median of the lookups counted in `now` and not in `then` (cumulative buckets): the
/// upper bound of the bucket it falls in, and how many there were.
fn recent_p50(then: &[(f64, u64)], now: &[(f64, u64)]) -> (Option<f64>, u64) {
    let before = |bound: f64| {
        then.iter()
            .find(|(b, _)| *b == bound)
            .map_or(0, |(_, c)| *c)
    };
    let delta: Vec<(f64, u64)> = now
        .iter()
        .map(|(b, c)| (*b, c.saturating_sub(before(*b))))
        .collect();
    let total = delta.last().map_or(0, |(_, c)| *c);
    if total == 0 {
        return (None, 0);
    }
    let half = total.div_ceil(2);
    let p50 = delta.iter().find(|(_, c)| *c >= half).map(|(b, _)| *b);
    (p50.filter(|b| b.is_finite()), total)
}

fn counter(s: &Status, service: &str, name: &str) -> u64 {
    s.services
        .iter()
        .find(|e| e.name == service)
        .and_then(|e| e.counters.get(name).copied())
        .unwrap_or(0)
}

fn frame(first: &Sample, prev: &Sample, now: &Sample) -> Frame {
    let s = &now.status;
    let (a, b) = (&prev.status.counters, &s.counters);
    let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-3);
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let relayed = s
        .connections
        .iter()
        .filter(|c| !c.relayed_by.is_empty())
        .count();
    let mut rtts: Vec<f64> = s.connections.iter().map(|c| c.rtt_ms).collect();
    rtts.sort_by(f64::total_cmp);
    let (p50, counted, recent) = match recent_p50(&first.lookups, &now.lookups) {
        (_, 0) => {
            let (p50, n) = recent_p50(&[], &now.lookups);
            (p50, n, false)
        }
        (p50, n) => (p50, n, true),
    };
    Frame {
        id: s.id.to_string(),
        state: s.state.to_string(),
        uptime_secs: s.uptime_secs,
        successors: s.successors.len(),
        predecessors: s.predecessors.len(),
        fingers: s.fingers.len(),
        distinct_neighbours: s.distinct_neighbours,
        connections_direct: s.connections.len() - relayed,
        connections_relayed: relayed,
        rtt_ms_p50: rtts.get(rtts.len() / 2).copied(),
        messages_in_per_sec: rate(a.messages_in, b.messages_in),
        messages_out_per_sec: rate(a.messages_out, b.messages_out),
        bytes_in_per_sec: rate(a.bytes_in, b.bytes_in),
        bytes_out_per_sec: rate(a.bytes_out, b.bytes_out),
        lookup_ms_p50: p50.map(|s| s * 1000.0),
        lookups_counted: counted,
        lookups_recent: recent,
        lookups_ok: b.lookups_ok,
        lookups_failed: b.lookups_failed,
        dict_keys: counter(s, p2ps::dict::service::NAME, "keys"),
        dict_bytes: counter(s, p2ps::dict::service::NAME, "bytes"),
        nodes_watched: counter(s, p2ps::watcher::service::NAME, "watching"),
        watches_held: counter(s, p2ps::watcher::service::NAME, "held"),
    }
}

/// Bytes in a short human form (B, KB, MB, GB; powers of 1000).
fn human_bytes(b: f64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", units[u])
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn render(f: &Frame) -> String {
    let short = f.id.get(..10).unwrap_or(&f.id);
    let rtt = f
        .rtt_ms_p50
        .map_or("-".to_string(), |r| format!("{r:.2} ms"));
    let scope = if f.lookups_recent {
        "in the last 10 s"
    } else {
        "since the start"
    };
    let lookups = match (f.lookup_ms_p50, f.lookups_counted) {
        (_, 0) => "none yet".to_string(),
        (Some(p), n) => format!("p50 <= {p:.1} ms of {n} {scope}"),
        (None, n) => format!("p50 above every bucket of {n} {scope}"),
    };
    format!(
        "p2ps top  {short}  {} (up {:.0} s)\n\
         \n\
         neighbours   {} successors, {} predecessors, {} fingers ({} distinct peers)\n\
         connections  {} direct, {} relayed (rtt p50 {rtt})\n\
         messages     in {:.1}/s, out {:.1}/s\n\
         bytes        in {}/s, out {}/s\n\
         lookups      {lookups}; {} answered, {} failed since start\n\
         dictionary   {} keys, {}\n\
         watcher      {} nodes watched, {} watches held for others\n",
        f.state,
        f.uptime_secs,
        f.successors,
        f.predecessors,
        f.fingers,
        f.distinct_neighbours,
        f.connections_direct,
        f.connections_relayed,
        f.messages_in_per_sec,
        f.messages_out_per_sec,
        human_bytes(f.bytes_in_per_sec),
        human_bytes(f.bytes_out_per_sec),
        f.lookups_ok,
        f.lookups_failed,
        f.dict_keys,
        human_bytes(f.dict_bytes as f64),
        f.nodes_watched,
        f.watches_held,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# TYPE p2ps_lookup_seconds histogram\n\
        p2ps_lookup_seconds_sum{result=\"ok\"} 0.5\n\
        p2ps_lookup_seconds_bucket{le=\"0.001\",result=\"ok\"} 1\n\
        p2ps_lookup_seconds_bucket{le=\"0.002\",result=\"ok\"} 6\n\
        p2ps_lookup_seconds_bucket{le=\"+Inf\",result=\"ok\"} 10\n\
        p2ps_lookup_seconds_bucket{le=\"0.001\",result=\"failed\"} 0\n\
        p2ps_lookup_seconds_bucket{le=\"0.002\",result=\"failed\"} 0\n\
        p2ps_lookup_seconds_bucket{le=\"+Inf\",result=\"failed\"} 2\n\
        p2ps_lookup_hops_bucket{le=\"1.0\"} 7\n";

    #[test]
    fn lookup_buckets_add_up_every_result() {
        assert_eq!(
            lookup_buckets(METRICS),
            vec![(0.001, 1), (0.002, 6), (f64::INFINITY, 12)]
        );
    }

    #[test]
    fn the_median_is_of_the_lookups_in_between() {
        let now = lookup_buckets(METRICS);
        // 12 lookups; the 6th falls in the 2 ms bucket.
        assert_eq!(recent_p50(&[], &now), (Some(0.002), 12));
        // Since a sample with 1 slow lookup: 11, the 6th in the 2 ms bucket too.
        let then = vec![(0.001, 0), (0.002, 0), (f64::INFINITY, 1)];
        assert_eq!(recent_p50(&then, &now), (Some(0.002), 11));
        // Since a sample with 5 fast ones: 7, the 4th above every bound.
        let then = vec![(0.001, 1), (0.002, 5), (f64::INFINITY, 5)];
        assert_eq!(recent_p50(&then, &now), (None, 7));
        let then = vec![(0.001, 0), (0.002, 0), (f64::INFINITY, 1)];
        assert_eq!(recent_p50(&then, &now), (Some(0.002), 11));
        // Nothing new: no median.
        assert_eq!(recent_p50(&now, &now), (None, 0));
        // Most of them slower than every bound: no finite median to show.
        let slow = vec![(0.001, 0), (0.002, 0), (f64::INFINITY, 5)];
        assert_eq!(recent_p50(&[], &slow), (None, 5));
    }

    #[test]
    fn bytes_read_short() {
        assert_eq!(human_bytes(999.0), "999 B");
        assert_eq!(human_bytes(1_500.0), "1.5 KB");
        assert_eq!(human_bytes(2_000_000.0), "2.0 MB");
    }
}
