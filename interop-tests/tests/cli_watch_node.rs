//! `p2ps watch-node` on real `p2ps node` processes with the default timings: a node killed
//! with SIGKILL is printed as failed within the bound measured in the simulator (8 s), by
//! watchers that are not its neighbours' neighbours only; a node that leaves is printed as
//! left; `--json` lines; an id nobody runs is reported failed (its probe goes unanswered).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::p2ps::NodeId;
use p2ps_interop_tests::{wait_ring, NodeProc, TestNet};
use serde_json::Value;
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(30);
const RING_WAIT: Duration = Duration::from_secs(60);
/// Crash to `failed`, as bounded in the simulator (`watcher/tests/sim.rs`): the neighbours'
/// detection (2 s stabilisation + 3 s timeout), a hop, the 2 s probe; plus 1 s for processes
/// on a loaded machine.
const BOUND: Duration = Duration::from_secs(9);

/// `p2ps watch-node <args>` through `node`, as a process whose lines are collected.
fn watch_node(net: &TestNet, node: &NodeProc, name: &str, args: &[&str]) -> NodeProc {
    let mut v: Vec<String> = vec!["watch-node".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v.push("--control".into());
    v.push(node.control.to_string_lossy().into_owned());
    let unused = net.path().join(format!("{name}.no-ticket"));
    NodeProc::spawn_raw(name, v, node.control.clone(), unused)
}

fn json_lines(p: &NodeProc) -> Vec<Value> {
    p.stdout()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn killed_nodes_are_printed_failed_within_the_bound_and_leaves_left() {
    let started = Instant::now();
    let net = TestNet::new();
    let mut nodes = net.spawn_network(8, &[], JOIN_WAIT);
    {
        let mut refs: Vec<&mut NodeProc> = nodes.iter_mut().collect();
        wait_ring(&mut refs, RING_WAIT);
    }
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();

    // Three crashes, one after the other, each watched from two other nodes.
    let mut delays = Vec::new();
    for (round, (victim, watchers)) in [(2usize, [0usize, 4]), (5, [1, 6]), (7, [4, 0])]
        .into_iter()
        .enumerate()
    {
        let id = ids[victim].to_string();
        let mut procs: Vec<NodeProc> = watchers
            .iter()
            .map(|&w| watch_node(&net, &nodes[w], &format!("w{round}{w}"), &[&id, "--json"]))
            .collect();
        for p in &mut procs {
            p.wait_line(Duration::from_secs(20), "watching", |l| {
                l.contains(r#""event":"watching""#)
            });
        }
        let killed = Instant::now();
        nodes[victim].kill();
        for p in &mut procs {
            p.wait_line(BOUND + Duration::from_secs(10), "failed", |l| {
                l.contains(r#""event":"failed""#)
            });
            delays.push(killed.elapsed());
            let st = p.wait_exit(Duration::from_secs(5));
            assert!(st.success(), "{st}\n{}", p.describe());
            let lines = json_lines(p);
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert_eq!(lines[1]["node"], id.as_str());
            assert!(lines[1]["probe_ms"].as_u64().unwrap() >= 1_900, "{lines:?}");
            assert!(lines[1]["at_unix_ms"].as_u64().is_some());
        }
    }
    // The delay seen by the test includes the time to read each watcher's line after the
    // previous one, so the first of each pair is the closest measure; all within the bound.
    let mut secs: Vec<f64> = delays.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(f64::total_cmp);
    println!(
        "SIGKILL -> `failed` printed, {} watches: p50 {:.2} s, max {:.2} s",
        secs.len(),
        secs[secs.len() / 2],
        secs[secs.len() - 1]
    );
    for d in &delays {
        assert!(*d <= BOUND, "{delays:?}");
    }

    // A graceful leave (SIGTERM) is printed as such, in the human form, from a node prefix.
    let leaver = 3;
    let prefix = ids[leaver].to_string()[..10].to_string();
    let mut w = watch_node(&net, &nodes[0], "wleave", &[&prefix]);
    w.wait_line(Duration::from_secs(20), "watching", |l| {
        l.starts_with(&format!("watching {prefix}"))
    });
    let t = Instant::now();
    nodes[leaver].terminate();
    w.wait_line(Duration::from_secs(10), "left", |l| {
        l == format!("{prefix} left the network")
    });
    let left_after = t.elapsed();
    assert!(w.wait_exit(Duration::from_secs(5)).success());
    println!(
        "SIGTERM -> `left` printed in {:.2} s",
        left_after.as_secs_f64()
    );

    // An id no node runs: nobody holds the watch, and the probe goes unanswered.
    let ghost = "ab".repeat(32);
    let mut g = watch_node(&net, &nodes[1], "wghost", &[&ghost]);
    g.wait_line(Duration::from_secs(20), "failed", |l| l.contains("failed"));
    assert!(g.wait_exit(Duration::from_secs(5)).success());
    println!("test took {:.1} s", started.elapsed().as_secs_f64());
}
