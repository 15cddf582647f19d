//! The dashboard page in a real browser: Debian's chromium, headless, loads `GET /` from a
//! running node, runs the page's own script and dumps the DOM, which must show the node's
//! figures filled in (its id, its state, a number for the network size) — with no token, and
//! with a token given in the URL's fragment (without it the page asks for one and shows none).
//!
//! Needs `chromium` (scripts/test.sh installs it). Without it the test says so and passes,
//! except under CI (`CI` set), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::{wait_ring, NodeProc, Start, TestNet, FAST};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
/// How long one chromium run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// The address the node printed (`http: http://ADDR`).
fn http_addr(n: &mut NodeProc) -> SocketAddr {
    n.http_addr(WAIT)
}

/// The chromium binary, or `None` (and the test is skipped) when it is not installed and
/// this is not CI.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(
            !ci,
            "chromium is not installed (scripts/test.sh installs it)"
        );
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
    }
    found
}

/// The DOM of `url` once the page's script has run (`--dump-dom`), from a headless chromium
/// with a profile of its own under `dir`.
fn dump_dom(browser: &Path, dir: &Path, url: &str) -> String {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", browser.display()));
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (dom, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "chromium failed ({status}):\n{err}");
    dom
}

/// The text of the element with `id` in a dumped DOM (its first text, up to the next tag).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} in the DOM:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

#[test]
fn the_dashboard_shows_the_nodes_figures_in_a_real_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let net = TestNet::new();
    let token_file = net.path().join("http.token");
    let tf = token_file.to_str().unwrap().to_string();
    let mut a = net.spawn(
        "d0",
        Start::Create,
        &[FAST, &["--http", "127.0.0.1:0"]].concat(),
    );
    let ticket = a.wait_ticket(WAIT);
    let mut b = net.spawn(
        "d1",
        Start::Join(ticket.clone()),
        &[FAST, &["--http", "127.0.0.1:0", "--http-token", &tf]].concat(),
    );
    let mut c = net.spawn("d2", Start::Join(ticket), FAST);
    b.wait_ticket(WAIT);
    c.wait_ticket(WAIT);
    wait_ring(&mut [&mut a, &mut b, &mut c], WAIT);
    assert!(a.cli(&["put", "colour", "blue"]).status.success());

    // No token: the figures straight away.
    let dom = dump_dom(
        &browser,
        net.path(),
        &format!("http://{}/", http_addr(&mut a)),
    );
    assert_eq!(text_of(&dom, "node-id"), a.id().to_string(), "{dom}");
    assert_eq!(text_of(&dom, "state"), "joined");
    let size: u64 = text_of(&dom, "size")
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("network size not a number ({e}):\n{dom}"));
    assert_eq!(size, 3, "three nodes, every one in the lists");
    assert_eq!(text_of(&dom, "neighbours"), "2");
    assert_eq!(text_of(&dom, "connections"), "2");
    // The ring picture came from /ring.svg (through the script, as a blob).
    assert!(dom.contains("src=\"blob:http://"), "{dom}");

    // With a token: the page asks for it, and shows nothing, until it has it.
    let b_addr = http_addr(&mut b);
    let dom = dump_dom(&browser, net.path(), &format!("http://{b_addr}/"));
    assert_eq!(text_of(&dom, "node-id"), "loading…");
    assert!(
        dom.contains("id=\"login\" style=\"display: block;\""),
        "{dom}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let url = format!("http://{b_addr}/#token={}", token.trim());
    let dom = dump_dom(&browser, net.path(), &url);
    assert_eq!(text_of(&dom, "node-id"), b.id().to_string(), "{dom}");
    assert_eq!(text_of(&dom, "size"), "3");
}
