"""The measuring harness: every make target that runs the release binaries as
separate processes (perf, perf-rooms, perf-instr, profile, faults, soak,
scale-demo). Python 3 standard library only; all traffic on 127.0.0.0/8.

One of each, shared by every tool:

    procs.py      the supervisor (starts, logs, stops by PID), /proc readers, ports, signals
    servers.py    the server specs (ours, the peers) and the one server starter
    client.py     the dummy-client command lines (flood, room), the one report parser,
                  floods in the background
    sockets.py    raw-socket streams that verify every byte
    measure.py    one client against one server, CPU read from /proc in its window
    report.py     tables, ratios, the chart

The tools, each a module with a `main` (entry scripts: perf/perf.py, scripts/*.py;
or `python3 -m harness.<tool>` from the repository root):

    perf.py       make perf, perf-baseline, peers; rooms.py make perf-rooms;
                  instr.py make perf-instr, make profile
    faults.py     make faults
    soak.py       make soak
    haproxy.py    HAProxy installed, configured and started; scale_demo.py make scale-demo
"""
