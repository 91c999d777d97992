#!/usr/bin/env bash
# Installs what HTTPS needs besides Rust, from Debian's packages: openssl and
# curl for the TLS tests (tests/relay/tls.rs makes a test CA and its
# certificates with openssl when it runs, and talks to the relay with curl),
# and clang, which compiles ring's C and assembly for the static musl targets
# (scripts/static-build.sh --tls). Idempotent and silent when all are there.
# Uses sudo only when not root.
set -euo pipefail

missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v clang >/dev/null || missing+=(clang)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "install-tls-tools: installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
