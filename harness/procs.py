"""The one process supervisor, and what /proc says about the processes it started.

Every process any harness tool starts goes through `Supervisor.start`, which logs
its stderr to a file and remembers its PID. Leaving the supervisor (normally, on
an exception, on Ctrl-C or SIGTERM) stops whatever is still running: SIGTERM to
that PID, a bounded wait, then SIGKILL. Nothing is ever signalled by name.
"""

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, ".build", "release")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- /proc ------------------------------------------------------------------

def cpu_seconds(pid):
    """(user, system) CPU seconds a process has used so far, all threads."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: split after its ')'.
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def memory_kib(pid, key="VmRSS"):
    """A memory figure from /proc/PID/status, in KiB (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def reset_peak_rss(pid):
    """Reset VmHWM to the current RSS, so the next peak is this window's."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_count(pid):
    """How many sockets a process has open."""
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass  # closed while we looked
    return count


def tcp_sockets(port):
    """IPv4 sockets with local port `port`, from /proc/net/tcp:
    [(remote_port, state, tx_queue, rx_queue)]. States: 01 ESTABLISHED, 08 CLOSE_WAIT, ..."""
    found = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.split(":")[1], 16) != port:
                continue
            tx, rx = (int(q, 16) for q in queues.split(":"))
            found.append((int(fields[2].split(":")[1], 16), state, tx, rx))
    return found


def wait_until(condition, timeout, interval=0.02):
    """Poll `condition()` until it is true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- ports ------------------------------------------------------------------

def port_is_free(port, host=HOST):
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False


def free_port(start, host=HOST):
    """The first port from `start` on that nothing is bound to (100 tries)."""
    for port in range(start, min(start + 100, 65536)):
        if port_is_free(port, host):
            return port
    raise RuntimeError(f"no free port on {host} in {start}..{start + 99}")


class Ports:
    """Fresh ports, each above the last one handed out: no TIME_WAIT leftovers
    of an earlier server on the same port."""

    def __init__(self, first):
        self.next = first

    def take(self, host=HOST):
        port = free_port(self.next, host)
        self.next = port + 1
        return port


def accepts_connections(port, host=HOST):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


# --- starting and stopping ---------------------------------------------------

class Stopped(Exception):
    """SIGTERM (or SIGHUP) arrived: unwind through the `finally` blocks."""


def _raise_stopped(signum, _frame):
    raise Stopped(f"signal {signum}")


def stop_on_signals():
    """Turn SIGTERM/SIGHUP into an exception, like Ctrl-C, so cleanup runs.

    SIGINT gets Python's handler even when started with it ignored (as a
    shell's background job is), so Ctrl-C always unwinds through `finally`.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, _raise_stopped)


@contextlib.contextmanager
def time_limit(seconds, error):
    """Raises `error` (an exception) in the main thread if the block runs past
    `seconds` (SIGALRM), so that a stuck run still unwinds and stops what it started."""
    def expired(*_):
        raise error

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class Supervisor:
    """Starts processes, logs their stderr to LOG_DIR/NAME.log, stops them by PID."""

    def __init__(self, log_dir):
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.running = []

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for process in reversed(self.running[:]):
            self.stop(process)

    def start(self, name, argv, stdout=None, nofile=None):
        """Start `argv`; stdout goes to `stdout` (e.g. PIPE) or to the log too.
        `nofile`: the child's RLIMIT_NOFILE. The log starts empty."""
        log = open(os.path.join(self.log_dir, f"{name}.log"), "wb")

        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                   stdout=stdout if stdout is not None else log, stderr=log,
                                   preexec_fn=limits if nofile else None)
        process.name, process.log_path = name, log.name
        log.close()  # the child holds its own copy
        self.running.append(process)
        return process

    def stop(self, process, timeout=10.0, signum=signal.SIGTERM):
        """`signum` (SIGTERM), wait up to `timeout` s, then SIGKILL. Returns the exit status."""
        if process.poll() is None:
            try:
                process.send_signal(signum)
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.forget(process)
        return process.returncode

    def kill(self, process):
        """SIGKILL, by PID, and reap it. Returns the exit status (-9)."""
        if process.poll() is None:
            process.kill()
            process.wait(5)
        self.forget(process)
        return process.returncode

    def forget(self, process):
        """A process that has exited (or been waited for) by other means."""
        if process in self.running:
            self.running.remove(process)


def log_text(process):
    try:
        with open(process.log_path, errors="replace") as log:
            return log.read()
    except OSError:
        return ""


def log_tail(process, lines=15):
    return "".join(log_text(process).splitlines(keepends=True)[-lines:])


# --- odds and ends ---------------------------------------------------------------

def load_json(path):
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, json.JSONDecodeError):
        return None


def raise_fd_limit():
    """This process's soft fd limit up to the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def require(path, what):
    if not os.access(path, os.X_OK):
        sys.exit(f"{what} not found at {path} (build it: make release)")
