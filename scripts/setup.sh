#!/usr/bin/env bash
# Installs what Sluice needs on a fresh Debian or Ubuntu machine that has only the Swift
# toolchain: the C libraries it links (libuv, OpenSSL, libidn2, SQLite, libpq, zlib), pkg-config, and
# the independent peers its tests talk to: the openssl command, Postfix's smtp-source and
# smtp-sink, swaks (with Net::SSLeay for TLS), Python 3, PostgreSQL's server (the outbox
# tests start a private cluster of their own; the package's default cluster is not used), and
# headless Chromium with a font, which looks at `sluice bench --report`'s page as a person would.
# Each package is installed only if missing, so a second run does nothing. Neither Postfix's
# daemon nor PostgreSQL's is needed running (policy-rc.d keeps them stopped in containers).
# Python peers (aiosmtpd, dkimpy, and hdrhistogram, which reads `--hdr-out` logs) come from PyPI
# into a virtual environment at .build/peers-venv, which the tests use.
#
#   scripts/setup.sh            # build and test dependencies
set -euo pipefail

packages=(pkg-config libuv1-dev libssl-dev libidn2-dev libsqlite3-dev libpq-dev zlib1g-dev openssl ca-certificates
          postfix swaks libnet-ssleay-perl libauthen-sasl-perl python3 python3-venv postgresql
          chromium fonts-dejavu-core)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python peers from PyPI, in a virtual environment beside the build.
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.build/peers-venv"
if ! "$venv/bin/python" -c "import aiosmtpd, dkim, nacl, hdrh" >/dev/null 2>&1; then
    echo "setup: installing aiosmtpd, dkimpy, pynacl (dkimpy's Ed25519) and hdrhistogram into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check aiosmtpd dkimpy pynacl hdrhistogram
fi

command -v swift >/dev/null 2>&1 || { echo "setup: the Swift toolchain is not on PATH" >&2; exit 1; }
pkg-config --exists libuv openssl libidn2 sqlite3 libpq zlib || { echo "setup: pkg-config cannot find libuv, openssl, libidn2, sqlite3, libpq and zlib" >&2; exit 1; }
echo "setup: libuv $(pkg-config --modversion libuv), OpenSSL $(pkg-config --modversion openssl), $(swift --version 2>&1 | head -1)"
