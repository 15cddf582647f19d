//! `p2ps top --once` against `p2ps node` processes: one frame with the node's neighbours,
//! connections, rates, lookup latency and dictionary, each figure present and sane, in JSON and
//! in the human form; and the `metrics` control request `top` reads the latency from.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::{wait_ring, NodeProc, TestNet, FAST};
use serde_json::Value;
use std::time::Duration;

#[test]
fn top_once_shows_sane_figures() {
    let net = TestNet::new();
    let mut nodes = net.spawn_network(4, FAST, Duration::from_secs(30));
    {
        let mut refs: Vec<&mut NodeProc> = nodes.iter_mut().collect();
        wait_ring(&mut refs, Duration::from_secs(30));
    }
    for i in 0..20 {
        let out = nodes[0].cli(&["lookup", &format!("key-{i}")]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = nodes[0].cli(&["put", "colour", "blue"]);
    assert!(out.status.success(), "{out:?}");

    // The metrics request: the OpenMetrics text, with the lookups counted.
    let text = nodes[0]
        .request(&serde_json::json!({"op": "metrics"}))
        .unwrap();
    let text = text.as_str().unwrap();
    assert!(text.contains("p2ps_lookup_seconds_bucket{"), "{text}");

    let out = nodes[0].cli(&["top", "--once", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let f: Value = serde_json::from_str(lines[0]).unwrap();
    let n = |k: &str| f[k].as_f64().unwrap_or_else(|| panic!("{k} in {f}"));
    assert_eq!(f["id"], nodes[0].id().to_string());
    assert_eq!(f["state"], "joined");
    assert_eq!((n("successors"), n("predecessors")), (3.0, 3.0), "{f}");
    // In a ring of 4, every other node is a neighbour: finger slots may stay empty.
    assert!(
        n("fingers") <= 32.0 && n("distinct_neighbours") == 3.0,
        "{f}"
    );
    assert!(
        n("connections_direct") >= 2.0 && n("connections_relayed") == 0.0,
        "{f}"
    );
    assert!(n("rtt_ms_p50") >= 0.0 && n("rtt_ms_p50") < 100.0, "{f}");
    // Stabilisation every 300 ms: messages both ways every second, and their bytes.
    for k in ["messages_in_per_sec", "messages_out_per_sec"] {
        assert!(n(k) >= 1.0 && n(k) < 1_000.0, "{k}: {f}");
    }
    for k in ["bytes_in_per_sec", "bytes_out_per_sec"] {
        assert!(n(k) >= 100.0 && n(k) < 10_000_000.0, "{k}: {f}");
    }
    // The 20 lookups (none in the sampled second, so every one since the start), on loopback.
    assert_eq!(f["lookups_recent"], false, "{f}");
    assert!(
        n("lookups_counted") >= 20.0 && n("lookups_ok") >= 20.0,
        "{f}"
    );
    assert!(
        n("lookup_ms_p50") > 0.0 && n("lookup_ms_p50") <= 1_000.0,
        "{f}"
    );
    assert!(n("dict_keys") <= 1.0 && n("nodes_watched") == 0.0, "{f}");

    let out = nodes[0].cli(&["top", "--once"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\x1b'),
        "no escapes when not on a terminal: {text:?}"
    );
    for want in [
        "neighbours   3 successors, 3 predecessors",
        "connections  ",
        " relayed (rtt p50 ",
        "messages     in ",
        "bytes        in ",
        "lookups      p50 <= ",
        "dictionary   ",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
}
