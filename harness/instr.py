"""Looking inside the server: instructions per message (callgrind), CPU profile (perf).

make perf-instr: each server runs under `valgrind --tool=callgrind` (a copy of
its binary stripped with `strip -g`: valgrind 3.19 cannot read Swift's DWARF,
and the symbol table stays so functions keep their names). A warm-up flood
runs first, then the counters are zeroed (`callgrind_control -z`), a measured
flood runs with its own connections and no warm-up of its own, and the
counters are dumped (`callgrind_control -d`). Instructions per message = the
dump's total Ir / the measured flood's messages. The measured window includes
the measured flood's 10 connects and closes: a fixed cost, small beside its
thousands of messages. Under valgrind the servers run ~50x slower: that only
lowers the message count, not the instructions per message. Each function's
self cost, and the calls to the syscall wrappers, are read from the dump itself
(see `_parse_dump`). Ours runs twice: as `echo-server` runs by default (the
built-in EchoHandler, one shared by all connections) and as "reactor-own-handler" (`--verbose`:
a handler object per connection, from another module), which is what a
library user's own handler costs.

make profile: `perf record -e cpu-clock -g` (no hardware counters on these
machines) of the release server under the course pattern at c=100.
"""

import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from . import procs, servers
from .client import COURSE, Load, flood_argv, parse_report, room_argv, run_to_report
from .procs import load_json, raise_fd_limit, require
from .perf import OURS, PERF_DIR
from .rooms import OURS as ROOMS_OURS
from .rooms import room_servers


def demangle(text):
    """Swift symbols made readable (`swift demangle --simplified`), when swift is there."""
    if shutil.which("swift") is None:
        return text
    result = subprocess.run(["swift", "demangle", "--simplified"], input=text, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else text


def _need(tool, package):
    if shutil.which(tool) is None:
        sys.exit(f"perf: `{tool}` not found: install it with `apt-get install -y {package}`")


def _report(supervisor, argv, duration, name):
    """Run one dummy-client `argv` for about `duration` and return its JSON report."""
    result, status, tail = run_to_report(supervisor, name, argv, duration + 120)
    if result is None:
        raise RuntimeError(f"{os.path.basename(argv[0])} {argv[1]} exited {status} without JSON: {tail}")
    return result


def _flood(supervisor, args, port, duration, name):
    load = Load(f"course c={args.connections}", args.connections, COURSE)
    return _report(supervisor, flood_argv(args.client, port, load, duration, 0, args.threads, args.client_flags),
                   duration, name)


# --- callgrind ------------------------------------------------------------------

def _total_ir(dump):
    """The 'totals:' (or 'summary:') line of a callgrind dump: Ir is its first event."""
    summary = None
    with open(dump) as file:
        for line in file:
            if line.startswith("totals:"):
                return int(line.split()[1])
            if line.startswith("summary:"):
                summary = int(line.split()[1])
    if summary is None:
        raise RuntimeError(f"no totals in {dump}")
    return summary


# libc's wrappers for the syscalls an echo loop makes (callgrind counts calls, not syscalls).
SYSCALLS = {"recv", "__libc_recv", "recvfrom", "recvmsg", "read", "__libc_read", "readv",
            "send", "__send", "__libc_send", "sendto", "sendmsg", "write", "__libc_write", "writev",
            "epoll_wait", "epoll_pwait", "epoll_ctl", "accept", "accept4", "close", "shutdown",
            "eventfd_write", "eventfd_read", "sched_yield"}
BURST = 10  # messages per round in the course pattern


def _parse_dump(dump):
    """({(function, object): self Ir}, {function: calls}) from a callgrind dump.

    callgrind_annotate 3.19 counts a call that was in progress when the
    counters were zeroed (calls=0, e.g. main -> loop) into the caller's self
    cost, so the dump is read here: a cost line adds to the current function,
    except the line right after `calls=`, which is the call's inclusive cost.
    """
    functions, objects, costs, calls = {}, {}, {}, {}

    def name(table, text):  # "(id) name" defines an id, "(id)" refers to it
        text = text.strip()
        if text.startswith("("):
            ident, _, rest = text.partition(")")
            if rest.strip():
                table[ident] = rest.strip()
            return table.get(ident, text)
        return text

    function = obj = function_obj = callee = None
    after_calls = False
    with open(dump) as file:
        for line in file:
            if after_calls:
                after_calls = False
                continue
            key, equals, value = line.partition("=")
            if equals and key.isalpha():
                if key == "fn":
                    function, function_obj = name(functions, value), obj
                elif key == "ob":
                    obj = name(objects, value)
                elif key == "cfn":
                    callee = name(functions, value)
                elif key == "cob":
                    name(objects, value)
                elif key == "calls":
                    calls[callee] = calls.get(callee, 0) + int(value.split()[0])
                    after_calls = True
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if len(fields) > 1 and function is not None:
                    costs[(function, function_obj)] = costs.get((function, function_obj), 0) + int(fields[1])
    return costs, calls


def _room(supervisor, args, port, duration, name):
    """One busy room (1 x 100, 32 B chats) for `duration`, as a flood-shaped result: a delivery is a message."""
    result = _report(supervisor, room_argv(args.client, port, 1, 100, duration, 0, 1), duration, name)
    return {"messages": result["deliveries"], "msgs_per_sec": result["deliveries_per_sec"], "errors": result["errors"]}


def callgrind_one(supervisor, server, args, port, work, load=_flood):
    """Instructions per echoed message (or per delivery, with `load=_room`) of one server, and its top functions."""
    binary = os.path.join(work, os.path.basename(server.binary))
    shutil.copyfile(server.binary, binary)
    os.chmod(binary, 0o755)
    subprocess.run(["strip", "-g", binary], check=True)
    out_file = os.path.join(work, f"callgrind.{server.name}.out")
    wrapper = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}")
    stripped = dataclasses.replace(server, binary=binary)
    running = servers.start(supervisor, stripped, port, args.loops, ready_timeout=120, wrapper=wrapper)
    pid = running.pid
    try:
        print(f"  {server.name}: warm-up ({args.warmup:g} s)", flush=True)
        load(supervisor, args, port, args.warmup, f"warmup-{server.name}")
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True, timeout=60)
        print(f"  {server.name}: measured ({args.duration:g} s)", flush=True)
        result = load(supervisor, args, port, args.duration, f"measured-{server.name}")
        before = set(glob.glob(out_file + "*"))
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True, timeout=60)
        if not procs.wait_until(lambda: set(glob.glob(out_file + "*")) - before, 30, 0.1):
            raise RuntimeError(f"callgrind wrote no dump for {server.name}")
        time.sleep(0.5)  # let the dump be written out completely
        dump = max(set(glob.glob(out_file + "*")) - before, key=os.path.getmtime)
    finally:
        supervisor.stop(running.process, timeout=30)
    messages = result["messages"]
    if messages <= 0:
        raise RuntimeError(f"{server.name}: nothing echoed or delivered in the measured run")
    ir = _total_ir(dump)
    costs, calls = _parse_dump(dump)
    ranked = sorted(costs.items(), key=lambda item: -item[1])[:args.top]
    syscalls = {name.split("@")[0]: count for name, count in calls.items() if name.split("@")[0] in SYSCALLS}
    return {"server": server.name, "instructions": ir, "messages": messages,
            "msgs_per_sec_under_valgrind": result["msgs_per_sec"], "errors": sum(result["errors"].values()),
            "instructions_per_msg": ir / messages,
            "syscalls_per_msg": {name: count / messages for name, count in sorted(syscalls.items())},
            "top": [{"ir_per_msg": cost / messages, "share": cost / ir, "function": function,
                     "object": os.path.basename(obj or "?")} for (function, obj), cost in ranked]}


def _callgrind_all(under_test, args, load, ours):
    """callgrind_one for each server, in turn; a peer that fails is skipped with a note.
    The results, or the exit status when ours failed or the run was interrupted."""
    work = tempfile.mkdtemp(prefix="reactor-callgrind-")
    results = []
    try:
        with procs.Supervisor(work) as supervisor:
            for server in under_test:
                try:
                    results.append(callgrind_one(supervisor, server, args, procs.free_port(args.port), work, load))
                except RuntimeError as error:
                    if server.name == ours:
                        raise
                    print(f"note: {server.name} skipped: {error}")
    except (KeyboardInterrupt, procs.Stopped):
        print("\nperf-instr: interrupted; servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.SubprocessError) as error:
        print(f"perf-instr: {error}\nperf-instr: files kept in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return results


def callgrind(args):
    _need("valgrind", "valgrind")
    _need("callgrind_control", "valgrind")
    require(args.server, "echo-server")
    require(args.client, "dummy-client")
    raise_fd_limit()
    under_test = [servers.ours(args.server), servers.own_handler(args.server), servers.async_echo(args.server),
                  *servers.versus(args.versus)]
    if args.peers:
        under_test += servers.built_only(servers.peers(), args.loops)
    print(f"perf-instr: callgrind, course pattern, {args.connections} connections"
          f"{', each round one send' if '--coalesce' in args.client_flags else ', ten sends per round'}, "
          f"{args.duration:g} s measured after a {args.warmup:g} s warm-up flood", flush=True)
    results = _callgrind_all(under_test, args, _flood, OURS)
    if isinstance(results, int):
        return results

    print()
    for result in results:
        print(f"{result['server']}: {result['instructions_per_msg']:,.1f} instructions per echoed message "
              f"({result['instructions']:,} Ir / {result['messages']:,} messages; "
              f"{result['msgs_per_sec_under_valgrind']:,.0f} msgs/s under valgrind"
              f"{'; ERRORS ' + str(result['errors']) if result['errors'] else ''})")
        per_round = {name: rate * BURST for name, rate in result["syscalls_per_msg"].items()}
        print(f"  syscalls per echoed round of {BURST} (calls to libc's wrappers): {sum(per_round.values()):.2f} ("
              + ", ".join(f"{name} {rate:.2f}" for name, rate in sorted(per_round.items(), key=lambda i: -i[1])
                          if rate >= 0.005) + ")")
        names = demangle("\n".join(t["function"] for t in result["top"])).splitlines()
        for top, name in zip(result["top"], names):
            if top["share"] < 0.001:
                break  # the rest is set-up and teardown, not the hot path
            name = name if len(name) <= 110 else name[:107] + "..."
            print(f"  {top['ir_per_msg']:9.1f} /msg {top['share']:6.1%}  {name}  [{top['object']}]")
        print()
    ours = next((r for r in results if r["server"] == OURS), None)
    for result in results:
        if ours and result is not ours:
            print(f"{OURS} / {result['server']}: {ours['instructions_per_msg'] / result['instructions_per_msg']:.2f}x "
                  f"instructions per message, {_syscalls(ours) / max(_syscalls(result), 1e-9):.2f}x syscalls")
    baseline = load_json(os.path.join(PERF_DIR, "baseline-instr.json"))
    before = next((r for r in (baseline or {}).get("results", []) if r["server"] == OURS), None)
    if ours and before and baseline.get("client_flags") != list(args.client_flags):
        print(f"baseline ({baseline.get('date')}) was measured with client flags {baseline.get('client_flags')}: "
              f"not compared")
    elif ours and before:
        print(f"{OURS} now / baseline ({baseline.get('date')}): "
              f"{ours['instructions_per_msg'] / before['instructions_per_msg']:.3f}x "
              f"({before['instructions_per_msg']:,.1f} -> {ours['instructions_per_msg']:,.1f})")
    path = os.path.join(PERF_DIR, "results-instr.json")
    with open(path, "w") as file:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M %Z"), "connections": args.connections,
                   "client_flags": list(args.client_flags),
                   "duration_s": args.duration, "results": results}, file, indent=1)
    print(f"results: {os.path.relpath(path)}")
    return 0


def callgrind_rooms(args):
    """perf.py instr-rooms: instructions per delivery, room-server against roomref, one busy room."""
    _need("valgrind", "valgrind")
    _need("callgrind_control", "valgrind")
    require(args.room_server, "room-server")
    require(args.client, "dummy-client")
    raise_fd_limit()
    under_test = [s for s in room_servers(args) if s.name != "nio-room"]  # ~100x slower under valgrind
    print(f"perf-instr rooms: callgrind, one room of 100 members, 32 B chats, {args.duration:g} s measured "
          f"after a {args.warmup:g} s warm-up", flush=True)
    results = _callgrind_all(under_test, args, _room, ROOMS_OURS)
    if isinstance(results, int):
        return results
    print()
    for result in results:
        print(f"{result['server']}: {result['instructions_per_msg']:,.1f} instructions per delivery "
              f"({result['instructions']:,} Ir / {result['messages']:,} deliveries"
              f"{'; ERRORS ' + str(result['errors']) if result['errors'] else ''})")
        calls = ", ".join(f"{name} {count:.3f}" for name, count in result["syscalls_per_msg"].items() if count >= 0.001)
        print(f"  syscalls per delivery: {calls}")
        names = demangle("\n".join(t["function"] for t in result["top"])).splitlines()
        for top, name in zip(result["top"][:8], names):
            print(f"  {top['ir_per_msg']:9.2f} /delivery {top['share']:6.1%}  {name[:100]}  [{top['object']}]")
    if len(results) > 1:
        print(f"\n{results[0]['server']} / {results[1]['server']}: "
              f"{results[0]['instructions_per_msg'] / results[1]['instructions_per_msg']:.2f}x instructions per delivery")
    return 0


def _syscalls(result):
    return sum(result["syscalls_per_msg"].values())


# --- perf record ------------------------------------------------------------------

def profile(args):
    if shutil.which("perf") is None:
        print("make profile needs Linux perf: apt-get install -y linux-perf", file=sys.stderr)
        return 1
    require(args.server, "echo-server")
    require(args.client, "dummy-client")
    raise_fd_limit()
    data = os.path.join(PERF_DIR, "profile.data")
    text = os.path.join(PERF_DIR, "profile.txt")
    work = tempfile.mkdtemp(prefix="reactor-profile-")
    load = Load(f"course c={args.connections}", args.connections, COURSE)
    warmup = 1.0
    try:
        with procs.Supervisor(work) as supervisor:
            server = servers.start(supervisor, servers.ours(args.server), procs.free_port(args.port), args.loops)
            argv = flood_argv(args.client, server.port, load, args.duration + 1, warmup, args.threads,
                              args.client_flags)
            client = supervisor.start("client", argv, stdout=subprocess.PIPE)
            if os.path.exists(data):
                os.unlink(data)  # else perf renames it to profile.data.old
            time.sleep(warmup)
            print(f"profile: perf record -e cpu-clock -g of echo-server (pid {server.pid}) for "
                  f"{args.duration:g} s under the course pattern at c={args.connections}", flush=True)
            record = subprocess.run(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(server.pid),
                                     "-o", data, "--", "sleep", f"{args.duration:g}"],
                                    capture_output=True, text=True, timeout=args.duration + 60)
            output, _ = client.communicate(timeout=args.duration + 60)
            supervisor.stop(server.process)
    except (KeyboardInterrupt, procs.Stopped):
        print("\nprofile: interrupted; server stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if record.returncode != 0 or not os.path.exists(data):
        print(f"profile: perf record failed: {record.stderr.strip()[-400:]}", file=sys.stderr)
        return 1
    result = parse_report(output) or {}
    print(f"load: {result.get('msgs_per_sec', 0):,.0f} msgs/s during the recording")
    def report_lines(*options):
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", *options],
                             capture_output=True, text=True, timeout=300).stdout
        return [_tidy(line) for line in demangle(out).splitlines() if line.strip() and not line.startswith("#")]

    full = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children"],
                          capture_output=True, text=True, timeout=300)
    with open(text, "w") as file:
        file.write(demangle(full.stdout))
    by_object = report_lines("--sort", "dso")
    symbols = report_lines("--sort", "dso,symbol", "--percent-limit", "0.05")
    print("samples by object: " + ", ".join(" ".join(line.split()[::-1]) for line in by_object[:6]))
    user = [line for line in symbols if "[.]" in line]
    for title, chosen in (("top symbols by self time", symbols), ("top user-space symbols", user)):
        print(f"{title}:")
        for line in chosen[:args.top]:
            print("  " + (line if len(line) <= 150 else line[:147] + "..."))
    print(f"call graphs: {os.path.relpath(text)}; samples: {os.path.relpath(data)}")
    return 0


def _tidy(line):
    """perf's padded columns, without the padding and the empty trailing ones."""
    line = re.sub(r"(\s+-)+\s*$", "", line.rstrip())
    return re.sub(r"\s{3,}", "  ", line)
