#!/usr/bin/env bash
# Sets up a fresh machine, builds the sluice command in release mode and runs its main job:
# `sluice bench`, which starts an embedded sink on 127.0.0.1:0 and drives it with the SMTP
# client (100,000 messages of 1 KB over 16 pipelined connections unless told otherwise).
#
#   scripts/bench.sh [arguments for sluice bench]     # e.g. --messages 20000 --connections 10
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build -c release --product sluice
exec .build/release/sluice bench "$@"
