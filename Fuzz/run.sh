#!/usr/bin/env bash
# Builds Sluice's libFuzzer targets (with AddressSanitizer) and runs one or all of them for a
# given time each. Seeds are in Fuzz/Corpus/TARGET; what the fuzzer adds goes to
# Fuzz/.build/corpus/TARGET, and a crash, hang or leak is written to Fuzz/.build/artifacts/ and
# fails the run. A finding is fixed and becomes a regression test.
#
#   bash Fuzz/run.sh [TARGET|all] [SECONDS]      # default: all, 60 seconds each
set -euo pipefail
cd "$(dirname "$0")"

targets=(FuzzReplyParser FuzzServerCommands FuzzAddresses FuzzRawMessage FuzzClientStateMachine)
which=${1:-all}
seconds=${2:-60}
if [ "$which" != "all" ]; then targets=("$which"); fi

echo "fuzz: building ${targets[*]} (libFuzzer, AddressSanitizer)"
for target in "${targets[@]}"; do
    swift build -c release --product "$target" -Xswiftc -sanitize=fuzzer,address -Xswiftc -g >/dev/null
done

mkdir -p .build/artifacts
# Swift's crash backtracer reads memory ASan guards and buries the real report; off here.
export SWIFT_BACKTRACE=enable=no
for target in "${targets[@]}"; do
    corpus=".build/corpus/$target"
    mkdir -p "$corpus"
    cp -n Corpus/"$target"/* "$corpus"/ 2>/dev/null || true
    echo "fuzz: $target for ${seconds}s"
    # -rss_limit_mb bounds growth; -timeout turns a hang into a finding.
    if ! ".build/release/$target" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
            -max_len=65536 -print_final_stats=1 -artifact_prefix=".build/artifacts/$target-" \
            2> ".build/$target.log"; then
        tail -40 ".build/$target.log" >&2
        echo "fuzz: $target found a problem; see Fuzz/.build/artifacts/" >&2
        exit 1
    fi
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" ".build/$target.log" | sed "s/^/fuzz: $target /"
done
echo "fuzz: no crash, hang or leak"
