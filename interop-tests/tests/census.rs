//! `p2ps census` and `p2ps ring --svg` on real node processes: the census's totals equal the
//! node count, rows name every node once, the dictionary's records are summed, every node's
//! size estimate is exact on a small ring (status and metrics), and the picture has one mark
//! per node, through the control socket and over HTTP (`/census`, `/ring.svg`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::{wait_ring, NodeProc, Start, TestNet, FAST};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const NODES: usize = 5;

/// One HTTP/1.0 GET (no chunking): the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_census_counts_every_node_process_and_the_picture_draws_them() {
    let net = TestNet::new();
    let mut a = net.spawn(
        "c0",
        Start::Create,
        &[FAST, &["--http", "127.0.0.1:0"]].concat(),
    );
    let ticket = a.wait_ticket(WAIT);
    let mut others: Vec<NodeProc> = (1..NODES)
        .map(|i| net.spawn(&format!("c{i}"), Start::Join(ticket.clone()), FAST))
        .collect();
    for o in &mut others {
        o.wait_ticket(WAIT);
    }
    let line = a.wait_line(WAIT, "`http: …`", |l| l.starts_with("http: http://"));
    let addr: SocketAddr = line.trim_start_matches("http: http://").parse().unwrap();
    {
        let mut all: Vec<&mut NodeProc> = std::iter::once(&mut a).chain(&mut others).collect();
        wait_ring(&mut all, WAIT);
    }
    for k in ["k1", "k2", "k3", "k4"] {
        assert!(a.cli(&["put", k, "v"]).status.success());
    }
    // Every node tells its census its figures every 2 s.
    std::thread::sleep(Duration::from_secs(3));

    let c = json(&a.cli(&["census", "--json"]));
    assert_eq!(c["nodes"], NODES as u64, "{c}");
    assert_eq!(c["complete"], true);
    let nat: u64 = c["nat"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(nat, NODES as u64);
    assert!(
        c["keys"].as_u64().unwrap() >= 8,
        "4 keys on 2-3 replicas: {c}"
    );
    assert_eq!(c["mean_estimate"], NODES as f64);
    assert!(c["rows"].as_array().unwrap().is_empty());

    // Rows: every node once.
    let c = json(&others[1].cli(&["census", "--json", "--rows", "100"]));
    let rows: BTreeSet<String> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut ids: BTreeSet<String> = others.iter_mut().map(|o| o.id().to_string()).collect();
    ids.insert(a.id().to_string());
    assert_eq!(rows, ids);

    // The text form.
    let out = a.cli(&["census"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("nodes      {NODES}")), "{text}");

    // The estimate, in the status and the metrics.
    let st = json(&a.cli(&["status", "--json"]));
    assert_eq!(st["network_size_estimate"], NODES as u64);
    let (code, metrics) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!("p2ps_network_size_estimate {NODES}")),
        "{metrics}"
    );

    // The picture through the node, and from files.
    let svg = net.path().join("ring.svg");
    let out = a.cli(&["ring", "--svg", svg.to_str().unwrap(), "--colour", "load"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pic = std::fs::read_to_string(&svg).unwrap();
    assert!(pic.starts_with("<?xml") && pic.trim_end().ends_with("</svg>"));
    assert_eq!(pic.matches(r#"class="node""#).count(), NODES);
    assert!(pic.matches(r#"class="successor""#).count() >= NODES - 1);
    let saved = net.path().join("census.json");
    let out = a.cli(&["census", "--json", "--rows", "10"]);
    std::fs::write(&saved, &out.stdout).unwrap();
    let from_file = net.path().join("file.svg");
    let out = p2ps_interop_tests::run_p2ps(
        &[
            "ring",
            "--svg",
            from_file.to_str().unwrap(),
            "--from-census",
            saved.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pic = std::fs::read_to_string(&from_file).unwrap();
    assert_eq!(pic.matches(r#"class="node""#).count(), NODES);

    // Over HTTP.
    let (code, body) = get(addr, "/census?rows=3");
    assert_eq!(code, 200, "{body}");
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["nodes"], NODES as u64);
    assert_eq!(c["rows"].as_array().unwrap().len(), 3);
    let (code, body) = get(addr, "/ring.svg");
    assert_eq!(code, 200);
    assert_eq!(body.matches(r#"class="node""#).count(), NODES);
    assert_eq!(get(addr, "/ring.svg?colour=purple").0, 400);
}
