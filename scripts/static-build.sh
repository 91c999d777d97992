#!/usr/bin/env bash
# Builds static, stripped Linux binaries (musl) for small images and gateways:
#
#   scripts/static-build.sh [--tiny] [--tls] [TARGET...]     # default: x86_64
#
# --tls builds with HTTPS (the tls feature: rustls and ring). ring's C and
# assembly are compiled by clang for either target (installed by
# scripts/install-tls-tools.sh when missing). Binaries land under
# ${CARGO_TARGET_DIR:-target}/tls/, apart from the plain ones.
#
# --tiny builds with the nightly toolchain, the standard library built from
# source (-Zbuild-std) and -Cpanic=immediate-abort: about half the size
# (x86_64 355 KiB, arm64 321 KiB instead of 710 and 634), but a panic then ends
# the relay without a word, and it needs nightly's rust-src and its standard
# library for the target (its C runtime objects). Binaries land under
# ${CARGO_TARGET_DIR:-target}/tiny/.
#
# TARGET is x86_64 (amd64) or aarch64 (arm64), the names Docker's TARGETARCH
# uses too, a full Rust target triple, or `all` for both. Each binary lands in
# ${CARGO_TARGET_DIR:-target}/<triple>/release/httprelay and its size is
# printed. The Rust target's standard library is added with rustup when
# missing; the linker is rust-lld, which ships with Rust, so no system C
# toolchain or cross-compiler is needed for either target.
set -euo pipefail
cd "$(dirname "$0")/.."

triple() {
    case "$1" in
        x86_64 | amd64) echo x86_64-unknown-linux-musl ;;
        aarch64 | arm64) echo aarch64-unknown-linux-musl ;;
        *-*) echo "$1" ;;
        *)
            echo "static-build: unknown target $1 (x86_64, aarch64, all or a triple)" >&2
            exit 2
            ;;
    esac
}

tiny=0
tls=0
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) tiny=1 ;;
        --tls) tls=1 ;;
        *) break ;;
    esac
    shift
done
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(x86_64)
targets=()
for a in "${args[@]}"; do
    if [ "$a" = all ]; then
        targets+=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
    else
        targets+=("$(triple "$a")")
    fi
done

# Optimised for size: "s" made the x86_64 binary 15 % smaller than the release
# profile's 3 with no change in link latency, pairs or streaming beyond the
# bench's noise; "z" saved 2 % more but added about 15 % to link latency
# (docs/performance.md, "Footprint").
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-s}"
out="${CARGO_TARGET_DIR:-target}"
toolchain=()  # cargo's +toolchain
on_toolchain=() # rustup's --toolchain
build_std=()
features=()
if [ "$tls" = 1 ]; then
    command -v clang >/dev/null || scripts/install-tls-tools.sh
    out="$out/tls"
    export CARGO_TARGET_DIR="$out"
    features=(--features tls)
fi
if [ "$tiny" = 1 ]; then
    out="$out/tiny"
    export CARGO_TARGET_DIR="$out"
    toolchain=(+nightly)
    on_toolchain=(--toolchain nightly)
    build_std=(-Zbuild-std=std,panic_abort)
    export RUSTFLAGS="${RUSTFLAGS:-} -Zunstable-options -Cpanic=immediate-abort"
    rustup component add rust-src --toolchain nightly >/dev/null
fi
built=()
for target in "${targets[@]}"; do
    if ! rustup target list --installed "${on_toolchain[@]}" 2>/dev/null | grep -qx "$target"; then
        rustup target add "$target" "${on_toolchain[@]}" || {
            echo "static-build: no standard library for $target on this toolchain" >&2
            exit 1
        }
    fi
    # CARGO_TARGET_<TRIPLE>_LINKER, unless the caller chose a linker.
    var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER"
    export "$var=${!var:-rust-lld}"
    if [ "$tls" = 1 ]; then
        # ring's C for the target: clang cross-compiles without a sysroot.
        cc_var="CC_$(echo "$target" | tr '-' '_')"
        export "$cc_var=${!cc_var:-clang}"
    fi
    cargo "${toolchain[@]}" build --release --locked --target "$target" "${build_std[@]}" "${features[@]}"
    bin="$out/$target/release/httprelay"
    if file "$bin" 2>/dev/null | grep -q dynamically; then
        echo "static-build: $bin is not static" >&2
        exit 1
    fi
    built+=("$bin")
done

for bin in "${built[@]}"; do
    bytes=$(stat -c %s "$bin")
    echo "$bin $bytes bytes ($(((bytes + 1023) / 1024)) KiB)"
done
