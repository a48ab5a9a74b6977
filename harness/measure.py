"""One dummy-client against one running server, with both processes' CPU read
from /proc inside the client's measured window (make perf, make perf-rooms)."""

import subprocess
import time

from . import procs
from .client import parse_report


# --- one flood against one server ---------------------------------------------

def _sample(server_pid, client_pid):
    """(time, server CPU (user, system), client CPU) at one instant."""
    try:
        client = procs.cpu_seconds(client_pid)
    except OSError:
        client = None
    return time.monotonic(), procs.cpu_seconds(server_pid), client


def _sleep_until(deadline, process):
    """Sleep until `deadline` (monotonic); False if `process` exits first."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return True


def measure_client(supervisor, server, name, argv, warmup, duration):
    """Run one dummy-client (`argv`, which prints one JSON report) against `server`.

    The client counts from the end of its warm-up to the end of its
    duration. CPU is sampled from /proc for both processes inside that
    window (a margin of 10% of it, at most 0.5 s, on each side absorbs
    process start and connection set-up). Returns (report or None, the
    client's exit status, its log tail, and the window's CPU: None, or
    (wall seconds, server user, server system, client CPU or None)).
    """
    pid = server.pid
    procs.reset_peak_rss(pid)
    client = supervisor.start(f"{name}-{server.name}", argv, stdout=subprocess.PIPE)
    launched = time.monotonic()
    margin = min(0.5, duration * 0.1)
    first = last = None
    try:
        if _sleep_until(launched + warmup + margin, client):
            first = _sample(pid, client.pid)
            if _sleep_until(launched + warmup + duration - margin, client):
                last = _sample(pid, client.pid)
        output, _ = client.communicate(timeout=warmup + duration + 60)
    finally:
        supervisor.stop(client)
    cpu = None
    if first and last:
        (su0, ss0), (su1, ss1) = first[1], last[1]
        client_cpu = sum(last[2]) - sum(first[2]) if first[2] and last[2] else None
        cpu = (last[0] - first[0], su1 - su0, ss1 - ss0, client_cpu)
    return parse_report(output), client.returncode, procs.log_tail(client, 3).strip(), cpu


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
