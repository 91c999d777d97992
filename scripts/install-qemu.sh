#!/usr/bin/env bash
# Installs qemu-user from Debian's packages, so that the arm64 static binary
# (scripts/static-build.sh aarch64) runs on an x86_64 machine for the emulated
# test run (scripts/test-arm64.sh). Idempotent and silent when qemu-aarch64 is
# already installed; prints what it does otherwise. Uses sudo only when not root.
set -euo pipefail

if command -v qemu-aarch64 >/dev/null 2>&1 || command -v qemu-aarch64-static >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "install-qemu: installing qemu-user with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends qemu-user >/dev/null
qemu-aarch64 --version | head -n 1 >&2
