#!/usr/bin/env bash
# Fan-out against the machine's floor (issue 24): SyncKairos's WebSocket
# broadcast next to examples/broadcast_floor.rs (a minimal broadcaster of the
# same protocol: frame encoded once, one non-blocking write per socket), in the
# same run, in alternating rounds, measured by the same lean client
# (examples/fanout_ws.rs: kernel receive timestamps minus state.updated_at).
# Starts its own redis-server and fresh instances for every measurement on
# local ports; loopback only; stops everything it started.
#
# Configurations:
#   10k   WATCHERS_10K watchers of one session on one instance (the floor
#         alone, SyncKairos on the Redis backend)
#   3x1k  WATCHERS_3X watchers over 3 instances, all on Redis (the floor
#         SPUBLISHes and every instance broadcasts what it receives)
# Each round runs every configuration for every target (floor, SK_BIN, and
# SK_BIN_B if set), in reverse order on even rounds so that drift on a noisy
# machine hits both sides. Prints one line per measurement, then per
# configuration the ratio SyncKairos p99 / floor p99 of every round and its
# median.
#
#   loadtest/bench-broadcast.sh
#   ROUNDS=5 SWITCHES=50 CONFIGS=3x1k loadtest/bench-broadcast.sh
#   SK_BIN=/tmp/sk-before SK_BIN_B=target/release/synckairos loadtest/bench-broadcast.sh   # A/B
#
# Environment (defaults):
#   ROUNDS (3), CONFIGS ("10k 3x1k"), SWITCHES (100), INTERVAL_MS (100),
#   INTERVAL_MS_10K (INTERVAL_MS: the 10k configuration's; see below),
#   WATCHERS_10K (10000), WATCHERS_3X (1000), SK_BIN (target/release/synckairos),
#   SK_BIN_B (none), BUILD (1: cargo build --release the binary and the
#   examples first), REDIS_PORT (6394), FIRST_PORT (3200: instances take ports
#   from there, new ones per measurement), SK_ENV (extra VAR=value for SyncKairos).
#
# Mind the capacity: on loopback every delivered message costs CPU on both
# sides (on the 2-core development VM about 8 µs in the floor's process,
# mostly the kernel's TCP path, and 7 µs in the client), so 10,000 watchers
# every 100 ms take three quarters of that machine. Quiet, the floor's p99 is
# then 65-150 ms; with anything else running (a compile) both the floor and
# SyncKairos fall behind and the p99 measures the backlog (0.3-1.9 s, bimodal
# from run to run), not the fan-out. INTERVAL_MS_10K=250 leaves headroom.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONFIGS=${CONFIGS:-"10k 3x1k"}
SWITCHES=${SWITCHES:-100}
INTERVAL_MS=${INTERVAL_MS:-100}
INTERVAL_MS_10K=${INTERVAL_MS_10K:-$INTERVAL_MS}
WATCHERS_10K=${WATCHERS_10K:-10000}
WATCHERS_3X=${WATCHERS_3X:-1000}
SK_BIN=${SK_BIN:-target/release/synckairos}
SK_BIN_B=${SK_BIN_B:-}
BUILD=${BUILD:-1}
REDIS_PORT=${REDIS_PORT:-6394}
FIRST_PORT=${FIRST_PORT:-3200}
SK_ENV=${SK_ENV:-}
FLOOR=target/release/examples/broadcast_floor
CLIENT=target/release/examples/fanout_ws
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }

# One socket per watcher on each side (separate processes, separate limits).
ulimit -n "$(ulimit -Hn)"
limit=$(ulimit -n)

if [ "$BUILD" = 1 ]; then
    cargo build --release --quiet
    cargo build --release --quiet --example broadcast_floor --example fanout_ws
fi
targets=(floor sk)
[ -n "$SK_BIN_B" ] && targets+=(sk_b)
for bin in "$SK_BIN" ${SK_BIN_B:+"$SK_BIN_B"} "$FLOOR" "$CLIENT"; do
    [ -x "$bin" ] || { echo "no executable $bin" >&2; exit 1; }
done

dir=$(mktemp -d)
pids=()
stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
redis_pid=""
trap 'stop_all; [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
redis_pid=$!
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
REDIS="redis://127.0.0.1:$REDIS_PORT"

cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
wait_ready() {
    local i
    for ((i = 0; i < 600; i++)); do
        curl -sf "$1/ready" >/dev/null && return 0
        sleep 0.05
    done
    echo "no /ready from $1" >&2
    return 1
}

next_port=$FIRST_PORT
# Starts `count` instances of a target (redis: with REDIS_URL or not); sets bases.
start() {
    local target=$1 count=$2 redis=$3 i port bin
    bases=()
    for ((i = 0; i < count; i++)); do
        port=$next_port
        next_port=$((next_port + 1))
        local redis_env=()
        [ "$redis" = 1 ] && redis_env=(REDIS_URL="$REDIS")
        if [ "$target" = floor ]; then
            env "${redis_env[@]}" HOST=127.0.0.1 PORT=$port "$FLOOR" >>"$dir/floor.log" 2>&1 &
        else
            bin=$SK_BIN
            [ "$target" = sk_b ] && bin=$SK_BIN_B
            # shellcheck disable=SC2086 # SK_ENV is a list of VAR=value
            env "${redis_env[@]}" HOST=127.0.0.1 PORT=$port RUST_LOG=warn \
                RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0 SHUTDOWN_GRACE_SECONDS=1 \
                WS_MAX_CONNECTIONS_PER_IP=100000 WS_MAX_CONNECTIONS_PER_SESSION=100000 \
                $SK_ENV "$bin" >>"$dir/$target.log" 2>&1 &
        fi
        pids+=($!)
        bases+=("http://127.0.0.1:$port")
    done
    for b in "${bases[@]}"; do wait_ready "$b"; done
}

declare -A p99s
measure() {
    local round=$1 config=$2 target=$3 watchers count interval session p1 p2 out cpu0 cpu1 pid
    case "$config" in
        10k) watchers=$WATCHERS_10K count=1 interval=$INTERVAL_MS_10K ;;
        3x1k) watchers=$WATCHERS_3X count=3 interval=$INTERVAL_MS ;;
        *) echo "unknown configuration $config (10k or 3x1k)" >&2; exit 2 ;;
    esac
    if [ "$watchers" -ge "$((limit - 100))" ]; then
        echo "round=$round config=$config target=$target skipped: $watchers watchers, open-file limit $limit"
        return
    fi
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    if [ "$target" = floor ]; then
        # One instance needs no Redis; three share it.
        start floor "$count" "$([ "$count" -gt 1 ] && echo 1 || echo 0)"
    else
        start "$target" "$count" 1
    fi
    session=$(cat /proc/sys/kernel/random/uuid)
    if [ "$target" != floor ]; then
        p1=$(cat /proc/sys/kernel/random/uuid)
        p2=$(cat /proc/sys/kernel/random/uuid)
        curl -sf -X POST "${bases[0]}/v1/sessions" -H 'content-type: application/json' -d '{"session_id":"'"$session"'","sync_mode":"per_participant","total_time_ms":86400000,"participants":[{"participant_id":"'"$p1"'","participant_index":0,"total_time_ms":86400000},{"participant_id":"'"$p2"'","participant_index":1,"total_time_ms":86400000}]}' >/dev/null
        curl -sf -X POST "${bases[0]}/v1/sessions/$session/start" >/dev/null
    fi
    local servers=("${pids[@]}")
    cpu0=0
    for pid in "${servers[@]}"; do cpu0=$(echo "$cpu0 $(cpu_s "$pid")" | awk '{ print $1 + $2 }'); done
    # In the background, so that a Ctrl-C or TERM stops the run at once.
    INTERVAL_MS=$interval "$CLIENT" "$session" "$watchers" "$SWITCHES" "${bases[@]}" >"$dir/client.out" 2>"$dir/client.err" &
    pids+=($!)
    wait "$!" || true
    out=$(tail -1 "$dir/client.out")
    cpu1=0
    for pid in "${servers[@]}"; do cpu1=$(echo "$cpu1 $(cpu_s "$pid")" | awk '{ print $1 + $2 }'); done
    stop_all
    field() { echo "$out" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    local p99
    p99=$(field p99 | tr -d 'ms')
    p99s[$config,$target,$round]=$p99
    printf 'round=%s config=%-4s target=%-5s p50=%s p99=%s max=%s updates=%s/%s out_of_order=%s clean_closes=%s dropped=%s server_cpu=%.1fs (%s)\n' \
        "$round" "$config" "$target" "$(field p50)" "$(field p99)" "$(field max)" "$(field updates)" "$(field expected)" \
        "$(field out_of_order)" "$(field clean_closes)" "$(field dropped)" "$(echo "$cpu1 $cpu0" | awk '{ print $1 - $2 }')" \
        "$(tr '\n' ' ' <"$dir/client.err" | sed 's/fanout_ws: //; s/ *$//')"
    sleep 1
}

echo "rounds=$ROUNDS configs=\"$CONFIGS\" switches=$SWITCHES every ${INTERVAL_MS}ms (10k: ${INTERVAL_MS_10K}ms), targets: ${targets[*]} (sk=$SK_BIN${SK_BIN_B:+, sk_b=$SK_BIN_B}); open-file limit $limit"
for ((round = 1; round <= ROUNDS; round++)); do
    order=("${targets[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[$i]}"); done
    fi
    for config in $CONFIGS; do
        for target in "${order[@]}"; do measure "$round" "$config" "$target"; done
    done
done

# Ratios of p99 against the floor (and B against A), per round, and the median.
ratio_line() {
    local config=$1 num=$2 den=$3 label=$4 round r ratios=()
    for ((round = 1; round <= ROUNDS; round++)); do
        r=$(awk -v a="${p99s[$config,$num,$round]:-}" -v b="${p99s[$config,$den,$round]:-}" \
            'BEGIN { if (a == "" || b == "" || b + 0 <= 0) print "n/a"; else printf "%.2f", a / b }')
        ratios+=("$r")
    done
    printf '%s %s p99 ratio per round: %s; median %s\n' "$config" "$label" "${ratios[*]}" \
        "$(printf '%s\n' "${ratios[@]}" | grep -v n/a | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
}
for config in $CONFIGS; do
    ratio_line "$config" sk floor "synckairos/floor"
    if [ -n "$SK_BIN_B" ]; then
        ratio_line "$config" sk_b floor "synckairos_b/floor"
        ratio_line "$config" sk_b sk "synckairos_b/synckairos"
    fi
done
