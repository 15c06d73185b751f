#!/usr/bin/env python3
"""Faults under load, from the runs of `bench/run.sh faults`.

    faults.py DIR
        a Markdown table with a row per run: the fault, sessions completed
        and failed, reconnects (in all and per session), the time from the
        fault's end until the run was back on time, lateness on first
        schedules and stalls, and the server's store operations against the
        run without a fault of the same repetition.

Each run is DIR/faults-<case>-<rep>.json (`station load --json`, with its
per-second `timeline`) beside .run, written by run.sh: {"case", "rep",
"sessions", "count", "interval_ms", "fault_start", "fault_end" (Unix
seconds), "hold_seconds", "store" (redis or memory), "store_ops", "redis"}.

Back on time, as bin/tests/faults_under_load.rs judges it: the first
second of the timeline that ends after the fault's end in which numbers
arrived, no session was waiting (started, not ended, without an attached
stream), and the p99 lateness of the numbers on the schedule of the stream
that delivered them was under 50 ms; the time is from the fault's end to
that second's start (zero if the second the fault ended in already was).
Only seconds before the first session completed are judged (after it,
fewer sessions are left to judge by); "not before sessions completed" says
none was.

Only the Python standard library."""
import glob
import json
import os
import re
import sys

ON_TIME_MS = 50.0
ORDER = ["none", "redis-frozen", "redis-starved", "server-paused", "blackhole"]


def read(path):
    with open(path) as f:
        return json.load(f)


def on_time(second):
    return (second["numbers"] > 0 and second["waiting"] == 0
            and second["stream_lateness_ms"]["p99"] < ON_TIME_MS)


def recovery(result, run):
    """Seconds from the fault's end until back on time, or None."""
    timeline = result.get("timeline") or []
    horizon = next((s["unix_second"] for s in timeline if s["completed"] > 0),
                   timeline[-1]["unix_second"] + 1 if timeline else 0)
    end = run["fault_end"]
    for s in timeline:
        if s["unix_second"] + 1 > end and s["unix_second"] < horizon and on_time(s):
            return max(0.0, s["unix_second"] - end)
    return None


def main(directory):
    runs = []
    for path in sorted(glob.glob(os.path.join(directory, "faults-*-*.json"))):
        if not re.search(r"faults-[a-z-]+-\d+\.json$", path):
            continue
        try:
            runs.append((read(path), read(path[: -len(".json")] + ".run")))
        except (OSError, ValueError):
            print(f"(skipped unreadable {path})", file=sys.stderr)
    if not runs:
        print(f"no faults-*.json runs in {directory}", file=sys.stderr)
        return 1
    runs.sort(key=lambda r: (r[1]["rep"], ORDER.index(r[1]["case"]) if r[1]["case"] in ORDER else 99))
    # The run without a fault is on Redis: only runs on Redis compare.
    reference = {run["rep"]: run.get("store_ops") for _, run in runs if run["case"] == "none"}
    first = runs[0][1]
    print(f"{first['sessions']:,} sessions of {first['count']} numbers at {first['interval_ms']} ms "
          f"(longer where a fault is long), one fault each\n")
    print("| fault | held | completed | failed | reconnects | per session | back on time after "
          "| p99 lateness (first schedule) | p99 stall | store ops | vs no fault |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for result, run in runs:
        case = run["case"]
        failed = result["sessions"] - result["completed"]
        if case == "none":
            back = "–"
        else:
            r = recovery(result, run)
            back = "not before sessions completed" if r is None else f"{r:.1f} s"
        ops, ref = run.get("store_ops"), reference.get(run["rep"])
        versus = (f"{100.0 * (ops - ref) / ref:+.1f} %"
                  if ops is not None and ref and case != "none" and run.get("store") == "redis"
                  else "–")
        held = "–" if case == "none" else f"{run['fault_end'] - run['fault_start']:.1f} s"
        print(f"| {case} | {held} | {result['completed']:,} | {failed:,} | {result['reconnects']:,} "
              f"| {result['reconnects'] / result['sessions']:.3f} | {back} "
              f"| {result['lateness_ms']['p99']:.1f} ms | {result['stall_ms']['p99']:.1f} ms "
              f"| {'–' if ops is None else f'{ops:,}'} | {versus} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
