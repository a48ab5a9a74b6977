"""Tables (every tool's), ratios (to the baseline, to the peers) and make perf's chart."""

import os
import shutil
import subprocess
import tempfile

# (column title, row field, format, direction: +1 higher is better, -1 lower is better)
COLUMNS = [
    ("msgs/s", "msgs_per_sec", "{:,.0f}", +1),
    ("MiB/s", "mib_per_sec", "{:,.1f}", +1),
    ("p50 us", "p50_us", "lat", -1),
    ("p99 us", "p99_us", "lat", -1),
    ("p99.9 us", "p999_us", "lat", -1),
    ("srv us/msg", "server_cpu_us_per_msg", "{:.3f}", -1),
    ("srv CPU%", "server_cpu_pct", "{:.0f}", 0),
    ("cli us/msg", "client_cpu_us_per_msg", "{:.3f}", -1),
    ("RSS MiB", "rss_mib", "{:.1f}", -1),
    ("B/conn", "rss_per_conn_b", "{:,.0f}", -1),
    ("errors", "errors", "{:d}", -1),
]

LEGEND = """\
columns: msgs/s, MiB/s = echoed by the server during the measured window (client's count);
  p50/p99/p99.9 us = round-trip latency of one round (10 x 100 B) or one 16 KiB message;
  srv us/msg = server CPU (utime+stime, /proc/PID/stat) per echoed message; srv CPU% = of one core;
  cli us/msg = the same for dummy-client; RSS MiB = server's peak RSS in the row (VmHWM), RSS after
  start for "base", RSS while holding for "idle"; B/conn = VmRSS delta per connection held (user space only)"""


def _cell(row, field, fmt):
    value = row.get(field)
    if value is None:
        return "-"
    if fmt == "lat":
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return fmt.format(value)


def render(header, lines, left=2, separator="  "):
    """A plain-text table: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]
    out = []
    for cells in [header, *lines]:
        parts = [str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        out.append(separator.join(parts).rstrip())
    rule = separator.replace(" ", "-").replace("|", "+") if "|" in separator else separator
    out.insert(1, rule.join("-" * w for w in widths))
    return "\n".join(out)


def results_table(rows, columns=COLUMNS):
    header = ["server", "load", *(title for title, *_ in columns)]
    lines = [[row["server"], row["load"], *(_cell(row, field, fmt) for _, field, fmt, _ in columns)]
             for row in rows]
    return render(header, lines)


def _ratio(ours, theirs, direction, threshold=None):
    """'1.05', with '!' when worse than `threshold` (e.g. 0.15) in `direction`."""
    if ours is None or theirs is None:
        return "-"
    if theirs == 0:
        if ours == 0:
            return "1.00"
        return "inf!" if direction < 0 and threshold is not None else "inf"
    ratio = ours / theirs
    worse = threshold is not None and direction and (ratio - 1) * direction < -threshold
    return f"{ratio:.2f}{'!' if worse else ''}"


def ratio_table(rows, others, pick, titles, threshold=None, columns=COLUMNS):
    """Our rows over `others` (keyed by load), for the given column titles."""
    chosen = [c for c in columns if c[0] in titles]
    header = ["server", "load", *(title for title, *_ in chosen)]
    lines = []
    for row in rows:
        other = others.get(row["load"])
        if other is None or row["server"] != pick:
            continue
        lines.append([row["server"], row["load"],
                      *(_ratio(row.get(f), other.get(f), d, threshold) for _, f, _, d in chosen)])
    return render(header, lines) if lines else ""


def baseline_comparison(rows, baseline, ours, threshold=0.15):
    """Our figures now / in the baseline; '!' marks a change for the worse."""
    if not baseline:
        return "no baseline yet (perf/baseline.json): `make perf-baseline` saves these results as one"
    before = {row["load"]: row for row in baseline.get("rows", []) if row["server"] == ours}
    titles = [c[0] for c in COLUMNS if c[0] not in ("srv CPU%", "errors")]
    table = ratio_table(rows, before, ours, titles, threshold)
    if not table:
        return "the baseline has no rows for the same loads"
    when = baseline.get("date", "?")
    drift = _reference_drift(rows, baseline, ours)
    return (f"now / baseline ({when}, {baseline.get('git', '?')}): >1 = larger now; "
            f"'!' = worse by more than {threshold:.0%} (runs drift +-20% on a shared machine)\n{table}{drift}")


def _reference_drift(rows, baseline, ours):
    """How much a peer moved since the baseline: the machine's drift, not ours."""
    before = {(row["server"], row["load"]): row for row in baseline.get("rows", [])}
    for peer in sorted({row["server"] for row in rows} - {ours}):
        ratios = [f"{row['load']} {row['msgs_per_sec'] / old['msgs_per_sec']:.2f}" for row in rows
                  if row["server"] == peer and row.get("msgs_per_sec")
                  and (old := before.get((peer, row["load"]))) and old.get("msgs_per_sec")]
        if ratios:
            return f"\nmachine drift, {peer} msgs/s now / baseline: " + ", ".join(ratios)
    return ""


def peer_comparison(rows, peer, ours):
    """Our figures / the peer's, same run, same loads."""
    theirs = {row["load"]: row for row in rows if row["server"] == peer}
    titles = ["srv us/msg", "msgs/s", "MiB/s", "p99 us", "RSS MiB", "B/conn"]
    table = ratio_table(rows, theirs, ours, titles)
    return (f"{ours} / {peer} (same run): msgs/s > 1 = we echo more; "
            f"CPU, latency and memory < 1 = we use less\n{table}") if table else ""


# --- chart -------------------------------------------------------------------

def chart(rows, servers, path, title):
    """msgs/s and p99 per load and server, as SVG; a note (not a failure) without gnuplot."""
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        return "note: gnuplot not installed (apt-get install -y gnuplot-nox): no chart"
    loads = []
    for row in rows:
        if row.get("msgs_per_sec") is not None and row["load"] not in loads:
            loads.append(row["load"])
    table = {(row["server"], row["load"]): row for row in rows}

    def block(field):
        lines = []
        for load in loads:
            values = [table.get((server, load), {}).get(field) for server in servers]
            lines.append(f'"{load}" ' + " ".join("NaN" if v is None else f"{v:.3f}" for v in values))
        return "\n".join(lines)

    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as data:
        data.write(block("msgs_per_sec") + "\n\n\n" + block("p99_us") + "\n")
    plots = lambda index: ", ".join(
        f"'{data.name}' index {index} using {i + 2}{':xtic(1)' if i == 0 else ''} title '{server}'"
        for i, server in enumerate(servers))
    script = f"""
set terminal svg size 1000,760 dynamic font "sans,12" background "white"
set output '{path}'
set multiplot layout 2,1 title "{title}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top
set grid ytics
set xrange [-0.6:{len(loads) - 0.4}]
set yrange [0:*]
set format y "%.0s%c"
set ylabel "msgs/s (echoed)"
plot {plots(0)}
set logscale y
set yrange [*:*]
set format y "%.0s%c"
set ylabel "p99 round trip (us, log)"
plot {plots(1)}
unset multiplot
"""
    try:
        result = subprocess.run([gnuplot], input=script, text=True, capture_output=True, timeout=60)
    finally:
        os.unlink(data.name)
    if result.returncode != 0:
        return f"note: gnuplot failed, no chart: {result.stderr.strip().splitlines()[-1:]}"
    return f"chart: {os.path.relpath(path)}"
