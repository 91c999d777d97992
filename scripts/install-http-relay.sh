#!/usr/bin/env bash
# Installs what the inbox comparison test (tests/relay/inbox_compare.rs) needs:
# pubky's http-relay 0.7.0, the reference for /inbox/{id}, built from crates.io
# with its lock file into target/http-relay-ref (git ignores target/), and
# python3 for scripts/inbox-compare.py. Idempotent and silent when everything
# is already there. Building the reference takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "install-http-relay: installing python3 with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends python3 >/dev/null
fi

root=target/http-relay-ref
if ! "$root/bin/http-relay" -V 2>/dev/null | grep -qx 'http-relay 0.7.0'; then
    echo "install-http-relay: cargo install http-relay 0.7.0 into $root" >&2
    cargo install http-relay --version 0.7.0 --locked --root "$root" --quiet
fi
