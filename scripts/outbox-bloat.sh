#!/usr/bin/env bash
# Does a PostgreSQL outbox drained at full speed stay bounded? For SECONDS (default 3600), a
# producer keeps 30,000 to 50,000 1 KB messages waiting (`sluice outbox enqueue`, JSON lines) and
# one `sluice worker` drains them into `sluice sink` with a retention of one minute, so that
# finished messages are deleted as fast as they finish. Each minute it prints the messages
# delivered so far, the rows and dead rows of each table, and each table's size with its
# indexes and TOAST. Bounded: the sizes level off once autovacuum reuses what retention frees.
# A private cluster (initdb in a temporary directory, default durability and autovacuum).
#
#   scripts/outbox-bloat.sh [SECONDS]          # default 3600
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-3600}"

bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "PostgreSQL's server is not installed (apt-get install postgresql)" >&2
    exit 69
fi
swift build -c release --product sluice >/dev/null
sluice="$PWD/.build/release/sluice"
work="$(mktemp -d /tmp/sluice-outbox-bloat.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "${pgdata:-}" ]; then ${asuser} "$bindir/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

python3 scripts/outbox-messages.py 10000 >"$work/input.jsonl"
"$sluice" sink --listen 127.0.0.1:0 --loops 1 >"$work/sink.out" &
pids+=($!)
for _ in $(seq 50); do grep -q "listening on" "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
port="$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/sink.out" | head -1)"

asuser=""
if [ "$(id -u)" -eq 0 ]; then asuser="runuser -u postgres --"; chown postgres "$work"; fi
pgdata="$work/pgdata"
$asuser "$bindir/initdb" -D "$pgdata" -U postgres -A trust -E UTF8 --no-instructions >/dev/null
$asuser "$bindir/pg_ctl" -D "$pgdata" -l "$work/pg.log" -w \
    -o "-k $work -c listen_addresses= -c max_connections=50 -c shared_buffers=256MB" start >/dev/null
"$bindir/createdb" -h "$work" -U postgres bloat
url="host=$work user=postgres dbname=bloat"
sql() { "$bindir/psql" -h "$work" -U postgres -d bloat -Atqc "$1"; }
"$sluice" outbox init --outbox "$url" >/dev/null

"$sluice" worker --outbox "$url" --server "127.0.0.1:$port" --security none --batch 1000 --concurrency 4000 \
    --retention 1m 2>"$work/worker.err" &
pids+=($!)

report() {  # report MINUTE
    local sizes pending
    sizes="$(sql "SELECT string_agg(format('%s %s rows %s dead %s MB', replace(relname, 'sluice_', ''), n_live_tup,
                      n_dead_tup, round(pg_total_relation_size(relid) / 1048576.0, 1)), ', ' ORDER BY relname)
                  FROM pg_stat_user_tables WHERE relname IN ('sluice_messages', 'sluice_recipients', 'sluice_contents')")"
    pending="$(sql "SELECT count(*) FROM sluice_messages WHERE due_at IS NOT NULL")"
    printf '%3s min  finished %9s  pending %6s  %s  database %s MB\n' "$1" "$((enqueued - pending))" "$pending" \
        "$sizes" "$(sql "SELECT round(pg_database_size('bloat') / 1048576.0)")"
}

echo "outbox bloat: $seconds s of a full-speed drain on PostgreSQL, retention 1 minute"
start=$SECONDS
next=60
enqueued=0
while [ $((SECONDS - start)) -lt "$seconds" ]; do
    if [ "$(sql "SELECT count(*) FROM sluice_messages WHERE due_at IS NOT NULL")" -lt 40000 ]; then
        "$sluice" outbox enqueue --outbox "$url" <"$work/input.jsonl" >/dev/null
        enqueued=$((enqueued + 10000))
    else
        sleep 1
    fi
    if [ $((SECONDS - start)) -ge "$next" ]; then
        report $((next / 60))
        next=$((next + 60))
    fi
done
