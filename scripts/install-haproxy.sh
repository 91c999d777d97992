#!/usr/bin/env bash
# Installs HAProxy from Debian's packages, for deploy/haproxy.cfg and the sharding
# test (tests/relay/sharding/). Idempotent and silent when haproxy is already
# installed; prints what it does otherwise. Uses sudo only when not root.
#
# The Debian package also enables a haproxy service with its stock
# /etc/haproxy/haproxy.cfg, which listens on nothing; the test starts its own
# haproxy process with a generated configuration and does not touch it.
set -euo pipefail

# /usr/sbin is not on every user's PATH.
haproxy_bin() {
    command -v haproxy 2>/dev/null || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; }
}

# deploy/haproxy.cfg needs 2.2 or newer (http-error, http-check send, concat);
# it is written for and tested with 2.6 (Debian 12).
check_version() {
    local v
    v=$("$(haproxy_bin)" -v 2>/dev/null | sed -n 's/^HA-\{0,1\}Proxy version \([0-9]*\.[0-9]*\).*/\1/p' | head -n 1)
    case "$v" in
        1.* | 2.0 | 2.1 | "")
            echo "install-haproxy: haproxy ${v:-of unknown version} is too old; deploy/haproxy.cfg needs 2.2 or newer" >&2
            exit 1
            ;;
    esac
}

if haproxy_bin >/dev/null; then
    check_version
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "install-haproxy: installing haproxy with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends haproxy >/dev/null
check_version
"$(haproxy_bin)" -v | head -n 1 >&2
