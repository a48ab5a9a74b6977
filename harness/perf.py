"""End-to-end performance of echo-server, in separate processes (make perf).

    perf.py run      the load matrix against echo-server (and the peers): table, ratios, chart
    perf.py baseline save perf/results*.json as perf/baseline*.json
    perf.py peers    build the reference servers into .build-peers/
    perf.py rooms    the room loads against room-server (and the room peers)
    perf.py instr    user-space instructions per echoed message (callgrind)
    perf.py profile  CPU profile of echo-server under the c=100 flood (linux perf)

Python 3 standard library only. Every process is started through the harness's
Supervisor (procs.py) and stopped by its PID (SIGTERM, then SIGKILL after a
bounded wait), also on Ctrl-C. All traffic is on 127.0.0.1.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from . import procs, report, servers
from .client import flood_argv, matrix
from .measure import cpu_figures, measure_client
from .procs import HOST, ROOT, load_json, raise_fd_limit, require

PERF_DIR = os.path.join(ROOT, "perf")  # results, baselines, the chart (gitignored)
OURS = "reactor"
ASYNC = "reactor-async"


def measure_flood(supervisor, server, load, args):
    """Run one dummy-client flood against `server`; one result row. CPU per
    message is CPU rate over the client's message rate: both steady-state
    rates of the same window."""
    argv = flood_argv(args.client, server.port, load, args.duration, args.warmup, args.threads, args.client_flags)
    result, status, tail, cpu = measure_client(supervisor, server, "client", argv, args.warmup, args.duration)
    row = {"server": server.name, "load": load.name, "connections": load.connections}
    if result is None:
        row["failure"] = f"dummy-client exited {status} without JSON: {tail}"
        return row
    latency, errors = result.get("latency_us", {}), result.get("errors", {})
    row.update(
        msgs_per_sec=result["msgs_per_sec"], mib_per_sec=result["mib_per_sec"],
        p50_us=latency.get("p50"), p99_us=latency.get("p99"), p999_us=latency.get("p999"),
        errors=sum(errors.values()), client_exit=status,
        client_cpu_s=sum(result.get("client_cpu_s", {}).values()),
        rss_mib=procs.memory_kib(server.pid, "VmHWM") / 1024,
        client=result)
    row.update(cpu_figures(cpu, result["msgs_per_sec"], "msg"))
    return row


# --- idle connections ----------------------------------------------------------

def _read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def measure_idle(server, count, size=100):
    """Hold `count` idle connections: RSS per connection, then after one echo each.

    Measured on a fresh server (first thing after start), so memory freed by
    earlier floods cannot absorb the connections' cost.
    """
    pid = server.pid
    sockets_before = procs.socket_count(pid)
    rss_before = procs.memory_kib(pid)
    held, mismatches = [], 0
    rows = []
    try:
        for _ in range(count):
            held.append(socket.create_connection((HOST, server.port), timeout=5))
        accepted = procs.wait_until(lambda: procs.socket_count(pid) >= sockets_before + count, 10)
        time.sleep(0.3)
        rss_idle = procs.memory_kib(pid)
        payload = bytes(range(size))
        for sock in held:
            sock.sendall(payload)
        for sock in held:
            mismatches += _read_exactly(sock, size) != payload
        time.sleep(0.3)
        rss_echoed = procs.memory_kib(pid)
        for load, rss in ((f"idle c={count}", rss_idle), (f"idle+echo c={count}", rss_echoed)):
            rows.append({"server": server.name, "load": load, "connections": count,
                         "rss_mib": rss / 1024, "rss_per_conn_b": (rss - rss_before) * 1024 / count,
                         "errors": mismatches if "echo" in load else (0 if accepted else count)})
    except OSError as error:
        rows.append({"server": server.name, "load": f"idle c={count}", "failure": f"idle connections: {error}"})
    finally:
        for sock in held:
            sock.close()
    procs.wait_until(lambda: procs.socket_count(pid) <= sockets_before, 10)
    return rows


# --- aggregation and the results file -----------------------------------------------

def medians(rows):
    """One row per (server, load): the median of each figure over the repeats."""
    groups = {}
    for row in rows:
        groups.setdefault((row["server"], row["load"]), []).append(row)
    merged = []
    for group in groups.values():
        row = dict(group[0])
        if len(group) > 1:
            for key, value in group[0].items():
                if key in ("connections", "client_exit"):
                    continue  # not figures
                values = [r.get(key) for r in group]
                if isinstance(value, (int, float)) and all(isinstance(v, (int, float)) for v in values):
                    row[key] = statistics.median(values)
            row["errors"] = sum(r.get("errors", 0) or 0 for r in group)
            row["client_exit"] = max((r.get("client_exit") or 0 for r in group), default=0)
            row["repeats"] = len(group)
            row.pop("client", None)
        merged.append(row)
    return merged


def machine():
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def git_revision():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


# --- perf.py run ------------------------------------------------------------------

def run(args):
    require(args.server, "echo-server")
    require(args.client, "dummy-client")
    raise_fd_limit()
    started = time.monotonic()
    under_test = [servers.ours(args.server), servers.async_echo(args.server), *servers.versus(args.versus)]
    if args.peers:
        under_test += servers.built_only(servers.peers(), args.loops)
    loads = matrix(args.conns, args.stream_conns)
    per_flood = args.warmup + args.duration + 0.5
    estimate = len(under_test) * (len(loads) * args.repeat * per_flood + 3)
    print(f"perf: {', '.join(s.name for s in under_test)}; loops {args.loops}; "
          f"{len(loads)} floods x {args.repeat} ({args.warmup:g} s warm-up + {args.duration:g} s measured) "
          f"+ {args.idle} idle connections; about {estimate:.0f} s", flush=True)

    log_dir = tempfile.mkdtemp(prefix="reactor-perf-")
    try:
        with procs.Supervisor(log_dir) as supervisor:
            running = start_servers(supervisor, under_test, args)
            rows = measure_memory(running, args)
            rows += measure_loads(supervisor, running, loads, args)
            info = {server.name: {"binary": server.server.binary, "port": server.port,
                                  "base_rss_kib": server.base_rss_kib,
                                  "exit_status": server.stop()} for server in running}
    except (KeyboardInterrupt, procs.Stopped):
        print("\nperf: interrupted; servers stopped", file=sys.stderr)
        shutil.rmtree(log_dir, ignore_errors=True)
        return 130
    except RuntimeError as error:
        print(f"perf: {error}\nperf: logs kept in {log_dir}", file=sys.stderr)
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)

    merged = medians(rows)
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "git": git_revision(), "machine": machine(),
               "config": {"loops": args.loops, "duration_s": args.duration, "warmup_s": args.warmup,
                          "client_threads": args.threads, "client_flags": list(args.client_flags),
                          "repeats": args.repeat, "idle_connections": args.idle},
               "servers": info, "rows": merged, "runs": rows if args.repeat > 1 else None}
    print_results(results, load_json(args.baseline), args)
    with open(args.results, "w") as file:
        json.dump(results, file, indent=1)
    elapsed = time.monotonic() - started
    print(f"results: {os.path.relpath(args.results)}; took {elapsed:.0f} s")
    if info[OURS]["exit_status"] != 0:
        print(f"perf: echo-server exited with status {info[OURS]['exit_status']} on SIGTERM (expected 0)",
              file=sys.stderr)
        return 1
    return 0


def start_servers(supervisor, under_test, args):
    """Start every server at once, each on its own free port, ours first."""
    ports = procs.Ports(args.port)
    return [servers.start(supervisor, server, ports.take(), args.loops) for server in under_test]


def measure_memory(running, args):
    """Base RSS, then idle connections, on each fresh server (before any flood)."""
    rows = []
    for server in running:
        rows.append({"server": server.name, "load": "base", "connections": 0,
                     "rss_mib": server.base_rss_kib / 1024})
        if args.idle > 0:
            rows += measure_idle(server, args.idle)
    return rows


def measure_loads(supervisor, running, loads, args):
    """Every load against every server, alternating servers; `--repeat` times."""
    rows, total = [], len(loads) * args.repeat * len(running)
    for repeat in range(args.repeat):
        for index, load in enumerate(loads):
            # Rotate who goes first, so slow drift of the machine spreads over all servers.
            shift = (repeat + index) % len(running)
            for server in running[shift:] + running[:shift]:
                if server.process.poll() is not None:
                    raise RuntimeError(f"{server.name} exited ({server.process.returncode}):\n"
                                       f"{procs.log_tail(server.process)}")
                rows.append(measure_flood(supervisor, server, load, args))
                print(f"  [{len(rows)}/{total}] {progress(rows[-1])}", flush=True)
    return rows


def progress(row):
    if "failure" in row:
        return f"{row['server']} {row['load']}: FAILED: {row['failure']}"
    cpu = row.get("server_cpu_us_per_msg")
    return (f"{row['server']:<9} {row['load']:<16} {row['msgs_per_sec']:>11,.0f} msgs/s  "
            f"p99 {row['p99_us'] or 0:>8,.0f} us  server {'-' if cpu is None else f'{cpu:.3f}'} us/msg"
            f"{'  errors ' + str(row['errors']) if row.get('errors') else ''}")


def print_results(results, baseline, args):
    m = results["machine"]
    rows = results["rows"]
    print(f"\n{results['date']}, {results['git']}; {m['cpus']} x {m['cpu_model']}, Linux {m['kernel']}; "
          f"server and client share the machine; server loops {args.loops}, client threads {args.threads}"
          f"{', medians of ' + str(args.repeat) if args.repeat > 1 else ''}\n")
    print(report.results_table(rows))
    print(report.LEGEND)
    for row in rows:
        if "failure" in row:
            print(f"FAILED {row['server']} {row['load']}: {row['failure']}")
    print()
    print(report.baseline_comparison(rows, baseline, OURS))
    names = list(results["servers"])
    for peer in names[1:]:
        print()
        print(report.peer_comparison(rows, peer, OURS))
    # The async path against its SwiftNIO counterpart (issue targets: >= 1.3x; >= 0.8x of ours).
    for peer in ("nio-async-echo",):
        if ASYNC in names and peer in names:
            print()
            print(report.peer_comparison(rows, peer, ASYNC))
    print()
    title = (f"echo servers, {results['date']} ({m['cpus']} cores shared by server and client, "
             f"loops {args.loops})")
    print(report.chart(rows, names, args.chart, title))


# --- perf.py baseline ------------------------------------------------------------------

def save_baseline(args):
    saved = 0
    for name in ("results.json", "results-instr.json"):
        source = os.path.join(PERF_DIR, name)
        if os.path.exists(source):
            target = os.path.join(PERF_DIR, name.replace("results", "baseline"))
            shutil.copyfile(source, target)
            print(f"saved {os.path.relpath(source)} as {os.path.relpath(target)} ({load_json(source).get('date')})")
            saved += 1
    if not saved:
        print("perf: no perf/results.json yet: run `make perf` (or `make perf-instr`) first", file=sys.stderr)
        return 1
    return 0


# --- command line --------------------------------------------------------------------

def main():
    procs.stop_on_signals()
    release = procs.RELEASE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(command):
        command.add_argument("--server", default=os.path.join(release, "echo-server"))
        command.add_argument("--client", default=os.path.join(release, "dummy-client"))
        command.add_argument("--port", type=int, default=17777, help="first port to try")
        command.add_argument("--loops", type=int, default=1, help="event loops of every server")
        command.add_argument("--threads", type=int, default=2, help="dummy-client threads")
        command.add_argument("--peers", action="store_true", help="also measure the built peers")
        command.add_argument("--versus", help="another echo-server build (say, before a change), "
                             "measured in the same run as \"before\"")
        command.add_argument("--client-flags", type=shlex.split, default=[],
                             help="extra dummy-client flags, one string: --client-flags='--coalesce'")

    measure = commands.add_parser("run", help="the load matrix (make perf)")
    common(measure)
    measure.add_argument("--duration", type=float, default=5, help="measured seconds per flood")
    measure.add_argument("--warmup", type=float, default=1, help="warm-up seconds per flood")
    measure.add_argument("--conns", type=int, nargs="+", default=[1, 100, 1000], help="course-pattern connections")
    measure.add_argument("--stream-conns", type=int, default=10, help="16 KiB stream connections (0: none)")
    measure.add_argument("--idle", type=int, default=1000, help="idle connections held (0: none)")
    measure.add_argument("--repeat", type=int, default=1, help="run the matrix N times; report medians")
    measure.add_argument("--results", default=os.path.join(PERF_DIR, "results.json"))
    measure.add_argument("--baseline", default=os.path.join(PERF_DIR, "baseline.json"))
    measure.add_argument("--chart", default=os.path.join(PERF_DIR, "report.svg"))

    rooms_command = commands.add_parser("rooms", help="the room loads of room.md (make perf-rooms)")
    common(rooms_command)
    rooms_command.add_argument("--room-server", default=os.path.join(release, "room-server"))
    rooms_command.add_argument("--duration", type=float, default=5, help="measured seconds per load")
    rooms_command.add_argument("--warmup", type=float, default=1, help="warm-up seconds per load")

    commands.add_parser("baseline", help="save the latest results as the baseline")
    commands.add_parser("peers", help="build the reference servers into .build-peers/")

    instr_command = commands.add_parser("instr", help="instructions per echoed message (callgrind)")
    common(instr_command)
    instr_command.add_argument("--duration", type=float, default=3, help="measured seconds")
    instr_command.add_argument("--warmup", type=float, default=2, help="warm-up flood seconds")
    instr_command.add_argument("--connections", type=int, default=10)
    instr_command.add_argument("--top", type=int, default=15, help="functions to list")
    instr_command.set_defaults(client_flags=["--coalesce"])

    instr_rooms = commands.add_parser("instr-rooms", help="instructions per delivery (callgrind)")
    common(instr_rooms)
    instr_rooms.add_argument("--room-server", default=os.path.join(release, "room-server"))
    instr_rooms.add_argument("--duration", type=float, default=3, help="measured seconds")
    instr_rooms.add_argument("--warmup", type=float, default=2, help="warm-up seconds")
    instr_rooms.add_argument("--top", type=int, default=15, help="functions to list")

    profile_command = commands.add_parser("profile", help="CPU profile under the c=100 flood (perf record)")
    common(profile_command)
    profile_command.add_argument("--duration", type=float, default=10, help="seconds recorded")
    profile_command.add_argument("--connections", type=int, default=100)
    profile_command.add_argument("--top", type=int, default=30, help="symbols to list")

    args = parser.parse_args()
    if args.command == "run":
        return run(args)
    if args.command == "rooms":
        from . import rooms
        return rooms.run(args)
    if args.command == "baseline":
        return save_baseline(args)
    if args.command == "peers":
        return servers.build_peers()
    from . import instr
    if args.command == "instr":
        return instr.callgrind(args)
    if args.command == "instr-rooms":
        return instr.callgrind_rooms(args)
    return instr.profile(args)


if __name__ == "__main__":
    sys.exit(main())
