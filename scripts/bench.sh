#!/usr/bin/env bash
# Sets up a fresh machine, builds the sluice command in release mode and runs its main job.
#
# Until the SMTP client and sink land, the main job is the transport measurement:
# `sluice loopback`, echoing bytes through connections over loopback TCP on libuv.
#
#   scripts/bench.sh [arguments for sluice loopback]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build -c release --product sluice
exec .build/release/sluice loopback "$@"
