#!/usr/bin/env bash
# Counts that repeat from run to run where times do not: per message, the mallocs, object
# allocations, retains, releases and runtime metadata lookups of `sluice bench` (the client)
# and of `sluice sink` (a separate process on one loop), read with uprobes and `perf stat`.
# A regression in the engine's per-message work shows here as a larger number, whatever the
# machine's speed that hour. Needs root (uprobes) and perf. Loopback only; bounded by the count.
#
#   Benchmarks/counts.sh                        # the release build, 50,000 messages of 1 KB
#   MESSAGES=20000 Benchmarks/counts.sh path/to/sluice
#
# The probes slow both sides tenfold; the CPU figures this prints are not speeds.
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-50000}
SLUICE=${1:-}
if [[ -z "$SLUICE" ]]; then
    swift build -c release --product sluice >/dev/null
    SLUICE=.build/release/sluice
fi
SLUICE=$(realpath "$SLUICE")
command -v perf >/dev/null || { echo "counts.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 69; }

LIBC=$(ldd "$SLUICE" | awk '$1 ~ /^libc\.so/ {print $3}')
CORE=$(ldd "$SLUICE" | awk '$1 ~ /^libswiftCore\.so/ {print $3}')
WORK=$(mktemp -d)
PROBES=()
cleanup() {
    [[ -n "${SINK:-}" ]] && pkill -P "$SINK" 2>/dev/null || true
    for probe in "${PROBES[@]}"; do perf probe -q -d "$probe" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Adds a uprobe on FUNCTION in OBJECT under the group GROUP, named after the function. A
# probe another tool left on the same function makes perf name this one FUNCTION_1 (with -f;
# without, it refuses): the name is read back from what perf prints.
probe() {
    perf probe -q -d "$2:$3" 2>/dev/null || true
    local added
    added=$(perf probe -f -x "$1" "$2:$3=$3" 2>&1 | awk -v group="$2:" 'index($1, group) == 1 { print $1; exit }')
    [[ -n "$added" ]] || { echo "counts.sh: perf could not add a uprobe on $3" >&2; exit 70; }
    PROBES+=("$added")
}
probe "$LIBC" sluicecounts malloc
probe "$CORE" sluicecounts swift_allocObject
probe "$CORE" sluicecounts swift_retain
probe "$CORE" sluicecounts swift_release
probe "$SLUICE" sluicecounts __swift_instantiateConcreteTypeFromMangledName
EVENTS=$(IFS=,; echo "${PROBES[*]}")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
perf stat -x, -o "$WORK/sink.csv" -e "$EVENTS" "$SLUICE" sink --listen "127.0.0.1:$PORT" --loops 1 >/dev/null 2>&1 &
SINK=$!
for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$PORT),0.1)" 2>/dev/null && break
    sleep 0.1
done
perf stat -x, -o "$WORK/client.csv" -e "$EVENTS" \
    "$SLUICE" bench --target "127.0.0.1:$PORT" --security none --messages "$MESSAGES" --json > "$WORK/bench.json"
pkill -INT -P "$SINK"  # the sink itself, perf's child: perf stat writes its counts once it exits
wait "$SINK" 2>/dev/null || true
SINK=

python3 - "$MESSAGES" "$WORK" <<'PY'
import json, re, sys
messages, work = int(sys.argv[1]), sys.argv[2]
accepted = json.load(open(f"{work}/bench.json")).get("accepted", messages)
if accepted != messages:
    sys.exit(f"counts.sh: {accepted} of {messages} messages were accepted; the counts would not be per message")
names = ["malloc", "swift_allocObject", "swift_retain", "swift_release", "__swift_instantiateConcreteTypeFromMangledName"]
labels = ["malloc", "allocObject", "retain", "release", "metadata lookups"]
def read(path):
    counts = {}
    for line in open(path):
        fields = line.strip().split(",")
        if len(fields) > 2 and fields[0].isdigit():
            # The event's name without its group, and without the suffix perf adds when
            # another probe is on the same function (malloc_1).
            counts[re.sub(r"_[0-9]+$", "", fields[2].split(":")[-1])] = int(fields[0])
    return counts
print(f"per message, {messages:,} messages of 1 KB, 16 connections:")
print(f"| side   | {' | '.join(labels)} |")
print(f"|--------|{'|'.join('-' * (len(label) + 2) for label in labels)}|")
for side in ("client", "sink"):
    counts = read(f"{work}/{side}.csv")
    print(f"| {side:6} | " + " | ".join(f"{counts.get(name, 0) / messages:{len(label)}.1f}" for name, label in zip(names, labels)) + " |")
PY
