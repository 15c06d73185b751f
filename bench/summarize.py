#!/usr/bin/env python3
"""Prints the BENCHMARKS.md tables from bench/results/*.json: the median of
the repetitions of each row, with the range in parentheses."""
import glob, json, os, re, statistics, sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")

def load_with_paths(pattern):
    """(path, run) of every readable result matching `pattern`."""
    runs = []
    for path in sorted(glob.glob(os.path.join(OUT, pattern))):
        try:
            with open(path) as f:
                runs.append((path, json.load(f)))
        except (OSError, ValueError):
            print(f"(skipped unreadable {path})", file=sys.stderr)
    return runs

def load(pattern):
    return [run for _, run in load_with_paths(pattern)]

def med(values, fmt="{:.1f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m = fmt.format(statistics.median(values))
    if len(values) == 1:
        return m
    return f"{m} ({fmt.format(min(values))}–{fmt.format(max(values))})"

def server(r, key):
    return (r.get("server") or {}).get(key)

def scale():
    sizes = sorted({(int(m.group(1)), int(m.group(2))) for p in glob.glob(os.path.join(OUT, "scale-*.json"))
                    if (m := re.search(r"-(\d+)x(\d+)-\d+\.json$", p))})
    print("| server | sessions | connections | runs | failed | lateness p99 (ms) | lateness max (ms) | server CPU (s) | server CPU per number (µs) | load CPU per number (µs) | RSS per session above idle (B) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, m in sizes:
        for kind, label in (("station", "station"), ("station0", "station, --tick-slack 0s"),
                             ("baselinerun1", "baseline (beside the 0s rows)"), ("baseline", "baseline"),
                             ("baselineacks", "baseline, clients acknowledging every number")):
            runs = load(f"scale-{kind}-{n}x{m}-*.json")
            if not runs:
                continue
            print(f"| {label} | {n:,} | {m} | {len(runs)} | {med([r['failed'] for r in runs], '{:.0f}')} "
                  f"| {med([r['lateness_ms']['p99'] for r in runs])} "
                  f"| {med([r['lateness_ms']['max'] for r in runs])} "
                  f"| {med([server(r, 'cpu_seconds') for r in runs])} "
                  f"| {med([server(r, 'cpu_seconds') / r['numbers'] * 1e6 if r['numbers'] else None for r in runs])} "
                  f"| {med([r['load_cpu_seconds'] / r['numbers'] * 1e6 if r.get('load_cpu_seconds') and r['numbers'] else None for r in runs])} "
                  f"| {med([server(r, 'rss_bytes_per_session_above_idle') for r in runs], '{:,.0f}')} |")

def maxrate():
    print("| server | runs | numbers/s | server CPU (s) |")
    print("|---|---|---|---|")
    rates = {}
    for kind in ("station", "baseline"):
        runs = load(f"max-{kind}-*.json")
        if not runs:
            continue
        rates[kind] = [r["numbers_per_second"] for r in runs]
        print(f"| {kind} | {len(runs)} | {med(rates[kind], '{:,.0f}')} | {med([server(r, 'cpu_seconds') for r in runs])} |")
    if len(rates) == 2:
        pairs = [s / b for s, b in zip(rates["station"], rates["baseline"])]
        print(f"\nratio station / baseline, run by run: {med(pairs, '{:.2f}')}")

def first():
    print("| count | runs | p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|")
    p50 = {}
    for count in (1, 65535):
        runs = load(f"first-{count}-*.json")
        if not runs:
            continue
        p50[count] = [r["first_number_ms"]["p50"] for r in runs]
        print(f"| {count:,} | {len(runs)} | {med(p50[count], '{:.2f}')} | {med([r['first_number_ms']['p99'] for r in runs], '{:.2f}')} |")
    if len(p50) == 2:
        print(f"\nratio n = 65,535 / n = 1 at p50, run by run: {med([a / b for a, b in zip(p50[65535], p50[1])], '{:.2f}')}")

def redis_usage(path):
    """Redis CPU seconds and commands over one run, from its .redis file."""
    try:
        with open(path) as f:
            u = json.load(f)
    except (OSError, ValueError):
        return None, None
    return (u["after"]["cpu_seconds"] - u["before"]["cpu_seconds"],
            u["after"]["commands"] - u["before"]["commands"])

# Numbers per session in `bench/run.sh redis` (its --count).
REDIS_COUNT = 60

def session_seconds(r, count):
    """Bounds (low, high) on a run's session-seconds: the seconds of
    schedule its admitted sessions were carried, as `station load` defines
    them (a completed session counts count × interval; one admitted that did
    not complete, its time from first Attached to its end, at most that).
    A run that reports `session_seconds` gives it exactly. Older results
    only give totals: a completed session still counts count × interval,
    but a failed one anything between the numbers it received (× interval)
    and its whole schedule, so the bounds are numbers × interval and
    sessions × count × interval, equal when every session completed.
    (Dividing by numbers received, as this table once did, is the low
    bound: it overstates costs once sessions fail.)"""
    if r.get("session_seconds") is not None:
        return r["session_seconds"], r["session_seconds"]
    interval = (r.get("interval_ms") or 0) / 1000
    low = r["numbers"] * interval
    high = max(low, r["sessions"] * count * interval)
    return low, high

def per_session_second(costs, runs, count, fmt="{:.1f}"):
    """A cost per session-second, median (range) over runs; where failed
    runs leave it uncertain, the medians of its bounds: low (every failed
    session carried for its whole schedule) – high (only while it
    received numbers), marked †."""
    lows, highs = [], []
    for c, r in zip(costs, runs):
        lo_s, hi_s = session_seconds(r, count)
        if c is None or not lo_s:
            continue
        lows.append(c / hi_s)
        highs.append(c / lo_s)
    if lows == highs:
        return med(lows, fmt)
    lo, hi = fmt.format(statistics.median(lows)), fmt.format(statistics.median(highs))
    if lo == hi:  # the median run completed; others did not
        return f"{lo} ({fmt.format(min(lows))}–{fmt.format(max(highs))})†"
    return f"{lo}–{hi}†"

def redis():
    print("| store | design | sessions | runs | failed | lateness p99 (ms) | lateness max (ms) "
          "| server CPU per session-second (µs) | load CPU per session-second (µs) | Redis CPU per session-second (µs) "
          "| Redis commands per session-second |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    # redis-{store}-lease{L}-{n}-{rep}: `--lease L` (1 s at a 1 s interval
    # is one write per number); redis-{store}-l{linger}-…: before leases, a
    # fenced write before every number, with `--redis-batch-linger`.
    pattern = r"redis-(single|cluster)-(lease|l)([0-9a-z]+)-(\d+)-\d+\.json$"
    rows = sorted({(int(m.group(4)), m.group(1), m.group(2), m.group(3)) for p in glob.glob(os.path.join(OUT, "redis-*.json"))
                   if (m := re.search(pattern, p))},
                  key=lambda r: (r[0], r[1] != "single", r[2] != "l", r[3]))
    uncertain = False
    for n, store, kind, value in rows:
        label = {"single": "one Redis", "cluster": "cluster, 3 primaries + 3 replicas"}[store]
        design = f"lease {value}" if kind == "lease" else f"before leases, linger {value}"
        loaded = load_with_paths(f"redis-{store}-{kind}{value}-{n}-*.json")
        runs = [run for _, run in loaded]
        # Each run's Redis usage from its own side file.
        usage = [redis_usage(p[:-len(".json")] + ".redis") for p, _ in loaded]
        per = lambda costs, fmt="{:.1f}": per_session_second(costs, runs, REDIS_COUNT, fmt)
        cells = [per([server(r, 'cpu_seconds') * 1e6 if server(r, 'cpu_seconds') is not None else None for r in runs]),
                 per([r['load_cpu_seconds'] * 1e6 if r.get('load_cpu_seconds') is not None else None for r in runs]),
                 per([c * 1e6 if c is not None else None for c, _ in usage]),
                 per([k for _, k in usage], '{:.2f}')]
        uncertain |= any(c.endswith("†") for c in cells)
        print(f"| {label} | {design} | {n:,} | {len(runs)} | {med([r['failed'] for r in runs], '{:.0f}')} "
              f"| {med([r['lateness_ms']['p99'] for r in runs])} "
              f"| {med([r['lateness_ms']['max'] for r in runs])} "
              f"| {' | '.join(cells)} |")
    if uncertain:
        print("\n† sessions failed in these runs, which predate `session_seconds` in the load report: "
              "the cost per session-second lies between the two figures, the low one if every failed "
              "session was carried for its whole schedule, the high one if only while it received numbers.")

def ends(runs):
    """Streams ended before their session completed, by how, summed over runs."""
    total = {}
    for r in runs:
        for kind, n in (r.get("stream_ends") or {}).items():
            total[kind] = total.get(kind, 0) + n
    if not total:
        return "–" if all("stream_ends" in r for r in runs) else "not recorded"
    return ", ".join(f"{k} {n:,}" for k, n in sorted(total.items(), key=lambda kv: -kv[1]))

def overload():
    print("| sessions | shedding (`--shed-when-late`) | runs | completed | failed | lateness p99 (ms) | reconnects "
          "| of which silent drops | of which RESOURCE_EXHAUSTED | server CPU (s) | streams ended, by how (all runs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = sorted({(int(m.group(1)), m.group(2)) for p in glob.glob(os.path.join(OUT, "overload-*.json"))
                   if (m := re.search(r"overload-(\d+)-(base|shed[0-9a-z]+)(?:-\d+)?\.json$", p))},
                  key=lambda r: (r[0], r[1] != "base", r[1]))
    for n, kind in rows:
        runs = load(f"overload-{n}-{kind}*.json")
        label = {"base": "off (what it carries)", "shed0s": "off"}.get(kind, kind.removeprefix("shed") + ", `Open` only")
        print(f"| {n:,} | {label} | {len(runs)} | {med([r['completed'] for r in runs], '{:,.0f}')} "
              f"| {med([r['failed'] for r in runs], '{:,.0f}')} "
              f"| {med([r['lateness_ms']['p99'] for r in runs])} "
              f"| {med([r.get('reconnects') for r in runs], '{:,.0f}')} "
              f"| {med([r.get('silent_drops') for r in runs], '{:,.0f}')} "
              f"| {med([r.get('resource_exhausted') for r in runs], '{:,.0f}')} "
              f"| {med([server(r, 'cpu_seconds') for r in runs])} | {ends(runs)} |")

for title, table in (("Scale", scale), ("Max rate", maxrate), ("First number", first), ("Redis", redis), ("Overload", overload)):
    print(f"\n## {title}\n")
    table()
