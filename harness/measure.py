"""Clients run against running servers, with every process's CPU read from
/proc inside the clients' measured window (make perf, perf-rooms, scale-demo)."""

import subprocess
import time
from dataclasses import dataclass, field

from . import procs
from .client import parse_report


@dataclass
class Window:
    """What a set of clients reported, and the CPU each watched process used in
    their measured window."""
    reports: list          # one per client: its JSON report or None
    statuses: list         # exit statuses
    tails: list            # log tails (for failures)
    wall: float = 0.0      # seconds between the two CPU samples (0: not sampled)
    cpu: dict = field(default_factory=dict)  # label -> (user, system) seconds in the window, or None
    events: list = field(default_factory=list)  # (label, seconds after launch) of what `events` ran


def _cpu(pid):
    try:
        return procs.cpu_seconds(pid)
    except (OSError, IndexError):
        return None  # gone (killed on purpose, or exited)


def _sleep_until(deadline, processes):
    """Sleep until `deadline` (monotonic); False if every one of `processes` exits first."""
    while time.monotonic() < deadline:
        if all(p.poll() is not None for p in processes):
            return False
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return True


def run_clients(supervisor, clients, watched, warmup, duration, events=(), timeout=60):
    """Start every client (`clients`: [(name, argv)], each printing one JSON report)
    at once and wait for them all.

    The clients count from the end of their warm-up to the end of their duration;
    CPU of each process in `watched` ({label: pid}) and of the clients is sampled
    inside that window (a margin of 10% of it, at most 0.5 s, on each side absorbs
    process start and connection set-up). `events`: [(seconds after launch,
    label, function)] run in order while the clients run (a server killed
    mid-run). Every wait is bounded: `warmup + duration + timeout` at most.
    """
    processes = [supervisor.start(name, argv, stdout=subprocess.PIPE) for name, argv in clients]
    launched = time.monotonic()
    margin = min(0.5, duration * 0.1)
    pids = {**watched, **{name: p.pid for (name, _), p in zip(clients, processes)}}
    window = Window([], [], [])
    pending = sorted(events, key=lambda event: event[0])
    first = last = None

    def wait_until(offset):
        """Sleep to `offset` s after launch, running the events that fall due."""
        while pending and pending[0][0] <= offset:
            at, label, function = pending.pop(0)
            if not _sleep_until(launched + at, processes):
                return False
            function()
            window.events.append((label, time.monotonic() - launched))
        return _sleep_until(launched + offset, processes)

    try:
        if wait_until(warmup + margin):
            first = (time.monotonic(), {label: _cpu(pid) for label, pid in pids.items()})
            if wait_until(warmup + duration - margin):
                last = (time.monotonic(), {label: _cpu(pid) for label, pid in pids.items()})
        wait_until(warmup + duration)  # events left in the window
        for process in processes:
            try:
                output, _ = process.communicate(timeout=max(1.0, launched + warmup + duration + timeout
                                                            - time.monotonic()))
            except subprocess.TimeoutExpired:
                output = b""
            window.reports.append(parse_report(output))
    finally:
        for process in processes:
            supervisor.stop(process)
    window.statuses = [p.returncode for p in processes]
    window.tails = [procs.log_tail(p, 3).strip() for p in processes]
    if first and last:
        window.wall = last[0] - first[0]
        for label in pids:
            before, after = first[1].get(label), last[1].get(label)
            window.cpu[label] = (after[0] - before[0], after[1] - before[1]) if before and after else None
    return window


def measure_client(supervisor, server, name, argv, warmup, duration):
    """One dummy-client (`argv`) against `server`: (report or None, the client's
    exit status, its log tail, and the window's CPU: None, or (wall seconds,
    server user, server system, client CPU or None))."""
    procs.reset_peak_rss(server.pid)
    client = f"{name}-{server.name}"
    window = run_clients(supervisor, [(client, argv)], {"server": server.pid}, warmup, duration)
    cpu = None
    if window.wall and window.cpu.get("server"):
        user, system = window.cpu["server"]
        client_cpu = sum(window.cpu[client]) if window.cpu.get(client) else None
        cpu = (window.wall, user, system, client_cpu)
    return window.reports[0], window.statuses[0], window.tails[0], cpu


def cpu_figures(cpu, rate, unit):
    """Server (and client) CPU per `unit` (msg, delivery) from a window's CPU and the client's rate."""
    if not cpu or rate <= 0:
        return {}
    wall, user, system, client_cpu = cpu
    per_item = 1e6 / (wall * rate)  # us per item, per CPU second
    figures = {f"server_user_us_per_{unit}": user * per_item, f"server_system_us_per_{unit}": system * per_item,
               f"server_cpu_us_per_{unit}": (user + system) * per_item, "server_cpu_pct": (user + system) / wall * 100}
    if client_cpu is not None:
        figures.update({f"client_cpu_us_per_{unit}": client_cpu * per_item, "client_cpu_pct": client_cpu / wall * 100})
    return figures
