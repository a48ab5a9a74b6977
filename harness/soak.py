"""Soak test of the release echo-server: make soak [DURATION=600].

For --duration seconds, against one server on a free loopback port:
  - dummy-client flood, closed loop, verified (--connections, default 50);
  - churn: connect, echo 100 B, half-close, EOF, close, in a loop;
  - stalled readers (--stalled, default 3): send 4 MiB reading nothing, hold
    --stall-hold s, then read everything, verify, reconnect;
  - resetters: batches of 20 connections that send 1000 B and reset (SO_LINGER 0).
The server's RSS (VmRSS) and fd count (/proc/PID/fd) are sampled every second
into .build/soak/soak-<time>.csv.

Fails (exit 1) when
  - RSS drifts: the median RSS of the last quarter of the run is more than 5%
    above the median of the first minute after the warm-up (the first 10% of the
    run, at least 30 s, at most half of it);
  - the fd count, once every client has closed, is above its value at start;
  - any echo was wrong: dummy-client's exit status or JSON errors, or a churn or
    stalled-reader stream of this script that did not come back byte for byte;
  - the server does not exit 0 at SIGTERM.
"""

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import threading
import time

from . import procs, servers
from .client import Flood
from .procs import ROOT
from .sockets import KIB, MIB, PATTERN, Stream, connect, drive, reset, send_until_stalled

DRIFT_LIMIT = 0.05


def median(values):
    """statistics.median, but NaN (not an error) for no values."""
    return statistics.median(values) if values else float("nan")


class Counters:
    """Totals the client threads keep (under one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values = {"churn": 0, "stalled": 0, "resets": 0, "bad": 0}
        self.first_bad = None

    def add(self, key, ok=True, what=""):
        with self.lock:
            self.values[key if ok else "bad"] += 1
            if not ok and self.first_bad is None:
                self.first_bad = what

    def snapshot(self):
        with self.lock:
            return dict(self.values)


def guarded(counters, name, body):
    """A client thread: `body` in a loop until stopped; an exception counts as bad."""
    def run(stop):
        while not stop.is_set():
            try:
                body(stop)
            except OSError as error:
                counters.add(name, False, f"{name}: {error}")
                stop.wait(0.5)
    return run


def churn(port, counters):
    def once(stop):
        stream = Stream(connect(port), total=100)
        try:
            drive([stream], timeout=10)
        finally:
            stream.close()
        counters.add("churn", stream.verified, f"churn: {stream.describe()}")
        stop.wait(0.005)  # ~150 connections a second: TIME_WAIT stays far below the port range
    return once


def stalled_reader(port, counters, size, hold):
    def once(stop):
        stream = Stream(connect(port, rcvbuf=4 * KIB), total=size)
        try:
            send_until_stalled([stream], stall=1.0, timeout=hold)
            stop.wait(hold)  # holding the server's output back: the load itself
            drive([stream], timeout=60)
        finally:
            stream.close()
        counters.add("stalled", stream.verified, f"stalled reader: {stream.describe()}")
    return once


def resetter(port, counters):
    payload = bytes(PATTERN.view(0, 1000))

    def once(stop):
        socks = [connect(port) for _ in range(20)]
        for sock in socks:
            sock.send(payload)
        for sock in socks:
            reset(sock)
            counters.add("resets")
        stop.wait(0.1)
    return once


def rss_drift(samples, duration):
    """(drift, reference KiB, final KiB, warm-up s) from [(t, rss_kib, fds)]."""
    warmup = min(max(30.0, duration * 0.1), duration / 2)
    reference = median([rss for t, rss, _ in samples if warmup <= t < warmup + 60])
    final = median([rss for t, rss, _ in samples if t >= duration * 0.75])
    return final / reference - 1, reference, final, warmup


def chart(csv_path):
    if not shutil.which("gnuplot"):
        return
    script = f"""
set terminal dumb 100 24
set datafile separator ","
set key top left
set xlabel "seconds"
set ytics nomirror
set y2tics
plot "{csv_path}" skip 1 using 1:($2/1024) with lines title "RSS MiB (left)" axes x1y1, \\
     "{csv_path}" skip 1 using 1:3 with lines title "fds (right)" axes x1y2
"""
    result = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, timeout=30)
    print(result.stdout if result.returncode == 0 else f"(gnuplot: {result.stderr.strip()})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.path.join(procs.RELEASE, "echo-server"))
    parser.add_argument("--client", default=os.path.join(procs.RELEASE, "dummy-client"))
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--connections", type=int, default=50, help="dummy-client flood connections (50)")
    parser.add_argument("--stalled", type=int, default=3, help="stalled readers (3)")
    parser.add_argument("--stalled-bytes", type=int, default=4 * MIB, help="each stalled reader's stream (4 MiB)")
    parser.add_argument("--stall-hold", type=float, default=10, help="seconds a stalled reader reads nothing (10)")
    args = parser.parse_args(argv)
    for path, what in ((args.server, "echo-server"), (args.client, "dummy-client")):
        procs.require(path, what)
    procs.raise_fd_limit()
    procs.stop_on_signals()
    log_dir = os.path.join(ROOT, ".build", "soak")
    os.makedirs(log_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    csv_path = os.path.join(log_dir, f"soak-{stamp}.csv")

    counters = Counters()
    failures = []
    stop = threading.Event()
    threads = []
    samples = []
    end_fds = end_rss = totals = status = None
    with procs.Supervisor(log_dir) as supervisor:
        spec = servers.Server("echo-server", args.server, ("--loops", "{loops}"), ours=True)
        server = servers.start(supervisor, spec, procs.free_port(21000), os.cpu_count() or 2,
                               log_name=f"soak-{stamp}-server")
        baseline = server.baseline_fds
        print(f"soak: server pid {server.pid} on port {server.port}, {args.duration:g} s, "
              f"baseline {baseline} fds, RSS {server.rss_kib() / KIB:.1f} MiB; samples -> {os.path.relpath(csv_path)}",
              flush=True)
        flood = Flood(supervisor, args.client, server.port, args.connections,
                      duration=args.duration, name=f"soak-{stamp}-flood")
        bodies = [("churn", churn(server.port, counters)), ("resets", resetter(server.port, counters))]
        bodies += [("stalled", stalled_reader(server.port, counters, args.stalled_bytes, args.stall_hold))
                   for _ in range(args.stalled)]
        try:
            for name, body in bodies:
                thread = threading.Thread(target=guarded(counters, name, body), args=(stop,), daemon=True)
                thread.start()
                threads.append(thread)
            start = time.monotonic()
            with open(csv_path, "w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(["t_s", "rss_kib", "fds", "churn", "stalled", "resets", "bad"])
                next_sample = start
                while (elapsed := time.monotonic() - start) < args.duration and server.alive:
                    rss, fds = server.rss_kib(), server.fds()
                    samples.append((elapsed, rss, fds))
                    count = counters.snapshot()
                    writer.writerow([f"{elapsed:.1f}", rss, fds, count["churn"], count["stalled"],
                                     count["resets"], count["bad"]])
                    file.flush()
                    if len(samples) % 60 == 0:
                        print(f"soak: {elapsed:4.0f} s  RSS {rss / KIB:.1f} MiB  fds {fds}  {count}", flush=True)
                    next_sample += 1.0
                    time.sleep(max(0.0, next_sample - time.monotonic()))  # the sampling period
        finally:
            stop.set()
            for thread in threads:
                thread.join(90)
            flood.wait(timeout=60)
        if not server.alive:
            failures.append(f"server exited during the run: {server.process.returncode}")
        else:
            stuck = [t for t in threads if t.is_alive()]
            if stuck:
                failures.append(f"{len(stuck)} client threads did not stop")
            leaked = server.settle_fds(baseline, timeout=15)
            end_fds = server.fds()
            if leaked > 0:
                failures.append(f"fds at the end {end_fds} > baseline {baseline}")
            end_rss = server.rss_kib()
            status, totals = server.stop(), server.totals()
            if status != 0:
                failures.append(f"server exit {status} at SIGTERM")

    ok, text = flood.verdict()
    if not ok:
        failures.append(text)
    count = counters.snapshot()
    if count["bad"]:
        failures.append(f"{count['bad']} bad client streams, first: {counters.first_bad}")
    drift, reference, final, warmup = rss_drift(samples, args.duration)
    if not drift <= DRIFT_LIMIT:
        failures.append(f"RSS drift {drift:+.1%} > {DRIFT_LIMIT:.0%}")

    peak = max((rss for t, rss, _ in samples if t >= warmup), default=0)
    report = flood.report or {}
    print()
    chart(csv_path)
    print(f"soak summary ({args.duration:g} s, {len(samples)} samples, {os.path.relpath(csv_path)}):")
    print(f"  flood        {report.get('connections', 0)} conns, {report.get('rounds', 0):,} rounds, "
          f"{report.get('msgs_per_sec', 0):,.0f} msgs/s, errors {report.get('errors')}, exit {flood.status}")
    print(f"  churn        {count['churn']:,} connections echoed and closed")
    print(f"  stalled      {count['stalled']:,} x {args.stalled_bytes / MIB:g} MiB held {args.stall_hold:g} s, then verified")
    print(f"  resets       {count['resets']:,}")
    print(f"  bad streams  {count['bad']}" + (f" (first: {counters.first_bad})" if counters.first_bad else ""))
    print(f"  RSS          warm-up {warmup:.0f} s; reference (median {warmup:.0f}-{min(warmup + 60, args.duration):.0f} s) "
          f"{reference / KIB:.2f} MiB; last quarter median {final / KIB:.2f} MiB; drift {drift:+.2%} "
          f"(limit +{DRIFT_LIMIT:.0%}); peak after warm-up {peak / KIB:.2f} MiB")
    if end_fds is not None:
        print(f"  fds          baseline {baseline}, max {max(f for _, _, f in samples)}, at the end {end_fds}; "
              f"RSS at the end {end_rss / KIB:.2f} MiB")
        if totals:
            print(f"  server       {totals['accepted']:,} accepted, {totals['refused']} refused, "
                  f"{totals['in'] / MIB:,.0f} MiB in, {totals['out'] / MIB:,.0f} MiB out, exit {status}")
    print(f"soak: {'FAIL: ' + '; '.join(failures) if failures else 'PASS'}")
    return 1 if failures else 0

