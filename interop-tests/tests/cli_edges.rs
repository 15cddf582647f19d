//! The `p2ps` command's edges as a new user meets them (issue 16), on real `p2ps node`
//! processes: messages from standard input and files up to one documented limit, short ids,
//! short ring positions, leaving a group one is not in, host names for `--listen`, logs without
//! colour codes in a pipe, and errors without backtraces or repeated causes.
//!
//! Every wait is bounded; a failure panics with the node's own output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::p2ps::{self, NodeId};
use p2ps_interop_tests::{run_p2ps_with, wait_for, wait_ring, NodeProc, Start, TestNet, FAST};
use std::process::Output;
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(30);
const RING_WAIT: Duration = Duration::from_secs(30);
const LINE_WAIT: Duration = Duration::from_secs(15);
/// The documented message limit (`p2ps send --help`, README).
const LIMIT: usize = 1024 * 1024;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    let err = text(&out.stderr);
    assert!(out.status.success(), "{what} failed: {err}");
    err
}

fn failed(out: Output, what: &str) -> String {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{what} should have failed: {err}");
    err
}

/// Waits for `n` to print a message line that ends with `suffix`.
fn got(n: &mut NodeProc, suffix: &str) -> String {
    let what = format!("ending with {:?}", &suffix[..suffix.len().min(60)]);
    n.wait_line(LINE_WAIT, &what, |l| {
        l.starts_with("message from ") && l.ends_with(suffix)
    })
}

/// A hex prefix of 10 digits that starts none of `ids`.
fn unknown_prefix(ids: &[NodeId]) -> String {
    (0u64..)
        .map(|i| format!("{:010x}", 0x00ab_cd00_0000_u64 + i))
        .find(|p| ids.iter().all(|id| !id.to_string().starts_with(p.as_str())))
        .unwrap()
}

#[test]
fn the_cli_as_a_new_user_meets_it() {
    let t0 = Instant::now();
    let net = TestNet::new();
    let dir = net.path().to_path_buf();
    // A host name for --listen (item 8).
    let mut a = net.spawn_at(None, "a", Start::Create, "localhost:0", FAST);
    let ticket = a.wait_ticket(JOIN_WAIT);
    let mut b = net.spawn("b", Start::Join(ticket.clone()), FAST);
    let mut c = net.spawn("c", Start::Join(ticket), FAST);
    b.wait_ticket(JOIN_WAIT);
    c.wait_ticket(JOIN_WAIT);
    let (aid, bid, cid) = (a.id(), b.id(), c.id());
    let a_addr = a.status().addrs[0];
    assert!(a_addr.ip().is_loopback(), "{a_addr}");
    wait_ring(&mut [&mut a, &mut b, &mut c], RING_WAIT);
    eprintln!("[{:?}] 3 nodes, `--listen localhost:0` works", t0.elapsed());

    // Logs into a pipe carry no colour codes (item 8).
    let log = a.stderr();
    assert!(log.contains("INFO"), "no log lines to check: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a piped log: {log:?}"
    );

    // Short ids (item 6): the 10 digits status shows, 4 digits, and clear refusals.
    let b_short = bid.short().to_string();
    ok(
        a.cli(&["send", &b_short, "by short id"]),
        "send to a short id",
    );
    got(&mut b, "to node): by short id");
    let c4 = &cid.to_string()[..4];
    if !aid.to_string().starts_with(c4) && !bid.to_string().starts_with(c4) {
        ok(a.cli(&["send", c4, "by 4 digits"]), "send to 4 digits");
        got(&mut c, "to node): by 4 digits");
    }
    let ghost = unknown_prefix(&[aid, bid, cid]);
    let err = failed(a.cli(&["send", &ghost, "x"]), "send to an unknown prefix");
    assert!(
        err.contains("no node this node knows") && err.contains(&ghost),
        "{err}"
    );
    let err = failed(a.cli(&["send", "d67", "x"]), "send to 3 digits");
    assert!(err.contains("at least 4"), "{err}");
    // A full id that no node has (item 4): the lookup of its position names another node.
    let nobody = p2ps::Identity::generate().unwrap().node_id().to_string();
    let err = failed(
        a.cli(&["send", &nobody, "x"]),
        "send to a node that is not there",
    );
    assert!(
        err.contains(&format!("no node {nobody} in the network")),
        "{err}"
    );
    eprintln!("[{:?}] short ids checked", t0.elapsed());

    // Messages from standard input and files (item 5).
    let out = a.cli_with(&["send", &b_short, "-"], Some(b"from stdin"), &[]);
    ok(out, "send -");
    got(&mut b, "to node): from stdin");
    let file = dir.join("note.txt");
    std::fs::write(&file, "from a file").unwrap();
    let at_file = format!("@{}", file.display());
    ok(a.cli(&["send", &b_short, &at_file]), "send @file");
    got(&mut b, "to node): from a file");
    ok(a.cli(&["send", &b_short, "@@home"]), "send @@text");
    got(&mut b, "to node): @home");
    // 100 KB, which the control socket refused before (item 5), routed from a file.
    let big: String = "0123456789".repeat(10_000);
    std::fs::write(&file, &big).unwrap();
    ok(a.cli(&["route", "some key", &at_file]), "route 100 KB");
    let suffix = format!("to key): {big}");
    let arrived = |n: &NodeProc| n.stdout().iter().any(|l| l.ends_with(&suffix));
    let holder = wait_for(LINE_WAIT, || [&a, &b, &c].into_iter().find(|n| arrived(n)));
    assert!(holder.is_some(), "the 100 KB routed message never arrived");
    std::thread::sleep(Duration::from_millis(300));
    let arrived = [&a, &b, &c].into_iter().filter(|n| arrived(n)).count();
    assert_eq!(
        arrived, 1,
        "the 100 KB routed message arrived {arrived} times"
    );
    // Exactly the limit goes through the whole path; one byte more is refused clearly.
    let max = "y".repeat(LIMIT);
    std::fs::write(&file, &max).unwrap();
    ok(
        a.cli(&["send", &bid.to_string(), &at_file]),
        "send of exactly the limit",
    );
    let line = b.wait_line(LINE_WAIT, "with the 1 MiB message", |l| {
        l.starts_with("message from ") && l.contains("to node): yyyyyyyyyy")
    });
    assert!(
        line.ends_with(&max),
        "the message arrived cut: {} bytes",
        line.len()
    );
    let over = vec![b'z'; LIMIT + 1];
    let err = failed(
        a.cli_with(&["broadcast", "-"], Some(&over), &[]),
        "broadcast over the limit",
    );
    assert!(err.contains("over the limit of 1048576 bytes"), "{err}");
    let help = text(&run_p2ps_with(&["send", "--help"], None, &[], LINE_WAIT).stdout);
    assert!(help.contains("1 MiB") && help.contains("@FILE"), "{help}");
    eprintln!("[{:?}] stdin, files and the limit checked", t0.elapsed());

    // Every sending command reads `-` (item 5); range takes short positions (item 10).
    let out = a.cli_with(&["broadcast", "-"], Some(b"cast from stdin"), &[]);
    assert!(ok(out, "broadcast -").contains("2 nodes received it"));
    got(&mut b, "to everyone): cast from stdin");
    got(&mut c, "to everyone): cast from stdin");
    let out = a.cli_with(&["range", "0", "1", "-"], Some(b"ranged"), &[]);
    ok(out, "range 0 1 -");
    let err = failed(a.cli(&["range", "0", "xyz", "x"]), "range with a bad HI");
    assert!(err.contains("1 to 32 hex digits"), "{err}");

    // Groups (item 9): sending from a file; leaving a group one is not in is an error.
    ok(c.cli(&["group", "join", "chess"]), "group join");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&file, "e2e4").unwrap();
    ok(
        a.cli(&["group", "send", "chess", &at_file]),
        "group send @file",
    );
    got(&mut c, "to group chess): e2e4");
    let err = failed(
        a.cli(&["group", "leave", "chess"]),
        "leaving a group not joined",
    );
    assert!(err.contains("not a member of group chess"), "{err}");
    ok(c.cli(&["group", "leave", "chess"]), "group leave");
    let err = failed(c.cli(&["group", "leave", "chess"]), "leaving twice");
    assert!(err.contains("not a member of group chess"), "{err}");
    eprintln!("[{:?}] casts and groups checked", t0.elapsed());

    // Errors (item 8): no backtrace under RUST_BACKTRACE=1, and a bind error names its cause
    // once.
    let bt = [("RUST_BACKTRACE", "1")];
    let err = failed(
        a.cli_with(&["send", &ghost, "x"], None, &bt),
        "send to an unknown prefix with RUST_BACKTRACE=1",
    );
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    let taken = a_addr.to_string();
    let key = dir.join("clash.key").display().to_string();
    let control = dir.join("clash.sock").display().to_string();
    let out = run_p2ps_with(
        &[
            "node",
            "--create",
            "--listen",
            &taken,
            "--key",
            &key,
            "--control",
            &control,
        ],
        None,
        &bt,
        Duration::from_secs(20),
    );
    let err = failed(out, "a node on a port in use");
    assert!(err.contains("could not bind UDP socket"), "{err}");
    assert_eq!(err.matches("could not bind UDP socket").count(), 1, "{err}");
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    // A start that failed leaves no new key file behind (item 7).
    assert!(
        !std::path::Path::new(&key).exists(),
        "the failed start left its new key file {key}"
    );
    eprintln!("[{:?}] errors checked", t0.elapsed());
}
