#!/usr/bin/env bash
# One table from one run on one machine: each client (Postfix's smtp-source -d, sluice bench)
# against each sink (Postfix's smtp-sink, sluice sink), with the same message count, size and
# sessions; messages per second and the CPU each side spent per message. Loopback only; every
# run is bounded by its message count. Each cell is the median of ROUNDS runs, taken in turn.
# A first row measures the kernel's floor: Benchmarks/floor.c makes the system calls Sluice
# makes against smtp-sink (one writev and one read per message) and nothing else.
# The last three rows are the floors for CHUNKING, one per side: `floor.c -c 8` sends as Sluice
# does to a server that offers CHUNKING (8 transactions in flight a session, several in each
# write), and Benchmarks/floor-sink.c answers as `sluice sink` does (every ready connection
# read, then each one's replies in one write) with nothing else; each Sluice side runs against
# the other side's floor.
# Below the table: the Sluice client's CPU per message over smtp-source's, round by round, and
# each Sluice side's CPU per message above its floor.
#
#   Benchmarks/compare.sh                                   # 10 sessions, 50,000 messages of 1 KB
#   SESSIONS=100 MESSAGES=20000 SIZE=4096 ROUNDS=3 Benchmarks/compare.sh
#   LOOPS=1 Benchmarks/compare.sh       # sluice bench on one event loop, as smtp-source is one thread
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-10}
MESSAGES=${MESSAGES:-50000}
SIZE=${SIZE:-1024}
ROUNDS=${ROUNDS:-3}
LOOPS=${LOOPS:-}  # empty: sluice bench's default, one loop per core

bash scripts/setup.sh >/dev/null
swift build -c release --product sluice >/dev/null
SLUICE=.build/release/sluice
FLOOR=.build/floor
FLOOR_SINK=.build/floor-sink
"$(command -v cc || command -v clang)" -O2 -o "$FLOOR" Benchmarks/floor.c
"$(command -v cc || command -v clang)" -O2 -o "$FLOOR_SINK" Benchmarks/floor-sink.c
TICKS=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk -v t="$TICKS" '{printf "%.4f", ($14+$15)/t}' "/proc/$1/stat"; }

# Runs a command with its output discarded and its errors shown (on the script's stderr, fd
# 3, not mixed into the timing); prints "wall cpu" in seconds.
exec 3>&2
timed() {
    local out
    out=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>&3; } 2>&1 )
    awk '{printf "%s %.4f", $1, $2+$3}' <<<"$out"
}

# Loads PORT with CLIENT; prints "wall client_cpu" in seconds.
client_run() {
    local client=$1 port=$2 out
    if [ "$client" = smtp-source ]; then
        timed smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -d \
            -f sender@example.com -t rcpt@example.com "127.0.0.1:$port"
    elif [ "$client" = floor ]; then
        timed "$FLOOR" "$port" "$SESSIONS" "$MESSAGES" "$SIZE"
    elif [ "$client" = floor-chunking ]; then
        timed "$FLOOR" -c 8 "$port" "$SESSIONS" "$MESSAGES" "$SIZE"
    else
        out=$("$SLUICE" bench --target "127.0.0.1:$port" --security none --messages "$MESSAGES" \
                  --connections "$SESSIONS" --size "$SIZE" ${LOOPS:+--loops "$LOOPS"} --json 2>/dev/null)
        python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%s %s" % (r["elapsedSeconds"], r["clientCPUSeconds"]))' "$out"
    fi
}

# Stops a sink: TERM (smtp-sink ignores INT), a bounded grace period, then KILL.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# One measurement: start the sink, load it, read its CPU, stop it. Prints "wall client_cpu sink_cpu".
measure() {
    local client=$1 sink=$2 port pid before after result
    port=$(free_port)
    if [ "$sink" = smtp-sink ]; then
        if [ "$(id -u)" -eq 0 ]; then smtp-sink -u nobody "127.0.0.1:$port" 1024 & pid=$!
        else smtp-sink "127.0.0.1:$port" 1024 & pid=$!; fi
    elif [ "$sink" = floor-sink ]; then
        "$FLOOR_SINK" "$port" >/dev/null & pid=$!
    else
        "$SLUICE" sink --listen "127.0.0.1:$port" >/dev/null 2>&1 & pid=$!
    fi
    for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    before=$(cpu_seconds "$pid")
    result=$(client_run "$client" "$port")
    after=$(cpu_seconds "$pid")
    stop "$pid"
    awk -v r="$result" -v b="$before" -v a="$after" 'BEGIN{split(r,x," "); printf "%s %s %.4f", x[1], x[2], a-b}'
}

loops_used=${LOOPS:+$LOOPS event loop(s)}
printf '%s sessions, %s messages of %s bytes, median of %s rounds; sluice bench on %s\n\n' \
    "$SESSIONS" "$MESSAGES" "$SIZE" "$ROUNDS" "${loops_used:-one event loop per core}"
pairs=("floor smtp-sink" "smtp-source smtp-sink" "sluice smtp-sink" "smtp-source sluice" "sluice sluice"
       "floor-chunking floor-sink" "sluice floor-sink" "floor-chunking sluice")
# Rounds go round-robin over the pairs, so a slow spell of the machine falls on all of them
# rather than on one; each cell is the run with the median wall time.
declare -A runs
for _ in $(seq "$ROUNDS"); do
    for pair in "${pairs[@]}"; do
        read -r client sink <<<"$pair"
        runs[$pair]+="$(measure "$client" "$sink")"$'\n'
    done
done
printf '| %-30s | %10s | %22s | %20s |\n' "client -> sink" "messages/s" "client CPU per message" "sink CPU per message"
printf '|%s|%s|%s|%s|\n' "--------------------------------" "-----------:" "-----------------------:" "---------------------:"
for pair in "${pairs[@]}"; do
    read -r client sink <<<"$pair"
    median=$(printf '%s' "${runs[$pair]}" | sort -n -k1,1 | awk '{line[NR]=$0} END{print line[int((NR+1)/2)]}')
    read -r wall clientcpu sinkcpu <<<"$median"
    case $client in
        sluice) name="sluice bench" ;;
        floor) name="floor.c" ;;
        floor-chunking) name="floor.c -c 8" ;;
        *) name="smtp-source -d" ;;
    esac
    case $sink in
        sluice) name="$name -> sluice sink" ;;
        floor-sink) name="$name -> floor-sink.c" ;;
        *) name="$name -> smtp-sink" ;;
    esac
    awk -v n="$name" -v w="$wall" -v c="$clientcpu" -v k="$sinkcpu" -v m="$MESSAGES" \
        'BEGIN{printf "| %-30s | %10.0f | %19.1f µs | %17.1f µs |\n", n, m/w, c/m*1e6, k/m*1e6}'
done

# The issue's measure: the Sluice client's CPU per message over smtp-source's, both against
# smtp-sink, taken round by round (each pair ran back to back, so a slow spell of the machine
# falls on both): its median and range, and how many rounds came in at half or under.
# Then what Sluice spends above the floor, round by round.
python3 - "${runs[smtp-source smtp-sink]}" "${runs[sluice smtp-sink]}" "${runs[floor smtp-sink]}" "$MESSAGES" \
    "${runs[sluice floor-sink]}" "${runs[floor-chunking floor-sink]}" "${runs[floor-chunking sluice]}" <<'PY'
import statistics, sys
def column(runs, index):
    return [float(line.split()[index]) for line in runs.split("\n") if line.strip()]
source, sluice, floor = (column(runs, 1) for runs in sys.argv[1:4])
messages = int(sys.argv[4])
def report_above(label, side, floors):
    gaps = sorted((s - f) / messages * 1e6 for s, f in zip(side, floors))
    print(f"{label}, round by round: median {statistics.median(gaps):.1f} µs, range {gaps[0]:.1f}-{gaps[-1]:.1f}")
ratios = sorted(s / o for s, o in zip(sluice, source))
print()
print("sluice bench / smtp-source client CPU per message against smtp-sink, round by round: "
      f"median {statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}, "
      f"{sum(r <= 0.5 for r in ratios)} of {len(ratios)} rounds at 0.5 or under")
report_above("sluice bench's client CPU per message above the floor's", sluice, floor)
report_above("sluice bench's client CPU per message above floor.c -c 8's (both into floor-sink.c)",
      column(sys.argv[5], 1), column(sys.argv[6], 1))
report_above("sluice sink's CPU per message above floor-sink.c's (both fed by floor.c -c 8)",
      column(sys.argv[7], 2), column(sys.argv[6], 2))
PY
