"""Raw-socket clients that verify every byte: deterministic payloads, a
non-blocking echo `Stream`, and drivers for many streams at once (faults, soak)."""

import selectors
import socket
import struct
import time

from .procs import HOST

KIB, MIB = 1024, 1024 * 1024


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

def connect(port, timeout=5.0, rcvbuf=None, host=HOST):
    """A connected blocking socket (rcvbuf: SO_RCVBUF set before the handshake)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
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


def echo_probe(port, size=64 * KIB, timeout=10.0, host=HOST):
    """One fresh connection: `size` bytes, half-close, whole echo then EOF. Returns the Stream."""
    stream = Stream(connect(port, host=host), total=size)
    try:
        drive([stream], timeout)
    finally:
        stream.close()
    return stream
