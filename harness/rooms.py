"""The room loads of ../shared/protocols/room.md against room-server and the peers.

perf.py rooms: each load runs `dummy-client room` (closed loop: each member
sends one chat and the next once its own came back; every delivery checked)
against a fresh server, one loop each: deliveries/s, fan-out latency, server
CPU per delivery, peak RSS, and the ratios of ours to the peers in the same run.
"""

import sys
import tempfile

from . import procs, report, servers
from .client import ROOM_PAYLOAD as PAYLOAD
from .client import room_argv
from .measure import cpu_figures, measure_client
from .procs import raise_fd_limit, require

OURS = "room-server"
LOADS = (("small rooms 100x10", 100, 10), ("one busy room 1x100", 1, 100), ("one large room 1x1000", 1, 1000))
COLUMNS = (
    ("deliveries/s", "deliveries_per_sec", "{:,.0f}", 1),
    ("p50 us", "p50_us", "lat", -1),
    ("p99 us", "p99_us", "lat", -1),
    ("srv us/dlv", "server_cpu_us_per_delivery", "{:.3f}", -1),
    ("srv CPU%", "server_cpu_pct", "{:.0f}", 0),
    ("RSS MiB", "rss_mib", "{:.1f}", -1),
    ("errors", "errors", "{:d}", 0),
)


def room_servers(args):
    """Ours, and with --peers the built room peers (a note for each that is not)."""
    found = [servers.ours(args.room_server, name=OURS)]
    if args.peers:
        found += servers.built_only(servers.room_peers())
    return found


def measure(supervisor, server, load, args):
    name, rooms, members = load
    argv = room_argv(args.client, server.port, rooms, members, args.duration, args.warmup, args.threads)
    result, status, tail, cpu = measure_client(supervisor, server, "room", argv, args.warmup, args.duration)
    row = {"server": server.name, "load": name, "connections": rooms * members}
    if result is None:
        row["failure"] = f"dummy-client room exited {status} without JSON: {tail}"
        return row
    latency = result.get("latency_us", {})
    row.update(deliveries_per_sec=result["deliveries_per_sec"], p50_us=latency.get("p50"),
               p99_us=latency.get("p99"), errors=sum(result.get("errors", {}).values()), client_exit=status,
               rss_mib=procs.memory_kib(server.pid, "VmHWM") / 1024)
    row.update(cpu_figures(cpu, result["deliveries_per_sec"], "delivery"))
    return row


def run(args):
    require(args.room_server, "room-server")
    require(args.client, "dummy-client")
    raise_fd_limit()
    under_test = room_servers(args)
    print(f"perf rooms: {', '.join(s.name for s in under_test)}; one loop each; {len(LOADS)} loads "
          f"({args.warmup:g} s warm-up + {args.duration:g} s measured), {PAYLOAD} B chats", flush=True)
    rows = []
    log_dir = tempfile.mkdtemp(prefix="reactor-perf-rooms-")
    ports = procs.Ports(args.port)
    with procs.Supervisor(log_dir) as supervisor:
        for load in LOADS:
            for server in under_test:  # a fresh server per load: no load's state carries over
                running = servers.start(supervisor, server, ports.take(), 1)
                try:
                    rows.append(measure(supervisor, running, load, args))
                finally:
                    running.stop()
    print()
    print(report.results_table(rows, COLUMNS))
    titles = [title for title, *_ in COLUMNS if title not in ("srv CPU%", "errors")]
    for peer in [s.name for s in under_test if s.name != OURS]:
        theirs = {row["load"]: row for row in rows if row["server"] == peer}
        print(f"\n{OURS} / {peer} (same run): deliveries/s > 1 = we deliver more; latency, CPU, RSS < 1 = we use less")
        print(report.ratio_table(rows, theirs, OURS, titles, columns=COLUMNS))
    failed = [row for row in rows if row.get("failure") or row.get("errors")]
    for row in failed:
        print(f"{row['server']} {row['load']}: {row.get('failure') or str(row['errors']) + ' violations'}", file=sys.stderr)
    return 1 if failed else 0
