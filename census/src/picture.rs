//! A picture of the ring as SVG, drawn from a census's rows: every node on the circle at its
//! position, coloured by NAT class or by load, one node's successor and predecessor lists and
//! fingers as chords, and the dictionary's keys per node as a band of bars around the ring.
//! Plain SVG 1.1 written here, no external assets: any browser or `rsvg-convert` shows it.
//!
//! Readable from a handful of nodes to thousands: marks shrink with the count, nodes are
//! labelled by short id only up to [`LABEL_LIMIT`] nodes (beyond, only the ring's quarters and
//! the chosen node), and the key band shows one bar per node up to [`BAR_LIMIT`] nodes, else
//! the mean keys per node in each of [`BINS`] arcs of the ring.

use crate::report::Report;
use p2ps_overlay::RingId;
use std::f64::consts::TAU;
use std::fmt::Write;

/// Most nodes labelled by id.
pub const LABEL_LIMIT: usize = 32;
/// Most nodes with a key bar of their own.
pub const BAR_LIMIT: usize = 64;
/// Arcs of the key band beyond [`BAR_LIMIT`] nodes.
pub const BINS: usize = 90;

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 840.0;
const CX: f64 = 420.0;
const CY: f64 = 430.0;
const R: f64 = 290.0;
const BAND: f64 = R + 16.0;
const BAND_LEN: f64 = 52.0;

/// What the nodes are coloured by.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Colouring {
    /// How others reach them.
    #[default]
    Nat,
    /// Messages per second they handle.
    Load,
}

/// The node whose routing table is drawn as chords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Focus {
    /// Its name (id).
    pub name: String,
    /// Its position.
    pub pos: RingId,
    /// Its successors' positions.
    pub successors: Vec<RingId>,
    /// Its predecessors' positions.
    pub predecessors: Vec<RingId>,
    /// Its fingers' positions.
    pub fingers: Vec<RingId>,
}

const NAT_COLOURS: [(&str, &str); 5] = [
    ("unknown", "#9e9e9e"),
    ("public", "#2e7d32"),
    ("port-mapped", "#1565c0"),
    ("cone", "#f9a825"),
    ("symmetric", "#c62828"),
];

/// Load classes: (lowest load, label, colour).
const LOAD_COLOURS: [(u32, &str, &str); 5] = [
    (0, "0 msg/s", "#fde725"),
    (1, "1-9 msg/s", "#5ec962"),
    (10, "10-99 msg/s", "#21918c"),
    (100, "100-999 msg/s", "#3b528b"),
    (1000, "1000+ msg/s", "#440154"),
];

/// The point at ring position `pos`, `r` from the centre (position 0 at the top, clockwise).
fn at(pos: RingId, r: f64) -> (f64, f64) {
    let a = pos.fraction() * TAU;
    (CX + r * a.sin(), CY - r * a.cos())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn load_class(load: u32) -> usize {
    LOAD_COLOURS
        .iter()
        .rposition(|(lo, _, _)| load >= *lo)
        .unwrap_or(0)
}

/// The picture of `report`'s rows (with `focus`'s table as chords, if given), as an SVG
/// document. One `<circle class="node">` per row.
pub fn svg(report: &Report, focus: Option<&Focus>, colouring: Colouring) -> String {
    let rows: Vec<(RingId, &crate::report::ReportRow)> = report
        .rows
        .iter()
        .filter_map(|r| Some((r.pos()?, r)))
        .collect();
    let n = rows.len();
    let mut s = String::with_capacity(4096 + n * 240);
    let _ = writeln!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">
<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##
    );
    let title = format!(
        "P2PS ring: {} nodes{}{}",
        report.nodes,
        if report.complete { "" } else { " (incomplete)" },
        if (n as u64) < report.nodes {
            format!(", {n} drawn")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="30" font-size="18" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let est = match (report.estimate, report.mean_estimate) {
        (Some(e), Some(m)) => format!("size estimate from ring density: {e} here, {m:.0} mean"),
        (Some(e), None) => format!("size estimate from ring density: {e}"),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        r##"<text x="20" y="50" fill="#555">{}</text>"##,
        esc(&est)
    );
    // The ring and its quarters.
    let _ = writeln!(
        s,
        r##"<circle cx="{CX}" cy="{CY}" r="{R}" fill="none" stroke="#bbbbbb" stroke-width="1.5"/>
<circle cx="{CX}" cy="{CY}" r="{BAND}" fill="none" stroke="#e0e0e0" stroke-width="1"/>"##
    );
    for q in 0..4u128 {
        let pos = RingId(q << 126);
        let (x1, y1) = at(pos, R - 8.0);
        let (x2, y2) = at(pos, R + 8.0);
        let (tx, ty) = at(pos, R - 24.0);
        let _ = writeln!(
            s,
            r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#888"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#888" font-size="11">{:02x}…</text>"##,
            ty + 4.0,
            q << 6
        );
    }
    key_band(&mut s, &rows);
    if let Some(f) = focus {
        chords(&mut s, f);
    }
    // The nodes.
    let mark = if n <= LABEL_LIMIT {
        7.0
    } else {
        (7.0 * (LABEL_LIMIT as f64 / n as f64).sqrt()).max(1.6)
    };
    let _ = writeln!(s, r##"<g stroke="#333" stroke-width="{:.2}">"##, mark / 7.0);
    for (pos, r) in &rows {
        let (x, y) = at(*pos, R);
        let fill = match colouring {
            Colouring::Nat => NAT_COLOURS
                .iter()
                .find(|(name, _)| *name == r.nat)
                .map_or("#000000", |(_, c)| c),
            Colouring::Load => LOAD_COLOURS[load_class(r.load)].2,
        };
        let _ = writeln!(
            s,
            r#"<circle class="node" cx="{x:.2}" cy="{y:.2}" r="{mark:.2}" fill="{fill}"><title>{} at {} ({}, {} msg/s, {} keys, table {})</title></circle>"#,
            esc(&r.id),
            esc(r.position.get(..8).unwrap_or(&r.position)),
            esc(&r.nat),
            r.load,
            r.keys,
            r.table
        );
    }
    let _ = writeln!(s, "</g>");
    if n <= LABEL_LIMIT {
        for (pos, r) in &rows {
            label(&mut s, *pos, r.id.get(..6).unwrap_or(&r.id), "#333");
        }
    }
    if let Some(f) = focus {
        let (x, y) = at(f.pos, R);
        let _ = writeln!(
            s,
            r##"<circle cx="{x:.2}" cy="{y:.2}" r="{:.2}" fill="none" stroke="#000" stroke-width="2"/>"##,
            mark + 4.0
        );
        if n > LABEL_LIMIT {
            label(&mut s, f.pos, f.name.get(..10).unwrap_or(&f.name), "#000");
        }
    }
    legend(&mut s, report, &rows, focus, colouring);
    s.push_str("</svg>\n");
    s
}

fn label(s: &mut String, pos: RingId, text: &str, fill: &str) {
    let (x, y) = at(pos, BAND + BAND_LEN + 14.0);
    let anchor = if (x - CX).abs() < 20.0 {
        "middle"
    } else if x > CX {
        "start"
    } else {
        "end"
    };
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" font-family="monospace" fill="{fill}">{}</text>"#,
        y + 4.0,
        esc(text)
    );
}

/// Dictionary keys per node as bars outside the ring.
fn key_band(s: &mut String, rows: &[(RingId, &crate::report::ReportRow)]) {
    // (position of the bar, keys per node there).
    let bars: Vec<(RingId, f64)> = if rows.len() <= BAR_LIMIT {
        rows.iter().map(|(p, r)| (*p, r.keys as f64)).collect()
    } else {
        let mut sums = vec![(0u64, 0u64); BINS];
        for (p, r) in rows {
            let b = ((p.fraction() * BINS as f64) as usize).min(BINS - 1);
            sums[b].0 = sums[b].0.saturating_add(r.keys);
            sums[b].1 += 1;
        }
        let step = u128::MAX / BINS as u128;
        sums.iter()
            .enumerate()
            .filter(|(_, (_, c))| *c > 0)
            .map(|(i, (k, c))| (RingId(step * i as u128 + step / 2), *k as f64 / *c as f64))
            .collect()
    };
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    if max <= 0.0 {
        return;
    }
    let width = if rows.len() <= BAR_LIMIT { 5.0 } else { 9.0 };
    let _ = writeln!(
        s,
        r##"<g stroke="#8d6e63" stroke-width="{width}" stroke-linecap="butt">"##
    );
    for (p, v) in bars {
        let (x1, y1) = at(p, BAND);
        let (x2, y2) = at(p, BAND + 1.0 + BAND_LEN * v / max);
        let _ = writeln!(
            s,
            r#"<line class="keys" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}"/>"#
        );
    }
    let _ = writeln!(s, "</g>");
}

/// The focus node's lists and fingers as chords across the ring.
fn chords(s: &mut String, f: &Focus) {
    let (x1, y1) = at(f.pos, R);
    let sets: [(&[RingId], &str, &str); 3] = [
        (&f.fingers, "#ef6c00", "finger"),
        (&f.predecessors, "#8e24aa", "predecessor"),
        (&f.successors, "#00897b", "successor"),
    ];
    for (targets, colour, class) in sets {
        let _ = writeln!(
            s,
            r#"<g fill="none" stroke="{colour}" stroke-width="1.6" stroke-opacity="0.85">"#
        );
        for t in targets {
            let (x2, y2) = at(*t, R);
            // A curve through a point between the chord's middle and the centre.
            let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
            let (qx, qy) = ((mx + CX) / 2.0, (my + CY) / 2.0);
            let _ = writeln!(
                s,
                r#"<path class="{class}" d="M{x1:.1},{y1:.1} Q{qx:.1},{qy:.1} {x2:.1},{y2:.1}"/><circle cx="{x2:.1}" cy="{y2:.1}" r="3.5"/>"#
            );
        }
        let _ = writeln!(s, "</g>");
    }
}

/// The legend's next line.
struct Legend {
    x: f64,
    y: f64,
}

impl Legend {
    /// A line of text after a round swatch (a node's colour) or a straight one (a line's).
    fn line(&mut self, s: &mut String, swatch: Option<(&str, bool)>, text: &str) {
        let (x, y) = (self.x, self.y);
        match swatch {
            Some((c, true)) => {
                let _ = writeln!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="6" fill="{c}" stroke="#333"/>"##,
                    x + 6.0,
                    y - 4.0
                );
            }
            Some((c, false)) => {
                let _ = writeln!(
                    s,
                    r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="3"/>"#,
                    y - 4.0,
                    x + 14.0,
                    y - 4.0
                );
            }
            None => {}
        }
        let tx = if swatch.is_some() { x + 22.0 } else { x };
        let _ = writeln!(s, r#"<text x="{tx:.1}" y="{y:.1}">{}</text>"#, esc(text));
        self.y += 22.0;
    }
}

fn legend(
    s: &mut String,
    report: &Report,
    rows: &[(RingId, &crate::report::ReportRow)],
    focus: Option<&Focus>,
    colouring: Colouring,
) {
    let mut l = Legend { x: 870.0, y: 90.0 };
    match colouring {
        Colouring::Nat => {
            l.line(s, None, "NAT class (nodes)");
            for (name, c) in NAT_COLOURS {
                let count = report.nat.get(name).copied().unwrap_or(0);
                l.line(s, Some((c, true)), &format!("{name} ({count})"));
            }
        }
        Colouring::Load => {
            l.line(s, None, "load (nodes drawn)");
            for (i, (_, name, c)) in LOAD_COLOURS.iter().enumerate() {
                let count = rows.iter().filter(|(_, r)| load_class(r.load) == i).count();
                l.line(s, Some((c, true)), &format!("{name} ({count})"));
            }
        }
    }
    l.y += 10.0;
    if let Some(f) = focus {
        l.line(
            s,
            None,
            &format!("table of {}", f.name.get(..10).unwrap_or(&f.name)),
        );
        let succ = format!("successors ({})", f.successors.len());
        l.line(s, Some(("#00897b", false)), &succ);
        let pred = format!("predecessors ({})", f.predecessors.len());
        l.line(s, Some(("#8e24aa", false)), &pred);
        let fing = format!("fingers ({})", f.fingers.len());
        l.line(s, Some(("#ef6c00", false)), &fing);
        l.y += 10.0;
    }
    let max = rows.iter().map(|(_, r)| r.keys).max().unwrap_or(0);
    let band = if rows.len() <= BAR_LIMIT {
        format!("dictionary keys per node (max {max})")
    } else {
        format!("keys per node, mean per {}\u{b0} arc", 360 / BINS)
    };
    l.line(s, Some(("#8d6e63", false)), &band);
    let total = format!("{} records, {} bytes in all", report.keys, report.bytes);
    l.line(s, None, &total);
}
