#!/usr/bin/env python3
"""Goodput against offered load, from the runs of `bench/run.sh overload`.

    overload.py carries RESULT.json P99_MS
        exit 0 if that run carried its load: every session asked for
        completed, and the p99 lateness of admitted sessions (against each
        session's first schedule) is at most P99_MS.
    overload.py report [--svg OUT.svg] LABEL=DIR [LABEL=DIR ...]
        one table per LABEL (a build, e.g. before=… after=…) with a row per
        multiple of the capacity, and the goodput curve of every LABEL in
        one SVG.

Each run is RESULT.json (`station load --json`) beside RESULT.run, written
by run.sh: {"store", "capacity", "multiple", "level", "rate",
"window_seconds", "store_ops", "redis": {"cpu_seconds", "commands"} or null}. A load *level* of n sessions is sessions
arriving at `rate` = n / (count × interval) a second, for `window_seconds`:
in steady state n are live at once. Offered load and goodput are per
minute of that arrival window: offered = rate × 60, goodput = completed ×
60 / window_seconds (a session that completes late, after retries, still
counts: the run lasts until it completes or --duration ends).

Only the Python standard library."""
import glob
import json
import math
import os
import re
import statistics
import sys


def read(path):
    with open(path) as f:
        return json.load(f)


def carries(result, p99_ms):
    r = read(result)
    ok = r["completed"] == r["sessions"] and r["lateness_ms"]["p99"] <= p99_ms
    print(f"{r['sessions']} sessions: {r['completed']} completed, "
          f"{r.get('failed_after_admission')} failed after admission, "
          f"{r.get('refused_at_door')} refused at the door, p99 {r['lateness_ms']['p99']:.1f} ms"
          f" -> {'carried' if ok else 'not carried'}", file=sys.stderr)
    return 0 if ok else 1


def runs(directory):
    """{(store, multiple): [(result, run), ...]} of the offered-load runs."""
    rows = {}
    for path in sorted(glob.glob(os.path.join(directory, "overload-*-x*-*.json"))):
        if not re.search(r"overload-[a-z]+-x[0-9.]+-\d+\.json$", path):
            continue
        try:
            result, run = read(path), read(path[: -len(".json")] + ".run")
        except (OSError, ValueError):
            print(f"(skipped unreadable {path})", file=sys.stderr)
            continue
        rows.setdefault((run["store"], run["multiple"]), []).append((result, run))
    return rows


def med(values, fmt="{:,.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m = fmt.format(statistics.median(values))
    if len(values) == 1:
        return m
    return f"{m} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def per_completed(result, run):
    ops = run.get("store_ops")
    if ops is None or not result["completed"]:
        return None
    return ops / result["completed"]


def goodput(result, run):
    return result["completed"] * 60 / run["window_seconds"]


def offered(run):
    return run["rate"] * 60


def still_running(res):
    """' (n still running at the end)' when admitted sessions were cut off
    by the run's end rather than ended unverified."""
    n = [r.get("admitted_unfinished") for r in res]
    if all(v is None for v in n) or not any(n):
        return ""
    return f" ({med(n)} still running at the end)"


def table(label, rows):
    print(f"\n### {label}\n")
    print("| store | × capacity | sessions offered | offered / min | completed | goodput / min "
          "| refused at the door | held back by the client only | failed after admission | never admitted otherwise | never started "
          "| reconnects | lateness p99, admitted (ms) | stall p99 (ms) | `Open`s of each completed session "
          "| `Open`s sent in all per completed session (held back by the client) "
          "| store ops per completed session | CPU (s): server / load / Redis |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (store, multiple), rs in sorted(rows.items()):
        res = [r for r, _ in rs]
        capacity = rs[0][1]["capacity"]
        print(f"| {store} | {multiple:g} (C = {capacity:,}) | {med([r['sessions'] for r in res])} "
              f"| {med([offered(run) for _, run in rs])} | {med([r['completed'] for r in res])} "
              f"| {med([goodput(r, run) for r, run in rs])} "
              f"| {med([r.get('refused_at_door') for r in res])} "
              f"| {med([r.get('held_back_only') for r in res])} "
              f"| {med([r.get('failed_after_admission') for r in res])}"
              f"{still_running(res)} "
              f"| {med([r.get('never_admitted_otherwise') for r in res])} "
              f"| {med([r.get('never_started') for r in res])} "
              f"| {med([r['reconnects'] for r in res])} "
              f"| {med([r['lateness_ms']['p99'] for r in res], '{:.1f}')} "
              f"| {med([(r.get('stall_ms') or {}).get('p99') for r in res], '{:.1f}')} "
              f"| {med([(r.get('opens_per_completed_session') or {}).get('mean') for r in res], '{:.2f}')} "
              f"| {med([r.get('opens_sent_per_completed_session') for r in res], '{:.2f}')} "
              f"({med([r.get('opens_held_back') for r in res])}) "
              f"| {med([per_completed(r, run) for r, run in rs], '{:.1f}')} "
              f"| {med([(r.get('server') or {}).get('cpu_seconds') for r in res], '{:.1f}')} "
              f"/ {med([r.get('load_cpu_seconds') for r in res], '{:.1f}')} "
              f"/ {med([(run.get('redis') or {}).get('cpu_seconds') for _, run in rs], '{:.1f}')} |")


def nice_ticks(top, n=5):
    """Round tick values from 0 to at least `top`."""
    if top <= 0:
        return [0, 1]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks, t = [], 0.0
    while t < top + step * 0.999:
        ticks.append(t)
        t += step
    return ticks


def svg(path, series):
    """series: [(label, [(offered, goodput), ...], capacity_offered)]."""
    w, h, left, right, top, bottom = 720, 460, 80, 170, 40, 60
    xs = [x for _, pts, _ in series for x, _ in pts] or [1]
    ys = [y for _, pts, _ in series for _, y in pts] or [1]
    xt, yt = nice_ticks(max(xs)), nice_ticks(max(max(ys), max(xs)))
    xmax, ymax = xt[-1] or 1, yt[-1] or 1
    px = lambda x: left + (w - left - right) * x / xmax
    py = lambda y: h - bottom - (h - top - bottom) * y / ymax
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15">Goodput against offered load</text>']
    for t in xt:
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{h - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{px(t):.1f}" y="{h - bottom + 16}" text-anchor="middle">{t:,.0f}</text>')
    for t in yt:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{w - right}" y2="{py(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:,.0f}</text>')
    out.append(f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 18}" text-anchor="middle">'
               'offered load (sessions arriving per minute)</text>')
    out.append(f'<text transform="translate(18 {(top + h - bottom) / 2}) rotate(-90)" '
               'text-anchor="middle">goodput (sessions completed per minute)</text>')
    # Everything offered completes: the line goodput cannot pass.
    edge = min(xmax, ymax)
    out.append(f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(edge):.1f}" y2="{py(edge):.1f}" '
               'stroke="#999" stroke-dasharray="5 4"/>')
    legend_y = top + 10
    out.append(f'<line x1="{w - right + 12}" y1="{legend_y}" x2="{w - right + 36}" y2="{legend_y}" '
               'stroke="#999" stroke-dasharray="5 4"/>')
    out.append(f'<text x="{w - right + 42}" y="{legend_y + 4}">all complete</text>')
    for k, (label, pts, capacity) in enumerate(series):
        c = colours[k % len(colours)]
        # Every other series dashed, with hollow squares, so curves that
        # coincide stay visible.
        dash = ' stroke-dasharray="8 5"' if k % 2 else ""
        pts = sorted(pts)
        if pts:
            line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
            for x, y in pts:
                if k % 2:
                    out.append(f'<rect x="{px(x) - 5:.1f}" y="{py(y) - 5:.1f}" width="10" height="10" '
                               f'fill="none" stroke="{c}" stroke-width="1.5"/>')
                else:
                    out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{c}"/>')
        if capacity:
            out.append(f'<line x1="{px(capacity):.1f}" y1="{top}" x2="{px(capacity):.1f}" '
                       f'y2="{h - bottom}" stroke="{c}" stroke-dasharray="2 3"/>')
        y = legend_y + 20 * (k + 1)
        out.append(f'<line x1="{w - right + 12}" y1="{y}" x2="{w - right + 36}" y2="{y}" stroke="{c}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{w - right + 42}" y="{y + 4}">{label}</text>')
    y = legend_y + 20 * (len(series) + 1)
    out.append(f'<text x="{w - right + 12}" y="{y + 4}" fill="#555">dotted: capacity C</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def report(args):
    out_svg = None
    if args[:1] == ["--svg"]:
        out_svg, args = args[1], args[2:]
    series = []
    for spec in args:
        label, _, directory = spec.partition("=")
        rows = runs(directory)
        if not rows:
            print(f"no overload runs in {directory}", file=sys.stderr)
            continue
        table(label, rows)
        for store in sorted({s for s, _ in rows}):
            mine = {m: rs for (s, m), rs in rows.items() if s == store}
            pts = [(statistics.median(offered(run) for _, run in rs),
                    statistics.median(goodput(r, run) for r, run in rs)) for rs in mine.values()]
            at_c = [offered(run) for rs in mine.values() for _, run in rs if run["multiple"] == 1]
            name = label if len({s for s, _ in rows}) == 1 else f"{label}, {store}"
            series.append((name, pts, at_c[0] if at_c else None))
    if out_svg and series:
        svg(out_svg, series)
        print(f"\n(goodput curve: {out_svg})")
    return 0 if series else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["carries"] and len(sys.argv) == 4:
        sys.exit(carries(sys.argv[2], float(sys.argv[3])))
    if sys.argv[1:2] == ["report"]:
        sys.exit(report(sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
