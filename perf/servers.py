"""The servers under test: ours, and the reference peers in ../shared/peers.

Peers are yardsticks, never dependencies: `make peers` builds what it can into
the gitignored .build-peers/, and a peer that is not built is skipped with a
one-line note.
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from procs import HOST, accepts_connections, log_tail, memory_kib, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_SOURCE = os.path.normpath(os.path.join(ROOT, "..", "shared", "peers"))
PEERS_BUILD = os.path.join(ROOT, ".build-peers")
NIO_BINARY = os.path.join(PEERS_BUILD, "nio", ".build", "release", "nio-echo")
NIO_ASYNC_BINARY = os.path.join(PEERS_BUILD, "nio", ".build", "release", "nio-async-echo")
NIO_ROOM_BINARY = os.path.join(PEERS_BUILD, "nio", ".build", "release", "nio-room")


@dataclass
class Server:
    """How to start one echo server on a port with a number of loops."""
    name: str
    binary: str
    args: tuple = ()            # after the port: "{loops}" is replaced
    port_flag: str = ""         # "--port" for ours; peers take the port first
    single_loop: bool = False   # ignores the loop count (uvecho)

    def argv(self, port, loops):
        port_args = [self.port_flag, str(port)] if self.port_flag else [str(port)]
        rest = [arg.replace("{loops}", str(loops)) for arg in self.args]
        return [self.binary, *port_args, *rest]

    @property
    def built(self):
        return os.access(self.binary, os.X_OK)


def ours(binary, name="reactor", extra=()):
    # Idle timeout off: 1,000 idle connections must stay open while measured.
    return Server(name, binary, ("--host", HOST, "--loops", "{loops}", "--idle-timeout", "0", *extra),
                  port_flag="--port")


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


def available_peers(loops, note=print):
    """The peers that are built; a one-line note for each that is not."""
    found = []
    for peer in peers():
        if not peer.built:
            note(f"note: peer {peer.name} is not built ({os.path.relpath(peer.binary, ROOT)}): "
                 f"skipped; `make peers` builds it")
        else:
            if peer.single_loop and loops > 1:
                note(f"note: peer {peer.name} runs one loop only (LOOPS={loops})")
            found.append(peer)
    return found


class Running:
    """A started server: its process, port, and base RSS once ready."""

    def __init__(self, server, process, port):
        self.server, self.process, self.port = server, process, port
        self.name, self.pid = server.name, process.pid
        self.base_rss_kib = None


def start(supervisor, server, port, loops, ready_timeout=30.0, wrapper=()):
    """Start `server` on `port` and wait until it accepts connections."""
    process = supervisor.start(server.name, [*wrapper, *server.argv(port, loops)])
    ready = wait_until(lambda: process.poll() is not None or accepts_connections(port), ready_timeout, 0.05)
    if process.poll() is not None or not ready:
        supervisor.stop(process)
        raise RuntimeError(f"{server.name} did not start on {HOST}:{port} "
                           f"(exit status {process.returncode}); its log:\n{log_tail(process)}")
    running = Running(server, process, port)
    running.base_rss_kib = memory_kib(process.pid)
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
