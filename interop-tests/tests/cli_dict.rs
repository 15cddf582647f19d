//! The replicated dictionary from the command line, on real `p2ps node` processes: `p2ps put`,
//! `get` and `del` from different nodes, values from standard input, `--json`, a value over
//! the limit refused with the limit named, and a value still read after one of its replicas
//! was killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::{wait_ring, NodeProc, Start, TestNet, FAST};
use std::process::Output;
use std::time::Duration;

const JOIN_WAIT: Duration = Duration::from_secs(30);
const RING_WAIT: Duration = Duration::from_secs(30);

fn stdout(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of_failure(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn put_get_del_from_the_command_line() {
    let net = TestNet::new();
    let mut nodes: Vec<NodeProc> = Vec::new();
    let mut first = net.spawn("d0", Start::Create, FAST);
    let ticket = first.wait_ticket(JOIN_WAIT);
    nodes.push(first);
    for i in 1..5 {
        let mut n = net.spawn(&format!("d{i}"), Start::Join(ticket.clone()), FAST);
        n.wait_ticket(JOIN_WAIT);
        nodes.push(n);
    }
    {
        let mut refs: Vec<&mut NodeProc> = nodes.iter_mut().collect();
        wait_ring(&mut refs, RING_WAIT);
    }

    let out = stdout(&nodes[0].cli(&["put", "colour", "blue"]), "put");
    assert!(out.starts_with("stored colour (version "), "{out}");
    assert_eq!(stdout(&nodes[3].cli(&["get", "colour"]), "get"), "blue\n");
    let json = stdout(&nodes[2].cli(&["get", "colour", "--json"]), "get --json");
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["value"], "blue");
    assert!(v["version"].as_u64().unwrap() > 0);

    // From standard input, read back elsewhere.
    let out = nodes[1].cli_with(&["put", "today", "-"], Some(b"a fine day"), &[]);
    stdout(&out, "put -");
    assert_eq!(
        stdout(&nodes[4].cli(&["get", "today"]), "get"),
        "a fine day\n"
    );

    // Replica health and the node's share.
    let out = stdout(
        &nodes[1].cli(&["dict", "replicas", "today"]),
        "dict replicas",
    );
    assert!(out.contains("3 of 3 replicas hold version"), "{out}");
    let out = stdout(&nodes[0].cli(&["dict", "status"]), "dict status");
    assert!(
        out.starts_with("dictionary on ") && out.contains("keys "),
        "{out}"
    );

    // Deleted: get fails, saying so.
    let out = stdout(&nodes[2].cli(&["del", "colour"]), "del");
    assert!(out.starts_with("deleted colour"), "{out}");
    let err = stderr_of_failure(&nodes[0].cli(&["get", "colour"]), "get of a deleted key");
    assert!(err.contains("no value for key colour"), "{err}");

    // Over the limit: refused, naming it.
    let big = "x".repeat(70_000);
    let err = stderr_of_failure(&nodes[0].cli(&["put", "big", &big]), "put over the limit");
    assert!(err.contains("65536-byte limit"), "{err}");

    // One node killed (with 5 nodes and 3 replicas it holds a copy of most keys): once the
    // ring has noticed (a killed primary stops answering until then), the value is read from
    // the replicas that remain.
    nodes[3].kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = nodes[4].cli(&["get", "today"]);
        if out.status.success() && out.stdout == b"a fine day\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not read 30 s after the kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
