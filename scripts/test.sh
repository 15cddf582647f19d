#!/usr/bin/env bash
# Runs every P2PS check and test: formatting, clippy (warnings are errors) and the whole test
# suite. On a fresh Debian machine, run as root, it first installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: the network-namespace tests need ip and nft; the NAT lab runs
# a real UPnP gateway (miniupnpd; the -nftables package holds only the daemon, with no service
# that would start on this machine and no debconf questions) and upnpc for checking it by hand;
# `p2ps bench cluster --opendht` compares the dictionary with OpenDHT, a real peer, through
# Debian's Python binding of it (python3-opendht; its small test runs 8 OpenDHT nodes); the
# node's dashboard page is checked in a real headless browser (chromium).
APT_PACKAGES=(iproute2 nftables miniupnpd-nftables miniupnpc python3-opendht chromium)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "== installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "== missing Debian packages: ${missing[*]} (run as root to install them);" \
             "tests that need them will say so"
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

echo "== the overlay core stays sans-IO"
if cargo tree -p p2ps-overlay --no-default-features -e normal --prefix none --locked \
    | grep -E '^(tokio|quinn|rustls|mio|socket2) '; then
    echo "p2ps-overlay must not depend on an I/O stack" >&2
    exit 1
fi
if grep -rnE 'Instant::now|SystemTime::now|std::net::UdpSocket|std::thread::sleep' overlay/src; then
    echo "p2ps-overlay must not read the clock or do I/O" >&2
    exit 1
fi
# The services in crates of their own are protocols too: the same rules.
for c in watcher census; do
    if cargo tree -p "p2ps-$c" -e normal --prefix none --locked \
        | grep -E '^(tokio|quinn|rustls|mio|socket2) '; then
        echo "p2ps-$c must not depend on an I/O stack" >&2
        exit 1
    fi
    if grep -rnE 'Instant::now|SystemTime::now|std::net::UdpSocket|std::thread::sleep' "$c/src"; then
        echo "p2ps-$c must not read the clock or do I/O" >&2
        exit 1
    fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
# The test output also goes to a file, so that one summary line can end the run (cargo's own
# last line is a doctest's).
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start=$SECONDS
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
awk -v secs=$((SECONDS - start)) -v status="$status" '
    /^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) passed += $i
            if ($(i + 1) ~ /^failed/) failed += $i
            if ($(i + 1) ~ /^ignored/) ignored += $i
        }
        binaries++
    }
    END {
        printf "== summary: %d passed, %d failed, %d skipped (ignored) in %d test binaries, %dm%02ds%s\n",
            passed, failed, ignored, binaries, secs / 60, secs % 60,
            (status == 0 ? "" : "; cargo test FAILED (exit " status ")")
    }' "$log"
exit "$status"
