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

swift build -c release --product sluice >/dev/null
sluice="$PWD/.build/release/sluice"
work="$(mktemp -d /tmp/sluice-outbox-bench.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "${pgdata:-}" ]; then ${asuser} "$bindir/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

python3 scripts/outbox-messages.py "$messages" >"$work/input.jsonl"

"$sluice" sink --listen 127.0.0.1:0 --loops 1 >"$work/sink.out" &
pids+=($!)
for _ in $(seq 50); do grep -q "listening on" "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
port="$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/sink.out" | head -1)"

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

bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "PostgreSQL's server is not installed (apt-get install postgresql): left out"
    exit 0
fi
asuser=""
if [ "$(id -u)" -eq 0 ]; then asuser="runuser -u postgres --"; chown postgres "$work"; fi
pgdata="$work/pgdata"
$asuser "$bindir/initdb" -D "$pgdata" -U postgres -A trust -E UTF8 --no-instructions >/dev/null
$asuser "$bindir/pg_ctl" -D "$pgdata" -l "$work/pg.log" -w \
    -o "-k $work -c listen_addresses= -c max_connections=50 -c shared_buffers=256MB" start >/dev/null
for workers in 1 3; do
    "$bindir/createdb" -h "$work" -U postgres "bench$workers"
    url="host=$work user=postgres dbname=bench$workers"
    "$sluice" outbox init --outbox "$url" >/dev/null
    timed "PostgreSQL: enqueue (JSON lines)" "$sluice" outbox enqueue --outbox "$url" <"$work/input.jsonl"
    drain "PostgreSQL: drain, $workers worker$([ "$workers" -gt 1 ] && echo s)" "$url" "$workers"
done
