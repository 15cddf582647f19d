"""The OpenDHT side of `p2ps bench cluster --opendht`.

Starts a network of OpenDHT nodes (`opendht.DhtRunner`, Debian's python3-opendht) on 127.0.0.1
in this one process, each bootstrapped to the first node and to the one started before it,
with OpenDHT's request rate limits off (`DhtConfig.setRateLimit(-1, -1)`: -1 is "no limit",
0 would keep the defaults), on a network id of its own so that it never answers anyone else.
Nothing is sent beyond loopback: no public bootstrap node, no peer discovery.

Then, on the keys and values the Rust bench hands over (the same as its own):

- puts one at a time, each from a random node, timed from `put` to its done callback (OpenDHT
  calls it once the value is stored on the nodes its search found closest to the key);
- gets one at a time of the keys just put, each from another random node, timed from `get` to
  the first value the node hands back (the get is then stopped), every value checked against
  the one put; the time to OpenDHT's own end of the get (its done callback) is timed too;
- then puts and gets with `in_flight` requests outstanding at once, spread over random nodes:
  good answers per second while `in_flight` were outstanding, i.e. from the first start to
  the last (gets checked like above), as the Rust side counts its own.

Reads a JSON request on stdin and writes one JSON object on stdout; progress goes to stderr.
Every wait is bounded: each operation by `op_timeout_secs`, each many-in-flight phase by
`phase_secs`, the whole run by the Rust side's timeout on this process.
"""

import json
import math
import os
import random
import socket
import sys
import threading
import time

try:
    import opendht as dht
except ImportError as e:  # the Rust side checks first; this is a second line of defence
    print(json.dumps({"error": f"python3-opendht is not installed: {e}"}))
    sys.exit(3)

# A network id nobody else uses: OpenDHT nodes of another network ignore these.
NETWORK_ID = 0x5032_5053


def say(msg):
    print(f"  [opendht] {msg}", file=sys.stderr, flush=True)


def quantile(xs, q):
    """Nearest-rank quantile, as the Rust side computes it (0 for no samples)."""
    if not xs:
        return 0.0
    v = sorted(xs)
    rank = min(max(math.ceil(q * len(v)), 1), len(v))
    return v[rank - 1]


def summary(micros):
    return {
        "p50_us": quantile(micros, 0.5),
        "p90_us": quantile(micros, 0.9),
        "p99_us": quantile(micros, 0.99),
        "max_us": quantile(micros, 1.0),
    }


def start_network(n):
    """n runners on 127.0.0.1, each bootstrapped to runner 0 and to the one before it."""
    runners = []
    for _ in range(n):
        cfg = dht.DhtConfig()
        cfg.setRateLimit(-1, -1)
        cfg.setNetwork(NETWORK_ID)
        r = dht.DhtRunner()
        r.run(ipv4="127.0.0.1", ipv6="::1", port=0, config=cfg)
        runners.append(r)
    ports = [r.getBound(socket.AF_INET).getPort() for r in runners]
    for i in range(1, n):
        runners[i].bootstrap("127.0.0.1", str(ports[0]))
        if i > 1:
            runners[i].bootstrap("127.0.0.1", str(ports[i - 1]))
    return runners


def good_nodes(runner):
    """Nodes in the IPv4 routing table that answered (OpenDHT marks them "[good]")."""
    try:
        return runner.getRoutingTablesLog(socket.AF_INET).count("[good]")
    except Exception:  # a log format we do not know: report nothing rather than fail
        return -1


def put_once(runner, key, value, timeout):
    """One put; (ok, µs). A put without its done callback within `timeout` fails."""
    done = threading.Event()
    result = [False]

    def on_done(ok, _nodes):
        result[0] = ok
        done.set()

    t = time.perf_counter()
    runner.put(dht.InfoHash.get(key), dht.Value(value.encode()), done_cb=on_done)
    finished = done.wait(timeout)
    took = (time.perf_counter() - t) * 1e6
    return finished and result[0], took


def get_once(runner, key, want, timeout):
    """One get; (outcome, µs to the first value, µs to OpenDHT's end of the get).

    outcome: "correct" (the first value is the one put), "wrong" (another value), "missing"
    (the get ended without a value) or "timeout".
    """
    first = threading.Event()
    done = threading.Event()
    state = {"value": None, "first_at": None}

    def on_value(v):
        if state["value"] is None:
            state["value"] = bytes(v.data)
            state["first_at"] = time.perf_counter()
            first.set()
        return False  # one value is the answer: stop the search

    def on_done(_ok, _nodes):
        done.set()
        first.set()

    t = time.perf_counter()
    runner.get(dht.InfoHash.get(key), get_cb=on_value, done_cb=on_done)
    got_first = first.wait(timeout)
    ended = done.wait(max(0.0, timeout - (time.perf_counter() - t)))
    end_us = (time.perf_counter() - t) * 1e6
    if not got_first:
        return "timeout", None, None
    if state["value"] is None:
        return "missing", None, end_us if ended else None
    first_us = (state["first_at"] - t) * 1e6
    outcome = "correct" if state["value"] == want.encode() else "wrong"
    return outcome, first_us, end_us if ended else None


def one_in_flight(runners, pairs, rng, timeout, deadline):
    puts, gets, get_ends = [], [], []
    put_ok = put_failed = 0
    outcomes = {"correct": 0, "wrong": 0, "missing": 0, "timeout": 0}
    asked_puts = asked_gets = 0
    writers = []
    for key, value in pairs:
        if time.monotonic() > deadline:
            break
        w = rng.randrange(len(runners))
        writers.append(w)
        asked_puts += 1
        ok, took = put_once(runners[w], key, value, timeout)
        if ok:
            put_ok += 1
            puts.append(took)
        else:
            put_failed += 1
    for (key, value), w in zip(pairs, writers):
        if time.monotonic() > deadline:
            break
        r = rng.randrange(len(runners) - 1)
        r = r + 1 if r >= w else r  # another node than the writer
        asked_gets += 1
        outcome, first_us, end_us = get_once(runners[r], key, value, timeout)
        outcomes[outcome] += 1
        if first_us is not None:
            gets.append(first_us)
        if end_us is not None:
            get_ends.append(end_us)
    return {
        "puts_planned": len(pairs),
        "puts_asked": asked_puts,
        "puts_ok": put_ok,
        "puts_failed": put_failed,
        "put": summary(puts),
        "gets_asked": asked_gets,
        "gets": outcomes,
        "get_first_value": summary(gets),
        "get_done": summary(get_ends),
    }


class Window:
    """At most `size` operations outstanding; counts what completes."""

    def __init__(self, size):
        self.slots = threading.Semaphore(size)
        self.lock = threading.Lock()
        self.outcomes = {}
        self.outstanding = 0

    def finish(self, outcome):
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.outstanding -= 1
        self.slots.release()

    def take(self, timeout):
        if not self.slots.acquire(timeout=timeout):
            return False
        with self.lock:
            self.outstanding += 1
        return True


def many_in_flight(runners, pairs, kind, in_flight, rng, timeout, phase_secs):
    """Puts (or gets of keys already put) with `in_flight` outstanding; ops per second."""
    win = Window(in_flight)
    start = time.perf_counter()
    limit = start + phase_secs
    issued = 0
    loaded = None  # (seconds, good answers) when the last operation was started
    for key, value in pairs:
        if time.perf_counter() > limit or not win.take(timeout):
            break
        issued += 1
        node = runners[rng.randrange(len(runners))]
        h = dht.InfoHash.get(key)
        if kind == "put":

            def on_done(ok, _nodes, win=win):
                win.finish("ok" if ok else "failed")

            node.put(h, dht.Value(value.encode()), done_cb=on_done)
        else:
            want = value.encode()
            state = {"seen": False}
            lock = threading.Lock()

            def on_value(v, want=want, state=state, lock=lock, win=win):
                with lock:
                    if state["seen"]:
                        return False
                    state["seen"] = True
                win.finish("correct" if bytes(v.data) == want else "wrong")
                return False

            def on_done(_ok, _nodes, state=state, lock=lock, win=win):
                with lock:
                    if state["seen"]:
                        return
                    state["seen"] = True
                win.finish("missing")

            node.get(h, get_cb=on_value, done_cb=on_done)
    with win.lock:
        good_now = win.outcomes.get("ok", 0) + win.outcomes.get("correct", 0)
    loaded = (time.perf_counter() - start, good_now)
    # Wait (bounded) for the outstanding ones.
    drain_until = time.perf_counter() + timeout
    while time.perf_counter() < drain_until:
        with win.lock:
            if win.outstanding == 0:
                break
        time.sleep(0.001)
    secs = time.perf_counter() - start
    with win.lock:
        outcomes = dict(win.outcomes)
        outstanding = win.outstanding
    loaded_secs, loaded_good = loaded
    return {
        "kind": kind,
        "in_flight": in_flight,
        "issued": issued,
        "outcomes": outcomes,
        "unfinished": outstanding,
        "secs": secs,
        "loaded_secs": loaded_secs,
        # As on the Rust side: good answers while `in_flight` were outstanding, per second.
        "ops_per_sec": loaded_good / loaded_secs if loaded_secs > 0 else 0.0,
    }


def main():
    req = json.load(sys.stdin)
    n = int(req["nodes"])
    timeout = float(req.get("op_timeout_secs", 10))
    rng = random.Random(int(req.get("seed", 1)))
    run_deadline = time.monotonic() + float(req.get("run_secs", 600))

    t0 = time.perf_counter()
    runners = start_network(n)
    # Let the routing tables fill (OpenDHT fills them as its nodes talk), then warm up with a
    # few puts and gets of keys of their own (not measured).
    settle = float(req.get("settle_secs", 5))
    time.sleep(settle)
    warm = [(f"opendht-warmup-{i}", f"w{i}") for i in range(int(req.get("warmup", 20)))]
    one_in_flight(runners, warm, rng, timeout, run_deadline)
    formed = time.perf_counter() - t0
    good = [good_nodes(r) for r in runners]
    say(f"{n} nodes started, bootstrapped, settled and warmed up in {formed:.1f} s "
        f"(good nodes per routing table: min {min(good)}, mean {sum(good) / n:.1f})")

    one = one_in_flight(runners, [tuple(p) for p in req["one_in_flight"]], rng, timeout,
                        run_deadline)
    say(f"one in flight: put p50 {one['put']['p50_us'] / 1e3:.2f} ms, get p50 "
        f"{one['get_first_value']['p50_us'] / 1e3:.2f} ms to the first value "
        f"({one['get_done']['p50_us'] / 1e3:.2f} ms to the end of the get), gets "
        f"{one['gets']}")

    many = [tuple(p) for p in req["many_in_flight"]]
    in_flight = int(req.get("in_flight", 32))
    phase = float(req.get("phase_secs", 30))
    puts = many_in_flight(runners, many, "put", in_flight, rng, timeout, phase)
    gets = many_in_flight(runners, many[: puts["issued"]], "get", in_flight, rng, timeout,
                          phase)
    say(f"{in_flight} in flight: {puts['ops_per_sec']:.0f} puts/s {puts['outcomes']}, "
        f"{gets['ops_per_sec']:.0f} gets/s {gets['outcomes']}")

    out = {
        "nodes": n,
        "network_secs": formed,
        "settle_secs": settle,
        "good_nodes_min": min(good),
        "good_nodes_mean": sum(good) / n,
        "one_in_flight": one,
        "many_puts": puts,
        "many_gets": gets,
    }
    print(json.dumps(out), flush=True)
    # Shut the runners down, for at most 10 s in all; then leave without waiting for the
    # runners' threads in their destructors (the numbers are out already).
    stopped = threading.Semaphore(0)
    for r in runners:
        r.shutdown(lambda: stopped.release())
    until = time.monotonic() + 10
    for _ in runners:
        if not stopped.acquire(timeout=max(0.0, until - time.monotonic())):
            say("some nodes did not shut down within 10 s")
            break
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
