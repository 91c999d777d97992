#!/usr/bin/env bash
# Memory soak: starts one relay on 127.0.0.1 and runs every relay-soak pattern
# (deploy/bench/src/bin/relay-soak.rs) against it in turn, printing the relay's
# RSS before/peak/after and httprelay_channels before/after for each, then all
# summary lines (key=value, one per pattern) together at the end.
#
#   scripts/memory-soak.sh            # unique-pairs for 120 s, then the floods
#   scripts/memory-soak.sh 15
#   RELAY_FLAGS="--idle-expiry 5" scripts/memory-soak.sh 30
#
# Environment: RELAY_BIN (default: the binary cargo builds here), RELAY_FLAGS
# (extra relay flags), SOAK_PORT (first port tried, 18999), FLOOD_RATE
# (connections a second for the floods that open one connection per request and
# for parked-producers, 4000; 0: no limit, and once the relay falls behind its
# listen backlog overflows and clients wait a second per dropped SYN).
# "after" figures are taken one second after a pattern ends; the relay keeps the
# channels of earlier patterns, so each pattern starts where the last one ended.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-120}
port=${SOAK_PORT:-18999}
rate=${FLOOD_RATE:-4000}
target=${CARGO_TARGET_DIR:-target}
RELAY_BIN=${RELAY_BIN:-$target/release/httprelay}

cargo build --release --quiet --bin httprelay
cargo build --release --quiet --manifest-path deploy/bench/Cargo.toml \
    --target-dir "$target/haproxy-bench"
soak=$target/haproxy-bench/release/relay-soak

# parked-producers holds 2000 connections open: both processes need descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
log=$work/relay.log
# The first port from SOAK_PORT on that nothing answers on.
while (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
# The soak's clients are all one address: the shares per address are lifted
# (RELAY_FLAGS may set them again).
# shellcheck disable=SC2086 # RELAY_FLAGS is a list of flags
"$RELAY_BIN" -a 127.0.0.1 -p "$port" --max-conns-per-client 1000000 --max-channels-per-client 1000000 ${RELAY_FLAGS:-} 2>"$log" &
relay=$!
trap 'kill "$relay" 2>/dev/null || true; wait "$relay" 2>/dev/null || true; rm -rf "$work"' EXIT
for i in $(seq 101); do
    kill -0 "$relay" 2>/dev/null || { cat "$log" >&2; exit 1; }
    "$RELAY_BIN" --health-check -a 127.0.0.1 -p "$port" 2>/dev/null && break
    [ "$i" -le 100 ] || { echo "memory-soak: relay not healthy" >&2; exit 1; }
    sleep 0.1
done

printf 'relay %s (pid %s) on 127.0.0.1:%s, flags: %s; %s cores, ulimit -n %s\n' \
    "$RELAY_BIN" "$relay" "$port" "${RELAY_FLAGS:-none}" "$(nproc)" "$(ulimit -n)"
summaries=()
for run in "unique-pairs $secs" "abandoned-gets 50000 --rate $rate" \
    "secret-producers 50000 --rate $rate" "empty-mcast 100000" \
    "proxy-jobs 20000 --rate $rate" "parked-producers 2000 --rate $rate"; do
    echo
    # shellcheck disable=SC2086 # run is a pattern and its arguments
    "$soak" "127.0.0.1:$port" $run --pid "$relay" | tee "$work/out"
    summaries+=("$(grep '^pattern=' "$work/out")")
    kill -0 "$relay" 2>/dev/null || { echo "memory-soak: the relay exited" >&2; exit 1; }
done

echo
printf '%s\n' "${summaries[@]}"
# Anything the relay said beyond its banner.
if [ "$(wc -l <"$log")" -gt 1 ]; then
    printf '\nrelay stderr:\n'
    tail -n 20 "$log"
fi
