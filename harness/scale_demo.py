"""Past one machine, simulated on loopback: make scale-demo [SCALE_ARGS=--quick].

Hosts are loopback addresses: echo-servers on 127.0.0.2, .3, .4 (one loop each,
the same port on each, as on separate machines), HAProxy's frontend on 127.0.0.1,
its backend connections (and health checks) from 127.0.0.10, and two dummy-clients
as two client hosts (127.0.0.5 and .6 when dummy-client can choose its source
address; else both from 127.0.0.1). HAProxy is installed from Debian's packages
when missing, and runs in the foreground (`haproxy -db`) in `mode tcp`,
`balance leastconn`, `send-proxy-v2`, health checks every 200 ms.

Phases, each with fresh processes and the same load (each client: --connections
closed-loop connections of the course pattern, ten 100 B messages per round):

  direct              the clients straight to one echo-server (no PROXY header)
  haproxy 1           through HAProxy to one server, send-proxy-v2 / --proxy-protocol
  haproxy 1 no-proxy  the same without the header (HAProxy without send-proxy-v2,
                      the server without --proxy-protocol): the header's cost
  haproxy 1 churn     the same pair with --rounds-per-connection 10 (a fresh
  ... no-proxy        connection, so a fresh header, every ten rounds): where it costs
  haproxy 3           through HAProxy to three servers
  haproxy 3 kill      the same, and one server SIGKILLed half-way through; with
                      --reconnect the clients replace the connections that failed

The clients' latency histograms (--histogram-out) are merged with `dummy-client
merge`, never averaged. Each server runs with --verbose: its per-connection
`open ... from ADDR:PORT` lines show whom it believed the client was (the
client hosts through the PROXY header; 127.0.0.10, HAProxy's own address, for
its health checks, which send a LOCAL header, and for everything without the header;
echo-server logs a LOCAL connection's peer as "?").

One table; everything started is stopped by PID; the whole run is bounded
(about 2 minutes by default, 30 s with --quick). Logs: .build/scale-demo/.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from . import haproxy, procs, report, servers
from .client import COURSE, Load, error_count, flood_argv, run_to_report
from .measure import run_clients

SERVER_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CLIENT_HOSTS = ("127.0.0.5", "127.0.0.6")
FRONTEND_HOST = "127.0.0.1"
HAPROXY_SOURCE = "127.0.0.10"
FIRST_PORT = 22000
CHURN_ROUNDS = 10
OPEN_LINE = re.compile(r"open fd \d+ from (\S+?),")  # ADDR:PORT, [ADDR]:PORT, or ? (unknown)


@dataclass(frozen=True)
class Phase:
    name: str
    servers: int
    haproxy: bool
    proxy_protocol: bool
    kill: bool = False
    churn: bool = False  # --rounds-per-connection CHURN_ROUNDS: a fresh connection (and header) every few rounds

    @property
    def slug(self):
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


PHASES = (
    Phase("direct", 1, haproxy=False, proxy_protocol=False),
    Phase("haproxy 1", 1, haproxy=True, proxy_protocol=True),
    Phase("haproxy 1 no-proxy", 1, haproxy=True, proxy_protocol=False),
    Phase("haproxy 1 churn", 1, haproxy=True, proxy_protocol=True, churn=True),
    Phase("haproxy 1 churn no-proxy", 1, haproxy=True, proxy_protocol=False, churn=True),
    Phase("haproxy 3", 3, haproxy=True, proxy_protocol=True),
    Phase("haproxy 3 kill", 3, haproxy=True, proxy_protocol=True, kill=True),
)


# --- what this dummy-client can do ---------------------------------------------------

def flood_options(client):
    """{option: takes a value} from `dummy-client flood --help`."""
    text = subprocess.run([client, "flood", "--help"], capture_output=True, text=True, timeout=30).stdout
    return {match.group(1): bool(match.group(2)) for match in re.finditer(r"^\s+(--[a-z0-9-]+)( <[^>]+>)?", text, re.M)}


class Capabilities:
    """The flood flags for a client host's source address and for reconnecting after
    a failure, when this dummy-client has them (their names were not settled when
    this was written, so they are looked up in --help)."""

    def __init__(self, client):
        options = flood_options(client)
        self.histogram = "--histogram-out" in options
        self.source = next((name for name in ("--source-address", "--source", "--bind", "--local-address",
                                              "--local-host", "--source-host") if options.get(name)), None)
        self.reconnect = next((name for name in sorted(options) if name.startswith("--reconnect")), None)
        self.reconnect_value = options.get(self.reconnect, False)
        self.churn = "--rounds-per-connection" in options

    def client_host(self, index):
        return CLIENT_HOSTS[index] if self.source else FRONTEND_HOST

    def flags(self, index):
        flags = []
        if self.source:
            flags += [self.source, CLIENT_HOSTS[index]]
        if self.reconnect and not self.reconnect_value:
            flags.append(self.reconnect)
        return flags


# --- one phase ----------------------------------------------------------------------------

def common_port(ports, hosts):
    """A port free on every one of `hosts` (the same port on each "machine")."""
    for _ in range(100):
        port = ports.take(hosts[0])
        if all(procs.port_is_free(port, host) for host in hosts[1:]):
            return port
    raise RuntimeError(f"no port free on all of {', '.join(hosts)}")


def opens_by_address(log):
    """{address: connections opened} from a --verbose server log."""
    counts = {}
    for match in OPEN_LINE.finditer(log):
        address = re.sub(r":\d+$", "", match.group(1)).strip("[]")
        counts[address] = counts.get(address, 0) + 1
    return counts


def run_phase(phase, args, caps, supervisor, ports, work, haproxy_binary):
    slug = phase.slug
    hosts = SERVER_HOSTS[:phase.servers]
    port = common_port(ports, hosts)
    flags = ["--idle-timeout", "0", "--verbose", *(["--proxy-protocol"] if phase.proxy_protocol else [])]
    spec = servers.Server("echo-server", args.server, ("--loops", "1", *flags), ours=True)
    running = [servers.start(supervisor, spec, port, 1, host=host, log_name=f"{slug}-s{i + 1}")
               for i, host in enumerate(hosts)]
    proxy = None
    try:
        target = (hosts[0], port)
        if phase.haproxy:
            frontend = (FRONTEND_HOST, ports.take(FRONTEND_HOST))
            socket_path = os.path.join(work, f"{slug}.sock")
            text = haproxy.config(frontend, [(f"s{i + 1}", host, port) for i, host in enumerate(hosts)],
                                  phase.proxy_protocol, socket_path, source=HAPROXY_SOURCE)
            proxy = haproxy.HAProxy(supervisor, haproxy_binary, os.path.join(work, f"{slug}.cfg"), text, frontend,
                                    socket_path, name=f"{slug}-haproxy")
            if not proxy.wait_all_up(phase.servers, timeout=10):
                raise RuntimeError(f"{phase.name}: HAProxy does not see every server UP: {proxy.states()}")
            target = frontend
        histograms = [os.path.join(work, f"{slug}-client{i + 1}.hlog") for i in range(2)]
        for path in histograms:
            if os.path.exists(path):
                os.unlink(path)
        clients = []
        for i in range(2):
            extra = [*(["--histogram-out", histograms[i]] if caps.histogram else []), *caps.flags(i),
                     *(["--rounds-per-connection", CHURN_ROUNDS] if phase.churn else [])]
            load = Load(phase.name, args.connections, COURSE)
            clients.append((f"{slug}-client{i + 1}",
                            flood_argv(args.client, target[1], load, args.duration, args.warmup, 1, extra,
                                       host=target[0])))
        watched = {f"s{i + 1}": server.pid for i, server in enumerate(running)}
        if proxy:
            watched["haproxy"] = proxy.pid
        killed = {}
        events = []
        if phase.kill:
            victim = running[1]

            def kill():
                killed["pid"], killed["at"] = victim.pid, time.monotonic()
                victim.kill()  # SIGKILL, by PID
                procs.wait_until(lambda: proxy.states().get("s2", "").startswith("DOWN"), 5, 0.01)
                down = proxy.states().get("s2", "?")
                killed["down_ms"] = (time.monotonic() - killed["at"]) * 1000 if down.startswith("DOWN") else None

            events.append((args.warmup + args.duration / 2, "kill s2", kill))
        window = run_clients(supervisor, clients, watched, args.warmup, args.duration, events)
        merged = None
        if caps.histogram and all(os.path.exists(path) for path in histograms):
            merged, status, tail = run_to_report(supervisor, f"{slug}-merge", [args.client, "merge", "--json",
                                                                                *histograms], 60)
            if merged is None:
                print(f"scale-demo: {phase.name}: dummy-client merge exited {status}: {tail}", file=sys.stderr)
        states = proxy.states() if proxy else {}
    finally:
        if proxy:
            proxy.stop()
        statuses = [server.stop() if server.alive else server.process.returncode for server in running]
    return phase_row(phase, caps, running, statuses, window, merged, killed, states)


def phase_row(phase, caps, running, statuses, window, merged, killed, states):
    reports = window.reports
    missing = [i + 1 for i, r in enumerate(reports) if r is None]
    row = {"phase": phase.name, "servers": phase.servers, "haproxy": phase.haproxy,
           "proxy_protocol": phase.proxy_protocol, "client_exit": window.statuses, "states_after": states,
           "failures": [f"client {i} printed no JSON: {window.tails[i - 1]}" for i in missing]}
    reports = [r for r in reports if r]
    rate = sum(r["msgs_per_sec"] for r in reports)
    errors = {}
    for r in reports:
        for key, value in r.get("errors", {}).items():
            errors[key] = errors.get(key, 0) + value
    opened = [r.get("connections_opened", r["connections"]) for r in reports]
    # A connection the server (or HAProxy for it) closed or reset, that was cut short, or
    # could not connect; not those --rounds-per-connection closed by plan.
    failed = sum(r.get("connections_failed", sum(r.get("errors", {}).get(k, 0) for k in
                                                 ("resets", "short_echoes", "connect_failures")))
                 + r.get("connections_closed_by_server", 0) for r in reports)
    row["closed_by_server"] = sum(r.get("connections_closed_by_server", 0) for r in reports)
    row["rounds_cut"] = sum(r.get("rounds_cut", 0) for r in reports)
    row.update(msgs_per_sec=rate, connections=sum(opened), errors=errors,
               mismatches=errors.get("mismatches", 0), failed=failed,
               bytes_sent=sum(r.get("bytes_sent", 0) for r in reports),
               bytes_echoed=sum(r.get("bytes_echoed", 0) for r in reports))
    reconnects = [r["connections_reconnected"] for r in reports if "connections_reconnected" in r]
    row["reestablished"] = sum(reconnects) if caps.reconnect and reconnects else None
    latency = (merged or {}).get("latency_us") or {}
    row.update(latency=latency, merged_count=(merged or {}).get("count"), merged=merged is not None)
    if window.wall and rate:
        per_msg = 1e6 / (window.wall * rate)
        server_cpu = [sum(cpu) for label, cpu in window.cpu.items() if label.startswith("s") and cpu]
        row["server_us_per_msg"] = sum(server_cpu) * per_msg
        if window.cpu.get("haproxy"):
            row["haproxy_us_per_msg"] = sum(window.cpu["haproxy"]) * per_msg
        clients = [sum(cpu) for label, cpu in window.cpu.items() if "client" in label and cpu]
        row["client_us_per_msg"] = sum(clients) * per_msg
    # Whom each server believed its clients were.
    seen = [opens_by_address(server.log()) for server in running]
    client_hosts = {caps.client_host(i) for i in range(2)}
    row["opens_from_clients"] = [sum(n for a, n in s.items() if a in client_hosts) for s in seen]
    row["opens_from_haproxy"] = [s.get(HAPROXY_SOURCE, 0) for s in seen]
    others = {}
    for s in seen:
        for address, n in s.items():
            if address not in client_hosts:
                others[address] = others.get(address, 0) + n
    row["opens_not_from_clients"] = others  # HAProxy's health checks, and all traffic without the header
    row["server_exit"] = statuses
    row["server_totals"] = [server.totals() for server in running]
    if killed:
        row["killed"] = {"server": "s2", "pid": killed["pid"], "down_ms": killed.get("down_ms"),
                         "at_s": next((at for label, at in window.events if label == "kill s2"), None)}
    check(row, phase)
    return row


def check(row, phase):
    """What must hold, into row["failures"]."""
    fail = row["failures"].append
    if row["mismatches"]:
        fail(f"{row['mismatches']} mismatched rounds")
    if not phase.kill and row["failed"]:
        fail(f"{row['failed']} failed connections without a fault: {row['errors']}")
    if not row["merged"]:
        fail("no merged histogram")
    expected = row["connections"]  # every connection opened, first ones and replacements
    from_clients = sum(row["opens_from_clients"])
    if phase.proxy_protocol or not phase.haproxy:
        # Every connection a client made shows the client's address at the server.
        if from_clients < expected:
            fail(f"servers saw {from_clients} connections from the client hosts, clients made {expected}")
    elif from_clients:
        fail(f"without the PROXY header, {from_clients} connections still showed a client address")
    for index, (status, totals) in enumerate(zip(row["server_exit"], row["server_totals"])):
        if phase.kill and index == 1:
            if status != -signal.SIGKILL:
                fail(f"s2 exit {status}, not killed")
            continue
        if status != 0:
            fail(f"s{index + 1} exit {status} at SIGTERM")
        elif totals and totals["in"] != totals["out"]:
            fail(f"s{index + 1} read {totals['in']} B, echoed {totals['out']} B")
    if phase.kill:
        if row["reestablished"] is not None and row["reestablished"] < row["failed"]:
            fail(f"{row['failed']} connections failed, only {row['reestablished']} re-established")
        if not row["failed"]:
            fail("the killed server's connections did not fail")
        if not (row.get("killed") or {}).get("down_ms"):
            fail("HAProxy never marked the killed server DOWN")


# --- the table ------------------------------------------------------------------------------

def fmt_us(value):
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def table(rows, caps):
    header = ["phase", "servers", "PROXY", "msgs/s", "p50 us", "p99 us", "p99.9 us", "srv us/msg", "hap us/msg",
              "failed", "re-est.", "wrong", "seen as client"]
    lines = []
    for row in rows:
        lat = row.get("latency") or {}
        hap = row.get("haproxy_us_per_msg")
        seen = "/".join(str(n) for n in row["opens_from_clients"])
        lines.append([row["phase"], str(row["servers"]), "v2" if row["proxy_protocol"] else "off",
                      f"{row['msgs_per_sec']:,.0f}", fmt_us(lat.get("p50")), fmt_us(lat.get("p99")),
                      fmt_us(lat.get("p999")), f"{row.get('server_us_per_msg', 0):.2f}",
                      "-" if hap is None else f"{hap:.2f}", f"{row['failed']:,}",
                      "n/a" if row["reestablished"] is None else f"{row['reestablished']:,}",
                      str(row["mismatches"]), f"{seen} of {row['connections']}"])
    return report.render(header, lines, left=1)


def ratio(a, b):
    return f"{a / b:.3f}" if a and b else "-"


def summary(rows, caps):
    by = {row["phase"]: row for row in rows}
    out = []
    for suffix, what in (("", "long-lived connections"),
                         (" churn", f"a new connection every {CHURN_ROUNDS} rounds")):
        on, off = by.get("haproxy 1" + suffix), by.get(f"haproxy 1{suffix} no-proxy")
        if on and off:
            lat_on, lat_off = on.get("latency") or {}, off.get("latency") or {}
            out.append(f"PROXY header, on / off through HAProxy to 1 server, {what}: msgs/s "
                       f"{ratio(on['msgs_per_sec'], off['msgs_per_sec'])}, p99 {ratio(lat_on.get('p99'), lat_off.get('p99'))}, "
                       f"server CPU per msg {ratio(on.get('server_us_per_msg'), off.get('server_us_per_msg'))}, "
                       f"HAProxy CPU per msg {ratio(on.get('haproxy_us_per_msg'), off.get('haproxy_us_per_msg'))}")
    direct, one, three = by.get("direct"), by.get("haproxy 1"), by.get("haproxy 3")
    if direct and one and three:
        out.append(f"through HAProxy / direct: msgs/s {ratio(one['msgs_per_sec'], direct['msgs_per_sec'])} (1 server), "
                   f"{ratio(three['msgs_per_sec'], direct['msgs_per_sec'])} (3 servers)")
    kill = by.get("haproxy 3 kill")
    if kill and kill.get("killed"):
        k = kill["killed"]
        down = f"{k['down_ms']:,.0f} ms" if k.get("down_ms") else "never"
        survivors = [t for i, t in enumerate(kill["server_totals"]) if i != 1 and t]
        causes = ", ".join([f"{n} {key}" for key, n in kill["errors"].items() if n]
                           + [f"{kill['closed_by_server']} closed by the server", f"{kill['rounds_cut']} rounds cut"])
        out.append(f"kill: s2 (pid {k['pid']}) SIGKILLed {k['at_s']:.1f} s after the clients started; HAProxy marked it "
                   f"DOWN after {down}; {kill['failed']:,} client connections failed "
                   f"({causes}), re-established "
                   f"{'n/a (this dummy-client has no reconnect flag)' if kill['reestablished'] is None else kill['reestablished']}; "
                   f"{kill['mismatches']} rounds came back wrong; the surviving servers read and echoed "
                   + ", ".join(f"{t['in']:,}/{t['out']:,} B" for t in survivors))
    on = by.get("haproxy 1")
    if on:
        out.append("the servers' --verbose open lines for connections not from a client host (HAProxy's health "
                   "checks, PROXY v2 LOCAL; all traffic without the header): "
                   + (", ".join(f"{a} {n}" for a, n in sorted(on["opens_not_from_clients"].items())) or "none")
                   + " (haproxy 1)")
    notes = []
    if not caps.source:
        notes.append("both clients connect from 127.0.0.1 (this dummy-client has no source-address flag)")
    notes.append("'seen as client': connections each server logged as opened from a client host's address "
                 "(through HAProxy: the PROXY header's), of those the clients opened; 'failed': connections "
                 "closed by the server, reset, cut short or refused; 're-est.': replaced (--reconnect); "
                 "'wrong': rounds that came back different")
    return "\n".join(out + ["note: " + n for n in notes])


# --- main -----------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(prog="scale-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.path.join(procs.RELEASE, "echo-server"))
    parser.add_argument("--client", default=os.path.join(procs.RELEASE, "dummy-client"))
    parser.add_argument("--quick", action="store_true", help="3 s per phase, 20 connections per client (~30 s)")
    parser.add_argument("--duration", type=float, help="measured seconds per phase (14; --quick 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per phase (1)")
    parser.add_argument("--connections", type=int, help="connections per client (50; --quick 20)")
    parser.add_argument("--only", help="comma-separated phases: " + ", ".join(p.slug for p in PHASES))
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 14.0)
    args.connections = args.connections or (20 if args.quick else 50)
    procs.require(args.server, "echo-server")
    procs.require(args.client, "dummy-client")
    caps = Capabilities(args.client)
    phases = [p for p in PHASES if caps.churn or not p.churn]
    if args.only:
        phases = [p for p in phases if p.slug in args.only.split(",")]
    if "--proxy-protocol" not in subprocess.run([args.server, "--help"], capture_output=True, text=True,
                                                timeout=30).stdout:
        sys.exit("scale-demo: this echo-server has no --proxy-protocol: make release")
    binary = haproxy.ensure_installed()
    procs.raise_fd_limit()
    procs.stop_on_signals()
    budget = int(len(phases) * (args.warmup + args.duration + 30) + 60)
    work = os.path.join(procs.ROOT, ".build", "scale-demo")
    started = time.monotonic()
    print(f"scale-demo: {haproxy.version(binary)}; servers {', '.join(SERVER_HOSTS)}; HAProxy {FRONTEND_HOST} "
          f"(backend source {HAPROXY_SOURCE}); clients "
          f"{', '.join(CLIENT_HOSTS) if caps.source else '127.0.0.1 (x2)'}; {len(phases)} phases x "
          f"({args.warmup:g} s warm-up + {args.duration:g} s), 2 x {args.connections} connections", flush=True)
    rows = []
    ports = procs.Ports(FIRST_PORT)
    try:
        with procs.time_limit(budget, procs.Stopped(f"scale-demo: over its {budget} s budget")), \
                procs.Supervisor(work) as supervisor:
            for phase in phases:
                try:
                    row = run_phase(phase, args, caps, supervisor, ports, work, binary)
                except RuntimeError as error:
                    print(f"scale-demo: {phase.name}: FAILED: {error}", file=sys.stderr)
                    rows.append({"phase": phase.name, "failures": [str(error)], "error": True})
                    continue
                rows.append(row)
                lat = row.get("latency") or {}
                print(f"  {phase.name:<20} {row['msgs_per_sec']:>11,.0f} msgs/s  p99 {fmt_us(lat.get('p99')):>7} us  "
                      f"failed {row['failed']}  wrong {row['mismatches']}"
                      f"{'  FAIL: ' + '; '.join(row['failures']) if row['failures'] else ''}", flush=True)
    except (KeyboardInterrupt, procs.Stopped) as error:
        print(f"\nscale-demo: stopped ({error or 'interrupted'}); everything it started is stopped", file=sys.stderr)
        return 130
    good = [row for row in rows if not row.get("error")]
    print()
    print(table(good, caps))
    print(summary(good, caps))
    with open(os.path.join(work, "results.json"), "w") as file:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M %Z"), "duration_s": args.duration,
                   "connections_per_client": args.connections, "rows": rows}, file, indent=1)
    failed = [row for row in rows if row["failures"]]
    for row in failed:
        print(f"FAIL {row['phase']}: {'; '.join(row['failures'])}", file=sys.stderr)
    print(f"scale-demo: {'FAIL' if failed else 'PASS'} in {time.monotonic() - started:.0f} s "
          f"(logs, configs, histograms: {os.path.relpath(work)})")
    return 1 if failed else 0
