#!/usr/bin/env bash
# Builds Sluice and its tests with a sanitizer and runs the tests under it; any report fails
# the run. Suppressions (only for findings in the toolchain's own libraries, each explained)
# are in scripts/sanitizers/.
#
#   scripts/sanitize.sh address|thread [swift test arguments, e.g. --filter Client]
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizer=${1:?usage: scripts/sanitize.sh address|thread [swift test arguments]}
shift
root=$(pwd)
scratch="$root/.build-$sanitizer"

bash scripts/setup.sh
echo "sanitize: building with --sanitize=$sanitizer"
swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" 2>&1 | grep -E "error|warning: .*(Sources|Tests)/" || true
swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" >/dev/null

# The command-line tests run the sluice command as a child process: point them at the one
# built with the sanitizer (it is in the scratch build), and check that it is.
export SLUICE_COMMAND="$scratch/debug/sluice"
case "$sanitizer" in address) runtime=__asan_init ;; thread) runtime=__tsan_init ;; *) runtime= ;; esac
if [ -n "$runtime" ] && ! nm "$SLUICE_COMMAND" 2>/dev/null | grep "$runtime" >/dev/null; then  # not -q: nm would die of SIGPIPE
    echo "sanitize: $SLUICE_COMMAND is not built with the $sanitizer sanitizer" >&2
    exit 1
fi
echo "sanitize: the command-line tests run $SLUICE_COMMAND (built with the $sanitizer sanitizer)"

log=$(mktemp)
# Reports from child processes (the sluice command) do not reach this log: every sanitized
# process writes its reports to files here instead, and any file there fails the run.
reports=$(mktemp -d)
trap 'rm -rf "$log" "$reports"' EXIT
export ASAN_OPTIONS="suppressions=$root/scripts/sanitizers/asan.supp:detect_leaks=1:abort_on_error=0:log_path=$reports/asan"
export LSAN_OPTIONS="suppressions=$root/scripts/sanitizers/lsan.supp:print_suppressions=0"
# Sanitizers slow the code several times over (ThreadSanitizer most): the tests' deadlines
# stretch to match (Tests/SluiceTestSupport/Environment.swift), so only a hang misses them.
if [ "$sanitizer" = thread ]; then export SLUICE_TEST_TIME_SCALE=${SLUICE_TEST_TIME_SCALE:-8}
else export SLUICE_TEST_TIME_SCALE=${SLUICE_TEST_TIME_SCALE:-4}; fi
export TSAN_OPTIONS="suppressions=$root/scripts/sanitizers/tsan.supp:halt_on_error=1:second_deadlock_stack=1:log_path=$reports/tsan"
# Tests that must know which run this is (a test too load-sensitive for the parallel runs)
# read this: both sanitizers' options are exported whichever runs.
export SLUICE_SANITIZER="$sanitizer"
# A sanitized child that crashes is reported by the sanitizer. Swift's own crash handler
# would also start swift-backtrace, whose reads of the dying process's stack ASan stops;
# the orphaned backtracer then holds the child's output pipes open, and the test reading
# them waits for ever (seen: a crashed `sluice bench` hung the suite for 13 minutes).
export SWIFT_BACKTRACE=enable=no
# Eight tests at a time, as scripts/test.sh explains.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-8}
echo "sanitize: running the tests under $sanitizer"
status=0
swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" "$@" 2>&1 | tee "$log" || status=$?
for report in "$reports"/*; do
    [ -e "$report" ] || continue
    echo "sanitize: a report from process ${report##*.}:" >&2
    cat "$report" >&2
    cat "$report" >> "$log"
done
if grep -E "ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|SUMMARY: (Address|Thread|Leak)Sanitizer" "$log" >/dev/null; then
    echo "sanitize: the $sanitizer sanitizer reported a problem (above)" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: the tests failed under $sanitizer" >&2
    exit "$status"
fi
echo "sanitize: no $sanitizer sanitizer reports"
