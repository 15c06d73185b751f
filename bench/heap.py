#!/usr/bin/env python3
"""Where each connection's heap goes: reads the peak-cost stacks that
`heaptrack_print --flamegraph-cost-type peak -F` wrote for the station and
the bare-tonic baseline, attributes each allocation to the nearest frame of
a crate that owns it (h2, hyper, tonic, tokio-util, ours), and prints bytes
per connection side by side.

Usage: bench/heap.py STATION.stacks BASELINE.stacks CONNECTIONS
"""
import collections, re, sys

# Owners, most specific first: the first frame (from the allocation up)
# naming one of these crates is charged.
CRATES = ["station_net", "station_core", "baseline", "tonic", "hyper_util", "hyper",
          "h2", "tokio_util", "prost", "tower", "http"]

def clean(frame):
    sym = frame.split(" (")[0]
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("..", "::"), ("$C$", ","),
                 ("$RF$", "&"), ("_$u7b$$u7b$closure$u7d$$u7d$", "{closure}")):
        sym = sym.replace(a, b)
    return sym

def owner(frame):
    sym = clean(frame)
    for crate in CRATES:
        if re.search(r"(^|[<\s&(])" + crate + "::", sym):
            # `<Type as Trait>::f` reads as `Type::f`; then generic
            # arguments go, so one function is one row.
            name = re.sub(r"^_?<(.+?) as [^>]+>::", r"\1::", sym)
            for _ in range(4):
                name = re.sub(r"<[^<>]*>", "", name)
            return name[:90]
    return None

def breakdown(path):
    cost = collections.Counter()
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit() or int(n) == 0:
            continue
        key = "(runtime, std and startup)"
        for frame in reversed(stack.split(";")):
            o = owner(frame)
            if o:
                key = o
                break
        cost[key] += int(n)
    return cost

def main():
    station, baseline, conns = breakdown(sys.argv[1]), breakdown(sys.argv[2]), int(sys.argv[3])
    keys = sorted(set(station) | set(baseline), key=lambda k: -(station[k] + baseline[k]))
    print("| allocated by | station (B per connection) | baseline (B per connection) |")
    print("|---|---|---|")
    rest_s = rest_b = 0
    for k in keys:
        s, b = station[k] / conns, baseline[k] / conns
        if max(s, b) < 48:
            rest_s, rest_b = rest_s + s, rest_b + b
            continue
        print(f"| `{k}` | {s:,.0f} | {b:,.0f} |")
    print(f"| everything under 48 B per connection | {rest_s:,.0f} | {rest_b:,.0f} |")
    print(f"| **peak heap per connection** | **{sum(station.values()) / conns:,.0f}** | "
          f"**{sum(baseline.values()) / conns:,.0f}** |")

if __name__ == "__main__":
    main()
