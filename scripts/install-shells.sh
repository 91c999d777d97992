#!/usr/bin/env bash
# Installs dash and BusyBox from Debian's packages, the two shells that run
# deploy/httprelay.init in its test (tests/relay/deploy.rs). Idempotent and
# silent when both are installed. Uses sudo only when not root.
set -euo pipefail

missing=()
command -v dash >/dev/null || missing+=(dash)
command -v busybox >/dev/null || missing+=(busybox)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "install-shells: installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
