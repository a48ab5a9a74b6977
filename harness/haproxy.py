"""HAProxy for make scale-demo: installed from Debian's packages when missing, a
`mode tcp` configuration written out, run in the foreground under the Supervisor,
and its runtime API (the stats socket) read for the servers' states."""

import os
import shutil
import socket
import subprocess
import sys

from . import procs

STATE_LISTEN = "0A"  # /proc/net/tcp


def ensure_installed(note=print):
    """The haproxy binary's path; `apt-get install -y haproxy` first when it is missing
    (as root, or with `sudo -n`). Exits with the reason when it cannot be installed."""
    found = shutil.which("haproxy")
    if found:
        return found
    if os.geteuid() == 0:
        apt = ["apt-get"]
    elif shutil.which("sudo"):
        apt = ["sudo", "-n", "apt-get"]
    else:
        sys.exit("scale-demo: haproxy is not installed, and installing it needs root or sudo: "
                 "apt-get install -y haproxy")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ([], ["update"]):  # a second try after `apt-get update` (stale package lists)
        if attempt:
            note("scale-demo: apt-get update")
            subprocess.run([*apt, "update"], env=env, stdout=subprocess.DEVNULL, timeout=300)
        note("scale-demo: haproxy not found: apt-get install -y haproxy")
        result = subprocess.run([*apt, "install", "-y", "--no-install-recommends", "haproxy"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        found = shutil.which("haproxy") or (os.access("/usr/sbin/haproxy", os.X_OK) and "/usr/sbin/haproxy")
        if result.returncode == 0 and found:
            return found
    sys.exit(f"scale-demo: apt-get install haproxy failed:\n{result.stdout[-1500:]}")


def version(binary):
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30)
    return (result.stdout.splitlines() or ["?"])[0]


def config(frontend, backends, send_proxy, stats_socket, source=None, maxconn=4096, check_inter="200ms"):
    """The configuration: one TCP frontend, `balance leastconn` over `backends`
    [(name, host, port)], health checks every `check_inter`, each backend
    connection (and check) from `source`, the PROXY v2 header when `send_proxy`.
    HAProxy needs about 2 fds per connection: `maxconn` must stay under half of
    the hard RLIMIT_NOFILE (20,000 here), or it refuses to start."""
    host, port = frontend
    proxy = " send-proxy-v2" if send_proxy else ""
    servers = "\n".join(f"    server {name} {address}:{server_port}{proxy} check inter {check_inter} fall 2 rise 2"
                        for name, address, server_port in backends)
    return f"""\
# Written by make scale-demo (harness/haproxy.py); run with haproxy -db -f THIS_FILE.
global
    maxconn {maxconn}
    stats socket {stats_socket} mode 600 level admin
    # nbthread: one per core by default

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A connect to a dead server is retried, on another server (redispatch).
    retries 3
    option redispatch

frontend echo
    bind {host}:{port}
    maxconn {maxconn}
    default_backend echo_servers

backend echo_servers
    balance leastconn
{f"    source {source}" if source else "    # source: the kernel's choice"}
{servers}
"""


class HAProxy:
    """A running haproxy (foreground, `-db`) and its stats socket."""

    def __init__(self, supervisor, binary, path, text, frontend, stats_socket, name="haproxy"):
        with open(path, "w") as file:
            file.write(text)
        check = subprocess.run([binary, "-c", "-q", "-f", path], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c {path}: {check.stdout}{check.stderr}")
        if os.path.exists(stats_socket):
            os.unlink(stats_socket)
        self.supervisor, self.frontend, self.stats_socket = supervisor, frontend, stats_socket
        self.process = supervisor.start(name, [binary, "-db", "-f", path])
        self.pid = self.process.pid
        port = frontend[1]
        listening = lambda: any(state == STATE_LISTEN for _, state, _, _ in procs.tcp_sockets(port))
        if not procs.wait_until(lambda: self.process.poll() is not None or
                                (listening() and os.path.exists(stats_socket)), 15, 0.05) \
                or self.process.poll() is not None:
            supervisor.stop(self.process)
            raise RuntimeError(f"haproxy did not start (exit {self.process.returncode}): "
                               f"{procs.log_tail(self.process)}")

    def command(self, text, timeout=2.0):
        """One runtime API command over the stats socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.stats_socket)
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def servers(self):
        """{server name: its `show stat` row} for the backend's servers."""
        lines = self.command("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        header = lines[0][2:].split(",")
        rows = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "echo_servers" and row.get("svname") not in ("BACKEND", None):
                rows[row["svname"]] = row
        return rows

    def states(self):
        try:
            return {name: row.get("status", "?") for name, row in self.servers().items()}
        except OSError:
            return {}

    def wait_all_up(self, count, timeout=10.0):
        return procs.wait_until(lambda: list(self.states().values()).count("UP") == count, timeout, 0.05)

    def stop(self):
        return self.supervisor.stop(self.process)
