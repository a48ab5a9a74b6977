"""dummy-client: the one flood command line, the room command line, the one
report parser, and floods run to the end or in the background."""

import json
import signal
import subprocess
from dataclasses import dataclass

from . import procs
from .procs import HOST

COURSE = ("--size", "100", "--burst", "10")
STREAM = ("--mode", "stream", "--size", "16384", "--window", "65536")
ROOM_PAYLOAD = 32


@dataclass(frozen=True)
class Load:
    name: str
    connections: int
    flags: tuple = ()  # dummy-client flood flags for the traffic's shape


def matrix(conns, stream_conns):
    """make perf's loads: the course pattern at each count, then the 16 KiB stream."""
    loads = [Load(f"course c={n}", n, COURSE) for n in conns]
    if stream_conns > 0:
        loads.append(Load(f"stream 16K c={stream_conns}", stream_conns, STREAM))
    return loads


def flood_argv(client, port, load, duration, warmup, threads=1, extra=(), host=HOST):
    """`dummy-client flood` for `load`, printing one JSON report on stdout."""
    return [client, "flood", "--host", host, "--port", str(port),
            "--connections", str(load.connections), *load.flags,
            "--duration", f"{duration:g}", "--warmup", f"{warmup:g}",
            "--threads", str(max(1, min(threads, load.connections))), *map(str, extra), "--json", "--quiet"]


def room_argv(client, port, rooms, members, duration, warmup, threads, host=HOST):
    """`dummy-client room` (../shared/protocols/room.md), printing one JSON report."""
    return [client, "room", "--host", host, "--port", str(port), "--rooms", str(rooms), "--members", str(members),
            "--size", str(ROOM_PAYLOAD), "--duration", f"{duration:g}", "--warmup", f"{warmup:g}",
            "--threads", str(threads), "--json", "--quiet"]


def parse_report(text):
    """dummy-client's one JSON object (the last line that parses), or None."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    return None


def error_count(report):
    return sum((report or {}).get("errors", {}).values())


def run_to_report(supervisor, name, argv, timeout):
    """Run one dummy-client `argv` to its end; returns (report or None, exit status, log tail)."""
    process = supervisor.start(name, argv, stdout=subprocess.PIPE)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = b""
    finally:
        supervisor.stop(process)
    return parse_report(output), process.returncode, procs.log_tail(process, 3).strip()


class Flood:
    """dummy-client flood in the background (verified echo load) until `finish`."""

    def __init__(self, supervisor, client, port, connections, flags=(), duration=3600, name="flood",
                 host=HOST, threads=1):
        argv = flood_argv(client, port, Load(name, connections), duration, 0, threads, flags, host)
        self.supervisor, self.name = supervisor, name
        self.process = supervisor.start(name, argv, stdout=subprocess.PIPE)
        self.report = self.status = None

    @property
    def running(self):
        return self.process.poll() is None

    def finish(self, timeout=20.0):
        """Ends the flood (SIGINT, as Ctrl-C: it still prints its summary); returns the JSON."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate(timeout=5)
        self.supervisor.forget(self.process)
        self.status = self.process.returncode
        self.report = parse_report(output) if output else None
        return self.report

    def wait(self, timeout):
        """Waits for a flood with a --duration to end by itself (then `finish`)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.finish()

    def errors(self):
        return (self.report or {}).get("errors", {})

    def verdict(self, allowed=()):
        """(ok, text): exit 0 and no errors except those in `allowed`, and rounds done."""
        if not self.report:
            return False, f"flood: no JSON (exit {self.status}); see {self.process.log_path}"
        errors = {k: v for k, v in self.errors().items() if v and k not in allowed}
        rounds = self.report.get("rounds", 0)
        if errors:
            return False, f"flood errors {errors}"
        if not allowed and self.status != 0:
            return False, f"flood exit {self.status}"
        if rounds <= 0:
            return False, "flood completed no round"
        return True, f"flood {self.report['connections']} conns {rounds:,} rounds verified"
