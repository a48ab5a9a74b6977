"""Shared by faults.py and soak.py: the server under test, background
dummy-client floods, and raw-socket echo streams that verify every byte.

Processes are started and stopped through perf/procs.py's Supervisor (by PID,
never by name); what /proc says about them comes from there too.
"""

import os
import re
import resource
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "perf"))
import procs  # noqa: E402  (perf/procs.py)
from client import parse_report  # noqa: E402  (perf/client.py)
from procs import HOST, cpu_seconds, memory_kib, wait_until  # noqa: E402,F401

KIB, MIB = 1024, 1024 * 1024
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# Below the ephemeral range (32768-60999 here), so no client's source port takes it.
FIRST_PORT = 21000


# --- what the server is sent: deterministic payloads -------------------------

class PatternPayload:
    """Byte i of the stream is i % 251 (a prime: no power-of-two period)."""
    PERIOD = 251
    BLOCK = bytes(range(PERIOD)) * 4096  # ~1 MiB, sliced without copying

    def view(self, offset, count):
        start = offset % self.PERIOD
        return memoryview(self.BLOCK)[start:start + min(count, len(self.BLOCK) - self.PERIOD)]


class BytesPayload:
    """An explicit byte string (random input)."""

    def __init__(self, data):
        self.data = memoryview(bytes(data))

    def view(self, offset, count):
        return self.data[offset:offset + count]


PATTERN = PatternPayload()


def matches(payload, offset, data):
    """Whether `data` is what `payload` holds at `offset`; else the first bad offset."""
    data = memoryview(data)
    position = 0
    while position < len(data):
        expected = payload.view(offset + position, len(data) - position)
        got = data[position:position + len(expected)]
        if got != expected:
            for i, (a, b) in enumerate(zip(got, expected)):
                if a != b:
                    return offset + position + i
        position += len(expected)
    return None


# --- raw sockets -------------------------------------------------------------------

def connect(port, timeout=5.0, rcvbuf=None):
    """A connected blocking socket (rcvbuf: SO_RCVBUF set before the handshake)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect((HOST, port))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def reset(sock):
    """Close with SO_LINGER {1, 0}: the peer gets a RST, not a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def raise_fd_limit():
    procs.raise_fd_limit()
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Stream:
    """One connection sending `total` bytes of `payload` and verifying the echo.

    Non-blocking; driven by `drive` (or `send_until_stalled`). With `half_close`
    it shuts its write side once all is sent and is done at EOF; otherwise it
    is done once `total` bytes came back. `splits` (an iterator of sizes, 0
    allowed) chooses the size of each send call.
    """

    def __init__(self, sock, payload=PATTERN, total=0, half_close=True, splits=None):
        sock.setblocking(False)
        self.sock, self.payload, self.total = sock, payload, total
        self.half_close, self.splits = half_close, splits
        self.sent = self.received = 0
        self.bad_at = None   # first offset that came back wrong
        self.eof = False
        self.error = None    # an OSError text (reset, ...)
        self.shut = False

    @property
    def done(self):
        if self.error or self.bad_at is not None or self.eof:
            return True
        return not self.half_close and self.received >= self.total

    @property
    def verified(self):
        """Everything came back, in order, and (half-close) then EOF."""
        return (self.error is None and self.bad_at is None and self.received == self.total
                and (self.eof or not self.half_close))

    @property
    def lost(self):
        """Bytes sent that did not come back verified."""
        return 0 if self.verified else max(self.total - self.received, 1)

    def describe(self):
        if self.bad_at is not None:
            return f"mismatch at byte {self.bad_at}"
        if self.error:
            return f"{self.error} after {self.received} of {self.total} B"
        return f"{self.received} of {self.total} B echoed{', EOF' if self.eof else ''}"

    def send_some(self):
        """Sends until the socket would block or all is sent; returns bytes sent."""
        before = self.sent
        try:
            while self.sent < self.total:
                size = next(self.splits) if self.splits else 256 * KIB
                view = self.payload.view(self.sent, min(size, self.total - self.sent))
                count = self.sock.send(view)
                self.sent += count
                if count < len(view):
                    break
        except BlockingIOError:
            pass
        except OSError as error:
            self.error = f"send: {error.strerror or error}"
        if self.half_close and self.sent >= self.total and not self.shut and not self.error:
            self.shut = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as error:
                self.error = f"shutdown: {error.strerror or error}"
        return self.sent - before

    def recv_some(self, limit=1 << 62):
        """Reads what is there (at most `limit` bytes), verifying it; returns bytes read."""
        before = self.received
        try:
            while self.received - before < limit:
                data = self.sock.recv(min(MIB, limit - (self.received - before)))
                if not data:
                    self.eof = True
                    break
                if self.received + len(data) > self.total:
                    self.bad_at = self.total  # more came back than was sent
                    break
                bad = matches(self.payload, self.received, data)
                if bad is not None:
                    self.bad_at = bad
                    break
                self.received += len(data)
        except BlockingIOError:
            pass
        except OSError as error:
            self.error = f"recv: {error.strerror or error}"
        return self.received - before

    def close(self):
        self.sock.close()


def drive(streams, timeout):
    """Sends and reads on all `streams` until each is done or `timeout` passes.

    Returns True when all are done."""
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    try:
        for stream in streams:
            selector.register(stream.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, stream)
        active = [s for s in streams if not s.done]
        while active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, events in selector.select(min(remaining, 1.0)):
                stream = key.data
                if events & selectors.EVENT_WRITE:
                    stream.send_some()
                if events & selectors.EVENT_READ:
                    stream.recv_some()
                wanted = selectors.EVENT_READ
                if stream.sent < stream.total and not stream.error:
                    wanted |= selectors.EVENT_WRITE
                if stream.done:
                    selector.unregister(stream.sock)
                elif wanted != key.events:
                    selector.modify(stream.sock, wanted, stream)
            active = [s for s in active if not s.done]
        return True
    finally:
        selector.close()


def send_until_stalled(streams, stall=1.0, timeout=30.0):
    """Sends on `streams` without reading until each has sent all, or none has
    made progress for `stall` seconds (the server stopped reading), or `timeout`."""
    deadline = time.monotonic() + timeout
    last_progress = time.monotonic()
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            selector.register(stream.sock, selectors.EVENT_WRITE, stream)
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline or now - last_progress >= stall:
                break
            for key, _ in selector.select(min(stall, deadline - now)):
                stream = key.data
                if stream.send_some():
                    last_progress = time.monotonic()
                if stream.sent >= stream.total or stream.error:
                    selector.unregister(stream.sock)
    return sum(s.sent for s in streams)


def echo_probe(port, size=64 * KIB, timeout=10.0):
    """One fresh connection: `size` bytes, half-close, whole echo then EOF. Returns the Stream."""
    stream = Stream(connect(port), total=size)
    try:
        drive([stream], timeout)
    finally:
        stream.close()
    return stream


def tcp_sockets(port):
    """Sockets on 127.0.0.1 with local port `port`, from /proc/net/tcp:
    [(remote_port, state, tx_queue, rx_queue)]. States: 01 ESTABLISHED, 08 CLOSE_WAIT, ..."""
    found = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if int(local.split(":")[1], 16) != port:
                continue
            tx, rx = (int(q, 16) for q in queues.split(":"))
            found.append((int(remote.split(":")[1], 16), state, tx, rx))
    return found


# --- the server under test -------------------------------------------------------

class Supervisor(procs.Supervisor):
    """procs.Supervisor, plus resource limits for the child (RLIMIT_NOFILE)."""

    def start(self, name, argv, stdout=None, nofile=None):
        if nofile is None:
            return super().start(name, argv, stdout)
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or log,
                                   stderr=log, preexec_fn=limit)
        process.name, process.log_path = name, log.name
        log.close()
        self.running.append(process)
        return process


class EchoServer:
    """One echo-server process on a free loopback port."""

    _next_port = FIRST_PORT

    def __init__(self, supervisor, path, name, flags=(), nofile=None):
        self.supervisor = supervisor
        self.port = procs.free_port(EchoServer._next_port)
        EchoServer._next_port = self.port + 1  # a fresh port per server: no TIME_WAIT leftovers
        self.log_path = os.path.join(supervisor.log_dir, f"{name}.log")
        if os.path.exists(self.log_path):
            os.remove(self.log_path)
        argv = [path, "--host", HOST, "--port", str(self.port), *map(str, flags)]
        self.process = supervisor.start(name, argv, nofile=nofile)
        self.pid = self.process.pid
        if not wait_until(lambda: "listening on" in self.log() or self.process.poll() is not None, 15):
            raise RuntimeError(f"{name}: no 'listening on' line within 15 s")
        if self.process.poll() is not None:
            raise RuntimeError(f"{name} exited {self.process.returncode}: {self.log()[-500:]}")
        self.baseline_fds = self.fds()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as log:
                return log.read()
        except OSError:
            return ""

    @property
    def alive(self):
        return self.process.poll() is None

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self):
        return memory_kib(self.pid)

    def reset_peak(self):
        procs.reset_peak_rss(self.pid)

    def peak_kib(self):
        return memory_kib(self.pid, "VmHWM")

    def cpu(self):
        return sum(cpu_seconds(self.pid))

    def cpu_share(self, seconds=2.0):
        """Share of one core the server used over the next `seconds`."""
        before, start = self.cpu(), time.monotonic()
        time.sleep(seconds)  # a measurement window, not synchronisation
        return (self.cpu() - before) / (time.monotonic() - start)

    def settle_fds(self, target, timeout=10.0):
        """Polls until the fd count is back to `target`; returns count - target."""
        wait_until(lambda: self.fds() <= target, timeout, 0.05)
        return self.fds() - target

    def signal(self, signum):
        os.kill(self.pid, signum)

    def wait_exit(self, timeout):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15.0):
        """SIGTERM, wait; returns (exit status, totals from the 'stopped:' line or None)."""
        status = self.supervisor.stop(self.process, timeout)
        return status, self.totals()

    def totals(self):
        """{'accepted', 'refused', 'in', 'out'} from the final 'stopped:' line."""
        match = re.search(r"stopped: (\d+) accepted, (\d+) refused, (\d+) B in, (\d+) B out", self.log())
        if not match:
            return None
        return dict(zip(("accepted", "refused", "in", "out"), map(int, match.groups())))


class Flood:
    """dummy-client flood in the background: verified echo load until `finish`."""

    def __init__(self, supervisor, client, port, connections, flags=(), duration=3600, name="flood"):
        argv = [client, "flood", "--host", HOST, "--port", str(port),
                "--connections", str(connections), "--duration", str(duration), "--warmup", "0",
                "--threads", "1", *map(str, flags), "--json", "--quiet"]
        self.supervisor = supervisor
        self.process = supervisor.start(name, argv, stdout=subprocess.PIPE)
        self.report = None
        self.status = None

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
        self.report = parse_report(output.decode(errors="replace")) if output else None
        return self.report

    def wait(self, timeout):
        """Waits for a flood with a --duration to end by itself."""
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


def median(values):
    """statistics.median, but NaN (not an error) for no values."""
    return statistics.median(values) if values else float("nan")
