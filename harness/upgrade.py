"""Upgrade under load: make upgrade-under-load [UPGRADE_ARGS=--quick] (issue 15's target).

One release echo-server (--loops 2 --shutdown-timeout 20) on a free port, its stdout
read line by line (each line timed as it arrives); `dummy-client flood` against it
with --connections closed-loop connections that each close after
--rounds-per-connection verified rounds and are replaced by fresh ones, so
connections keep opening and closing throughout. Partway through the measured
window (--at, 40%) the old server gets SIGUSR2: it starts its own executable
again with the listening socket as fd 3 (LISTEN_FDS), the successor prints its
own listening line on the same stdout and says READY=1, and the old one drains
and exits. Measured from the moment just before the signal is sent:

  successor accepts   the first time the successor's /proc/PID/fd holds a TCP
                      socket other than the inherited listener (getxattr
                      system.sockprotoname == TCP): an accepted connection. Polled
                      every ~2 ms once its pid is known, so it is an upper bound
                      (poll interval + the /proc scan). Its listening line is
                      printed before it serves; the time that line arrived is
                      shown too, and when the old process's "serves; draining"
                      line showed up in its log (polled; the log's own
                      timestamps have 1 s resolution, so they are not used).
  old exit            until waitpid on the old process returns (polled every 5 ms).

then the client's JSON (connect failures, resets, short echoes, wrong bytes,
rounds cut, connections opened, closed by the server, failed), and each
process's `stopped: N accepted ...` line: the old one's when it exits, the
successor's after it is stopped with SIGTERM at the end (by the pid in its
listening line). This process makes itself a child subreaper (prctl), so the
successor, orphaned when the old process exits, is reparented here and reaped
(its exit status known); without that, a pid is "gone" once kill(pid, 0) fails
or /proc says zombie.

Targets (issue 15): the successor accepts within 100 ms of the signal; the old
process exits within --shutdown-timeout (status 0); 0 connect failures, 0
resets, 0 bytes lost or wrong, 0 rounds cut, 0 connections failed or closed by
the server; dummy-client exit 0 (no --reconnect: a failure fails the run); the
two processes' accepted connections add up to the client's connections opened,
and each echoed every byte it read. One table; exit 0 only if every target is
met. Everything started is stopped by pid; the run is bounded (about 30 s
default, 15 s --quick; a hard budget of warm-up + duration + shutdown timeout +
60 s). Logs: .build/upgrade/ (echo-server.log holds both processes' stderr).
"""

import argparse
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from . import procs, report
from .client import Load, flood_argv, parse_report
from .procs import HOST

FIRST_PORT = 23000            # below the ephemeral range (32768-60999)
ACCEPT_TARGET_MS = 100.0
PROBE_WINDOW_S = 5.0          # how long to look for the successor's first accept
PROBE_INTERVAL_S = 0.002
LISTENING = re.compile(r"listening on \S+ \(loops \d+, pid (\d+)\)")
STOPPED = re.compile(r"stopped: (\d+) accepted, (\d+) refused, (\d+) B in, (\d+) B out")
DRAINING = "serves; draining"
PR_SET_CHILD_SUBREAPER = 36


# --- the server's stdout, timed line by line -------------------------------------------------

class Lines:
    """Reads a pipe on a thread of its own: [(monotonic time, line)] as they arrive.
    The successor inherits the same pipe, so this runs until both processes are gone."""

    def __init__(self, pipe, copy_to):
        self.lines, self.lock = [], threading.Lock()
        self.pipe, self.copy_to = pipe, copy_to
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        with open(self.copy_to, "w") as copy:
            for raw in iter(self.pipe.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                with self.lock:
                    self.lines.append((time.monotonic(), line))
                copy.write(line + "\n")
                copy.flush()

    def listening(self):
        """[(time, pid)] of every listening line so far."""
        with self.lock:
            return [(at, int(m.group(1))) for at, line in self.lines if (m := LISTENING.search(line))]

    def join(self, timeout):
        self.thread.join(timeout)
        return not self.thread.is_alive()


# --- pids that are not our Popen children -------------------------------------------------------

def become_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Orphan:
    """The successor: started by the old server, not by us. Stopped by its pid."""

    def __init__(self, pid):
        self.pid, self.status = pid, None

    def gone(self):
        """True once it has exited: reaped here (we are its subreaper), or kill(pid, 0)
        fails, or it is a zombie someone else has to reap."""
        if self.status is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = os.waitstatus_to_exitcode(status)
                return True
        except ChildProcessError:
            pass  # not (yet) ours: the old process still is its parent, or we are no subreaper
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    def stop(self, timeout=15.0):
        """SIGTERM, a bounded wait, then SIGKILL. Returns whether it is gone."""
        if self.gone():
            return True
        os.kill(self.pid, signal.SIGTERM)
        if procs.wait_until(self.gone, timeout, 0.01):
            return True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return procs.wait_until(self.gone, 5.0, 0.01)


def accepted_socket(pid, listener):
    """Whether `pid` holds a TCP socket other than the inode `listener` (an accepted connection)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        path = f"{fd_dir}/{fd}"
        try:
            target = os.readlink(path)
            if not target.startswith("socket:") or target == listener:
                continue
            if os.getxattr(path, "system.sockprotoname").rstrip(b"\0") == b"TCP":
                return True
        except OSError:
            continue  # closed while we looked
    return False


def listener_of(pid):
    """The successor's fd 3, the listening socket it was handed (socket:[inode])."""
    try:
        return os.readlink(f"/proc/{pid}/fd/3")
    except OSError:
        return None


def stopped_totals(text):
    match = STOPPED.search(text)
    return dict(zip(("accepted", "refused", "in", "out"), map(int, match.groups()))) if match else None


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


# --- one run ----------------------------------------------------------------------------------

def run(args, supervisor, work):
    port = procs.free_port(FIRST_PORT)
    argv = [args.server, "--host", HOST, "--port", str(port), "--loops", "2",
            "--shutdown-timeout", f"{args.shutdown_timeout:g}"]
    old = supervisor.start("echo-server", argv, stdout=subprocess.PIPE)
    lines = Lines(old.stdout, os.path.join(work, "echo-server.stdout"))
    result = {"port": port, "old_pid": old.pid, "server_argv": argv}
    successor = None

    def log():
        return procs.log_text(old)

    def successor_pid():
        found = [pid for _, pid in lines.listening() if pid != old.pid]
        return found[0] if found else None

    try:
        if not procs.wait_until(lambda: old.poll() is not None or lines.listening(), 30, 0.02) or old.poll() is not None:
            raise RuntimeError(f"echo-server did not start (exit {old.poll()}): {procs.log_tail(old)}")
        extra = ["--rounds-per-connection", str(args.rounds_per_connection)]
        client_argv = flood_argv(args.client, port, Load("upgrade", args.connections), args.duration, args.warmup,
                                 args.threads, extra)
        client = supervisor.start("dummy-client", client_argv, stdout=subprocess.PIPE)
        launched = time.monotonic()
        result["client_argv"] = client_argv
        signal_at = launched + args.warmup + args.at * args.duration
        procs.wait_until(lambda: client.poll() is not None or time.monotonic() >= signal_at,
                         signal_at - launched + 1, 0.005)
        if client.poll() is not None or old.poll() is not None:
            raise RuntimeError(f"before the upgrade: dummy-client exit {client.poll()}, "
                               f"echo-server exit {old.poll()}: {procs.log_tail(client, 3)}")

        # The upgrade.
        t0 = time.monotonic()
        os.kill(old.pid, signal.SIGUSR2)
        result["signal_at_s"] = t0 - launched
        seen = {}

        def look():
            now = time.monotonic()
            if "successor" not in seen and (pid := successor_pid()):
                seen["successor"] = pid
                seen["line"] = next(at for at, p in lines.listening() if p == pid) - t0
            if "successor" in seen and "accept" not in seen:
                listener = seen.get("listener") or listener_of(seen["successor"])
                seen["listener"] = listener
                if listener and accepted_socket(seen["successor"], listener):
                    seen["accept"] = now - t0
            if "drain" not in seen and DRAINING in log():
                seen["drain"] = now - t0
            if "old_exit" not in seen and old.poll() is not None:
                seen["old_exit"] = now - t0
            return "accept" in seen and "drain" in seen

        procs.wait_until(look, PROBE_WINDOW_S, PROBE_INTERVAL_S)
        if "successor" in seen:
            successor = Orphan(seen["successor"])
        # The old process drains, then exits: wait on its pid.
        bound = args.shutdown_timeout + 10
        procs.wait_until(lambda: old.poll() is not None, bound, 0.005)
        if old.poll() is not None:
            seen.setdefault("old_exit", time.monotonic() - t0)
            supervisor.forget(old)
        old_log = log()
        result.update(successor_pid=seen.get("successor"), line_ms=ms(seen.get("line")),
                      accept_ms=ms(seen.get("accept")), drain_seen_ms=ms(seen.get("drain")),
                      old_exit_ms=ms(seen.get("old_exit")), old_status=old.poll(),
                      old_totals=stopped_totals(old_log[old_log.find(DRAINING):]) if DRAINING in old_log else None)

        # The client runs to its end.
        try:
            output, _ = client.communicate(timeout=max(5.0, launched + args.warmup + args.duration + 30
                                                       - time.monotonic()))
        except subprocess.TimeoutExpired:
            output = b""
        supervisor.stop(client)
        result["client_status"] = client.returncode
        result["client"] = parse_report(output)
        result["client_tail"] = procs.log_tail(client, 5).strip()
    finally:
        if successor is None and successor_pid():
            successor = Orphan(successor_pid())
        if successor is not None:
            offset = len(log())
            gone = successor.stop()
            result["successor_gone"] = gone
            result["successor_status"] = successor.status
            result["successor_totals"] = stopped_totals(log()[offset:])
        if old.poll() is None:
            supervisor.stop(old)
        lines.join(5)
    return result


# --- the verdict ------------------------------------------------------------------------------

def fmt_ms(value):
    return "-" if value is None else f"{value:,.1f} ms"


def rows(result, args):
    """[(what, target, measured, met)]; met is None for rows shown, not judged."""
    c = result.get("client") or {}
    errors = c.get("errors") or {}
    out = []

    def judged(what, target, measured, met):
        out.append((what, target, measured, bool(met)))

    accept = result.get("accept_ms")
    judged("successor accepts (1st TCP socket in its /proc fds)", f"<= {ACCEPT_TARGET_MS:g} ms", fmt_ms(accept),
           accept is not None and accept <= ACCEPT_TARGET_MS)
    out.append(("  its listening line arrived", "", fmt_ms(result.get("line_ms")), None))
    out.append(("  old's 'serves; draining' seen in its log", "", fmt_ms(result.get("drain_seen_ms")), None))
    old_exit = result.get("old_exit_ms")
    judged("old process exits (waitpid)", f"<= {args.shutdown_timeout:g} s, status 0",
           f"{fmt_ms(old_exit)}, status {result.get('old_status')}",
           old_exit is not None and old_exit <= args.shutdown_timeout * 1000 and result.get("old_status") == 0)
    for key, what in (("connect_failures", "connect failures"), ("resets", "resets"),
                      ("short_echoes", "short echoes (bytes lost)"), ("mismatches", "wrong bytes (mismatches)")):
        judged(what, "0", str(errors.get(key, "-")), c and errors.get(key) == 0)
    for key, what in (("rounds_cut", "rounds cut"), ("connections_failed", "connections failed"),
                      ("connections_closed_by_server", "connections closed by the server")):
        judged(what, "0", str(c.get(key, "-")), c and c.get(key) == 0)
    judged("dummy-client exit", "0", str(result.get("client_status")), result.get("client_status") == 0)
    old_t, new_t = result.get("old_totals"), result.get("successor_totals")
    opened = c.get("connections_opened")
    served = (old_t["accepted"] + new_t["accepted"]) if old_t and new_t else None
    judged("accepted: old + successor = client opened", "equal",
           f"{old_t['accepted'] if old_t else '?'} + {new_t['accepted'] if new_t else '?'} = "
           f"{served if served is not None else '?'} of {opened if opened is not None else '?'}",
           served is not None and served == opened)
    judged("bytes echoed = bytes read, each process", "equal",
           " / ".join(f"{t['in']:,} = {t['out']:,}" if t else "?" for t in (old_t, new_t)),
           old_t and new_t and old_t["in"] == old_t["out"] and new_t["in"] == new_t["out"])
    status = result.get("successor_status")
    judged("successor stopped (SIGTERM, by pid)", "gone" + (", status 0" if status is not None else ""),
           ("gone" if result.get("successor_gone") else "NOT gone")
           + (f", status {status}" if status is not None else " (not our child: status unknown)"),
           result.get("successor_gone") and status in (0, None))
    return out


def table(lines):
    body = [[what, target, measured, "" if met is None else ("yes" if met else "NO")]
            for what, target, measured, met in lines]
    return report.render(["", "target", "measured", "met"], body, left=1)


# --- main -------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(prog="upgrade-under-load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.path.join(procs.RELEASE, "echo-server"))
    parser.add_argument("--client", default=os.path.join(procs.RELEASE, "dummy-client"))
    parser.add_argument("--quick", action="store_true", help="200 connections, 4 s measured")
    parser.add_argument("--connections", type=int, help="flood connections (1000; --quick 200)")
    parser.add_argument("--duration", type=float, help="measured seconds (10; --quick 4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (1)")
    parser.add_argument("--at", type=float, default=0.4, help="SIGUSR2 this far into the measured window (0.4)")
    parser.add_argument("--rounds-per-connection", type=int, default=20, help="rounds before a connection closes (20)")
    parser.add_argument("--shutdown-timeout", type=float, default=20.0, help="echo-server --shutdown-timeout (20)")
    parser.add_argument("--threads", type=int, default=2, help="dummy-client threads (2)")
    args = parser.parse_args(argv)
    args.connections = args.connections or (200 if args.quick else 1000)
    args.duration = args.duration or (4.0 if args.quick else 10.0)
    if not 0 < args.at < 1:
        parser.error("--at: a fraction of the measured window, between 0 and 1")
    procs.require(args.server, "echo-server")
    procs.require(args.client, "dummy-client")
    procs.raise_fd_limit()
    procs.stop_on_signals()
    subreaper = become_subreaper()
    budget = int(args.warmup + args.duration + args.shutdown_timeout + 60)
    work = os.path.join(procs.ROOT, ".build", "upgrade")
    started = time.monotonic()
    print(f"upgrade-under-load: echo-server --loops 2 --shutdown-timeout {args.shutdown_timeout:g}; dummy-client flood "
          f"--connections {args.connections} --rounds-per-connection {args.rounds_per_connection} --threads "
          f"{args.threads}, {args.warmup:g} s warm-up + {args.duration:g} s; SIGUSR2 at {args.at:.0%} of the "
          f"measured window", flush=True)
    try:
        with procs.time_limit(budget, procs.Stopped(f"upgrade-under-load: over its {budget} s budget")), \
                procs.Supervisor(work) as supervisor:
            result = run(args, supervisor, work)
    except RuntimeError as error:
        print(f"upgrade-under-load: FAILED: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, procs.Stopped) as error:
        print(f"\nupgrade-under-load: stopped ({error or 'interrupted'}); everything it started is stopped",
              file=sys.stderr)
        return 130
    result["subreaper"] = subreaper
    lines = rows(result, args)
    c = result.get("client") or {}
    print()
    print(table(lines))
    if c:
        print(f"client: {c.get('connections_opened', 0):,} connections opened ({c.get('connections_closed_by_plan', 0):,} "
              f"closed by plan), {c.get('rounds', 0):,} rounds verified in the window, "
              f"{c.get('msgs_per_sec', 0):,.0f} msgs/s; SIGUSR2 {result.get('signal_at_s', 0):.2f} s after it started; "
              f"old pid {result['old_pid']}, successor pid {result.get('successor_pid')}")
    else:
        print(f"client: no JSON (exit {result.get('client_status')}): {result.get('client_tail')}")
    print("note: 'successor accepts' is the first poll (every ~2 ms) that found a TCP socket besides the inherited "
          "listener in the successor's /proc/PID/fd: an upper bound on its first accept; the times are from just "
          "before SIGUSR2 was sent")
    with open(os.path.join(work, "results.json"), "w") as file:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M %Z"), "args": vars(args), "result": result,
                   "rows": lines}, file, indent=1)
    failed = [what.strip() for what, _, _, met in lines if met is False]
    for what in failed:
        print(f"FAIL {what}", file=sys.stderr)
    print(f"upgrade-under-load: {'FAIL' if failed else 'PASS'} in {time.monotonic() - started:.0f} s "
          f"(logs: {os.path.relpath(work)})")
    return 1 if failed else 0
