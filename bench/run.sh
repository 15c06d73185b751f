#!/usr/bin/env bash
# Reproduces the tables in BENCHMARKS.md. Release builds, loopback only,
# every run bounded by --duration. Usage: bench/run.sh [scale|perconn|heap|maxrate|first|redis|ab|overload|faults|all]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p station --bin station --example baseline
# Absolute, and exported, so the worktree build of `ab` and every path
# below mean the same directory.
T=$(cd "${CARGO_TARGET_DIR:-target}" 2>/dev/null && pwd || echo "$PWD/target")
export CARGO_TARGET_DIR=$T
S=$T/release/station
# The load generator is always this tree's, also when S is an older
# server (bench/run.sh ab), so both sides are measured alike.
L=$T/release/station
B=$T/release/examples/baseline
OUT=${OUT:-bench/results}
mkdir -p "$OUT"

start() { # start <name> <command...>: runs a server, sets PORT and PID
    local log="$OUT/$1.server.log"; shift
    : > "$log" # before the server's own redirection, which may come after the first grep
    "$@" > "$log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        PORT=$(grep -o 'listening on .*:[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    echo "server did not start: $*" >&2; exit 1
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
PID=; RPIDS=; RDIR=
# Whatever ends the script, no server or Redis is left running.
trap 'stop; [ -z "$RPIDS" ] || redis_down' EXIT

scale() { # sessions at 1 s interval, ramped up at 5,000/s, 60 numbers each
    # (so 100,000 sessions are all live together for 40 s), over
    # CONNECTIONS HTTP/2 connections
    local m=${CONNECTIONS:-64}
    for n in ${SCALE:-40000 100000}; do
        for rep in ${RUNS:-1 2 3}; do
            start "scale-$n-$rep" $S server --port 0 --interval 1s
            $L load --endpoint 127.0.0.1:$PORT --sessions $n --connections $m --count 60 \
                --ramp-up-rate 5000 --server-pid $PID --duration 300s --json > "$OUT/scale-station-${n}x$m-$rep.json" || true
            stop
            start "scale-base-$n-$rep" $B --port 0 --interval 1s
            $L load --endpoint 127.0.0.1:$PORT --sessions $n --connections $m --count 60 \
                --ramp-up-rate 5000 --server-pid $PID --duration 300s --json > "$OUT/scale-baseline-${n}x$m-$rep.json" || true
            stop
        done
    done
}

perconn() { # one connection per session, as separate client processes have:
    # PERCONN sessions (19,000 fits this machine's 20,000 descriptors per
    # process) at 1 s, 60 numbers each, opened at 2,000/s; station, bare
    # tonic, and bare tonic whose clients acknowledge every number as the
    # station's do, alternating. Rows land in the scale table (connections =
    # sessions).
    local n=${PERCONN:-19000}
    for rep in 1 2 3; do
        for kind in station baseline baselineacks; do
            case $kind in
                station) start "perconn-$rep" $S server --port 0 --interval 1s ;;
                baseline) start "perconnb-$rep" $B --port 0 --interval 1s ;;
                baselineacks) start "perconnba-$rep" $B --port 0 --interval 1s --ack-every 1 ;;
            esac
            $L load --endpoint 127.0.0.1:$PORT --sessions $n --connection-per-session --source-addresses 4 \
                --count 60 --ramp-up-rate 2000 --server-pid $PID --duration 300s --json \
                > "$OUT/scale-$kind-${n}x$n-$rep.json" || true
            stop
        done
    done
}

heap() { # where each connection's heap goes (heaptrack, Debian package
    # heaptrack): HEAP_CONNECTIONS one-connection sessions against station
    # and baseline, built with full debug info (so inlined frames keep their
    # paths), peak heap attributed by bench/heap.py
    local n=${HEAP_CONNECTIONS:-2000} dir=$T/heap
    command -v heaptrack >/dev/null || { echo "heap needs heaptrack (apt-get install heaptrack)" >&2; return 1; }
    CARGO_TARGET_DIR=$dir CARGO_PROFILE_RELEASE_DEBUG=full \
        cargo build --release -q -p station --bin station --example baseline
    for kind in station baseline; do
        if [ $kind = station ]; then start "heap-$kind" heaptrack -o "$OUT/heap-$kind" $dir/release/station server --port 0 --interval 1s
        else start "heap-$kind" heaptrack -o "$OUT/heap-$kind" $dir/release/examples/baseline --port 0 --interval 1s; fi
        $L load --endpoint 127.0.0.1:$PORT --sessions $n --connection-per-session --count 20 \
            --ramp-up-rate 2000 --duration 120s --json > "$OUT/heap-$kind-load.json" || true
        # heaptrack writes its file when the traced server exits.
        pkill -INT -P "$PID" || true; wait "$PID" 2>/dev/null || true; PID=
        heaptrack_print -f "$OUT/heap-$kind.zst" --flamegraph-cost-type peak -F "$OUT/heap-$kind.stacks" > /dev/null
    done
    bench/heap.py "$OUT/heap-station.stacks" "$OUT/heap-baseline.stacks" "$n" | tee "$OUT/heap.md"
}

maxrate() { # interval 0, long sequences: station vs baseline, alternating
    for rep in 1 2 3; do
        start "max-$rep" $S server --port 0 --interval 0s
        $L load --endpoint 127.0.0.1:$PORT --sessions ${MAX_SESSIONS:-1000} --connections 16 --count 65535 \
            --server-pid $PID --duration 600s --json > "$OUT/max-station-$rep.json" || true
        stop
        start "maxb-$rep" $B --port 0 --interval 0s
        $L load --endpoint 127.0.0.1:$PORT --sessions ${MAX_SESSIONS:-1000} --connections 16 --count 65535 \
            --server-pid $PID --duration 600s --json > "$OUT/max-baseline-$rep.json" || true
        stop
    done
}

first() { # first-number latency, n = 1 against n = 65535, same server
    start first $S server --port 0 --interval 1s
    for rep in 1 2 3; do
        for count in 1 65535; do
            $L load --endpoint 127.0.0.1:$PORT --sessions 1000 --connections 16 --count $count \
                --ramp-up-rate 2000 --duration 5s --json > "$OUT/first-$count-$rep.json" || true
        done
    done
    stop
}

# A free loopback port at most 55535: a cluster node's bus port is 10,000
# above its own.
free_port() { python3 -c '
import random, socket
for _ in range(1000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randint(20000, 55535)))
    except OSError:
        continue
    print(s.getsockname()[1]); break'; }
# Waits (at most 10 s) until the Redis on port $1 answers PING.
redis_wait() {
    for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "redis on port $1 did not start" >&2; return 1
}

# Redis processes of the store under test: RPIDS (every process, replicas
# included, since they spend this machine's CPU too) and RPORTS.
redis_single() { # starts one redis-server, no persistence; sets URL
    RDIR=$(mktemp -d); local port; port=$(free_port)
    ${REDIS_PIN:-} redis-server --port "$port" --bind 127.0.0.1 --dir "$RDIR" --save "" --appendonly no \
        > "$OUT/redis-single.log" 2>&1 &
    RPIDS=$!; RPORTS=$port
    redis_wait "$port"
    URL=redis://127.0.0.1:$port/0
}
redis_cluster() { # starts six nodes (three primaries, three replicas), no persistence; sets URL
    RDIR=$(mktemp -d); RPIDS=; RPORTS=
    local port nodes=
    for _ in 1 2 3 4 5 6; do
        port=$(free_port); mkdir -p "$RDIR/$port"
        redis-server --port "$port" --bind 127.0.0.1 --dir "$RDIR/$port" --save "" --appendonly no \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            > "$OUT/redis-cluster-$port.log" 2>&1 &
        RPIDS="$RPIDS $!"; RPORTS="$RPORTS $port"; nodes="$nodes 127.0.0.1:$port"
        redis_wait "$port"
    done
    # shellcheck disable=SC2086
    redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes > "$OUT/redis-cluster-create.log"
    for port in $RPORTS; do
        local tries=0
        until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do
            tries=$((tries + 1)); [ $tries -lt 150 ] || { echo "cluster not ok" >&2; return 1; }
            sleep 0.2
        done
    done
    URL=redis+cluster://$(echo $nodes | tr ' ' ',')
}
redis_down() { kill $RPIDS 2>/dev/null || true; wait $RPIDS 2>/dev/null || true; rm -rf "$RDIR"; RPIDS=; }
redis_usage() { # prints {"cpu_seconds": …, "commands": …}: CPU of every
    # process (replicas too), commands of the primaries only (a replica
    # counts each replicated write again)
    local ticks=0 commands=0 pid port n
    for pid in $RPIDS; do
        n=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true)
        ticks=$((ticks + ${n:-0}))
    done
    for port in $RPORTS; do
        redis-cli -p "$port" info replication 2>/dev/null | grep -q '^role:master' || continue
        n=$(redis-cli -p "$port" info stats 2>/dev/null | tr -d '\r' | awk -F: '/^total_commands_processed:/ {print $2}')
        commands=$((commands + ${n:-0}))
    done
    echo "{\"cpu_seconds\": $(python3 -c "print($ticks / $(getconf CLK_TCK))"), \"commands\": $commands}"
}

redis() { # sessions per server on one Redis and on a six-node cluster at
    # 1 s interval, each with a lease of 1 s (one store write per session
    # per number, as before leases) and of 5 s (the default), alternating;
    # Redis CPU and commands measured around each run
    for n in ${REDIS_SCALE:-20000 60000}; do
        for rep in ${RUNS:-1 2 3}; do
            for store in ${REDIS_STORES:-single cluster}; do
                for lease in ${REDIS_LEASES:-1s 5s}; do
                    local name="redis-$store-lease$lease-$n-$rep"
                    "redis_$store"
                    start "$name" $S server --port 0 --interval 1s --store "$URL" --lease "$lease"
                    local before; before=$(redis_usage)
                    $L load --endpoint 127.0.0.1:$PORT --sessions $n --connections 64 --count 60 \
                        --ramp-up-rate 5000 --server-pid $PID --duration 300s --json > "$OUT/$name.json" || true
                    echo "{\"before\": $before, \"after\": $(redis_usage)}" > "$OUT/$name.redis"
                    stop
                    redis_down
                done
            done
        done
    done
}

ab() { # one part (AB_PART: scale, redis or overload, default redis) of an older
    # commit (AB_COMMIT), built in a worktree under the target directory, beside this
    # tree's, alternating old and new run by run; results in
    # $OUT/ab/{before,after}; AB_REPS rounds (default 3). For one row per run, pin the sizes (e.g.
    # REDIS_SCALE=60000 REDIS_STORES=single REDIS_LEASES=5s).
    local commit=${AB_COMMIT:?set AB_COMMIT to the commit to compare with}
    local part=${AB_PART:-redis}
    case $part in scale | redis | overload) ;; *) echo "AB_PART must be scale, redis or overload" >&2; exit 1 ;; esac
    # An older server must take the flags its part passes (redis passes
    # --lease, which arrived in a3d7caf).
    local src=$T/ab-src old=$T/ab/release/station
    git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git worktree add --force --detach "$src" "$commit" > /dev/null
    (cd "$src" && CARGO_TARGET_DIR=../ab cargo build --release -q -p station --bin station)
    local new=$S out=$OUT rep side
    if [ "$part" = overload ]; then
        # Both sides are offered the same loads: multiples of the capacity
        # this tree's build carries.
        OUT=$out/ab/capacity; mkdir -p "$OUT"; overload_capacity; OVERLOAD_CAPACITY=$CAPACITY
    fi
    for rep in $(seq 1 "${AB_REPS:-3}"); do
        # Old first, then new first: a machine that drifts over the runs
        # does not count against one side.
        local order="before after"; [ $((rep % 2)) = 1 ] || order="after before"
        for side in $order; do
            if [ $side = before ]; then S=$old; else S=$new; fi
            OUT=$out/ab/$side RUNS=$rep; mkdir -p "$OUT"; "$part"
        done
    done
    S=$new OUT=$out; unset RUNS
    if [ "$part" = overload ]; then
        bench/overload.py report --svg "$out/ab/overload-$OVERLOAD_STORE.svg" \
            "$commit=$out/ab/before" "$(git rev-parse --short HEAD)=$out/ab/after"
    fi
}

# Goodput against offered load (BENCHMARKS.md, "Overload"): the server
# pinned to core 0, Redis and the load generator to core 1. A load *level*
# of n sessions is sessions arriving at n / (count × interval) a second for
# OVERLOAD_WINDOW intervals' worth of schedules (so n are live at once in
# steady state). The capacity C is the largest level among OVERLOAD_SIZES
# (searched upwards, stopping at the first that fails) whose every session
# completes with p99 lateness of admitted sessions at most OVERLOAD_P99_MS
# (OVERLOAD_CAPACITY skips the search); then OVERLOAD_MULTIPLES × C are
# offered, OVERLOAD_REPS times each. OVERLOAD_STORE: memory or redis (one
# Redis). OVERLOAD_REDIS_NICE (default -10; empty: none) runs Redis at that
# niceness, ahead of the load generator on their shared core: a saturated
# load generator starved Redis there (1 % of the core for seconds while the
# load took 100 %), which no deployment with Redis on a host of its own
# sees. bench/overload.py prints the table and draws the SVG.
OVERLOAD_STORE=${OVERLOAD_STORE:-memory}
OVERLOAD_REDIS_NICE=${OVERLOAD_REDIS_NICE--10}
OVERLOAD_INTERVAL_MS=${OVERLOAD_INTERVAL_MS:-1000}
OVERLOAD_COUNT=${OVERLOAD_COUNT:-60}
OVERLOAD_SIZES=${OVERLOAD_SIZES:-5000 10000 15000 20000 30000}
OVERLOAD_P99_MS=${OVERLOAD_P99_MS:-50}
OVERLOAD_MULTIPLES=${OVERLOAD_MULTIPLES:-0.5 1 1.5 2 3}
OVERLOAD_REPS=${OVERLOAD_REPS:-2}
OVERLOAD_WINDOW=${OVERLOAD_WINDOW:-2}   # arrival window, in schedule lengths
OVERLOAD_GRACE=${OVERLOAD_GRACE:-30}    # seconds after the last schedule ends
# A session may wait at the door up to the client's give-up (60 s without
# progress) before its schedule starts: the run lasts that much longer, so
# that a session admitted late is not cut off and counted failed.
OVERLOAD_GIVE_UP=${OVERLOAD_GIVE_UP:-60}

store_ops() { # the server's store operations so far (empty if /metrics did not answer);
    # the exporter lists the counter only once an operation has happened
    local page
    page=$(curl -sf --max-time 5 "http://$MADDR/metrics") || return 0
    awk '/^station_store_latency_seconds_count/ {s += $2} END {printf "%d", s}' <<< "$page"
}

overload_run() { # overload_run <name> <level> <multiple> <capacity>: one run, $OUT/<name>.{json,run}
    local name=$1 level=$2 multiple=$3 capacity=$4
    local schedule_ms=$((OVERLOAD_INTERVAL_MS * OVERLOAD_COUNT))
    local rate=$(((level * 1000 + schedule_ms - 1) / schedule_ms))
    local window=$((OVERLOAD_WINDOW * schedule_ms / 1000)); [ "$window" -ge 1 ] || window=1
    local sessions=$((rate * window))
    local duration=$((window + OVERLOAD_GIVE_UP + schedule_ms / 1000 + OVERLOAD_GRACE))
    local store=()
    if [ "$OVERLOAD_STORE" = redis ]; then
        REDIS_PIN="taskset -c 1 ${OVERLOAD_REDIS_NICE:+nice -n $OVERLOAD_REDIS_NICE}" redis_single
        store=(--store "$URL")
    fi
    MADDR=127.0.0.1:$(free_port)
    start "$name" taskset -c 0 $S server --port 0 --interval "${OVERLOAD_INTERVAL_MS}ms" \
        --metrics-addr "$MADDR" "${store[@]}"
    local before after ops=null redis=null
    before=$(store_ops)
    taskset -c 1 $L load --endpoint 127.0.0.1:$PORT --sessions $sessions --connections 16 \
        --count "$OVERLOAD_COUNT" --ramp-up-rate $rate --server-pid $PID --duration ${duration}s \
        --json > "$OUT/$name.json" || true
    after=$(store_ops)
    [ -z "$RPIDS" ] || redis=$(redis_usage)
    # A server without the counter (none of its sessions touched a store?)
    # has no figure, not zero.
    [ -z "$before" ] || [ -z "$after" ] || [ "$after" = 0 ] || ops=$((after - before))
    echo "{\"store\": \"$OVERLOAD_STORE\", \"capacity\": $capacity, \"multiple\": $multiple, \"level\": $level," \
        "\"rate\": $rate, \"window_seconds\": $window, \"store_ops\": $ops, \"redis\": $redis}" > "$OUT/$name.run"
    stop
    [ "$OVERLOAD_STORE" != redis ] || redis_down
}

overload_capacity() { # sets CAPACITY: OVERLOAD_CAPACITY, or searched over OVERLOAD_SIZES
    CAPACITY=${OVERLOAD_CAPACITY:-}
    [ -z "$CAPACITY" ] || return 0
    local n
    for n in $OVERLOAD_SIZES; do
        overload_run "overload-$OVERLOAD_STORE-search-$n" "$n" 1 "$n"
        bench/overload.py carries "$OUT/overload-$OVERLOAD_STORE-search-$n.json" "$OVERLOAD_P99_MS" || break
        CAPACITY=$n
    done
    [ -n "$CAPACITY" ] || { echo "no size in OVERLOAD_SIZES ($OVERLOAD_SIZES) was carried" >&2; exit 1; }
    echo "capacity C = $CAPACITY sessions ($OVERLOAD_STORE store)" >&2
    [ "$n" != "$CAPACITY" ] || echo "(every size was carried: C is at least $CAPACITY; add larger OVERLOAD_SIZES)" >&2
}

overload() {
    overload_capacity
    local rep m level
    for rep in ${RUNS:-$(seq "$OVERLOAD_REPS")}; do
        for m in $OVERLOAD_MULTIPLES; do
            level=$(awk -v c="$CAPACITY" -v m="$m" 'BEGIN {printf "%d", c * m + 0.5}')
            overload_run "overload-$OVERLOAD_STORE-x$m-$rep" "$level" "$m" "$CAPACITY"
        done
    done
    # Inside `ab`, the report covers both sides once both have run.
    [ -n "${RUNS:-}" ] || bench/overload.py report --svg "$OUT/overload-$OVERLOAD_STORE.svg" "$(git rev-parse --short HEAD)=$OUT"
}

# Faults under load (BENCHMARKS.md, "Faults under load"): the server
# pinned to core 0, Redis and the load generator to core 1, as in the
# overload part; FAULTS_SESSIONS sessions (about 0.8 × the capacity C of
# one pinned server on one Redis) of FAULTS_COUNT numbers at
# FAULTS_INTERVAL_MS over FAULTS_CONNECTIONS connections, opened at
# FAULTS_RAMP a second. FAULTS_AT seconds after the load starts, one
# fault is put in place, held FAULTS_HOLD seconds (FAULTS_STARVE for the
# CPU starvation), and removed:
#   none           no fault: the store operations the others compare with;
#   redis-frozen   Redis stopped (SIGSTOP, then SIGCONT);
#   redis-starved  Redis at nice 19 beside two busy loops at nice 10 on
#                  its core (the load generator, at nice 0, keeps most of
#                  that core: it must not be what is starved);
#   server-paused  the server stopped (SIGSTOP);
#   blackhole      the server and the load on hosts of their own (network
#                  namespaces joined by a veth pair; the memory store), and
#                  every packet between them dropped (iptables -j DROP).
# Sessions are made long enough to outlive the fault's end by 20 s at
# least. Each run leaves $OUT/faults-<case>-<rep>.json (the load's report,
# with its per-second timeline) and .run (the fault's start and end, Unix
# seconds, and the server's store operations); bench/faults.py prints the
# table (failed sessions, reconnects per session, time back on time after
# the fault's end) into $OUT/faults.md. Needs root for the blackhole
# (skipped, said so, where `ip netns add` is refused).
FAULTS_SESSIONS=${FAULTS_SESSIONS:-40000}
FAULTS_COUNT=${FAULTS_COUNT:-60}
FAULTS_INTERVAL_MS=${FAULTS_INTERVAL_MS:-1000}
FAULTS_CONNECTIONS=${FAULTS_CONNECTIONS:-64}
FAULTS_RAMP=${FAULTS_RAMP:-5000}
FAULTS_AT=${FAULTS_AT:-25}
FAULTS_HOLD=${FAULTS_HOLD:-5}
FAULTS_STARVE=${FAULTS_STARVE:-30}
FAULTS_CASES=${FAULTS_CASES:-none redis-frozen redis-starved server-paused blackhole}
FAULTS_REPS=${FAULTS_REPS:-1}
NS_S=; NS_L=; HOGS=; NSX=

netns_up() { # two namespaces joined by a veth pair: NS_S (10.203.0.1) and NS_L (10.203.0.2)
    NS_S=station-bench-server-$$; NS_L=station-bench-load-$$
    ip netns add "$NS_S" || { NS_S=; return 1; }
    ip netns add "$NS_L"
    ip -n "$NS_S" link add veth-server type veth peer name veth-client netns "$NS_L"
    ip -n "$NS_S" addr add 10.203.0.1/30 dev veth-server
    ip -n "$NS_L" addr add 10.203.0.2/30 dev veth-client
    local ns
    for ns in "$NS_S" "$NS_L"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_S" link set veth-server up; ip -n "$NS_L" link set veth-client up
}
netns_down() { [ -z "$NS_S" ] || ip netns del "$NS_S" 2>/dev/null || true; [ -z "$NS_L" ] || ip netns del "$NS_L" 2>/dev/null || true; NS_S=; NS_L=; }
blackhole() { # blackhole -A|-D: adds or deletes the DROP rules at the server's end
    ip netns exec "$NS_S" iptables "$1" INPUT -i veth-server -j DROP
    ip netns exec "$NS_S" iptables "$1" OUTPUT -o veth-server -j DROP
}
faults_undo() { # whatever a run left in place: stopped processes, busy loops, namespaces
    [ -z "$HOGS" ] || { kill $HOGS 2>/dev/null || true; wait $HOGS 2>/dev/null || true; HOGS=; }
    [ -z "$RPIDS" ] || kill -CONT $RPIDS 2>/dev/null || true
    [ -z "$PID" ] || kill -CONT "$PID" 2>/dev/null || true
}

faults_run() { # faults_run <case> <rep>
    local case=$1 rep=$2 name="faults-$1-$2" hold=$FAULTS_HOLD
    case $case in none) hold=0 ;; redis-starved) hold=$FAULTS_STARVE ;; esac
    # Sessions outlive the fault's end by 20 s at least.
    local count=$FAULTS_COUNT min=$(((FAULTS_AT + hold + 20) * 1000 / FAULTS_INTERVAL_MS))
    [ "$count" -ge "$min" ] || count=$min
    local duration=$((FAULTS_AT + hold + count * FAULTS_INTERVAL_MS / 1000 + 120))
    local store=() host=127.0.0.1 storename=redis
    NSX=
    if [ "$case" = blackhole ]; then
        netns_up || { echo "faults: blackhole skipped: ip netns add was refused (needs root)" >&2; return 0; }
        NSX="ip netns exec $NS_S"; host=10.203.0.1; storename=memory
    else
        REDIS_PIN="taskset -c 1" redis_single; store=(--store "$URL")
    fi
    # The exporter listens in the server's namespace: scraped from there.
    MADDR=127.0.0.1:$(free_port)
    start "$name" $NSX taskset -c 0 $S server --host $host --port 0 --interval "${FAULTS_INTERVAL_MS}ms" \
        --metrics-addr "$MADDR" "${store[@]}"
    local before="" after="" ops=null redis_before=null redis_after=null
    [ -z "$RPIDS" ] || redis_before=$(redis_usage)
    local loadns=(); [ -z "$NS_L" ] || loadns=(ip netns exec "$NS_L")
    "${loadns[@]}" taskset -c 1 $L load --endpoint $host:$PORT --sessions "$FAULTS_SESSIONS" \
        --connections "$FAULTS_CONNECTIONS" --count "$count" --ramp-up-rate "$FAULTS_RAMP" \
        --server-pid $PID --duration ${duration}s --json > "$OUT/$name.json" &
    local load=$!
    sleep "$FAULTS_AT"
    local t0 t1
    t0=$(date +%s.%N)
    case $case in
        none) ;;
        redis-frozen) kill -STOP $RPIDS; sleep "$hold"; kill -CONT $RPIDS ;;
        redis-starved)
            local i
            for i in 1 2; do nice -n 10 taskset -c 1 sh -c 'while :; do :; done' & HOGS="$HOGS $!"; done
            renice -n 19 -p $RPIDS > /dev/null
            sleep "$hold"
            kill $HOGS; wait $HOGS 2>/dev/null || true; HOGS=
            renice -n 0 -p $RPIDS > /dev/null ;;
        server-paused) kill -STOP "$PID"; sleep "$hold"; kill -CONT "$PID" ;;
        blackhole) blackhole -A; sleep "$hold"; blackhole -D ;;
    esac
    t1=$(date +%s.%N)
    wait $load || true
    sleep 2 # the deletes of the last sessions
    after=$($NSX curl -sf --max-time 5 "http://$MADDR/metrics" |
        awk '/^station_store_latency_seconds_count/ {s += $2} END {printf "%d", s}') || true
    [ -z "$after" ] || [ "$after" = 0 ] || ops=$after
    [ -z "$RPIDS" ] || redis_after=$(redis_usage)
    echo "{\"case\": \"$case\", \"rep\": $rep, \"sessions\": $FAULTS_SESSIONS, \"count\": $count," \
        "\"interval_ms\": $FAULTS_INTERVAL_MS, \"fault_start\": ${t0}, \"fault_end\": ${t1}," \
        "\"hold_seconds\": $hold, \"store\": \"$storename\", \"store_ops\": $ops," \
        "\"redis\": {\"before\": $redis_before, \"after\": $redis_after}}" > "$OUT/$name.run"
    stop; PID=
    [ -z "$RPIDS" ] || redis_down
    netns_down
}

faults() {
    trap 'faults_undo; stop; [ -z "$RPIDS" ] || redis_down; netns_down' EXIT
    local rep case
    for rep in $(seq "$FAULTS_REPS"); do
        for case in $FAULTS_CASES; do faults_run "$case" "$rep"; done
    done
    bench/faults.py "$OUT" | tee "$OUT/faults.md"
}

case "${1:-all}" in
    scale) scale ;; perconn) perconn ;; heap) heap ;; maxrate) maxrate ;; first) first ;; redis) redis ;; ab) ab ;; overload) overload ;;
    faults) faults ;;
    all) scale; CONNECTIONS=16 SCALE=100000 scale; perconn; heap; maxrate; first; redis; overload; faults ;;
esac
