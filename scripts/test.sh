#!/usr/bin/env bash
# Sets up a fresh machine, builds Sluice with its tests (failing on any compiler warning in
# Sluice's own code), builds the documentation (failing on any DocC warning), and runs the
# whole test suite.
#
# Under CI (CI=true) it then runs scripts/reliability.sh: the suite under ASan and TSan, every
# fuzz target for 60 s and a 60-second soak under faults.
#
#   scripts/test.sh [extra swift test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "test: building"
if ! swift build --build-tests 2>&1 | tee "$log"; then
    echo "test: the build failed" >&2
    exit 1
fi
root=$(pwd)
if grep -E "^${root}/(Sources|Tests)/.*warning:" "$log" >/dev/null; then
    echo "test: the build has compiler warnings in Sluice's own code (see above); Sluice builds warning-free" >&2
    exit 1
fi

echo "test: documentation (DocC; any warning fails it)"
if ! bash scripts/docs.sh; then
    echo "test: the documentation has warnings or errors (see above)" >&2
    exit 1
fi

echo "test: running"
# Swift Testing starts every test at once by default, and the concurrency pool has one thread
# per core: on two cores a test's task then waited up to 6 s for a thread (measured with a
# 10 ms sleeper beside the suite), and whichever timing test was unlucky failed. Eight at a
# time keeps those waits under 2 s, and the suite took no longer (102 s). scripts/sanitize.sh
# sets the same.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-8}
if [ $# -eq 0 ]; then
    # The outbox's load tests drive worker processes, a database server and a sink flat out
    # for about a minute; beside the rest of the suite they would starve its timing tests of
    # the two cores. So they run on their own, after it.
    swift test --skip-build --skip OutboxLoadTests
    echo "test: the outbox's load tests, on their own"
    swift test --skip-build --filter OutboxLoadTests
    # The Hummingbird example, built as a user's package against this checkout, serves a
    # request and drains on SIGTERM.
    echo "test: Examples/HummingbirdNotifier"
    bash Examples/HummingbirdNotifier/test.sh
else
    swift test --skip-build "$@"
fi

if [ "${CI:-false}" != "false" ] && [ -n "${CI:-}" ]; then
    bash scripts/reliability.sh
fi
