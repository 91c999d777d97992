#!/usr/bin/env bash
# Builds a static, stripped x86_64 Linux binary (musl) for small images and
# gateways: target/x86_64-unknown-linux-musl/release/httprelay
set -euo pipefail
cd "$(dirname "$0")/.."
target="${TARGET:-x86_64-unknown-linux-musl}"
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target"
fi
cargo build --release --locked --target "$target"
bin="target/$target/release/httprelay"
if file "$bin" 2>/dev/null | grep -q dynamically; then
  echo "static-build: $bin is not static" >&2
  exit 1
fi
ls -l "$bin"
echo "$bin"
