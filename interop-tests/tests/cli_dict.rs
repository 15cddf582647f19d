//! The replicated dictionary from the command line, on real `p2ps node` processes: `p2ps put`,
//! `get` and `del` from different nodes, values from standard input, `--json`, a value over
//! the limit refused with the limit named, a value still read after one of its replicas
//! was killed, and a node restarted with the same key and data directory (after a graceful
//! stop or a SIGKILL) still holding its values, unless told to keep them in memory.

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

/// Starts the one-node network `name` with `extra` flags and waits until it has created it.
fn start_alone(net: &TestNet, name: &str, extra: &[&str]) -> NodeProc {
    let args: Vec<&str> = FAST.iter().copied().chain(extra.iter().copied()).collect();
    let mut n = net.spawn(name, Start::Create, &args);
    n.wait_ticket(JOIN_WAIT);
    n
}

/// Stops `n` (SIGTERM, or SIGKILL if `crash`), and forgets its ticket so that the next start
/// waits for a new one.
fn stop(mut n: NodeProc, crash: bool) {
    if crash {
        n.kill();
    } else {
        n.terminate();
        let st = n.wait_exit(Duration::from_secs(10));
        assert!(
            st.success(),
            "SIGTERM must end in exit 0, got {st}\n{}",
            n.describe()
        );
    }
    std::fs::remove_file(&n.ticket_file).unwrap();
}

#[test]
fn a_restarted_node_keeps_its_data() {
    let net = TestNet::new();

    // --data-dir, stopped gracefully.
    let dir = net.path().join("p-data");
    let dir_s = dir.to_string_lossy().into_owned();
    let p = start_alone(&net, "p", &["--data-dir", &dir_s]);
    stdout(&p.cli(&["put", "colour", "blue"]), "put");
    stdout(
        &p.cli_with(&["put", "today", "-"], Some(b"a fine day"), &[]),
        "put -",
    );
    stdout(&p.cli(&["del", "today"]), "del");
    stop(p, false);
    assert!(dir.join("dict.redb").is_file());
    let p = start_alone(&net, "p", &["--data-dir", &dir_s]);
    assert_eq!(
        stdout(&p.cli(&["get", "colour"]), "get after a restart"),
        "blue\n"
    );
    let err = stderr_of_failure(&p.cli(&["get", "today"]), "get of a deleted key");
    assert!(err.contains("no value for key today"), "{err}");
    stop(p, false);

    // The default data directory, beside the key; killed, not stopped: every write was
    // committed before it was answered.
    let q = start_alone(&net, "q", &[]);
    assert!(net.path().join("q.data").join("dict.redb").is_file());
    stdout(&q.cli(&["put", "shape", "round"]), "put");
    stop(q, true);
    let q = start_alone(&net, "q", &[]);
    assert_eq!(
        stdout(&q.cli(&["get", "shape"]), "get after a crash"),
        "round\n"
    );
    stop(q, false);

    // --no-persist: nothing kept, nothing written.
    let r = start_alone(&net, "r", &["--no-persist"]);
    stdout(&r.cli(&["put", "colour", "green"]), "put");
    stop(r, false);
    let r = start_alone(&net, "r", &["--no-persist"]);
    let err = stderr_of_failure(
        &r.cli(&["get", "colour"]),
        "get from memory after a restart",
    );
    assert!(err.contains("no value for key colour"), "{err}");
    assert!(!net.path().join("r.data").exists());
    stop(r, false);

    // A second node on a data directory in use fails to start, naming the file, and leaves
    // the file (and the running node's values) alone, and no key of its own behind.
    let q = start_alone(&net, "q", &[]);
    let key = net.path().join("s.key");
    let out = p2ps_interop_tests::run_p2ps(
        &[
            "node",
            "--create",
            "--key",
            &key.to_string_lossy(),
            "--control",
            &net.path().join("s.sock").to_string_lossy(),
            "--data-dir",
            &net.path().join("q.data").to_string_lossy(),
        ],
        Duration::from_secs(20),
    );
    let err = stderr_of_failure(&out, "a node on a data directory in use");
    assert!(
        err.contains("q.data/dict.redb") && err.contains("already open"),
        "{err}"
    );
    assert!(!key.exists(), "the failed start left its new key behind");
    assert_eq!(stdout(&q.cli(&["get", "shape"]), "get"), "round\n");
    stop(q, false);
}
