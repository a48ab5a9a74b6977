"""The servers under test, and the one way any of them is started.

`start` runs a `Server` (ours: echo-server, room-server; or a reference peer
from ../shared/peers) under a `Supervisor`, waits until it is ready, and returns
a `Running`: its PID, address and what /proc says about it.

Peers are yardsticks, never dependencies: `make peers` builds what it can into
the gitignored .build-peers/, and a peer that is not built is skipped with a
one-line note.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from . import procs
from .procs import HOST, ROOT

PEERS_SOURCE = os.path.normpath(os.path.join(ROOT, "..", "shared", "peers"))
PEERS_BUILD = os.path.join(ROOT, ".build-peers")
NIO_BINARY = os.path.join(PEERS_BUILD, "nio", ".build", "release", "nio-echo")
NIO_ASYNC_BINARY = os.path.join(PEERS_BUILD, "nio", ".build", "release", "nio-async-echo")
NIO_ROOM_BINARY = os.path.join(PEERS_BUILD, "nio", ".build", "release", "nio-room")
LISTENING = "listening on"   # ours print "echo-server listening on HOST:PORT (...)" on stderr


@dataclass(frozen=True)
class Server:
    """How to start one server on a host and port with a number of loops."""
    name: str
    binary: str
    args: tuple = ()            # after host and port: "{loops}" is replaced
    ours: bool = False          # takes --host/--port, prints LISTENING; peers take the port first
    single_loop: bool = False   # ignores the loop count (uvecho)

    def argv(self, port, loops, host=HOST):
        address = ["--host", host, "--port", str(port)] if self.ours else [str(port)]
        return [self.binary, *address, *(arg.replace("{loops}", str(loops)) for arg in self.args)]

    def with_flags(self, *flags, name=None):
        return dataclasses.replace(self, args=(*self.args, *map(str, flags)), name=name or self.name)

    @property
    def built(self):
        return os.access(self.binary, os.X_OK)


def ours(binary, name="reactor", extra=()):
    # Idle timeout off: 1,000 idle connections must stay open while measured.
    return Server(name, binary, ("--loops", "{loops}", "--idle-timeout", "0", *extra), ours=True)


def own_handler(binary):
    """Ours with `--verbose`: a handler of its own per connection (LoggingEchoHandler, in
    another module) instead of the built-in EchoHandler shared by every connection."""
    return ours(binary, name="reactor-own-handler", extra=("--verbose",))


def async_echo(binary):
    """Ours with `--async`: the echo through ReactorAsync, a task per connection on its loop."""
    return ours(binary, name="reactor-async", extra=("--async",))


def versus(binary):
    """`--versus`: another build of echo-server, run like ours under the name "before"."""
    if not binary:
        return []
    if not os.access(binary, os.X_OK):
        sys.exit(f"perf: --versus {binary}: not an executable")
    return [ours(binary, name="before")]


def peers():
    return [
        Server("echoref", os.path.join(PEERS_BUILD, "echoref"), ("{loops}",)),
        Server("uvecho", os.path.join(PEERS_BUILD, "uvecho"), single_loop=True),
        Server("nio-echo", NIO_BINARY, ("{loops}",)),
        Server("nio-async-echo", NIO_ASYNC_BINARY, ("{loops}",)),
    ]


def room_peers():
    return [Server("roomref", os.path.join(PEERS_BUILD, "roomref")), Server("nio-room", NIO_ROOM_BINARY, ("1",))]


def built_only(candidates, loops=1, note=print):
    """The candidates that are built; a one-line note for each that is not."""
    found = []
    for peer in candidates:
        if not peer.built:
            note(f"note: peer {peer.name} is not built ({os.path.relpath(peer.binary, ROOT)}): "
                 f"skipped; `make peers` builds it")
            continue
        if peer.single_loop and loops > 1:
            note(f"note: peer {peer.name} runs one loop only (LOOPS={loops})")
        found.append(peer)
    return found


class Running:
    """A started server: its process, address, and what /proc says about it."""

    def __init__(self, supervisor, server, process, host, port):
        self.supervisor, self.server, self.process = supervisor, server, process
        self.host, self.port = host, port
        self.name, self.pid = server.name, process.pid
        self.base_rss_kib = self.baseline_fds = None

    # /proc
    @property
    def alive(self):
        return self.process.poll() is None

    def fds(self):
        return procs.fd_count(self.pid)

    def rss_kib(self):
        return procs.memory_kib(self.pid)

    def peak_kib(self):
        return procs.memory_kib(self.pid, "VmHWM")

    def reset_peak(self):
        procs.reset_peak_rss(self.pid)

    def cpu(self):
        return sum(procs.cpu_seconds(self.pid))

    def cpu_share(self, seconds=2.0):
        """Share of one core the server used over the next `seconds`."""
        before, start = self.cpu(), time.monotonic()
        time.sleep(seconds)  # a measurement window, not synchronisation
        return (self.cpu() - before) / (time.monotonic() - start)

    def settle_fds(self, target, timeout=10.0):
        """Polls until the fd count is back to `target`; returns count - target."""
        procs.wait_until(lambda: self.fds() <= target, timeout, 0.05)
        return self.fds() - target

    # its log
    def log(self):
        return procs.log_text(self.process)

    def totals(self):
        """{'accepted', 'refused', 'in', 'out'} from our servers' final 'stopped:' line."""
        match = re.search(r"stopped: (\d+) accepted, (\d+) refused, (\d+) B in, (\d+) B out", self.log())
        return dict(zip(("accepted", "refused", "in", "out"), map(int, match.groups()))) if match else None

    # signals
    def signal(self, signum):
        os.kill(self.pid, signum)

    def wait_exit(self, timeout):
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.supervisor.forget(self.process)
        return status

    def stop(self, timeout=15.0):
        """SIGTERM, a bounded wait, SIGKILL; returns the exit status."""
        return self.supervisor.stop(self.process, timeout)

    def kill(self):
        """SIGKILL, by PID."""
        return self.supervisor.kill(self.process)


def start(supervisor, server, port, loops, host=HOST, ready_timeout=30.0, wrapper=(), nofile=None, log_name=None):
    """Start `server` on host:port and wait until it is ready: ours once they print
    their listening line (no connection made, so fd and accept counts start clean),
    peers once they accept a connection."""
    process = supervisor.start(log_name or server.name, [*wrapper, *server.argv(port, loops, host)], nofile=nofile)
    running = Running(supervisor, server, process, host, port)
    if server.ours:
        ready = lambda: LISTENING in running.log()
    else:
        ready = lambda: procs.accepts_connections(port, host)
    ok = procs.wait_until(lambda: process.poll() is not None or ready(), ready_timeout, 0.05)
    if process.poll() is not None or not ok:
        supervisor.stop(process)
        raise RuntimeError(f"{server.name} did not start on {host}:{port} "
                           f"(exit status {process.returncode}); its log:\n{procs.log_tail(process)}")
    running.base_rss_kib = running.rss_kib()
    running.baseline_fds = running.fds()
    return running


# --- make peers --------------------------------------------------------------

def build_peers():
    """Build every peer that can be built here; a one-line note for the rest."""
    os.makedirs(PEERS_BUILD, exist_ok=True)
    c_dir = os.path.join(PEERS_SOURCE, "c")
    if not os.path.isdir(c_dir):
        print(f"note: {PEERS_SOURCE} not found: no peers to build")
        return 0
    cc = os.environ.get("CC", "cc")
    _build("echoref", [cc, "-O2", "-o", os.path.join(PEERS_BUILD, "echoref"),
                       os.path.join(c_dir, "echoref.c"), "-lpthread"])
    _build("roomref", [cc, "-O2", "-o", os.path.join(PEERS_BUILD, "roomref"),
                       os.path.join(c_dir, "roomref.c"), "-lpthread"])
    _build("uvecho", [cc, "-O2", "-o", os.path.join(PEERS_BUILD, "uvecho"),
                      os.path.join(c_dir, "uvecho.c"), "-lpthread", "-luv"],
           hint="needs libuv: apt-get install -y libuv1-dev")
    nio_copy = os.path.join(PEERS_BUILD, "nio")
    if shutil.which("swift") is None:
        print("note: nio-echo skipped: no swift on PATH")
        return 0
    _copy_sources(os.path.join(PEERS_SOURCE, "nio"), nio_copy)
    _build("nio-echo, nio-room", ["swift", "build", "-c", "release", "--package-path", nio_copy],
           hint="SwiftNIO is fetched from GitHub on the first build")
    return 0


def _copy_sources(source, destination):
    """Copy a package's files (not its .build), writable, over our copy."""
    for directory, subdirectories, files in os.walk(source):
        subdirectories[:] = [d for d in subdirectories if d != ".build"]
        target = os.path.join(destination, os.path.relpath(directory, source))
        os.makedirs(target, exist_ok=True)
        for file in files:
            shutil.copyfile(os.path.join(directory, file), os.path.join(target, file))


def _build(name, argv, hint=""):
    print(f"building {name}: {' '.join(argv)}", flush=True)
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode == 0:
        print(f"  {name}: built")
        return True
    last = (result.stdout.strip().splitlines() or ["?"])[-1]
    print(f"note: {name} not built ({last.strip()[:120]}){'; ' + hint if hint else ''}")
    return False
