#!/usr/bin/env bash
# Installs what the Piping Server comparison test (tests/relay/piping.rs)
# needs: Node.js, the reference server piping-server 1.12.9 (npm, pinned by
# tests/piping/package-lock.json) and python3 for scripts/piping-compare.py.
# Idempotent and silent when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]} > 0)); then
    echo "install-piping-server: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

lock=tests/piping/package-lock.json
marker=tests/piping/node_modules/.package-lock.json
if [ ! -f "$marker" ] || [ "$lock" -nt "$marker" ]; then
    echo "install-piping-server: npm ci in tests/piping" >&2
    npm ci --prefix tests/piping --no-audit --no-fund --loglevel=error >/dev/null
fi
