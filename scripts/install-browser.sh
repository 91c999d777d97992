#!/usr/bin/env bash
# Installs what the browser end-to-end tests (tests/relay/browser.rs) need:
# Chromium from Debian's packages, certutil (libnss3-tools) and the Node.js
# dependencies of tests/browser.
# Idempotent and silent when everything is already there; prints what it does otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi

if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser: installing chromium and chromium-driver with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
    /usr/bin/chromium --version >&2
fi

# certutil: the HTTPS check makes Chromium trust its test CA through an NSS
# database of its own.
if ! command -v certutil >/dev/null 2>&1; then
    echo "install-browser: installing libnss3-tools (certutil) with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends libnss3-tools >/dev/null
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-browser: installing nodejs and npm with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
fi

# npm ci only when node_modules is missing or older than the lock file.
lock=tests/browser/package-lock.json
marker=tests/browser/node_modules/.package-lock.json
if [ ! -f "$marker" ] || [ "$lock" -nt "$marker" ]; then
    echo "install-browser: npm ci in tests/browser" >&2
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
fi
