#!/usr/bin/env python3
"""Interop of dummy-client's HdrHistogram logs with Python's hdrhistogram (hdrh).

1. dummy-client flood --histogram-out writes a log (against an echo-server on
   127.0.0.1); hdrh's HistogramLogReader reads it, and its count, p50, p99,
   p99.9 and max must equal `dummy-client merge --json` of the same file.
2. hdrh's HistogramLogWriter writes a log of known samples; `dummy-client merge
   --json` must read it with hdrh's count and percentiles.
3. Both files merged: the count is the sum.

Percentiles on the Python side follow HdrHistogram's reference rule (Java's,
and hdrhistogram-swift's): the value at the first bucket whose running count
reaches ceil(p% of the total), at most the max recorded. hdrh's own
get_value_at_percentile rounds that count to the nearest instead, so it can
land one bucket lower; it is printed alongside, for information.

If hdrh cannot be imported or installed (pip install --user hdrhistogram), the
script prints "skipped: hdrhistogram not installable" and exits 0.
Usage: hdr_interop.py --bin .build/debug   (the folder with dummy-client and echo-server)
"""

import argparse
import importlib
import json
import math
import os
import random
import site
import socket
import subprocess
import sys
import tempfile
import time

PERCENTILES = [(50.0, "p50"), (99.0, "p99"), (99.9, "p999")]


def import_hdrh():
    """hdrh's histogram and log modules, installing the package for this user if needed; None if impossible."""
    try:
        from hdrh import histogram, log
        return histogram, log
    except ImportError:
        pass
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--user", "--quiet", "hdrhistogram"],
                       check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (subprocess.SubprocessError, OSError):
        return None
    site.addsitedir(site.getusersitepackages())
    importlib.invalidate_caches()
    try:
        from hdrh import histogram, log
        return histogram, log
    except ImportError:
        return None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, process, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"echo-server exited early ({process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"echo-server did not listen on 127.0.0.1:{port} within {seconds} s")


def run(command, timeout=120):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result.stdout


def interval_max_ns(path):
    """The Interval_Max of a log's (single) interval line, in ns: dummy-client writes the exact max there."""
    for line in open(path):
        if line.startswith("Tag="):
            line = line.split(",", 1)[1]
        fields = line.split(",")
        if len(fields) == 4 and not line.startswith(("#", '"')):
            return round(float(fields[2]) * 1e6)
    raise SystemExit(f"{path}: no interval line")


def reference_percentile(histogram, percentile, max_recorded):
    """HdrHistogram's reference valueAtPercentile (Java's, hdrhistogram-swift's), from hdrh's counts."""
    total = histogram.get_total_count()
    target = max(1, math.ceil(math.nextafter(percentile, 0) / 100.0 * total))
    running = 0
    for index in range(histogram.counts_len):
        running += histogram.get_count_at_index(index)
        if running >= target:
            value = histogram.get_highest_equivalent_value(histogram.get_value_from_index(index))
            return min(value, max_recorded)
    return 0


def compare(label, histogram, merged, max_recorded, problems):
    """Prints hdrh's figures next to dummy-client merge's; records any that differ."""
    latency = merged["latency_us"]
    rows = [("count", histogram.get_total_count(), merged["count"], None)]
    for percentile, key in PERCENTILES:
        ours = reference_percentile(histogram, percentile, max_recorded) / 1000.0
        rows.append((key, ours, latency[key], histogram.get_value_at_percentile(percentile) / 1000.0))
    rows.append(("max", histogram.get_max_value() / 1000.0, latency["max"], None))
    print(f"{label}")
    print(f"  {'':6} {'hdrh (reference rule)':>22} {'dummy-client merge':>19} {'hdrh get_value_at_percentile':>29}")
    for key, python_value, swift_value, hdrh_own in rows:
        # merge --json prints microseconds to 0.1.
        same = python_value == swift_value if key == "count" else abs(python_value - swift_value) < 0.051
        own = "" if hdrh_own is None else f"{hdrh_own:.1f}"
        print(f"  {key:6} {python_value:>22} {swift_value:>19} {own:>29}  {'ok' if same else 'DIFFERENT'}")
        if not same:
            problems.append(f"{label}: {key} {python_value} (hdrh) vs {swift_value} (dummy-client)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=".build/debug", help="folder with dummy-client and echo-server")
    arguments = parser.parse_args()
    modules = import_hdrh()
    if modules is None:
        print("skipped: hdrhistogram not installable")
        return 0
    hdr_histogram, hdr_log = modules
    client = os.path.join(arguments.bin, "dummy-client")
    server = os.path.join(arguments.bin, "echo-server")
    problems = []

    with tempfile.TemporaryDirectory(prefix="hdr-interop-") as directory:
        # 1. dummy-client writes, hdrh reads.
        run_log = os.path.join(directory, "flood.hlog")
        port = free_port()
        echo = subprocess.Popen([server, "--host", "127.0.0.1", "--port", str(port), "--loops", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, echo)
            run([client, "flood", "--port", str(port), "--connections", "8", "--duration", "1", "--warmup", "0.2",
                 "--quiet", "--histogram-out", run_log])
        finally:
            echo.terminate()
            try:
                echo.wait(timeout=10)
            except subprocess.TimeoutExpired:
                echo.kill()
                echo.wait()
        reader = hdr_log.HistogramLogReader(run_log, hdr_histogram.HdrHistogram(1, 100_000_000_000, 3))
        from_client = reader.get_next_interval_histogram()
        if from_client is None:
            problems.append(f"hdrh's HistogramLogReader found no interval in {run_log}")
        else:
            merged = json.loads(run([client, "merge", "--json", run_log]))
            compare("dummy-client flood --histogram-out, read by hdrh's HistogramLogReader:", from_client, merged,
                    interval_max_ns(run_log), problems)

        # 2. hdrh writes, dummy-client reads: 20,000 log-normal latencies around 100 us, and one 5 s outlier.
        python_log = os.path.join(directory, "hdrh.hlog")
        written = hdr_histogram.HdrHistogram(1, 100_000_000_000, 3)
        samples = random.Random(15)
        for _ in range(20_000):
            written.record_value(min(int(samples.lognormvariate(math.log(100_000), 0.8)), 99_000_000_000))
        written.record_value(5_000_000_000)
        with open(python_log, "w") as output:
            writer = hdr_log.HistogramLogWriter(output)
            writer.output_log_format_version()
            writer.output_comment("[hdr_interop.py: values in nanoseconds]")
            # hdrh's output_start_time fails (it passes milliseconds to datetime.fromtimestamp): the same line by hand.
            now = time.time()
            writer.output_comment(f"[StartTime: {now:.3f} (seconds since epoch), {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime(now))}]")
            writer.output_legend()
            writer.output_interval_histogram(written, start_time_stamp_sec=1.0, end_time_stamp_sec=2.0)
        merged = json.loads(run([client, "merge", "--json", python_log]))
        compare("hdrh's HistogramLogWriter, read by dummy-client merge:", written, merged,
                written.get_max_value(), problems)

        # 3. Both together.
        if from_client is not None:
            both = json.loads(run([client, "merge", "--json", run_log, python_log]))
            expected = from_client.get_total_count() + written.get_total_count()
            same = both["count"] == expected
            print(f"both files merged: count {both['count']}, hdrh's counts sum to {expected}  {'ok' if same else 'DIFFERENT'}")
            if not same:
                problems.append(f"merged count {both['count']}, expected {expected}")

    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("hdr interop: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
