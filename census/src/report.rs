//! A census's outcome as people and programs read it: plain names and hex positions, JSON
//! through serde (`p2ps census --json`, `GET /census`), a text table ([`Report::to_text`]),
//! and what the picture is drawn from.

use crate::figures::{load_range, table_range, NatClass, BUCKETS};
use crate::service::Outcome;
use p2ps_overlay::{PeerId, RingId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One bucket of a histogram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Smallest value in it.
    pub from: u64,
    /// Largest value in it (`None`: no upper end).
    pub to: Option<u64>,
    /// Nodes in it.
    pub nodes: u64,
}

/// One node's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    /// Its id (hex).
    pub id: String,
    /// Its ring position (32 hex digits).
    pub position: String,
    /// Its NAT class ([`NatClass::name`]).
    pub nat: String,
    /// Its versions.
    pub version: String,
    /// Distinct peers in its routing table.
    pub table: u32,
    /// Messages per second it handled lately.
    pub load: u32,
    /// Dictionary records it holds.
    pub keys: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Its network-size estimate (0: none).
    pub estimate: u64,
}

impl ReportRow {
    /// Its ring position.
    pub fn pos(&self) -> Option<RingId> {
        u128::from_str_radix(&self.position, 16).ok().map(RingId)
    }
}

/// A census's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Nodes counted.
    pub nodes: u64,
    /// Whether every piece was answered in full.
    pub complete: bool,
    /// Seconds from the start to the last answer.
    pub seconds: f64,
    /// The asking node's network-size estimate, from its own lists (no traffic).
    pub estimate: Option<u64>,
    /// The mean of every node's estimate.
    pub mean_estimate: Option<f64>,
    /// Nodes by NAT class.
    pub nat: BTreeMap<String, u64>,
    /// Nodes by version (`software/pPROTOCOL`).
    pub versions: BTreeMap<String, u64>,
    /// Nodes by routing-table size (distinct peers).
    pub table_sizes: Vec<Bucket>,
    /// Nodes by load (messages per second).
    pub loads: Vec<Bucket>,
    /// Dictionary records held (a record on r replicas counts r times).
    pub keys: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Per-node rows (asked for with `rows`), in ring order, evenly thinned to the number
    /// asked.
    #[serde(default)]
    pub rows: Vec<ReportRow>,
}

impl Report {
    /// The report of `o`, naming nodes with `name`.
    pub fn new<P: PeerId>(o: &Outcome<P>, name: impl Fn(&P) -> String) -> Report {
        let s = &o.sum;
        let hist = |counts: &[u64; BUCKETS], range: fn(usize) -> (u64, Option<u64>)| {
            counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| {
                    let (from, to) = range(i);
                    Bucket {
                        from,
                        to,
                        nodes: *n,
                    }
                })
                .collect()
        };
        Report {
            nodes: s.nodes,
            complete: o.complete,
            seconds: o.finished.since(o.started).as_secs_f64(),
            estimate: o.estimate,
            mean_estimate: s.mean_estimate(),
            nat: NatClass::ALL
                .iter()
                .zip(s.nat)
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| (c.name().to_string(), n))
                .collect(),
            versions: s
                .versions
                .iter()
                .map(|(v, n)| (v.to_string(), *n))
                .collect(),
            table_sizes: hist(&s.table, table_range),
            loads: hist(&s.load, load_range),
            keys: s.keys,
            bytes: s.bytes,
            rows: o
                .rows
                .iter()
                .map(|r| ReportRow {
                    id: name(&r.id),
                    position: format!("{:032x}", r.id.ring_id().0),
                    nat: r.figures.nat.name().to_string(),
                    version: r.figures.version.to_string(),
                    table: r.table,
                    load: r.figures.load,
                    keys: r.figures.keys,
                    bytes: r.figures.bytes,
                    estimate: r.estimate,
                })
                .collect(),
        }
    }

    /// The report as a few lines of text (rows, if any, as a table after the sums).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let est = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{e:.0}"));
        let _ = writeln!(
            out,
            "nodes      {}{}  ({:.2} s)",
            self.nodes,
            if self.complete { "" } else { " (incomplete)" },
            self.seconds
        );
        let _ = writeln!(
            out,
            "estimate   {} here, {} mean over nodes (from ring density, no traffic)",
            est(self.estimate.map(|e| e as f64)),
            est(self.mean_estimate)
        );
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "nat        {}", join(&self.nat));
        let _ = writeln!(out, "versions   {}", join(&self.versions));
        let hist = |b: &[Bucket]| {
            b.iter()
                .map(|b| match b.to {
                    Some(to) if to == b.from => format!("{}: {}", b.from, b.nodes),
                    Some(to) => format!("{}-{}: {}", b.from, to, b.nodes),
                    None => format!("{}+: {}", b.from, b.nodes),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "table      {}", hist(&self.table_sizes));
        let _ = writeln!(out, "load/s     {}", hist(&self.loads));
        let _ = writeln!(
            out,
            "dict       {} records, {} bytes",
            self.keys, self.bytes
        );
        if !self.rows.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<10}  {:<8}  {:<11}  {:<10}  {:>5}  {:>6}  {:>8}  {:>8}",
                "node", "position", "nat", "version", "table", "load/s", "keys", "estimate"
            );
            for r in &self.rows {
                let _ = writeln!(
                    out,
                    "{:<10}  {:<8}  {:<11}  {:<10}  {:>5}  {:>6}  {:>8}  {:>8}",
                    r.id.get(..10).unwrap_or(&r.id),
                    r.position.get(..8).unwrap_or(&r.position),
                    r.nat,
                    r.version,
                    r.table,
                    r.load,
                    r.keys,
                    r.estimate
                );
            }
        }
        out
    }
}
