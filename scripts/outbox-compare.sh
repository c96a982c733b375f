#!/usr/bin/env bash
# Compares sluice builds on the outbox in turn, in one run (this machine drifts between runs):
# for each round and each binary, `outbox enqueue` of N 1 KB messages into a fresh SQLite
# outbox, then `worker --exit-when-idle` draining it into one `sluice sink` (the first
# binary's). Prints each run's rates and the CPU of the enqueue, the worker and the sink.
#
#   scripts/outbox-compare.sh MESSAGES ROUNDS OLD_SLUICE NEW_SLUICE [MORE…]
set -euo pipefail
source "$(dirname "$0")/outbox-lib.sh"
messages=$1 rounds=$2
shift 2
work="$(mktemp -d /tmp/sluice-outbox-compare.XXXXXX)"
pids=()
trap outbox_cleanup EXIT

python3 "$(dirname "$0")/outbox-messages.py" "$messages" >"$work/input.jsonl"
outbox_start_sink "$1"
ticks() { awk '{print $14 + $15}' "/proc/$sinkpid/stat"; }

for round in $(seq "$rounds"); do
    for index in $(seq $#); do
        sluice="${!index}"
        db="$work/outbox-$round-$index.db"
        "$sluice" outbox init --outbox "sqlite:$db" >/dev/null
        /usr/bin/time -f "%e %U %S" -o "$work/enqueue" "$sluice" outbox enqueue --outbox "sqlite:$db" <"$work/input.jsonl" >/dev/null
        before=$(ticks)
        /usr/bin/time -f "%e %U %S" -o "$work/drain" "$sluice" worker --outbox "sqlite:$db" --server "127.0.0.1:$port" \
            --security none --exit-when-idle >/dev/null 2>&1
        after=$(ticks)
        read -r e1 u1 s1 <"$work/enqueue"
        read -r e2 u2 s2 <"$work/drain"
        python3 -c "print('%-40s enqueue %6.0f msg/s, %.2f s CPU; drain %6.0f msg/s, worker %.2f+%.2f s, sink %.2f s' % (
            '$sluice'[-40:], $messages / $e1, $u1 + $s1, $messages / $e2, $u2, $s2, ($after - $before) / $(getconf CLK_TCK)))"
    done
done
