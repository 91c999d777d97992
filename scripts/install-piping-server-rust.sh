#!/usr/bin/env bash
# Installs what the streaming comparison of `cargo bench` needs: piping-server
# 0.18.0 (nwtgck's Rust Piping Server, on hyper and tokio), built from
# crates.io with its lock file into target/piping-rust-ref (git ignores
# target/). Idempotent and silent when it is already there. Building it takes
# a few minutes. The bench skips the comparison when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

root=target/piping-rust-ref
if ! "$root/bin/piping-server" --version 2>/dev/null | grep -q '0\.18\.0'; then
    echo "install-piping-server-rust: cargo install piping-server 0.18.0 into $root" >&2
    cargo install piping-server --version 0.18.0 --locked --root "$root" --quiet
fi
