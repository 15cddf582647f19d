//! `p2ps watch` on real `p2ps node` processes: every change of a key (a value, a deletion, an
//! expiry) printed as it happens, `--count` and `--json`; the watch following the key after its
//! primary was killed; a watch client that vanishes (SIGKILL) leaves no watch behind; a node
//! serves a bounded number of watch streams and refuses more, clearly, while it serves other
//! requests; a watch ends with an error when its node stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::p2ps::{self, NodeId};
use p2ps_interop_tests::{responsible, wait_for, wait_ring, NodeProc, TestNet, FAST};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Output;
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(30);
const RING_WAIT: Duration = Duration::from_secs(30);
/// Watch streams one node serves at once (`MAX_WATCH_STREAMS` of the control protocol).
const MAX_WATCH_STREAMS: usize = 32;

fn stdout(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `p2ps watch <args>` through `node`, as a process whose lines are collected.
fn watch(net: &TestNet, node: &NodeProc, name: &str, args: &[&str]) -> NodeProc {
    let mut v: Vec<String> = vec!["watch".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v.push("--control".into());
    v.push(node.control.to_string_lossy().into_owned());
    // No ticket: a client never writes one.
    let unused = net.path().join(format!("{name}.no-ticket"));
    NodeProc::spawn_raw(name, v, node.control.clone(), unused)
}

/// A counter of `node`'s dictionary (`watching`: keys its clients watch).
fn dict_counter(node: &mut NodeProc, name: &str) -> u64 {
    let s = node.status();
    s.services
        .iter()
        .find(|d| d.name == p2ps::dict::service::NAME)
        .and_then(|d| d.counters.get(name).copied())
        .unwrap_or_else(|| panic!("no dictionary counter {name} in {:?}", s.services))
}

/// Opens a raw watch stream of `key` at `path` and returns it with its first line.
fn raw_watch(path: &std::path::Path, key: &str) -> (UnixStream, Value) {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (&s).write_all(format!("{{\"op\":\"watch\",\"key\":\"{key}\"}}\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    (s, v)
}

#[test]
fn watch_prints_every_change_and_follows_the_key() {
    let started = Instant::now();
    let net = TestNet::new();
    let mut nodes = net.spawn_network(4, FAST, JOIN_WAIT);
    {
        let mut refs: Vec<&mut NodeProc> = nodes.iter_mut().collect();
        wait_ring(&mut refs, RING_WAIT);
    }
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();
    // A key whose primary is not the watching node (n00), which is killed later.
    let key = (0..1000)
        .map(|i| format!("watched-{i}"))
        .find(|k| responsible(&ids, p2ps::key_of(k)) != ids[0])
        .unwrap();
    let primary = ids
        .iter()
        .position(|i| *i == responsible(&ids, p2ps::key_of(&key)))
        .unwrap();
    let other = (1..4).find(|i| *i != primary).unwrap();

    // --json --count 4: the state now, then four changes, then exit 0.
    stdout(&nodes[1].cli(&["put", &key, "one"]), "put");
    let mut w = watch(&net, &nodes[0], "w1", &[&key, "--json", "--count", "4"]);
    w.wait_line(Duration::from_secs(20), "with the first value", |l| {
        l.contains(r#""value":"one""#)
    });
    stdout(&nodes[2].cli(&["put", &key, "two"]), "put");
    w.wait_line(Duration::from_secs(20), "with the second value", |l| {
        l.contains(r#""value":"two""#)
    });
    stdout(&nodes[3].cli(&["del", &key]), "del");
    w.wait_line(Duration::from_secs(20), "with the deletion", |l| {
        l.contains(r#""state":"deleted""#)
    });
    stdout(
        &nodes[1].cli(&["put", &key, "three", "--ttl", "1"]),
        "put --ttl",
    );
    w.wait_line(Duration::from_secs(20), "with the third value", |l| {
        l.contains(r#""value":"three""#)
    });
    let t = Instant::now();
    // The holder of a watched key looks at it again when its record expires (not at its next
    // sweep of the store, 30 s away): the watcher hears of it within moments.
    w.wait_line(Duration::from_secs(10), "with the expiry", |l| {
        l.contains(r#""state":"empty""#)
    });
    let expiry_seen = t.elapsed();
    let st = w.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st}\n{}", w.describe());
    let states: Vec<(String, Value)> = w
        .stdout()
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["state"].as_str().unwrap().to_string(), v["value"].clone())
        })
        .collect();
    let want = [
        ("set", Value::from("one")),
        ("set", Value::from("two")),
        ("deleted", Value::Null),
        ("set", Value::from("three")),
        ("empty", Value::Null),
    ];
    let want: Vec<(String, Value)> = want.into_iter().map(|(s, v)| (s.into(), v)).collect();
    assert_eq!(states, want, "{}", w.describe());

    // A watch in plain text, until its key's primary is killed and the key written again:
    // the watch follows the key to its new primary.
    let mut w = watch(&net, &nodes[0], "w2", &[&key]);
    w.wait_line(
        Duration::from_secs(20),
        "saying the key holds nothing",
        |l| l == format!("{key} holds nothing"),
    );
    stdout(&nodes[other].cli(&["put", &key, "four"]), "put");
    w.wait_line(Duration::from_secs(20), "with the fourth value", |l| {
        l.starts_with(&format!("{key} = four (version "))
    });
    nodes[primary].kill();
    let killed = Instant::now();
    {
        let mut refs: Vec<&mut NodeProc> = nodes
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != primary)
            .map(|(_, n)| n)
            .collect();
        wait_ring(&mut refs, RING_WAIT);
    }
    stdout(
        &nodes[other].cli(&["put", &key, "five"]),
        "put after the kill",
    );
    w.wait_line(
        Duration::from_secs(40),
        "with the value written after the kill",
        |l| l.starts_with(&format!("{key} = five (version ")),
    );
    let followed = killed.elapsed();

    // The watch client killed: the node's watch ends with it.
    assert_eq!(dict_counter(&mut nodes[0], "watching"), 1);
    w.kill();
    let gone = wait_for(Duration::from_secs(10), || {
        (dict_counter(&mut nodes[0], "watching") == 0).then_some(())
    });
    assert!(gone.is_some(), "the watch outlived its client");

    // At most MAX_WATCH_STREAMS streams at once; more are refused, clearly, while the node
    // serves other requests; a stream that ends makes room.
    let mut streams = Vec::new();
    for i in 0..MAX_WATCH_STREAMS {
        let (s, first) = raw_watch(&nodes[0].control, &format!("many-{i}"));
        assert_eq!(first["ok"], Value::Bool(true), "stream {i}: {first}");
        assert_eq!(first["result"]["state"], "empty", "{first}");
        streams.push(s);
    }
    let (_, refused) = raw_watch(&nodes[0].control, "one-too-many");
    assert_eq!(refused["ok"], Value::Bool(false), "{refused}");
    let e = refused["error"].as_str().unwrap();
    assert!(e.contains(&format!("{MAX_WATCH_STREAMS} watches")), "{e}");
    stdout(
        &nodes[0].cli(&["put", "many-3", "x"]),
        "put beside the streams",
    );
    assert_eq!(
        dict_counter(&mut nodes[0], "watching"),
        MAX_WATCH_STREAMS as u64
    );
    drop(streams.pop());
    let room = wait_for(Duration::from_secs(10), || {
        let (s, first) = raw_watch(&nodes[0].control, "room-again");
        (first["ok"] == Value::Bool(true)).then_some(s)
    });
    assert!(room.is_some(), "a closed stream did not make room");
    drop(room);
    drop(streams);
    let gone = wait_for(Duration::from_secs(10), || {
        (dict_counter(&mut nodes[0], "watching") == 0).then_some(())
    });
    assert!(gone.is_some(), "watches outlived their closed streams");

    // A node that stops ends its watches with an error.
    let mut w = watch(&net, &nodes[other], "w3", &[&key]);
    w.wait_line(Duration::from_secs(20), "with the fifth value", |l| {
        l.starts_with(&format!("{key} = five"))
    });
    stdout(&nodes[other].cli(&["leave"]), "leave");
    let st = w.wait_exit(Duration::from_secs(20));
    assert!(!st.success(), "a watch of a stopped node exited 0");
    let err = w.stderr();
    assert!(
        err.contains("stopped") || err.contains("did it stop"),
        "{err}"
    );

    eprintln!(
        "watch: expiry seen {expiry_seen:.1?} after a 1 s put; the watch followed its key \
         {followed:.1?} after its primary was killed; test took {:.1?}",
        started.elapsed()
    );
}
