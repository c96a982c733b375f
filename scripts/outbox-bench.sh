#!/usr/bin/env bash
# Measures the outbox from the shell, as an operator runs it: `sluice outbox enqueue` of N
# 1 KB messages (JSON lines on standard input, one recipient each), then `sluice worker
# --exit-when-idle` draining them into `sluice sink`: on SQLite with one worker, and on a
# private PostgreSQL cluster (initdb in a temporary directory, default durability) with one
# worker and with three. Prints one line per run: the rate and the CPU each process used.
#
#   scripts/outbox-bench.sh [MESSAGES]          # default 100000
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-100000}"

source scripts/outbox-lib.sh
outbox_start outbox-bench "$messages"

# Runs "$@" and prints its wall time, CPU and peak memory after a label.
timed() {
    local label="$1"; shift
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
    read -r wall user system rss <"$work/time"
    awk -v l="$label" -v n="$messages" -v w="$wall" -v u="$user" -v s="$system" -v m="$rss" \
        'BEGIN { printf "%-42s %8.0f messages/s  %6.2f s  CPU %5.1f µs/message  %6.0f MB\n", l, n / w, w, (u + s) * 1e6 / n, m / 1024 }'
}

drain() {  # drain LABEL URL WORKERS
    local label="$1" url="$2" workers="$3" start end
    start="$(date +%s.%N)"
    local running=()
    for _ in $(seq "$workers"); do
        "$sluice" worker --outbox "$url" --server "127.0.0.1:$port" --security none --exit-when-idle --batch 1000 \
            --concurrency 4000 2>/dev/null &
        running+=($!)
    done
    for pid in "${running[@]}"; do wait "$pid"; done
    end="$(date +%s.%N)"
    awk -v l="$label" -v n="$messages" -v s="$start" -v e="$end" \
        'BEGIN { printf "%-42s %8.0f messages/s  %6.2f s\n", l, n / (e - s), e - s }'
}

echo "outbox, $messages messages of 1 KB, one recipient each, into sluice sink"
url="sqlite:$work/outbox.db"
"$sluice" outbox init --outbox "$url" >/dev/null
timed "SQLite: enqueue (JSON lines)" "$sluice" outbox enqueue --outbox "$url" <"$work/input.jsonl"
drain "SQLite: drain, 1 worker" "$url" 1

if ! outbox_find_postgres; then
    echo "PostgreSQL's server is not installed (apt-get install postgresql): left out"
    exit 0
fi
outbox_start_cluster
for workers in 1 3; do
    "$bindir/createdb" -h "$work" -U postgres "bench$workers"
    url="host=$work user=postgres dbname=bench$workers"
    "$sluice" outbox init --outbox "$url" >/dev/null
    timed "PostgreSQL: enqueue (JSON lines)" "$sluice" outbox enqueue --outbox "$url" <"$work/input.jsonl"
    drain "PostgreSQL: drain, $workers worker$([ "$workers" -gt 1 ] && echo s)" "$url" "$workers"
done
