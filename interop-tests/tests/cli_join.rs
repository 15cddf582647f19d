//! Joining as a new user meets it (issue 16 item 7), on real `p2ps node` processes: the join's
//! progress on stderr at the default log level, the ticket printed only once the node is part
//! of a network, a second process with a running member's key (its key file, or a copy)
//! refused at once with a message that says so (but a restart after a crash let in), and a
//! dead ticket that fails with what it tried and leaves no new key file.
//!
//! Every wait is bounded; a failure panics with the node's own output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::p2ps::{Identity, Ticket};
use p2ps_interop_tests::{run_p2ps_with, wait_for, Start, TestNet, FAST};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const JOIN_WAIT: Duration = Duration::from_secs(30);
/// No backtrace, and nothing else from the environment: the default log level (warn).
const ENV: &[(&str, &str)] = &[("RUST_BACKTRACE", "0")];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `p2ps node --join TICKET` with key `key` and its own control socket in `dir`, run to its
/// end (within `limit`).
fn join_once(dir: &Path, name: &str, ticket: &str, key: &Path, limit: Duration) -> Output {
    let control = dir.join(format!("{name}.sock"));
    let (key, control) = (key.display().to_string(), control.display().to_string());
    let args = [
        "node",
        "--join",
        ticket,
        "--key",
        &key,
        "--control",
        &control,
        "--listen",
        "127.0.0.1:0",
    ];
    run_p2ps_with(&args, None, ENV, limit)
}

/// Index of the first line of `lines` starting with `prefix`.
fn line_at(lines: &[String], prefix: &str) -> Option<usize> {
    lines.iter().position(|l| l.starts_with(prefix))
}

#[test]
fn the_ticket_comes_after_the_join_and_the_join_shows_its_steps() {
    let net = TestNet::new();
    let mut a = net.spawn("a", Start::Create, FAST);
    let ticket = a.wait_ticket(JOIN_WAIT);
    let out = a.stdout();
    let created = line_at(&out, "created a new network").expect("a created line");
    let printed = line_at(&out, "ticket: ").expect("a ticket line");
    assert!(created < printed, "{out:?}");
    assert_eq!(out[printed], format!("ticket: {ticket}"));

    let mut b = net.spawn("b", Start::Join(ticket.clone()), FAST);
    let b_ticket = b.wait_ticket(JOIN_WAIT);
    let line = b.wait_line(JOIN_WAIT, "ticket", |l| l.starts_with("ticket: "));
    assert_eq!(line, format!("ticket: {b_ticket}"));
    let out = b.stdout();
    let joined = line_at(&out, "joined the network through ").expect("a joined line");
    let printed = line_at(&out, "ticket: ").unwrap();
    assert!(
        joined < printed,
        "the ticket came before the join ended: {out:?}"
    );
    assert_eq!(out.iter().filter(|l| l.starts_with("ticket: ")).count(), 1);
    let a_id = a.id();
    for step in [
        format!("joining through {}: connecting to 127.0.0.1:", a_id.short()),
        format!("connected to {} at 127.0.0.1:", a_id.short()),
        "join request 1 of 5 sent".to_string(),
    ] {
        // Written before the joined line; its reader thread may be a moment behind.
        let seen = wait_for(Duration::from_secs(5), || {
            b.stderr().contains(&step).then_some(())
        });
        assert!(seen.is_some(), "no {step:?} in\n{}", b.describe());
    }
}

#[test]
fn a_second_process_with_a_running_members_key_is_told_its_id_is_in_use() {
    let net = TestNet::new();
    let mut a = net.spawn("a", Start::Create, FAST);
    let ticket = a.wait_ticket(JOIN_WAIT);
    let mut b = net.spawn("b", Start::Join(ticket.clone()), FAST);
    b.wait_ticket(JOIN_WAIT);
    let b_id = b.id();
    let key = net.path().join("b.key");
    let before = std::fs::read(&key).unwrap();

    // A second process with b's key file: its data directory (beside the key) is b's, in use.
    let out = join_once(net.path(), "twin", &ticket, &key, Duration::from_secs(20));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the twin started: {err}");
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains("node with this key"), "{err}");
    // The key was there before: untouched.
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // A copy of the key elsewhere (as on another machine). Without the refusal the join would
    // fail after five join requests timed out (25 s); the run's limit is below that.
    let copy = net.path().join("copy.key");
    std::fs::copy(&key, &copy).unwrap();
    let out = join_once(net.path(), "copy", &ticket, &copy, Duration::from_secs(20));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the copy joined: {err}");
    assert!(
        err.contains(&format!("node id {b_id} is in use")),
        "no id-in-use message: {err}"
    );
    assert!(err.contains("another key (--key FILE)"), "{err}");
    assert!(err.contains("connected to "), "{err}");
    assert!(
        !text(&out.stdout).contains("ticket: "),
        "{}",
        text(&out.stdout)
    );
    assert!(copy.exists(), "the copied key (there before) was removed");
    // The running member keeps its place.
    assert!(b.try_exit().is_none(), "{}", b.describe());
    let sent = a.cli(&["send", &b_id.to_string(), "still you"]);
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    b.wait_line(JOIN_WAIT, "the message", |l| l.ends_with("still you"));

    // A crash, and a restart with the key at once: `a` still holds the dead process's
    // connection, finds it silent and takes the restart's instead of refusing it.
    b.kill();
    std::fs::remove_file(&b.ticket_file).unwrap();
    let mut again = net.spawn("b", Start::Join(ticket), FAST);
    again.wait_ticket(JOIN_WAIT);
    assert_eq!(again.id(), b_id);
    assert!(
        !again.stderr().contains("is in use"),
        "{}",
        again.describe()
    );
}

#[test]
fn a_dead_ticket_fails_with_what_it_tried_and_leaves_no_new_key() {
    let net = TestNet::new();
    // A port nobody listens on.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = port.local_addr().unwrap();
    drop(port);
    let ghost = Ticket::new(Identity::generate().unwrap().node_id(), vec![addr]).to_string();
    let key = net.path().join("new.key");
    let out = join_once(net.path(), "new", &ghost, &key, Duration::from_secs(40));
    let err = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "joined a dead ticket: {err}");
    assert!(stdout.starts_with("id: "), "{stdout}");
    assert!(!stdout.contains("ticket: "), "printed a ticket: {stdout}");
    for said in [
        format!("connecting to {addr}"),
        "join request 1 of 5 sent, waiting for the connection".to_string(),
        "cannot reach the bootstrap node".to_string(),
        "timed out".to_string(),
    ] {
        assert!(err.contains(&said), "no {said:?} in: {err}");
    }
    assert!(!key.exists(), "the failed start left its new key file");
    assert!(!net.path().join("new.sock").exists());

    // Stopped with Ctrl-C while it waits: nothing left behind either.
    let mut waiting = net.spawn("waiting", Start::Join(ghost), FAST);
    waiting.wait_line(JOIN_WAIT, "`id: …`", |l| l.starts_with("id: "));
    waiting.interrupt();
    let status = waiting.wait_exit(JOIN_WAIT);
    assert!(status.success(), "{}", waiting.describe());
    assert!(!waiting.stdout().iter().any(|l| l.starts_with("ticket: ")));
    let key = net.path().join("waiting.key");
    assert!(!key.exists(), "the stopped start left its new key file");
    assert!(!net.path().join("waiting.data").exists());
}
