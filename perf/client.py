"""The load: dummy-client flood invocations and its JSON report."""

import json
from dataclasses import dataclass

from procs import HOST

COURSE = ("--size", "100", "--burst", "10")
STREAM = ("--mode", "stream", "--size", "16384", "--window", "65536")


@dataclass(frozen=True)
class Load:
    name: str
    connections: int
    flags: tuple  # dummy-client flood flags for the traffic's shape


def matrix(args):
    loads = [Load(f"course c={n}", n, COURSE) for n in args.conns]
    if args.stream_conns > 0:
        loads.append(Load(f"stream 16K c={args.stream_conns}", args.stream_conns, STREAM))
    return loads


def flood_argv(client, port, load, duration, warmup, threads, extra=()):
    return [client, "flood", "--host", HOST, "--port", str(port),
            "--connections", str(load.connections), *load.flags,
            "--duration", f"{duration:g}", "--warmup", f"{warmup:g}",
            "--threads", str(max(1, min(threads, load.connections))), *extra, "--json", "--quiet"]


def parse_report(text):
    """The client's one JSON object (the last line that parses)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    return None
