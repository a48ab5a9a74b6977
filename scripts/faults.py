#!/usr/bin/env python3
"""Fault injection against the release echo-server: make faults.

Each scenario runs once, against its own fresh server on a free loopback port,
and gives one row: scenario | load held | outcome | bytes lost | fds leaked.
Adversarial clients are raw Python sockets; verified background load is
dummy-client. Exit status 0 only when every row passes.

    python3 scripts/faults.py [--quick] [--only NAME[,NAME]] [--server PATH] [--client PATH]

Logs (each server's and client's stderr) go to .build/faults/.
"""

import argparse
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback

from harness import (HOST, KIB, MIB, PATTERN, ROOT, BytesPayload, EchoServer, Flood, Stream,
                     Supervisor, connect, drive, echo_probe, raise_fd_limit, reset,
                     send_until_stalled, tcp_sockets, wait_until)
import procs  # perf/procs.py, on the path through harness

# Thresholds. The machine has 2 cores shared by the server, these clients and
# other people's test runs, so the CPU and latency bounds are generous: they are
# there to catch a busy loop (~100% of a core), not to measure.
# - RSS_SLACK: a stalled reader may grow the server by --max-pending-bytes plus
#   one 64 KiB read; the rest of the 8 MiB covers what the flood beside it
#   touches for the first time (malloc arenas of the loop threads, output queues
#   of 10 connections, connection-table chunks). Measured: +0.5-0.6 MiB. A
#   server that queued the 100 MB would exceed it 10 times over.
# - RSS_RESET_MARGIN: after 10,000 resets the RSS stays within 4 MiB of where it
#   was (allocator caching); measured: +0.0 MiB.
# - STORM_MAX_RTT: 1 s, the ping's worst round trip during the storm (a 1 s
#   stall is what a SYN retransmission or a starved loop would look like);
#   measured: 25-35 ms.
# - FD_EXHAUSTION_CPU 20% and PARKED_CPU 10% of one core, over 2 s; measured 0-0.5%.
RSS_SLACK = 8 * MIB
RSS_RESET_MARGIN = 4 * MIB
STORM_MAX_RTT = 1.0
FD_EXHAUSTION_CPU = 0.20
PARKED_CPU = 0.10
# The kernel's send buffer on loopback grows to ~3 MB per socket here: a stream
# must be larger than that for the server itself to hold output.
SLOW_READER_BYTES = 4 * MIB
SCENARIO_TIMEOUT = 180  # seconds, per scenario (SIGALRM)


class Outcome:
    """What one scenario found: failed checks, notes, bytes lost, fds leaked."""

    def __init__(self):
        self.load = ""
        self.failures, self.notes = [], []
        self.lost = 0
        self.leaked = None  # None: not applicable (the server exited)

    def check(self, ok, text):
        if not ok:
            self.failures.append(text)
        return ok

    def note(self, text):
        self.notes.append(text)

    def add_streams(self, streams, what):
        bad = [s for s in streams if not s.verified]
        self.lost += sum(s.lost for s in streams)
        return self.check(not bad, f"{what}: {len(bad)} of {len(streams)} bad, first: "
                                   f"{bad[0].describe() if bad else ''}")

    @property
    def passed(self):
        return not self.failures and self.lost == 0 and not self.leaked


class ScenarioTimeout(Exception):
    pass


class Context:
    """What scenarios are given: options, a supervisor, and server/flood factories."""

    def __init__(self, args, supervisor, name):
        self.args, self.supervisor, self.name = args, supervisor, name
        self.quick = args.quick

    def scale(self, full, quick):
        return quick if self.quick else full

    def server(self, *flags, nofile=None, tag="server"):
        return EchoServer(self.supervisor, self.args.server, f"{self.name}-{tag}", flags, nofile)

    def flood(self, server, connections, *flags, tag="flood"):
        return Flood(self.supervisor, self.args.client, server.port, connections, flags,
                     name=f"{self.name}-{tag}")


def finish(server, out, baseline_fds):
    """The common ending: the server still echoes, its fds return to baseline,
    and SIGTERM stops it with exit 0. Returns its totals."""
    probe = echo_probe(server.port)
    out.add_streams([probe], "echo afterwards")
    out.leaked = max(0, server.settle_fds(baseline_fds))
    status, totals = server.stop()
    out.check(status == 0, f"exit {status} at SIGTERM")
    out.check(totals is not None, "no 'stopped:' line")
    return totals


def fmt_bytes(n):
    for unit, size in (("MiB", MIB), ("MB", 1000 * 1000), ("KiB", KIB)):
        if n >= size and n % (size // 4) == 0:
            return f"{n / size:g} {unit}"
    return f"{n:,} B"


def paused_connections(port):
    """Server sockets whose output is stuck (kernel send queue not empty) and
    whose input waits unread: the server stopped reading them (backpressure)."""
    return sum(tx > 0 and rx > 0 for _, state, tx, rx in tcp_sockets(port) if state == "01")


def sockets_with_fin(port):
    """(parked, closed): server sockets that have the peer's FIN with output
    stuck (CLOSE_WAIT, send queue not empty), and those the server already
    closed (LAST_ACK: its kernel send buffer took the whole echo)."""
    states = [(state, tx) for _, state, tx, _ in tcp_sockets(port)]
    return (sum(state == "08" and tx > 0 for state, tx in states),
            sum(state == "09" for state, _ in states))


def open_many(port, count, **options):
    """`count` connected sockets (blocking connects, one after another)."""
    socks = []
    try:
        for _ in range(count):
            socks.append(connect(port, **options))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


# --- scenarios -------------------------------------------------------------------------

def stalled_reader(ctx, out):
    """100 MB sent, nothing read: the server holds at most --max-pending-bytes
    (RSS), others are served meanwhile, then every byte comes back in order."""
    pending = 256 * KIB
    total = ctx.args.stalled_bytes if not ctx.quick else min(ctx.args.stalled_bytes, 20 * MIB)
    server = ctx.server("--max-pending-bytes", pending)
    fds = server.baseline_fds
    warm = echo_probe(server.port)  # touch the loops' read buffers before the baseline
    out.add_streams([warm], "warm-up")
    rss_before = server.rss_kib() * KIB
    server.reset_peak()
    stalled = Stream(connect(server.port), total=total)
    try:
        sent = send_until_stalled([stalled], stall=1.0, timeout=30)
        out.check(sent < total, f"all {total} B went out without reading: the server never stopped reading")
        out.check(paused_connections(server.port) == 1, "the server is not holding the reader back")
        flood = ctx.flood(server, 10)
        try:
            wait_until(lambda: server.fds() >= fds + 11, 5)
            time.sleep(3)  # the flood's length: load, not synchronisation
            peak = server.peak_kib() * KIB
        finally:
            flood.finish()
        growth = peak - rss_before
        out.check(*flood.verdict())
        out.check(growth <= pending + RSS_SLACK,
                  f"RSS grew {fmt_bytes(growth)} > {fmt_bytes(pending)} + {fmt_bytes(RSS_SLACK)}")
        out.check(drive([stalled], timeout=120), f"stalled reader not done: {stalled.describe()}")
        out.add_streams([stalled], "stalled reader")
        out.note(f"{fmt_bytes(sent)} sent before stall, RSS +{growth / MIB:.1f} MiB, "
                 f"{flood.report['rounds'] if flood.report else 0:,} flood rounds")
    finally:
        stalled.close()
    out.load = f"{fmt_bytes(total)} unread + flood c=10 3 s"
    finish(server, out, fds)


def half_close(ctx, out):
    """N bytes then shutdown(SHUT_WR): all N come back, then EOF."""
    server = ctx.server()
    fds = server.baseline_fds
    sizes = [0, 1, 100, 64 * KIB, MIB, 16 * MIB]
    streams = []
    for size in sizes:
        stream = Stream(connect(server.port), total=size)
        streams.append(stream)
        try:
            drive([stream], timeout=60)
        finally:
            stream.close()
    out.add_streams(streams, "half-close")
    out.load = "N=" + ", ".join(fmt_bytes(s) for s in sizes)
    finish(server, out, fds)


def close_with_echo_queued(ctx, out):
    """8 MiB sent, nothing read, then close (RST by SO_LINGER 0, and plain close)."""
    server = ctx.server()
    fds = server.baseline_fds
    for how, closer in (("linger 0", reset), ("close", socket.socket.close)):
        streams = [Stream(connect(server.port), total=8 * MIB, half_close=False) for _ in range(5)]
        sent = send_until_stalled(streams, stall=0.5, timeout=20)
        out.check(wait_until(lambda: server.fds() >= fds + 5, 5), f"{how}: server holds {server.fds() - fds} of 5")
        paused = paused_connections(server.port)
        out.check(paused == 5, f"{how}: {paused} of 5 paused with echo queued")
        out.note(f"{how}: {sent / 5 / MIB:.1f} MiB each sent, {paused} paused")
        for stream in streams:
            closer(stream.sock)
        leaked = server.settle_fds(fds, timeout=10)
        out.check(leaked <= 0, f"{how}: {leaked} fds left 10 s after the clients closed")
    out.load = "2 x 5 conns, 8 MiB unread, then linger-0 / close"
    finish(server, out, fds)


def resets(ctx, out):
    """Thousands of connect, send, RST: fds and RSS return to baseline, a verified
    client keeps echoing throughout."""
    count = ctx.args.resets if not ctx.quick else min(ctx.args.resets, 1000)
    batch = 500
    server = ctx.server()
    fds = server.baseline_fds
    flood = ctx.flood(server, 1, "--rate", 200)
    try:
        wait_until(lambda: server.fds() >= fds + 1, 5)
        out.add_streams([echo_probe(server.port)], "warm-up")
        rss_before = server.rss_kib() * KIB
        done = 0
        data = bytes(PATTERN.view(0, 1000))
        while done < count:
            socks = open_many(server.port, min(batch, count - done))
            for sock in socks:
                sock.send(data)
            for sock in socks:
                reset(sock)
            done += len(socks)
        leaked = server.settle_fds(fds + 1, timeout=15)
        out.check(leaked <= 0, f"{leaked} fds left after the resets")
        rss_after = server.rss_kib() * KIB
        out.check(rss_after - rss_before <= RSS_RESET_MARGIN,
                  f"RSS {fmt_bytes(rss_after - rss_before)} above baseline after resets")
    finally:
        flood.finish()
    out.check(*flood.verdict())
    out.note(f"RSS {rss_before / MIB:.1f} -> {rss_after / MIB:.1f} MiB, "
             f"{(flood.report or {}).get('rounds', 0):,} verified rounds meanwhile")
    out.load = f"{count:,} x (connect, 1000 B, RST) + verified flood"
    finish(server, out, fds)


def hold_connections(port, count, size):
    """The child process of `killed_clients`: opens `count` connections, sends
    up to `size` bytes on each without reading, says 'ready', waits to be killed."""
    signal.alarm(120)  # never outlive a vanished parent by long
    streams = [Stream(connect(port, rcvbuf=4 * KIB), total=size, half_close=False) for _ in range(count)]
    sent = send_until_stalled(streams, stall=0.5, timeout=20)
    print(f"ready {count} {sent}", flush=True)
    while True:
        signal.pause()


def killed_clients(ctx, out):
    """A child holding 200 connections mid-stream is SIGKILLed: fds return."""
    count = 200
    server = ctx.server()
    fds = server.baseline_fds
    child = ctx.supervisor.start(f"{ctx.name}-holder", [
        sys.executable, os.path.abspath(__file__), "--hold", str(server.port), str(count), str(4 * MIB)],
        stdout=subprocess.PIPE)
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        ready = (selector.select(30) and child.stdout.readline().split()) or [b""]
    out.check(ready[0] == b"ready", "holder never said ready")
    out.note(f"{int(ready[-1]) / count / KIB:.0f} KiB each sent, paused {paused_connections(server.port)}"
             if ready[0] == b"ready" else "")
    out.check(wait_until(lambda: server.fds() >= fds + count, 10),
              f"server holds {server.fds() - fds} of {count} connections")
    paused = paused_connections(server.port)
    out.check(paused == count, f"{paused} of {count} paused mid-stream")
    child.kill()  # SIGKILL, by PID
    child.wait(5)
    ctx.supervisor.forget(child)
    out.load = f"{count} conns, 4 MiB each unread, SIGKILL"
    finish(server, out, fds)


def storm(ctx, out):
    """10,000 connects as fast as possible, each echoes one byte; a ping client's
    round trip meanwhile."""
    count = ctx.args.storm if not ctx.quick else min(ctx.args.storm, 2000)
    window = max(100, min(2000, raise_fd_limit() - 200))
    server = ctx.server()
    fds = server.baseline_fds
    ping = ctx.flood(server, 1, "--rate", 100, tag="ping")
    echoed, failed = 0, []
    start = time.monotonic()
    try:
        wait_until(lambda: server.fds() >= fds + 1, 5)
        echoed, failed = connect_storm(server.port, count, window, deadline=start + 120)
        elapsed = time.monotonic() - start
    finally:
        ping.finish()
    out.lost += count - echoed
    out.check(not failed, f"{len(failed)} failed, first: {failed[0] if failed else ''}")
    out.check(*ping.verdict())
    max_rtt = (ping.report or {}).get("latency_us", {}).get("max", float("inf")) / 1e6
    out.check(max_rtt < STORM_MAX_RTT, f"ping max RTT {max_rtt * 1000:.0f} ms")
    out.note(f"{count / elapsed:,.0f} conns/s, ping max RTT {max_rtt * 1000:.1f} ms")
    out.load = f"{count:,} connects, {window} in flight + ping 100/s"
    totals = finish(server, out, fds)
    if totals:
        out.check(totals["refused"] == 0, f"{totals['refused']} refused")


def connect_storm(port, count, window, deadline):
    """Non-blocking connects, at most `window` in flight; each sends a byte and
    closes once it is echoed. Returns (echoed, [failure texts])."""
    selector = selectors.DefaultSelector()
    started = echoed = 0
    failed = []
    try:
        while (started < count or selector.get_map()) and time.monotonic() < deadline:
            while started < count and len(selector.get_map()) < window:
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex((HOST, port))
                selector.register(sock, selectors.EVENT_WRITE, bytes([started % 256]))
                started += 1
            for key, events in selector.select(0.5):
                sock, byte = key.fileobj, key.data
                try:
                    if events & selectors.EVENT_WRITE:
                        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if error:
                            raise OSError(error, os.strerror(error))
                        sock.send(byte)
                        selector.modify(sock, selectors.EVENT_READ, byte)
                        continue
                    got = sock.recv(1)
                    if got != byte:
                        raise OSError(0, f"got {got!r}, sent {byte!r}")
                    echoed += 1
                except OSError as error:
                    failed.append(str(error))
                selector.unregister(sock)
                sock.close()
        for key in list(selector.get_map().values()):
            failed.append("timed out")
            key.fileobj.close()
    finally:
        selector.close()
    return echoed, failed


def connection_limit(ctx, out):
    """--max-connections 100, 150 opened: 100 echo, 50 are closed at once."""
    server = ctx.server("--max-connections", 100, "--stats-interval", 1)
    fds = server.baseline_fds
    socks = open_many(server.port, 150)
    echoed = closed = silent = 0
    try:
        for i, sock in enumerate(socks):
            try:
                sock.send(bytes([i]))
            except OSError:
                pass  # refused: already closed
        deadline = time.monotonic() + 3
        for i, sock in enumerate(socks):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                got = sock.recv(1)
                if got == bytes([i]):
                    echoed += 1
                else:
                    closed += 1
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except socket.timeout:
                silent += 1
    finally:
        for sock in socks:
            sock.close()
    out.check(echoed == 100 and closed == 50 and silent == 0,
              f"{echoed} echoed, {closed} closed, {silent} neither")
    out.lost += max(0, 100 - echoed)
    out.load = "150 conns against --max-connections 100"
    totals = finish(server, out, fds)
    if totals:
        out.check(totals["refused"] == 50, f"refused counter {totals['refused']}, not 50")
        out.note(f"{echoed} echoed, {closed} closed at once, refused {totals['refused']}")


def fd_exhaustion(ctx, out):
    """RLIMIT_NOFILE 64, 500 connections: no spinning, the held ones echo, and
    after they close new connections are served."""
    count = 500
    server = ctx.server(nofile=64)
    fds = server.baseline_fds
    socks = open_many(server.port, count)
    try:
        out.check(wait_until(lambda: server.fds() >= 64, 10), f"server reached only {server.fds()} fds")
        cpu = server.cpu_share(2.0)
        held = server.fds() - fds
        out.check(cpu < FD_EXHAUSTION_CPU, f"CPU {cpu:.0%} of a core while out of fds")
        echoed = 0
        for i, sock in enumerate(socks):
            sock.send(bytes([i % 256]))
        for i, sock in enumerate(socks[:held]):  # accepted in connect order: the first ones
            sock.settimeout(2)
            try:
                echoed += sock.recv(1) == bytes([i % 256])
            except OSError:
                pass
        out.check(held > 0 and echoed == held, f"{echoed} of {held} held connections echoed")
        out.lost += max(0, held - echoed)
        out.check(server.alive, "server died")
        out.note(f"held {held}, CPU {cpu:.1%}")
    finally:
        for sock in socks:
            sock.close()
    out.check(server.settle_fds(fds, timeout=15) <= 0, "fds not back after the clients closed")
    after = [echo_probe(server.port, size=1000) for _ in range(20)]
    out.add_streams(after, "new connections afterwards")
    out.load = f"{count} conns, RLIMIT_NOFILE 64"
    finish(server, out, fds)


def idle_timeout(ctx, out):
    """--idle-timeout 2: a client silent after one byte is closed in 2..5 s;
    one sending a byte every 0.5 s for 6 s stays open."""
    server = ctx.server("--idle-timeout", 2)
    fds = server.baseline_fds
    silent, active = connect(server.port), connect(server.port)
    try:
        silent.sendall(b"s")
        out.check(silent.recv(1) == b"s", "silent client's byte not echoed")
        quiet_since = time.monotonic()
        closed_after = None
        sends = echoes = 0
        for tick in range(1, 13):  # the active client: a byte every 0.5 s for 6 s
            active.sendall(b"a")
            sends += 1
            echoes += active.recv(1) == b"a"
            tick_end = quiet_since + 0.5 * tick
            if closed_after is None:
                closed_after = wait_for_close(silent, tick_end, quiet_since)
            time.sleep(max(0.0, tick_end - time.monotonic()))  # pacing the active client
        if closed_after is None:
            closed_after = wait_for_close(silent, quiet_since + 5, quiet_since)
        out.check(closed_after is not None and 2 <= closed_after <= 5,
                  f"silent client closed after {closed_after}")
        out.check(sends == echoes, f"active client: {echoes} of {sends} echoed")
        out.lost += sends - echoes
        active.sendall(b"z")
        out.check(active.recv(1) == b"z", "active client closed")
        out.note(f"silent closed after {closed_after:.2f} s, active {sends} echoes"
                 if closed_after else "silent client never closed")
    finally:
        silent.close()
        active.close()
    out.load = "1 silent + 1 sending 1 B / 0.5 s for 6 s"
    finish(server, out, fds)


def wait_for_close(sock, until, since):
    """Seconds from `since` to EOF/reset on `sock` if that comes before `until`, else None."""
    sock.settimeout(max(0.001, until - time.monotonic()))
    try:
        if sock.recv(1) != b"":
            return None  # unexpected data: not a close
    except socket.timeout:
        return None
    except OSError:
        pass
    return time.monotonic() - since


def sigterm_under_load(ctx, out):
    """SIGTERM with a flood and a slow reader of 4 MiB: exit 0 within
    --shutdown-timeout + 1 s, the slow reader gets every byte, then EOF."""
    grace = 5
    server = ctx.server("--shutdown-timeout", grace)
    flood = ctx.flood(server, 10)
    slow = Stream(connect(server.port), total=SLOW_READER_BYTES, half_close=False)
    signalled = exited = None
    try:
        wait_until(lambda: server.fds() >= server.baseline_fds + 11, 5)
        client_port = slow.sock.getsockname()[1]
        deadline = time.monotonic() + 30
        while not slow.done and not slow.eof and time.monotonic() < deadline:
            slow.send_some()
            slow.recv_some(limit=64 * KIB)  # 1.6 MiB/s: reading slowly
            if signalled is None and slow.sent == slow.total and server_has_read_all(server.port, client_port):
                server.signal(signal.SIGTERM)
                signalled = time.monotonic()
            if signalled and exited is None and not server.alive:
                exited = time.monotonic()
            time.sleep(0.04)
        while not slow.eof and not slow.error and time.monotonic() < deadline:
            slow.recv_some()  # after the whole echo: EOF expected
            time.sleep(0.01)
        status = server.wait_exit(max(0.1, (signalled or 0) + grace + 1 - time.monotonic()))
        exited = exited or time.monotonic()
    finally:
        slow.close()
        flood.finish()
    out.check(signalled is not None, "never sent SIGTERM (slow client's bytes not all read by the server)")
    out.check(status == 0, f"exit {status}")
    took = exited - signalled if signalled else float("inf")
    out.check(took <= grace + 1, f"exit {took:.1f} s after SIGTERM")
    out.check(slow.eof, f"slow reader: no EOF ({slow.describe()})")
    out.add_streams([slow], "slow reader")
    out.check(flood.errors().get("mismatches", 1) == 0, f"flood mismatches {flood.errors()}")
    out.note(f"exit {status} {took:.2f} s after SIGTERM; flood {flood.errors()}")
    out.leaked = None
    ctx.supervisor.forget(server.process)
    out.load = f"flood c=10 + {fmt_bytes(SLOW_READER_BYTES)} read at 1.6 MiB/s"


def server_has_read_all(server_port, client_port):
    """Whether the server's socket for that client has nothing left unread."""
    return any(remote == client_port and rx == 0 for remote, _, _, rx in tcp_sockets(server_port))


def stall_one_reader(server, out):
    """A client that sends up to 8 MiB and reads nothing, once the server holds
    it back (output queued, input unread)."""
    stalled = Stream(connect(server.port, rcvbuf=4 * KIB), total=8 * MIB, half_close=False)
    try:
        send_until_stalled([stalled], stall=0.5, timeout=20)
    except BaseException:
        stalled.close()
        raise
    out.check(paused_connections(server.port) == 1, "client not stalled (no output queued)")
    return stalled


def sigterm_with_unread_input(ctx, out):
    """SIGTERM while a connection is paused by backpressure with input unread:
    what the server answered must still reach the client, then EOF (README:
    "answer what was read, let output drain")."""
    server = ctx.server("--shutdown-timeout", 5)
    stalled = stall_one_reader(server, out)
    try:
        server.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5 + 5
        while not stalled.done and time.monotonic() < deadline:
            stalled.recv_some()
            time.sleep(0.005)  # pacing a fast reader
        status = server.wait_exit(5)
    finally:
        stalled.close()
    ctx.supervisor.forget(server.process)
    answered = (server.totals() or {}).get("out", 0)
    out.check(status == 0, f"exit {status}")
    out.check(stalled.bad_at is None, f"mismatch at byte {stalled.bad_at}")
    out.check(stalled.eof and stalled.received == answered,
              f"client got {stalled.received:,} of {answered:,} B answered, then "
              f"{'EOF' if stalled.eof else stalled.error or 'nothing'}")
    out.lost += max(0, answered - stalled.received)
    out.leaked = None
    out.load = "8 MiB sent, server paused with input unread, SIGTERM"


def double_sigint(ctx, out):
    """SIGINT, and once it is being handled a second SIGINT: exit 130 at once,
    even with a client stalled (pending output for the 30 s grace)."""
    server = ctx.server("--shutdown-timeout", 30)
    stalled = stall_one_reader(server, out)
    try:
        server.signal(signal.SIGINT)
        out.check(wait_until(lambda: "signal" in server.log(), 5), "first SIGINT not logged")
        second = time.monotonic()
        server.signal(signal.SIGINT)
        status = server.wait_exit(5)
        took = time.monotonic() - second
    finally:
        stalled.close()
    out.check(status == 130, f"exit {status}")
    out.check(took < 1.0, f"exit {took:.2f} s after the second SIGINT")
    out.note(f"exit {status} {took * 1000:.0f} ms after the second SIGINT")
    ctx.supervisor.forget(server.process)
    out.load = "8 MiB unread, shutdown timeout 30 s"


def parked_sockets(ctx, out):
    """Connections paused with output pending and a FIN from the peer, plus
    resets: the server sleeps (no busy loop on HUP/RDHUP/ERR)."""
    count = ctx.scale(ctx.args.parked, min(ctx.args.parked, 100))
    size = ctx.args.parked_bytes
    server = ctx.server()
    fds = server.baseline_fds
    # A small receive buffer on the client: the echo cannot drain into it, so
    # the server keeps output pending while it reads the peer's whole stream and FIN.
    parked = [Stream(connect(server.port, rcvbuf=4 * KIB), total=size) for _ in range(count)]
    try:
        send_until_stalled(parked, stall=1.0, timeout=60)
        out.check(all(s.shut for s in parked), "not all parked clients could send everything and FIN")
        # Kernel buffers vary per socket (~3 MB): a few may take a whole echo
        # (the server then rightly closes them), or still hold the FIN back
        # behind unread input. 90% must be parked.
        wait_until(lambda: sum(sockets_with_fin(server.port)) == count, 10)
        parked_now, closed_now = sockets_with_fin(server.port)
        out.check(parked_now >= 0.9 * count, f"only {parked_now} of {count} parked (CLOSE_WAIT, output stuck)")
        resetters = open_many(server.port, ctx.args.parked_resets)
        for sock in resetters:
            sock.send(bytes(PATTERN.view(0, 4 * KIB)))
        for sock in resetters:
            reset(sock)
        out.check(wait_until(lambda: server.fds() <= fds + count, 15), "resets not all closed")
        cpu = server.cpu_share(2.0)
        out.check(cpu < PARKED_CPU, f"CPU {cpu:.1%} of a core with {count} parked")
        out.note(f"{parked_now} parked ({closed_now} took whole echo in kernel), CPU {cpu:.1%}, "
                 f"RSS {server.rss_kib() / KIB:.0f} MiB")
        out.check(drive(parked, timeout=120), "parked streams not all done")
        out.add_streams(parked, "parked")
    finally:
        for stream in parked:
            stream.close()
    out.load = f"{count} x {fmt_bytes(size)} unread + FIN, {ctx.args.parked_resets} RST"
    finish(server, out, fds)


def bad_input(ctx, out):
    """Every byte value, random split points and zero-length sends, 50 connections."""
    rng = random.Random(ctx.args.seed)
    server = ctx.server()
    fds = server.baseline_fds
    streams = []
    for _ in range(50):
        values = list(range(256)) * 4
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 256 * KIB))) + bytes(rng.sample(values, len(values)))
        splits = iter(lambda: rng.choice((0, 0, 1, 2, 3, rng.randint(4, 1500), rng.randint(1500, 70000))), None)
        streams.append(Stream(connect(server.port), BytesPayload(data), len(data), splits=splits))
    try:
        drive(streams, timeout=60)
    finally:
        for stream in streams:
            stream.close()
    out.add_streams(streams, "random input")
    out.load = f"50 conns, {sum(s.total for s in streams) / MIB:.1f} MiB random, seed {ctx.args.seed}"
    finish(server, out, fds)


SCENARIOS = [
    ("stalled-reader", stalled_reader),
    ("half-close", half_close),
    ("close-queued", close_with_echo_queued),
    ("resets", resets),
    ("killed-clients", killed_clients),
    ("storm", storm),
    ("connection-limit", connection_limit),
    ("fd-exhaustion", fd_exhaustion),
    ("idle-timeout", idle_timeout),
    ("sigterm", sigterm_under_load),
    ("sigterm-unread", sigterm_with_unread_input),
    ("double-sigint", double_sigint),
    ("parked", parked_sockets),
    ("bad-input", bad_input),
]


# --- running and reporting ------------------------------------------------------------

def run_scenario(args, name, function, log_dir):
    out = Outcome()
    started = time.monotonic()

    def timed_out(*_):
        raise ScenarioTimeout(f"timed out after {SCENARIO_TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(SCENARIO_TIMEOUT)
    try:
        with Supervisor(log_dir) as supervisor:
            function(Context(args, supervisor, name), out)
    except ScenarioTimeout as error:
        out.check(False, str(error))
    except Exception as error:  # a failed scenario must not stop the others
        out.check(False, f"{type(error).__name__}: {error}")
        traceback.print_exc(file=sys.stderr)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out.seconds = time.monotonic() - started
    return out


def print_table(rows):
    header = ("scenario", "load held", "outcome", "bytes lost", "fds leaked")
    cells = [header]
    for name, out in rows:
        detail = "; ".join(out.failures) if out.failures else "; ".join(out.notes)
        outcome = f"{'PASS' if out.passed else 'FAIL'} ({out.seconds:.1f} s) {detail}".strip()
        leaked = "-" if out.leaked is None else str(out.leaked)
        cells.append((name, out.load, outcome, f"{out.lost:,}", leaked))
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    for i, row in enumerate(cells):
        print(" | ".join(cell.ljust(widths[c]) if c < 4 else cell for c, cell in enumerate(row)))
        if i == 0:
            print("-+-".join("-" * w for w in widths + [len(header[4])]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.path.join(ROOT, ".build/release/echo-server"))
    parser.add_argument("--client", default=os.path.join(ROOT, ".build/release/dummy-client"))
    parser.add_argument("--quick", action="store_true", help="smaller counts and sizes")
    parser.add_argument("--only", help="comma-separated scenario names: " + ", ".join(n for n, _ in SCENARIOS))
    parser.add_argument("--stalled-bytes", type=int, default=100 * 1000 * 1000, help="stalled reader's stream (100 MB)")
    parser.add_argument("--resets", type=int, default=10_000, help="resetting clients (10,000)")
    parser.add_argument("--storm", type=int, default=10_000, help="storm connects (10,000)")
    parser.add_argument("--parked", type=int, default=300, help="parked sockets (300; each holds ~3 MiB of kernel buffers)")
    parser.add_argument("--parked-bytes", type=int, default=3 * MIB,
                        help="bytes each parked socket sends (3 MiB: more than the ~3 MB the kernel's send buffer takes)")
    parser.add_argument("--parked-resets", type=int, default=1000, help="resetting clients beside the parked ones (1,000)")
    parser.add_argument("--seed", type=int, default=1, help="bad input's random seed")
    parser.add_argument("--hold", nargs=3, type=int, metavar=("PORT", "COUNT", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        return hold_connections(*args.hold)

    for path, what in ((args.server, "echo-server"), (args.client, "dummy-client")):
        procs.require(path, what)
    raise_fd_limit()
    procs.stop_on_signals()
    chosen = SCENARIOS
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {n for n, _ in SCENARIOS}
        if unknown:
            sys.exit(f"faults: unknown scenario(s) {', '.join(sorted(unknown))}")
        chosen = [(n, f) for n, f in SCENARIOS if n in names]
    log_dir = os.path.join(ROOT, ".build", "faults")
    os.makedirs(log_dir, exist_ok=True)
    rows = []
    for name, function in chosen:
        print(f"faults: {name} ...", file=sys.stderr, flush=True)
        out = run_scenario(args, name, function, log_dir)
        print(f"faults: {name} {'PASS' if out.passed else 'FAIL'} in {out.seconds:.1f} s", file=sys.stderr, flush=True)
        rows.append((name, out))
    print()
    print_table(rows)
    failed = [name for name, out in rows if not out.passed]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} passed" + (f"; failed: {', '.join(failed)}" if failed else "")
          + f" (logs in {os.path.relpath(log_dir)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
