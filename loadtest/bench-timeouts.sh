#!/usr/bin/env bash
# Server-side timeouts as reported in docs/PERFORMANCE.md: starts its own
# redis-server and INSTANCES release synckairos instances on local ports, then
#   1. measures what the due-set polling costs Redis while nothing is due
#      (Redis CPU and commands per second, against Redis alone as a baseline),
#      with empty due sets and with HOLD running sessions due in an hour;
#   2. runs examples/timeout_storm.rs: SESSIONS sessions whose deadlines fall
#      over WINDOW_MS, nobody calling switch, and reports the detection lag;
#   3. the same with every deadline at one instant (WINDOW_MS=0, an exam).
# Loopback only; stops everything it started.
#
#   loadtest/bench-timeouts.sh
#   SESSIONS=1000 IDLE_SECONDS=10 loadtest/bench-timeouts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-10000}
WINDOW_MS=${WINDOW_MS:-10000}
LEAD_MS=${LEAD_MS:-10000}
INSTANCES=${INSTANCES:-3}
IDLE_SECONDS=${IDLE_SECONDS:-30}
SWEEP_INTERVAL_SECONDS=${SWEEP_INTERVAL_SECONDS:-30}
HOLD=${HOLD:-10000}
REDIS_PORT=${REDIS_PORT:-6397}
FIRST_PORT=${FIRST_PORT:-3196}
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }

cargo build --release --quiet --bin synckairos --example timeout_storm
dir=$(mktemp -d)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

# Redis CPU seconds (user + system) and commands processed so far.
redis_counters() {
    redis-cli -p "$REDIS_PORT" info all | tr -d '\r' | awk -F: '
        /^used_cpu_(sys|user):/ { cpu += $2 }
        /^total_commands_processed:/ { cmds = $2 }
        END { printf "%f %d\n", cpu, cmds }'
}
# Redis CPU (% of one core) and commands/s over IDLE_SECONDS, then each
# command's calls/s and the share of a core its execution took.
measure_idle() {
    local before after
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    before=$(redis_counters)
    sleep "$IDLE_SECONDS"
    after=$(redis_counters)
    echo "$before $after" | awk -v s="$IDLE_SECONDS" \
        '{ printf "Redis CPU %.2f %% of one core, %.0f commands/s\n", ($3 - $1) * 100 / s, ($4 - $2) / s }'
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | grep '^cmdstat_' \
        | grep -v 'config|resetstat' | awk -F'[:,=]' -v s="$IDLE_SECONDS" \
        '{ printf "  %-28s %8.1f calls/s %6.3f %% of a core in the command\n", $1, $3 / s, $5 / s / 1e4 }'
}

echo "=== idle, Redis alone, ${IDLE_SECONDS} s"
measure_idle

bases=()
for i in $(seq 0 $((INSTANCES - 1))); do
    port=$((FIRST_PORT + i))
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT=$port RUST_LOG=warn RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0 \
        SWEEP_INTERVAL_SECONDS=$SWEEP_INTERVAL_SECONDS ./target/release/synckairos &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.05; done
    bases+=("http://127.0.0.1:$port")
done
sleep 2
echo "=== idle, $INSTANCES instances polling, ${IDLE_SECONDS} s"
measure_idle
./target/release/examples/timeout_storm hold "$HOLD" "${bases[@]}"
sleep 2
echo "=== idle, $INSTANCES instances polling, $HOLD sessions due in an hour, ${IDLE_SECONDS} s"
measure_idle

# The applied timeouts per instance, from its /metrics.
applied() {
    for base in "${bases[@]}"; do
        curl -sf "$base/metrics" | awk '/^synckairos_timeouts_applied_total/ { n = $2 } END { printf "%d ", n }'
    done
}

echo "=== $SESSIONS sessions, deadlines over $WINDOW_MS ms, $INSTANCES instances"
before=$(applied)
./target/release/examples/timeout_storm "$SESSIONS" "$WINDOW_MS" "$LEAD_MS" "${bases[@]}"
echo "timeouts applied per instance (cumulative): before $before after $(applied)"

echo "=== $SESSIONS sessions, one shared deadline, $INSTANCES instances"
./target/release/examples/timeout_storm "$SESSIONS" 0 "$LEAD_MS" "${bases[@]}"
echo "timeouts applied per instance (cumulative): $(applied)"
