#!/usr/bin/env bash
# Builds Sluice's documentation with the toolchain's DocC: one archive holding the Sluice
# module with what it re-exports (SluiceCore, SluiceMIME, SluiceTransport, so that `Message`,
# `Mailbox`, `TLSConfiguration` and their links are where a user of `import Sluice` looks),
# SluiceSink and SluiceOutbox, and the articles in Sources/Sluice/Sluice.docc. Any DocC
# warning (a broken link, an undocumented parameter) fails it.
#
#   scripts/docs.sh [OUTPUT]        default .build/documentation/Sluice.doccarchive
#   scripts/docs.sh --static DIR    a site for static hosting (GitHub Pages and the like)
#
# (swift-docc-plugin builds one target at a time from the module's own symbols only, so
# the re-exported types and every link to them would be missing; hence this script.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

hosting=()
if [[ "${1:-}" == "--static" ]]; then
    hosting=(--transform-for-static-hosting --hosting-base-path "${SLUICE_DOCS_BASE_PATH:-sluice}")
    shift
fi
output="${1:-$root/.build/documentation/Sluice.doccarchive}"

swift build --target SluiceOutbox >/dev/null
swift build --target SluiceSink >/dev/null
bin="$(swift build --show-bin-path)"
modules="$bin/Modules"
triple="$(uname -m)-unknown-linux-gnu"
graphs="$(mktemp -d)"
trap 'rm -rf "$graphs"' EXIT

clang_flags=()
# The system-library bridges' own module maps, and those SwiftPM writes for C targets (CScan).
for map in Sources/C*/module.modulemap "$bin"/C*.build/module.modulemap; do
    clang_flags+=(-Xcc "-fmodule-map-file=$map")
done
for library in libuv openssl libidn2 sqlite3 libpq; do
    for flag in $(pkg-config --cflags-only-I "$library"); do clang_flags+=(-Xcc "$flag"); done
done

extract() {
    swift-symbolgraph-extract -module-name "$1" -target "$triple" -I "$modules" "${clang_flags[@]}" \
        -minimum-access-level public -skip-inherited-docs -output-dir "$graphs" "${@:2}"
}
extract Sluice -experimental-allowed-reexported-modules=SluiceCore,SluiceMIME,SluiceTransport
extract SluiceSink
extract SluiceOutbox
# Only each module's own graph: extensions of the standard library's types are not Sluice's API.
find "$graphs" -name '*@*.symbols.json' -delete

rm -rf "$output"
mkdir -p "$(dirname "$output")"
docc convert Sources/Sluice/Sluice.docc --additional-symbol-graph-dir "$graphs" --output-path "$output" \
    --fallback-display-name Sluice --fallback-bundle-identifier sluice --warnings-as-errors "${hosting[@]}"
echo "docs: $output"
