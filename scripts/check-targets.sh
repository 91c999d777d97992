#!/usr/bin/env bash
# Type-checks and lints the workspace (relay, tests, bench, testkit) for the
# targets CI cannot run: macOS on x86_64 and arm64. Needs only the targets'
# standard library (no linker, no SDK); adds them if missing. `cargo clippy`
# is `cargo check` plus the lints, so one pass per target does both (about a
# minute on two cores from cold, a second when nothing changed).
#
#   scripts/check-targets.sh [TARGET...]    default: both macOS targets
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(x86_64-apple-darwin aarch64-apple-darwin)
fi
installed=$(rustup target list --installed)
for target in "${targets[@]}"; do
    if ! grep -qx "$target" <<<"$installed"; then
        rustup target add "$target"
    fi
done
for target in "${targets[@]}"; do
    echo "-- $target"
    cargo clippy --locked --workspace --all-targets --target "$target" -- -D warnings
done
