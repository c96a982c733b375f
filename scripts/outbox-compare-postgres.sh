#!/usr/bin/env bash
# Compares sluice builds on a PostgreSQL outbox in turn, in one run (this machine drifts
# between runs): for each round and each binary, a fresh database in one private cluster,
# `outbox enqueue` of N 1 KB messages, `VACUUM ANALYZE`, then one `worker --exit-when-idle`
# draining it into one `sluice sink` (the first binary's). Prints the drain's time and the CPU
# PostgreSQL spent on it (every backend's, summed when they exit), each a message.
#
#   scripts/outbox-compare-postgres.sh MESSAGES ROUNDS OLD_SLUICE NEW_SLUICE [MORE…]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/outbox-lib.sh
messages=$1 rounds=$2
shift 2
outbox_find_postgres || { echo "no PostgreSQL server: bash scripts/setup.sh installs it" >&2; exit 1; }
work="$(mktemp -d /tmp/sluice-outbox-compare-pg.XXXXXX)"
pids=()
trap outbox_cleanup EXIT
python3 scripts/outbox-messages.py "$messages" >"$work/input.jsonl"
outbox_start_sink "$1"
outbox_start_cluster
psql() { PGOPTIONS="-c client_min_messages=warning" "$bindir/psql" -h "$work" -U postgres -X -q "$@"; }
postmaster="$(head -1 "$pgdata/postmaster.pid")"
# The CPU of the postmaster's children that have exited, in clock ticks.
ticks() { awk '{print $16 + $17}' "/proc/$postmaster/stat"; }

printf '%-6s %-40s %10s %14s\n' round binary "drain s" "PG µs/msg"
for round in $(seq "$rounds"); do
    for index in $(seq $#); do
        sluice="${!index}"
        psql -d postgres -c "DROP DATABASE IF EXISTS compare" -c "CREATE DATABASE compare"
        url="host=$work user=postgres dbname=compare"
        "$sluice" outbox init --outbox "$url" >/dev/null
        "$sluice" outbox enqueue --outbox "$url" <"$work/input.jsonl" >/dev/null
        psql -d compare -c "VACUUM ANALYZE"
        sleep 0.5
        before=$(ticks)
        /usr/bin/time -f "%e" -o "$work/drain" "$sluice" worker --outbox "$url" --server "127.0.0.1:$port" \
            --security none --exit-when-idle --batch 1000 --concurrency 4000 >/dev/null 2>&1
        sleep 0.5
        cpu=$(( ($(ticks) - before) * 1000000 / $(getconf CLK_TCK) / messages ))
        printf '%-6s %-40s %10s %14s\n' "$round" "$sluice" "$(cat "$work/drain")" "$cpu"
    done
done
