#!/usr/bin/env bash
# Idle WebSocket connections on one instance: resident memory per connection,
# as reported in docs/PERFORMANCE.md. Starts its own redis-server and a release
# synckairos on local ports, opens COUNTS idle sockets to one session with
# examples/idle_ws.rs, and reads the server's VmRSS from /proc. Loopback only.
#
#   loadtest/bench-idle.sh                 # 10000 and 50000
#   COUNTS="10000" loadtest/bench-idle.sh
#   COUNTS=10000 CONCURRENCY=32 loadtest/bench-idle.sh     # 32 handshakes at a time
#   BINARY=/tmp/synckairos-before COUNTS=10000 loadtest/bench-idle.sh   # another build
#
# CONCURRENCY: handshakes at once (idle_ws's default, 256); BINARY: the server
# binary to measure (./target/release/synckairos, built first; another path is
# used as it is).
set -euo pipefail
cd "$(dirname "$0")/.."

COUNTS=${COUNTS:-"10000 50000"}
CONCURRENCY=${CONCURRENCY:-256}
BINARY=${BINARY:-./target/release/synckairos}
REDIS_PORT=${REDIS_PORT:-6395}
PORT=${PORT:-3095}
# Raise the open-file limit as far as allowed; each socket needs one on each side.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
limit=$(ulimit -n)

cargo build --release --quiet --example idle_ws
if [ "$BINARY" = ./target/release/synckairos ]; then
    cargo build --release --quiet
fi
[ -x "$BINARY" ] || { echo "no server binary at $BINARY" >&2; exit 1; }
dir=$(mktemp -d)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
redis_pid=$!
server_pid=""
trap 'kill $server_pid $redis_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

for count in $COUNTS; do
    if [ "$count" -ge "$limit" ]; then
        echo "connections=$count skipped: open-file limit is $limit (raise the hard limit to measure)"
        continue
    fi
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT=$PORT RUST_LOG=warn RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0 \
        WS_MAX_CONNECTIONS=200000 WS_MAX_CONNECTIONS_PER_IP=200000 WS_MAX_CONNECTIONS_PER_SESSION=200000 \
        WS_PING_INTERVAL_MS=600000 "$BINARY" &
    server_pid=$!
    until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do
        kill -0 "$server_pid" 2>/dev/null || { echo "the server exited (PORT=$PORT in use?)" >&2; exit 1; }
        sleep 0.05
    done
    kill -0 "$server_pid" 2>/dev/null || { echo "the server exited (PORT=$PORT in use?)" >&2; exit 1; }
    session=$(cat /proc/sys/kernel/random/uuid)
    before=$(rss_kb "$server_pid")
    CONCURRENCY=$CONCURRENCY ./target/release/examples/idle_ws "ws://127.0.0.1:$PORT" "$session" "$count" 20 > /tmp/idle_ws.out &
    client_pid=$!
    until grep -q "open=" /tmp/idle_ws.out 2>/dev/null; do sleep 0.5; done
    sleep 3
    after=$(rss_kb "$server_pid")
    opened=$(sed -n 's/open=\([0-9]*\).*/\1/p' /tmp/idle_ws.out)
    echo "connections=$opened concurrency=$CONCURRENCY $(cat /tmp/idle_ws.out) rss_before_kb=$before rss_after_kb=$after per_connection_bytes=$(( (after - before) * 1024 / (opened > 0 ? opened : 1) ))"
    kill "$client_pid" 2>/dev/null; wait "$client_pid" 2>/dev/null || true
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
done
