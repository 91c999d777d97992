#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer, nightly toolchain).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   fuzz each target (default: all) for
#                                           SECONDS (default 60)
#   scripts/fuzz.sh --corpus-only [TARGET...]
#                                           replay the committed seeds and
#                                           regressions only (what CI runs)
#
# The working corpus grows in fuzz/corpus/<target>/ (ignored by git); the seeds
# in fuzz/seeds/<target>/ and the crashers in fuzz/regressions/<target>/ are
# committed. Crashes land in fuzz/artifacts/<target>/: minimize one with
# `cargo +nightly fuzz tmin <target> <file>` and save it under fuzz/regressions.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fuzz=$root/fuzz

corpus_only=false
seconds=60
if [[ ${1:-} == --corpus-only ]]; then
    corpus_only=true
    shift
elif [[ ${1:-} =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
elif [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,14p' "$0"
    exit 0
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "== installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cd "$fuzz" && cargo +nightly fuzz list)
fi

echo "== building ${targets[*]}"
for target in "${targets[@]}"; do
    (cd "$fuzz" && cargo +nightly fuzz build "$target")
done

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
for target in "${targets[@]}"; do
    log=$logs/$target.log
    dirs=()
    if $corpus_only; then
        for dir in "$fuzz/seeds/$target" "$fuzz/regressions/$target"; do
            [[ -d $dir ]] && dirs+=("$dir")
        done
        flags=(-runs=0)
        echo "== $target: replaying ${dirs[*]#"$root/"}"
    else
        mkdir -p "$fuzz/corpus/$target"
        dirs=("$fuzz/corpus/$target")
        # Regressions are left out: one not fixed yet would stop the run at once.
        [[ -d $fuzz/seeds/$target ]] && dirs+=("$fuzz/seeds/$target")
        flags=(-max_total_time="$seconds")
        echo "== $target: fuzzing for ${seconds}s"
    fi
    status=0
    (cd "$fuzz" && cargo +nightly fuzz run "$target" "${dirs[@]}" -- \
        "${flags[@]}" -print_final_stats=1) >"$log" 2>&1 || status=$?
    if ((status != 0)); then
        failed+=("$target")
        echo "!! $target failed (exit $status):"
        grep -E -A2 'panicked at|^==[0-9]+==ERROR' "$log" | head -n 20 || true
        grep -E '^SUMMARY|Test unit written to|^Running: ' "$log" | tail -n 5 || true
    fi
    # The exec counts libFuzzer reports: the corpus replay, the last status line
    # (runs, coverage, corpus, exec/s), the final count.
    {
        grep -E '^#[0-9]+[[:space:]]+INITED' "$log" || true
        grep -E '^#[0-9]+[[:space:]]' "$log" | grep -vE 'INITED' | tail -n 1 || true
        grep -E '^Done [0-9]+ runs|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
            "$log" || true
    } | sed "s/^/   $target: /"
done

if ((${#failed[@]} > 0)); then
    echo "== FAILED: ${failed[*]}"
    exit 1
fi
echo "== ok: ${targets[*]}"
