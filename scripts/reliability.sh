#!/usr/bin/env bash
# The reliability evidence, rerunnable by anyone: the whole test suite under AddressSanitizer
# and under ThreadSanitizer, every libFuzzer target, the main job in release mode and
# `sluice soak` (the client against a sink injecting every fault, with the accounting,
# resources and overload checked). Any sanitizer report, fuzzing finding, failed build or
# failed soak check fails it. CI runs it with the defaults; the figures in the README come
# from `bash scripts/reliability.sh 600 600`.
#
#   scripts/reliability.sh [FUZZ_SECONDS_PER_TARGET] [SOAK_SECONDS]     # defaults: 60 60
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds=${1:-60}
soak_seconds=${2:-60}

started=$(date +%s)
step() { echo "reliability: $1 ($(( $(date +%s) - started ))s in)"; }

step "the test suite under AddressSanitizer"
# The outbox's load tests load both cores for a minute and would starve the parallel
# suite's timing tests; they run under ThreadSanitizer's serial run instead.
bash scripts/sanitize.sh address --skip OutboxLoadTests
# ThreadSanitizer slows the suite several times over; one test at a time keeps the tests'
# deadlines meaningful on a two-core machine.
step "the test suite under ThreadSanitizer, serially"
bash scripts/sanitize.sh thread --no-parallel
step "every fuzz target for ${fuzz_seconds}s"
bash Fuzz/run.sh all "$fuzz_seconds"
# The release build is what users run (and what the README's main job builds): the soak runs
# on it, after a short run of the main job itself.
step "the main job in release mode, 20,000 messages"
swift build -c release --product sluice >/dev/null
.build/release/sluice bench --messages 20000
step "sluice soak for ${soak_seconds}s"
.build/release/sluice soak --duration "$soak_seconds"
step "done: no sanitizer report, no fuzzing finding, every soak check holds"
