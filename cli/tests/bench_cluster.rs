//! `p2ps bench cluster` at small size, dictionary phase included (and OpenDHT's side when
//! Debian's python3-opendht is installed): every get must return the value put, every lookup
//! the responsible node. Timings are not checked here; BENCHMARKS.md has them at 64 nodes.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether `import opendht` works under the interpreter the bench uses.
fn opendht_installed() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import opendht"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn count(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("no count at {path:?} in the report"))
}

#[test]
fn small_cluster_puts_and_gets_are_right() {
    let opendht = opendht_installed();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2ps"));
    cmd.args([
        "bench",
        "cluster",
        "--nodes",
        "8",
        "--lookups",
        "20",
        "--idle-secs",
        "1",
        "--dict-ops",
        "20",
        "--many-ops",
        "60",
        "--in-flight",
        "8",
        "--seed",
        "3",
        "--json",
    ]);
    if opendht {
        cmd.arg("--opendht");
    } else {
        eprintln!(
            "python3-opendht is not installed: OpenDHT's side is left out (scripts/test.sh \
             installs it as root)"
        );
    }
    let t = Instant::now();
    let out = cmd.output().expect("running p2ps bench cluster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "p2ps bench cluster failed ({}):\n{stderr}",
        out.status
    );
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t.elapsed()
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    let d = &r["dict"];
    assert_eq!(count(d, &["put", "good"]), 20, "puts stored: {d}");
    assert_eq!(
        count(d, &["get", "good"]),
        20,
        "gets with the value put: {d}"
    );
    for kind in ["many_lookups", "many_puts", "many_gets"] {
        assert_eq!(count(d, &[kind, "good"]), 60, "{kind}: {}", d[kind]);
        assert!(d[kind]["per_sec"].as_f64().is_some_and(|x| x > 0.0));
    }
    assert_eq!(d["all_correct"], Value::Bool(true));
    if opendht {
        let c = &r["opendht"];
        assert_eq!(c["opendht_all_correct"], Value::Bool(true), "OpenDHT: {c}");
        let o = &c["opendht"];
        assert_eq!(count(o, &["one_in_flight", "gets", "correct"]), 20, "{o}");
        assert_eq!(count(o, &["many_gets", "outcomes", "correct"]), 60, "{o}");
        for ratio in [
            "put_ratio",
            "get_ratio",
            "puts_rate_ratio",
            "gets_rate_ratio",
        ] {
            assert!(
                c[ratio].as_f64().is_some_and(|x| x.is_finite() && x > 0.0),
                "{ratio}: {c}"
            );
        }
    } else {
        assert!(r["opendht"].is_null());
    }
}
