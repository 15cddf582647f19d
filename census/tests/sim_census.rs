//! The census in the simulator, driving the same service code as the runtime: exactly N - 1
//! asks and N - 1 answers on a stable ring and sums equal to the truth; nodes crashing during a
//! census; a hostile node inflating its count and answering what it was not asked; the
//! network-size estimate; and the picture drawn from a census.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_census::wire::Wire;
use p2ps_census::{
    network_size, Aggregate, Census, CensusConfig, CensusEvent, CensusExt, Figures, NatClass,
    Outcome, Report, Version,
};
use p2ps_overlay::service::{decode, encode, Context, Incoming, Service};
use p2ps_overlay::sim::{SimConfig, SimId, Simulator};
use p2ps_overlay::{Class, PeerId, RingId, Segment};
use std::collections::BTreeSet;
use std::time::Duration;

type C = Census<SimId>;

/// A hostile node's census: answers every ask with a million nodes (histograms that add up,
/// so only the plausibility bound can catch it), and sends an answer nobody asked for to its
/// successor.
struct Liar;

impl Service<SimId> for Liar {
    fn name(&self) -> &'static str {
        p2ps_census::NAME
    }
    fn class(&self) -> Class {
        Class::Tree
    }
    fn receive(&mut self, ctx: &mut Context<'_, SimId>, msg: Incoming<SimId>) {
        let Ok((Wire::Ask { piece, seg, .. }, _)) = decode::<Wire<SimId>>(&msg.data) else {
            return;
        };
        let Some(sealed) = msg.sealed else { return };
        let (origin, seq) = (sealed.origin(), sealed.env.seq);
        let big = 1_000_000;
        let mut sum = Aggregate {
            nodes: big,
            versions: vec![(Version::new(1, "0.1.0"), big)],
            ..Aggregate::default()
        };
        sum.nat[1] = big;
        sum.table[2] = big;
        sum.load[0] = big;
        let lie = Wire::Answer {
            origin,
            seq,
            piece,
            seg,
            complete: true,
            sum: Box::new(sum),
            rows: Vec::new(),
        };
        ctx.send(msg.from, encode(&lie, &[]));
        let unasked = Wire::Answer {
            origin,
            seq,
            piece: piece ^ 0x5555,
            seg: Segment::full(RingId(0)),
            complete: true,
            sum: Box::new(Aggregate::one(&Figures::default(), 10, None)),
            rows: Vec::new(),
        };
        if let Some(s) = ctx.table().successor() {
            ctx.send(s.id, encode(&unasked, &[]));
        }
    }
}

/// What node `i` tells its census.
fn figures(i: usize) -> Figures {
    Figures {
        nat: NatClass::ALL[i % 5],
        version: Version::new(if i.is_multiple_of(7) { 2 } else { 1 }, "0.1.0"),
        load: (i % 50) as u32,
        keys: (i * 3) as u64,
        bytes: (i * 30) as u64,
    }
}

fn sim(n: usize, seed: u64, hostile: Option<usize>) -> (Simulator, Vec<SimId>) {
    let mut sim = Simulator::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    let liar = hostile.map(|i| sim.default_id(i as u32));
    sim.register_everywhere(move |node| {
        if Some(node.id()) == liar {
            node.register(Liar).unwrap();
        } else {
            node.register(C::new(CensusConfig::default())).unwrap();
        }
    });
    let ids = sim.warm_start(n);
    for (i, id) in ids.iter().enumerate() {
        sim.node_mut(*id).set_census_figures(figures(i));
    }
    sim.run_for(Duration::from_secs(1));
    (sim, ids)
}

/// Starts a census at `at` and runs until it is over.
fn census(sim: &mut Simulator, at: SimId, rows: u32) -> Outcome<SimId> {
    let seq = sim.command(at, |n, now| n.census(now, rows)).unwrap();
    for _ in 0..1200 {
        sim.run_for(Duration::from_millis(100));
        if let Some(o) = done(sim, at, seq) {
            return o;
        }
    }
    panic!("the census never ended");
}

fn done(sim: &mut Simulator, at: SimId, seq: u64) -> Option<Outcome<SimId>> {
    let c = sim.node_mut(at).service_mut::<C>()?;
    while let Some(CensusEvent::Done(o)) = p2ps_overlay::service::Emits::poll_event(c) {
        if o.seq == seq {
            return Some(o);
        }
    }
    None
}

/// The true sum over the live nodes of `ids` (except `skip`).
fn truth(sim: &Simulator, ids: &[SimId], skip: &BTreeSet<SimId>) -> Aggregate {
    let mut a = Aggregate::default();
    for (i, id) in ids.iter().enumerate() {
        if !sim.is_alive(*id) || skip.contains(id) {
            continue;
        }
        let t = sim.node(*id).table();
        a.add(&Aggregate::one(
            &figures(i),
            t.distinct_peers().len() as u32,
            network_size(t),
        ));
    }
    a
}

fn traffic(sim: &Simulator) -> (u64, u64) {
    let c = sim.counters();
    (
        c.traffic("census-ask").messages,
        c.traffic("census-answer").messages,
    )
}

#[test]
fn a_stable_ring_costs_exactly_n_minus_1_asks_and_answers_and_sums_the_truth() {
    let n = 400;
    let (mut sim, ids) = sim(n, 3, None);
    let before = traffic(&sim);
    let o = census(&mut sim, ids[17], 0);
    let after = traffic(&sim);
    assert_eq!(after.0 - before.0, n as u64 - 1, "asks");
    assert_eq!(after.1 - before.1, n as u64 - 1, "answers");
    assert!(o.complete);
    assert_eq!(o.sum, truth(&sim, &ids, &BTreeSet::new()));
    assert_eq!(o.sum.nodes, n as u64);
    assert!(o.rows.is_empty());
    // Rows on request: every node once, in ring order from the origin; fewer evenly thinned.
    let o = census(&mut sim, ids[17], 10_000);
    assert_eq!(o.rows.len(), n);
    let from = ids[17].ring_id();
    let offsets: Vec<u128> = o.rows.iter().map(|r| from.cw_to(r.id.ring_id())).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(offsets[0], 0, "the origin's own row first");
    let o = census(&mut sim, ids[3], 25);
    assert_eq!(o.rows.len(), 25);
    assert_eq!(o.sum.nodes, n as u64);
    let r = Report::new(&o, |id| format!("n{}", id.index()));
    assert_eq!(r.nodes, n as u64);
    assert_eq!(r.nat.values().sum::<u64>(), n as u64);
    assert_eq!(r.versions.len(), 2);
}

#[test]
fn nodes_crashing_during_a_census_are_missed_and_nobody_else_is() {
    let n = 300;
    let (mut sim, ids) = sim(n, 5, None);
    let origin = ids[0];
    // Three nodes the origin asks directly, crashed before its asks reach them.
    let asked: Vec<SimId> = sim
        .node(origin)
        .table()
        .distinct_peers()
        .into_iter()
        .take(3)
        .collect();
    let seq = sim.command(origin, |n, now| n.census(now, 0)).unwrap();
    for c in &asked {
        sim.crash(*c);
    }
    let mut out = None;
    for _ in 0..1200 {
        sim.run_for(Duration::from_millis(100));
        if let Some(o) = done(&mut sim, origin, seq) {
            out = Some(o);
            break;
        }
    }
    let o = out.expect("the census ends");
    let crashed: BTreeSet<SimId> = asked.iter().copied().collect();
    assert_eq!(o.sum.nodes, (n - 3) as u64, "every live node once");
    let stats = sim.node(origin).service::<C>().unwrap().stats();
    assert!(stats.resent >= 3, "{stats:?}");
    let secs = o.finished.since(o.started).as_secs_f64();
    assert!(secs < 30.0, "bounded: {secs} s");
    // The live nodes' figures (tables changed since: compare what does not).
    let t = truth(&sim, &ids, &crashed);
    assert_eq!(
        (o.sum.nat, o.sum.keys, o.sum.bytes),
        (t.nat, t.keys, t.bytes)
    );
}

#[test]
fn a_hostile_node_cannot_inflate_the_count_or_answer_unasked() {
    let n = 200;
    let hostile = 42;
    let (mut sim, ids) = sim(n, 9, Some(hostile));
    let liar = ids[hostile];
    let o = census(&mut sim, ids[0], 0);
    assert_eq!(o.sum.nodes, n as u64 - 1, "everyone but the liar, once");
    let refused: u64 = ids
        .iter()
        .filter(|id| **id != liar)
        .map(|id| sim.node(*id).service::<C>().unwrap().stats().refused)
        .sum();
    assert!(refused >= 2, "the lie and the unasked answer: {refused}");
    let skip: BTreeSet<SimId> = [liar].into();
    let t = truth(&sim, &ids, &skip);
    assert_eq!((o.sum.nat, o.sum.keys), (t.nat, t.keys));
}

#[test]
fn the_size_estimate_is_close_and_exact_on_small_rings() {
    let (sim, ids) = sim(2000, 11, None);
    let errs: Vec<f64> = ids
        .iter()
        .map(|id| {
            let e = network_size(sim.node(*id).table()).unwrap() as f64;
            (e - 2000.0).abs() / 2000.0
        })
        .collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    assert!(mean < 0.35, "mean relative error {mean}");
    let (small, ids) = self::sim(9, 1, None);
    for id in ids {
        assert_eq!(network_size(small.node(id).table()), Some(9));
    }
}

/// The picture from a census: well-formed XML with one node mark per node, at 16 and 1 000.
#[test]
fn the_picture_is_well_formed_with_one_mark_per_node() {
    for n in [16usize, 1000] {
        let (mut sim, ids) = sim(n, 21, None);
        let o = census(&mut sim, ids[0], 4096);
        let report = Report::new(&o, |id| format!("n{}", id.index()));
        let t = sim.node(ids[0]).table();
        let focus = p2ps_census::Focus {
            name: format!("n{}", ids[0].index()),
            pos: ids[0].ring_id(),
            successors: t.successors().iter().map(|p| p.pos).collect(),
            predecessors: t.predecessors().iter().map(|p| p.pos).collect(),
            fingers: t
                .finger_slots()
                .filter_map(|(_, _, p)| p.map(|p| p.pos))
                .collect(),
        };
        for colour in [p2ps_census::Colouring::Nat, p2ps_census::Colouring::Load] {
            let svg = p2ps_census::svg(&report, Some(&focus), colour);
            let root = xmltree::Element::parse(svg.as_bytes()).expect("well-formed XML");
            assert_eq!(root.name, "svg");
            let marks = count(&root, &|e| {
                e.name == "circle" && e.attributes.get("class").map(String::as_str) == Some("node")
            });
            assert_eq!(marks, n, "one mark per node at {n}");
            let chords = count(&root, &|e| {
                e.name == "path" && e.attributes.get("class").is_some_and(|c| c == "finger")
            });
            assert_eq!(chords, focus.fingers.len());
            if let Ok(dir) = std::env::var("P2PS_PICTURE_DIR") {
                let name = format!("{dir}/ring-{n}-{colour:?}.svg").to_lowercase();
                std::fs::write(name, &svg).unwrap();
            }
        }
    }
}

fn count(e: &xmltree::Element, f: &dyn Fn(&xmltree::Element) -> bool) -> usize {
    usize::from(f(e))
        + e.children
            .iter()
            .filter_map(|c| c.as_element())
            .map(|c| count(c, f))
            .sum::<usize>()
}
