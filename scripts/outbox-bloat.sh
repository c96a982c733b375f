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

source scripts/outbox-lib.sh
if ! outbox_find_postgres; then
    echo "PostgreSQL's server is not installed (apt-get install postgresql)" >&2
    exit 69
fi
outbox_start outbox-bloat 10000
outbox_start_cluster
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
