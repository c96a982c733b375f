# What the outbox scripts (bench, bloat, compare, compare-postgres) share: the release build, a
# temporary directory cleaned up on exit, `sluice sink` on a free loopback port, and a private
# PostgreSQL cluster (initdb in the temporary directory, run as `postgres` when we are root).
# Sourced, not run; the caller is in the project's root with `set -euo pipefail`.

# Sets `bindir` to the newest PostgreSQL server's binaries; fails when none is installed.
outbox_find_postgres() {
    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    [ -n "$bindir" ] && [ -x "$bindir/initdb" ]
}

# outbox_start NAME MESSAGES: builds sluice (`sluice`), makes `work`, writes MESSAGES 1 KB
# messages as JSON lines to "$work/input.jsonl" and starts a sink listening on `port`.
outbox_start() {
    swift build -c release --product sluice >/dev/null
    sluice="$PWD/.build/release/sluice"
    work="$(mktemp -d "/tmp/sluice-$1.XXXXXX")"
    pids=()
    trap outbox_cleanup EXIT
    python3 scripts/outbox-messages.py "$2" >"$work/input.jsonl"
    outbox_start_sink "$sluice"
}

# outbox_start_sink SLUICE: starts SLUICE's sink on a free loopback port, sets `port` and
# `sinkpid`, and adds the sink to `pids` (killed by outbox_cleanup). Needs `work`.
outbox_start_sink() {
    "$1" sink --listen 127.0.0.1:0 --loops 1 >"$work/sink.out" 2>"$work/sink.err" &
    sinkpid=$!
    pids+=("$sinkpid")
    for _ in $(seq 50); do grep -q "listening on" "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
    port="$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/sink.out" | head -1)"
    [ -n "$port" ] || { echo "the sink did not start: $(cat "$work/sink.out" "$work/sink.err")" >&2; return 1; }
}

outbox_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "${pgdata:-}" ]; then ${asuser:-} "$bindir/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}

# Starts a private cluster in "$work/pgdata", listening on a socket in "$work" only, with
# default durability and autovacuum. Needs outbox_find_postgres first.
outbox_start_cluster() {
    asuser=""
    if [ "$(id -u)" -eq 0 ]; then asuser="runuser -u postgres --"; chown postgres "$work"; fi
    pgdata="$work/pgdata"
    $asuser "$bindir/initdb" -D "$pgdata" -U postgres -A trust -E UTF8 --no-instructions >/dev/null
    $asuser "$bindir/pg_ctl" -D "$pgdata" -l "$work/pg.log" -w \
        -o "-k $work -c listen_addresses= -c max_connections=50 -c shared_buffers=256MB" start >/dev/null
}
