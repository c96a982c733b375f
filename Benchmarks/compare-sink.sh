#!/usr/bin/env bash
# Postfix's smtp-source pushes the same load into Postfix's smtp-sink and into sluice sink,
# in one run on one machine, and prints one table: messages per second and the CPU each side
# spent per message. Loopback only; every run is bounded by its message count.
#
#   Benchmarks/compare-sink.sh                      # 100 sessions, 50,000 messages of 1 KB
#   SESSIONS=10 MESSAGES=20000 SIZE=4096 Benchmarks/compare-sink.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-100}
MESSAGES=${MESSAGES:-50000}
SIZE=${SIZE:-1024}
ROUNDS=${ROUNDS:-3}

bash scripts/setup.sh >/dev/null
swift build -c release --product sluice >/dev/null
SLUICE=.build/release/sluice
TICKS=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk -v t="$TICKS" '{printf "%.4f", ($14+$15)/t}' "/proc/$1/stat"; }

# Runs smtp-source against PORT; prints "wall user+sys" in seconds.
source_run() {
    local port=$1 out
    out=$( { TIMEFORMAT='%R %U %S'; time smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -d \
             -f sender@example.com -t rcpt@example.com "127.0.0.1:$port" >/dev/null 2>&1; } 2>&1 )
    awk '{printf "%s %.4f", $1, $2+$3}' <<<"$out"
}

# Stops a sink: TERM (smtp-sink ignores INT), a bounded grace period, then KILL.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# One measurement: start the sink, load it, read its CPU, stop it. Prints "wall source_cpu sink_cpu".
measure() {
    local which=$1 port pid before after result
    port=$(free_port)
    if [ "$which" = postfix ]; then
        smtp-sink -u nobody "127.0.0.1:$port" 1024 & pid=$!
    else
        "$SLUICE" sink --listen "127.0.0.1:$port" >/dev/null 2>&1 & pid=$!
    fi
    for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    before=$(cpu_seconds "$pid")
    result=$(source_run "$port")
    after=$(cpu_seconds "$pid")
    stop "$pid"
    awk -v r="$result" -v b="$before" -v a="$after" 'BEGIN{split(r,x," "); printf "%s %s %.4f", x[1], x[2], a-b}'
}

printf '%s sessions, %s messages of %s bytes, best of %s rounds, smtp-source -d as the client\n\n' \
    "$SESSIONS" "$MESSAGES" "$SIZE" "$ROUNDS"
printf '| %-28s | %12s | %22s | %20s |\n' "client -> sink" "messages/s" "sink CPU per message" "client CPU per message"
printf '|%s|%s|%s|%s|\n' "------------------------------" "--------------" "------------------------" "----------------------"
for which in postfix sluice; do
    best=""
    for _ in $(seq "$ROUNDS"); do
        line=$(measure "$which")
        wall=${line%% *}
        if [ -z "$best" ] || awk -v a="$wall" -v b="${best%% *}" 'BEGIN{exit !(a<b)}'; then best=$line; fi
    done
    read -r wall source sink <<<"$best"
    name="smtp-source -> smtp-sink"; [ "$which" = sluice ] && name="smtp-source -> sluice sink"
    awk -v n="$name" -v w="$wall" -v s="$source" -v k="$sink" -v m="$MESSAGES" \
        'BEGIN{printf "| %-28s | %12.0f | %19.1f µs | %17.1f µs |\n", n, m/w, k/m*1e6, s/m*1e6}'
done
