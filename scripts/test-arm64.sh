#!/usr/bin/env bash
# Builds the static arm64 binary and runs the integration suite against it
# under qemu-user: the relay is arm64, the test clients are this machine's.
#
#   scripts/test-arm64.sh [FILTER...]     # cargo test filters; default: all
#
# The suite starts the program HTTPRELAY_TEST_BIN names; here that is a
# wrapper that execs qemu-aarch64 on the arm64 binary, so the relay's pid is
# the emulator's and its RSS includes the emulator's own (about 15 MiB).
# HTTPRELAY_TEST_EMULATED=1 makes the RSS bounds on streaming apply to the
# growth instead; memory::rss_stays_within_the_bound_under_every_kind_of_state,
# which compares the absolute RSS with the bound the relay computes for its
# flags, is left out, and so is tls::tls_sessions_stay_within_their_term_of_
# the_memory_bound, which divides RSS growth among connections (the
# emulator's translated code grows with it). Everything else runs, with the same outside tools as the
# native run. Emulated timings say nothing about the relay's speed on arm64.
# The TLS suite (tests/relay/tls.rs) runs against the arm64 tls build
# (static-build.sh --tls), named by HTTPRELAY_TEST_TLS_BIN the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-qemu.sh
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
scripts/static-build.sh aarch64
scripts/static-build.sh --tls aarch64
out="$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)"
dir="$out/aarch64-unknown-linux-musl/release"
tls_dir="$out/tls/aarch64-unknown-linux-musl/release"
for d in "$dir" "$tls_dir"; do
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$qemu" "$d/httprelay" >"$d/httprelay-qemu"
    chmod +x "$d/httprelay-qemu"
    "$d/httprelay-qemu" --version
done

start=$(date +%s)
HTTPRELAY_TEST_BIN="$dir/httprelay-qemu" HTTPRELAY_TEST_TLS_BIN="$tls_dir/httprelay-qemu" \
    HTTPRELAY_TEST_EMULATED=1 \
    cargo test --release --locked --test relay -- "$@" \
    --skip memory::rss_stays_within_the_bound_under_every_kind_of_state \
    --skip tls::tls_sessions_stay_within_their_term_of_the_memory_bound
echo "test-arm64: the suite took $(($(date +%s) - start)) s under $qemu (emulated: not a speed figure)"
