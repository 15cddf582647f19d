//! The replicated dictionary on networks of real `p2ps node` processes (issue #14, item 10):
//!
//! * 12 nodes, 1 000 keys put (a fifth of them written again, some deleted), then two
//!   adjacent nodes killed with SIGKILL (the keys of the first lose two of their three
//!   replicas): every key is still read with its latest version, and its replicas are back to
//!   three, each holding that version, within a bounded wait;
//! * 8 writers on 8 nodes each add 1 to one counter 100 times with compare-and-swap
//!   (`get`, then `put --if-version`, again on a conflict): the counter ends at exactly 800;
//!   `del --if-version` deletes only at the version given;
//! * nodes started with small quotas (per writer and in all) refuse the writes that would
//!   overrun them, naming the quota, and go on serving; with the largest value limit allowed
//!   (960 KiB), a value that large is stored on every replica and read back, and one byte
//!   more is refused, naming the limit.
//!
//! (A restarted node keeping its data is in `cli_dict.rs`; forged values in `hostile_dict.rs`.)
//!
//! The tests start many processes on what may be a 2-core machine: they run one at a time.
//! Each prints what it measured (`cargo test -- --nocapture` shows it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::p2ps::{self, NodeId};
use p2ps_interop_tests::{wait_ring, NodeProc, Start, TestNet, FAST};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(60);
const RING_WAIT: Duration = Duration::from_secs(60);
/// Replicas of every key (the dictionary's default).
const R: u64 = 3;

/// The tests of this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn stdout(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of_failure(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `n` nodes and waits for their ring to settle.
fn network(net: &TestNet, n: usize, extra: &[&str]) -> Vec<NodeProc> {
    let args: Vec<&str> = FAST.iter().copied().chain(extra.iter().copied()).collect();
    let mut nodes = net.spawn_network(n, &args, JOIN_WAIT);
    let mut refs: Vec<&mut NodeProc> = nodes.iter_mut().collect();
    wait_ring(&mut refs, RING_WAIT);
    nodes
}

/// What a key should hold: its value (`None`: deleted) and version.
type Latest = BTreeMap<String, (Option<String>, u64)>;

/// A write through `node`'s control socket; the version stored.
fn write(node: &NodeProc, req: Value) -> Result<u64, String> {
    let v = node.request(&req)?;
    v.get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no version in {v}"))
}

/// Runs `f(i, item)` for every item on `threads` threads; returns the results in order.
fn parallel<T: Sync, U: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(usize, &T) -> U + Sync,
) -> Vec<U> {
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                let f = &f;
                s.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(j, x)| f(c * chunk + j, x))
                        .collect::<Vec<U>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    })
}

/// Writes every `(key, value)` (`None`: delete) through the nodes in turn, 8 at a time; a
/// write that fails is tried again (at most 3 times in all). Records the versions in
/// `latest`; returns how many writes were tried again.
fn write_all(
    nodes: &[&NodeProc],
    writes: &[(String, Option<String>)],
    offset: usize,
    latest: &mut Latest,
) -> usize {
    let results = parallel(writes, 8, |i, (key, value)| {
        let node = nodes[(i + offset) % nodes.len()];
        let req = match value {
            Some(v) => json!({"op": "put", "key": key, "value": v}),
            None => json!({"op": "del", "key": key}),
        };
        let mut errors = Vec::new();
        for _ in 0..3 {
            match write(node, req.clone()) {
                Ok(version) => return (version, errors.len()),
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "writing {key} through {} failed 3 times: {errors:?}",
            node.name
        )
    });
    let mut retried = 0;
    for ((key, value), (version, again)) in writes.iter().zip(results) {
        latest.insert(key.clone(), (value.clone(), version));
        retried += again;
    }
    retried
}

/// Sum of the `keys` counters of the nodes' dictionaries: copies held in all.
fn copies_held(nodes: &[&NodeProc]) -> u64 {
    nodes
        .iter()
        .map(|n| {
            let s = n.request(&json!({"op": "status"})).unwrap();
            let s: p2ps::Status = serde_json::from_value(s).unwrap();
            s.services
                .iter()
                .find(|d| d.name == p2ps::dict::service::NAME)
                .and_then(|d| d.counters.get("keys").copied())
                .unwrap_or(0)
        })
        .sum()
}

/// The keys that do not read as `latest` says through the nodes (8 reads at a time, each key
/// through one node), with what they read.
fn misread(nodes: &[&NodeProc], latest: &Latest, keys: &[String]) -> Vec<(String, String)> {
    let got = parallel(keys, 8, |i, key| {
        let node = nodes[i % nodes.len()];
        let r = node.request(&json!({"op": "get", "key": key}));
        let (want_value, want_version) = &latest[key];
        match r {
            Ok(v) => {
                let value = v.get("value").and_then(Value::as_str).map(String::from);
                let version = v.get("version").and_then(Value::as_u64);
                // A deleted key reads as nothing (no value, no version).
                let ok = match want_value {
                    Some(w) => value.as_ref() == Some(w) && version == Some(*want_version),
                    None => value.is_none(),
                };
                (!ok).then(|| (key.clone(), format!("via {}: read {v}", node.name)))
            }
            Err(e) => Some((key.clone(), format!("via {}: {e}", node.name))),
        }
    });
    got.into_iter().flatten().collect()
}

/// The keys whose replicas are not all `R` at their latest version, with what the key's
/// primary answered.
fn under_replicated(
    nodes: &[&NodeProc],
    latest: &Latest,
    keys: &[String],
) -> Vec<(String, String)> {
    let got = parallel(keys, 8, |i, key| {
        let node = nodes[i % nodes.len()];
        let r = node.request(&json!({"op": "dict_replicas", "key": key}));
        let want_version = latest[key].1;
        match r {
            Ok(v) => {
                let n = |f: &str| v.get(f).and_then(Value::as_u64);
                let ok = n("replicas") == Some(R)
                    && n("current") == Some(R)
                    && n("version") == Some(want_version);
                (!ok).then(|| (key.clone(), format!("{v} (want version {want_version})")))
            }
            Err(e) => Some((key.clone(), format!("via {}: {e}", node.name))),
        }
    });
    got.into_iter().flatten().collect()
}

/// The first 20 of `(key, what)`, one a line.
fn listing(v: &[(String, String)]) -> String {
    v.iter()
        .take(20)
        .map(|(k, w)| format!("{k}: {w}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn twelve_nodes_keep_every_key_through_two_adjacent_crashes() {
    let _one_at_a_time = serial();
    let started = Instant::now();
    let net = TestNet::new();
    let mut nodes = network(&net, 12, &[]);
    let formed = started.elapsed();

    // 1 000 keys, then a fifth of them written again through other nodes and 50 deleted, so
    // that "the latest version" is not simply the first.
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i:04}")).collect();
    let mut latest = Latest::new();
    let t = Instant::now();
    let first: Vec<(String, Option<String>)> = keys
        .iter()
        .map(|k| (k.clone(), Some(format!("first value of {k}"))))
        .collect();
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let mut retried = write_all(&all, &first, 0, &mut latest);
    let put_time = t.elapsed();
    let again: Vec<(String, Option<String>)> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 == 0)
        .map(|(i, k)| {
            let v = (i % 20 != 0).then(|| format!("second value of {k}"));
            (k.clone(), v)
        })
        .collect();
    retried += write_all(&all, &again, 5, &mut latest);
    for (k, (v, version)) in latest.iter().take(3) {
        eprintln!("e.g. {k}: {v:?} at version {version}");
    }
    // Through the command line too, waiting for every replica.
    for k in keys.iter().skip(1).step_by(250) {
        let value = format!("third value of {k}");
        let out = stdout(
            &nodes[3].cli(&["put", k, &value, "--acks", "3", "--json"]),
            "put --acks 3",
        );
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["replicas"], json!(R), "{out}");
        latest.insert(k.clone(), (Some(value), v["version"].as_u64().unwrap()));
    }
    let held_before = copies_held(&all);

    // Two adjacent nodes (on the ring) killed at once: the keys the first of them is primary
    // for keep one replica of three.
    let mut ring: Vec<(p2ps::RingId, usize)> = nodes
        .iter_mut()
        .enumerate()
        .map(|(i, n)| (p2ps::id::ring_id_of(&n.id()), i))
        .collect();
    ring.sort();
    let (a, b) = (ring[4].1, ring[5].1);
    let victims: Vec<NodeId> = vec![nodes[a].id(), nodes[b].id()];
    let killed_at = Instant::now();
    nodes[a].kill();
    nodes[b].kill();
    let mut live: Vec<NodeProc> = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != a && *i != b)
        .map(|(_, n)| n)
        .collect();
    {
        let mut refs: Vec<&mut NodeProc> = live.iter_mut().collect();
        wait_ring(&mut refs, RING_WAIT);
    }
    let ring_healed = killed_at.elapsed();
    let live_refs: Vec<&NodeProc> = live.iter().collect();

    // Repair on its own (nobody reads yet): the copies held come back to 3 per key.
    let want_copies = R * keys.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = copies_held(&live_refs);
    let held_after_ring = held;
    while held < want_copies && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        held = copies_held(&live_refs);
    }
    let repaired = killed_at.elapsed();

    // Every key reads as its latest write, through every surviving node in turn.
    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    let mut wrong = misread(&live_refs, &latest, &keys);
    let first_wrong = wrong.len();
    while !wrong.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let again: Vec<String> = wrong.iter().map(|(k, _)| k.clone()).collect();
        wrong = misread(&live_refs, &latest, &again);
    }
    let read_time = t.elapsed();
    assert!(
        wrong.is_empty(),
        "{} of {} keys do not read as their latest write 30 s after the ring healed (killed: \
         {victims:?}); first ones:\n{}",
        wrong.len(),
        keys.len(),
        listing(&wrong)
    );

    // Every key's replicas: 3 of 3 at the latest version.
    let t = Instant::now();
    let mut under = under_replicated(&live_refs, &latest, &keys);
    let first_under = under.len();
    let deadline = t + Duration::from_secs(30);
    while !under.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let again: Vec<String> = under.iter().map(|(k, _)| k.clone()).collect();
        under = under_replicated(&live_refs, &latest, &again);
    }
    assert!(
        under.is_empty(),
        "{} keys are not back to {R} current replicas; first ones:\n{}",
        under.len(),
        listing(&under)
    );
    // As the command line shows it.
    for k in keys.iter().step_by(199) {
        let out = stdout(&live[0].cli(&["dict", "replicas", k]), "dict replicas");
        let version = latest[k].1;
        assert!(
            out.contains(&format!("3 of 3 replicas hold version {version}")),
            "{out}"
        );
    }
    // A fast read (one replica) and a read of all three agree with the latest write.
    for k in keys.iter().skip(1).step_by(97) {
        let Some(value) = latest[k].0.clone() else {
            continue;
        };
        for quorum in ["1", "3"] {
            let out = stdout(
                &live[2].cli(&["get", k, "--quorum", quorum]),
                "get --quorum",
            );
            assert_eq!(out.trim_end(), value, "{k} read from {quorum} replicas");
        }
    }

    eprintln!(
        "12 nodes: formed in {formed:.1?}; 1000 puts (8 at a time) in {put_time:.1?}, \
         {retried} tried again; copies held before the kill {held_before}; ring healed \
         {ring_healed:.1?} after the kill; copies held then {held_after_ring}, {held} of \
         {want_copies} after {repaired:.1?}; reads: {first_wrong} wrong at first, all right \
         after {read_time:.1?}; replicas: {first_under} keys under {R} at first; test took \
         {:.1?}",
        started.elapsed()
    );
    assert!(
        held >= want_copies,
        "the copies held did not come back to {R} per key on their own within 60 s of the \
         kill ({held} of {want_copies})"
    );
}

/// One compare-and-swap increment of `key` through `node`: `Ok(true)` if it was written,
/// `Ok(false)` on a conflict (someone else got there first).
fn increment(node: &NodeProc, key: &str) -> Result<bool, String> {
    let v = node.request(&json!({"op": "get", "key": key}))?;
    let version = v.get("version").and_then(Value::as_u64).unwrap_or(0);
    let value: u64 = match v.get("value").and_then(Value::as_str) {
        Some(s) => s.parse().map_err(|e| format!("{key} holds {s:?}: {e}"))?,
        None => 0,
    };
    // Every increment is version n + 1 holding n + 1, from the empty key (version 0).
    if value != version {
        return Err(format!("{key} holds {value} at version {version}"));
    }
    let put = json!({
        "op": "put", "key": key, "value": (value + 1).to_string(), "if_version": version,
    });
    match node.request(&put) {
        Ok(v) if v.get("version").and_then(Value::as_u64) == Some(version + 1) => Ok(true),
        Ok(v) => Err(format!("a compare-and-swap from {version} answered {v}")),
        Err(e) if e.contains("compare-and-swap refused") => Ok(false),
        Err(e) => Err(e),
    }
}

#[test]
fn eight_writers_on_eight_nodes_count_to_800_with_compare_and_swap() {
    let _one_at_a_time = serial();
    let started = Instant::now();
    let net = TestNet::new();
    let nodes = network(&net, 8, &[]);
    let formed = started.elapsed();
    let key = "counter";

    let t = Instant::now();
    let deadline = t + Duration::from_secs(120);
    let report: Vec<(usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(w, node)| {
                s.spawn(move || {
                    let (mut done, mut conflicts) = (0, 0);
                    while done < 100 {
                        assert!(
                            Instant::now() < deadline && conflicts < 20_000,
                            "writer {w} made only {done} increments in 120 s \
                             ({conflicts} conflicts)"
                        );
                        match increment(node, key) {
                            Ok(true) => done += 1,
                            Ok(false) => {
                                conflicts += 1;
                                // Spread the retries a little (the writers would otherwise
                                // meet again at once).
                                let ms = (w as u64 * 7 + conflicts as u64 * 3) % 11;
                                std::thread::sleep(Duration::from_millis(ms));
                            }
                            Err(e) => panic!("writer {w} (via {}): {e}", node.name),
                        }
                    }
                    (done, conflicts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer panicked"))
            .collect()
    });
    let counted = t.elapsed();
    let conflicts: usize = report.iter().map(|r| r.1).sum();

    // Every replica agrees: 800 at version 800.
    let v = nodes[5]
        .request(&json!({"op": "get", "key": key, "quorum": 3}))
        .unwrap();
    assert_eq!(v["value"], json!("800"), "{v}");
    assert_eq!(v["version"], json!(800), "{v}");
    assert_eq!(stdout(&nodes[2].cli(&["get", key]), "get"), "800\n");

    // From the command line: a stale compare-and-swap fails, naming the version the key is at;
    // a right one succeeds; 0 means "only if the key holds nothing".
    let err = stderr_of_failure(
        &nodes[1].cli(&["put", key, "1", "--if-version", "799"]),
        "a stale compare-and-swap",
    );
    assert!(
        err.contains("counter is at version 800, not 799") && err.contains("--if-version 800"),
        "{err}"
    );
    let out = stdout(
        &nodes[1].cli(&["put", key, "801", "--if-version", "800"]),
        "a compare-and-swap",
    );
    assert!(out.starts_with("stored counter (version 801"), "{out}");
    stdout(
        &nodes[4].cli(&["put", "fresh", "a", "--if-version", "0"]),
        "create with --if-version 0",
    );
    let err = stderr_of_failure(
        &nodes[6].cli(&["put", "fresh", "b", "--if-version", "0"]),
        "a second create with --if-version 0",
    );
    assert!(err.contains("fresh is at version 1, not 0"), "{err}");
    // A deletion as a compare-and-swap: a stale one fails and leaves the value; a right one
    // deletes it.
    let err = stderr_of_failure(
        &nodes[2].cli(&["del", "fresh", "--if-version", "0"]),
        "a stale compare-and-swap deletion",
    );
    assert!(err.contains("fresh is at version 1, not 0"), "{err}");
    assert_eq!(stdout(&nodes[3].cli(&["get", "fresh"]), "get"), "a\n");
    let out = stdout(
        &nodes[2].cli(&["del", "fresh", "--if-version", "1", "--json"]),
        "a compare-and-swap deletion",
    );
    assert!(out.contains("\"version\":2"), "{out}");
    let v = nodes[5]
        .request(&json!({"op": "get", "key": "fresh"}))
        .unwrap();
    assert_eq!(v["value"], json!(null), "{v}");

    eprintln!(
        "8 nodes formed in {formed:.1?}; 8 writers x 100 compare-and-swap increments in \
         {counted:.1?} ({conflicts} conflicts, per writer {:?}); test took {:.1?}",
        report.iter().map(|r| r.1).collect::<Vec<_>>(),
        started.elapsed()
    );
}

#[test]
fn quota_overruns_and_oversized_values_are_refused_while_the_node_serves() {
    let _one_at_a_time = serial();
    let started = Instant::now();
    let net = TestNet::new();
    // Three nodes (each a replica of every key) that keep at most 5 keys of one writer and 8
    // in all, and values up to 960 KiB: the first from its config file's [dict] table, the
    // others from the flags.
    let conf = net.path().join("quota.toml");
    std::fs::write(
        &conf,
        "[dict]\nmax_keys_per_writer = 5\nmax_keys = 8\nmax_value_bytes = 983040\n",
    )
    .unwrap();
    let conf_s = conf.to_string_lossy().into_owned();
    let with_conf: Vec<&str> = FAST
        .iter()
        .copied()
        .chain(["--config", conf_s.as_str()])
        .collect();
    let mut a = net.spawn("qa", Start::Create, &with_conf);
    let ticket = a.wait_ticket(JOIN_WAIT);
    let quota: Vec<&str> = FAST
        .iter()
        .copied()
        .chain(["--dict-max-keys-per-writer", "5", "--dict-max-keys", "8"])
        .chain(["--dict-max-value-bytes", "983040"])
        .collect();
    let mut b = net.spawn("qb", Start::Join(ticket.clone()), &quota);
    let mut c = net.spawn("qc", Start::Join(ticket), &quota);
    b.wait_ticket(JOIN_WAIT);
    c.wait_ticket(JOIN_WAIT);
    wait_ring(&mut [&mut a, &mut b, &mut c], RING_WAIT);

    for i in 0..5 {
        stdout(
            &a.cli(&["put", &format!("q{i}"), "v"]),
            "a put under the quota",
        );
    }
    let err = stderr_of_failure(&a.cli(&["put", "q5", "v"]), "a put over the quota");
    assert!(
        err.contains("the writer has as many keys on this node as it may (5)")
            && err.contains("--dict-max-keys-per-writer"),
        "{err}"
    );
    // The node goes on serving: reads, a new value for a key the writer has, and other
    // writers' keys.
    assert_eq!(stdout(&a.cli(&["get", "q0"]), "get"), "v\n");
    stdout(&a.cli(&["put", "q0", "w"]), "a put to a key the writer has");
    assert_eq!(stdout(&c.cli(&["get", "q0"]), "get"), "w\n");
    stdout(&b.cli(&["put", "other", "x"]), "another writer's put");
    assert_eq!(stdout(&a.cli(&["get", "other"]), "get"), "x\n");
    let err = stderr_of_failure(&a.cli(&["get", "q5"]), "get of the refused key");
    assert!(err.contains("no value for key q5"), "{err}");
    // The node's own quota: 6 keys held, room for 2 more of a third writer, not 3.
    stdout(&c.cli(&["put", "c1", "v"]), "a put under the node quota");
    stdout(&c.cli(&["put", "c2", "v"]), "a put up to the node quota");
    let err = stderr_of_failure(&c.cli(&["put", "c3", "v"]), "a put over the node quota");
    assert!(
        err.contains("the node holds as many keys as it may (8)")
            && err.contains("--dict-max-keys quota"),
        "{err}"
    );
    assert_eq!(stdout(&b.cli(&["get", "c2"]), "get"), "v\n");

    // The nodes take values up to 960 KiB (--dict-max-value-bytes, the most a message
    // allows): one that large is stored on every replica and read back; one byte more is
    // refused, naming the limit, and the node serves on.
    let large = vec![b'y'; 983_040];
    stdout(
        &b.cli_with(&["put", "other", "-"], Some(&large), &[]),
        "a put of the largest value",
    );
    let read = stdout(&a.cli(&["get", "other"]), "get of the largest value");
    assert_eq!(read.len(), large.len() + 1);
    assert!(read.bytes().take(large.len()).all(|c| c == b'y'));
    let out = stdout(&c.cli(&["dict", "replicas", "other"]), "dict replicas");
    assert!(out.contains("3 of 3 replicas hold version"), "{out}");
    let mut big = large.clone();
    big.push(b'y');
    let err = stderr_of_failure(
        &b.cli_with(&["put", "big", "-"], Some(&big), &[]),
        "a put over the value limit",
    );
    assert!(
        err.contains("983041 bytes is over the 983040-byte limit"),
        "{err}"
    );
    stdout(&b.cli(&["put", "other", "z"]), "put after a refusal");
    assert_eq!(stdout(&a.cli(&["get", "other"]), "get"), "z\n");
    for n in [&mut a, &mut b, &mut c] {
        assert!(n.try_exit().is_none(), "{}", n.describe());
    }
    eprintln!("quota test took {:.1?}", started.elapsed());
}
