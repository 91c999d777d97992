#!/usr/bin/env bash
# Measures link exchanges per second through HAProxy (deploy/haproxy.cfg, as
# shipped but for its addresses) with 1 and with 2 relay processes on this
# machine, plus one relay without HAProxy for reference. The load generator
# (deploy/bench) runs PAIRS pairs, each looping producer POST + consumer GET on
# one channel over two keep-alive connections, with BODY-byte bodies, for
# SECS seconds after a one-second warm-up.
#
#   scripts/bench-haproxy.sh                  # 64 pairs, 64-byte bodies, 10 s each
#   PAIRS=16 SECS=5 scripts/bench-haproxy.sh
#
# CPU columns: percent of one core used by the relays (together) and by
# HAProxy during the run. The load generator runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-64}
SECS=${SECS:-10}
BODY=${BODY:-64}
BASE=${BENCH_PORT_BASE:-18580}   # HAProxy on BASE, relays on BASE+1.., stats on BASE+9
RUNS=${RUNS:-"direct:1 haproxy:1 haproxy:2"}

scripts/install-haproxy.sh
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
cargo build --release --quiet --bin httprelay
cargo build --release --quiet --manifest-path deploy/bench/Cargo.toml \
    --target-dir target/haproxy-bench
relay_bin=target/release/httprelay
bench_bin=target/haproxy-bench/release/haproxy-bench

work=$(mktemp -d)
pids=()
stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

ticks() { # user+system clock ticks of the given pids
    local total=0 pid stat
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat")
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

wait_health() { # port pid: the process pid answers /health on port
    local i
    for i in $(seq 100); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "bench-haproxy: the process for port $1 exited (port in use?)" >&2
            return 1
        fi
        "$relay_bin" --health-check -a 127.0.0.1 -p "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench-haproxy: nothing healthy on port $1" >&2
    return 1
}

hz=$(getconf CLK_TCK)
printf '\n%s pairs, %s-byte bodies, %s s per run, %s cores, %s\n' \
    "$PAIRS" "$BODY" "$SECS" "$(nproc)" "$("$haproxy" -v | head -n 1 | cut -d' ' -f1-3)"
# Anything else running skews the figures; say so.
printf 'load average before: %s\n\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-22s | %11s | %7s | %7s | %9s | %11s |\n' \
    "setup" "exchanges/s" "p50 ms" "p99 ms" "relay CPU" "HAProxy CPU"
printf '|%s|%s|%s|%s|%s|%s|\n' "------------------------" "-------------" "---------" \
    "---------" "-----------" "-------------"

for run in $RUNS; do
    mode=${run%%:*}
    n=${run##*:}
    relay_pids=()
    for i in $(seq "$n"); do
        "$relay_bin" -a 127.0.0.1 -p $((BASE + i)) --trust-proxy 127.0.0.1 --max-conns-per-client 1000000 --max-channels-per-client 1000000 2>"$work/relay$i.log" &
        pids+=($!)
        relay_pids+=($!)
        wait_health $((BASE + i)) $!
    done
    hap_pids=()
    if [ "$mode" = haproxy ]; then
        # The shipped file with its addresses changed and the relays beyond N
        # removed (every shard-choice line names its relay).
        subst=(-e "s/^    bind :8080\$/    bind 127.0.0.1:$BASE/"
            -e "s/127\.0\.0\.1:8404\$/127.0.0.1:$((BASE + 9))/")
        for i in 1 2 3 4 5 6 7 8; do
            subst+=(-e "s/127\.0\.0\.1:808$i\$/127.0.0.1:$((BASE + i))/")
        done
        sed "${subst[@]}" deploy/haproxy.cfg |
            grep -v -E "relay[$((n + 1))-9]" >"$work/haproxy.cfg"
        "$haproxy" -c -q -f "$work/haproxy.cfg"
        "$haproxy" -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
        pids+=($!)
        hap_pids+=($!)
        wait_health "$BASE" $!
        sleep 1
        target=127.0.0.1:$BASE
        label="HAProxy + $n relay"
        if [ "$n" -gt 1 ]; then label+=s; fi
    else
        target=127.0.0.1:$((BASE + 1))
        label="$n relay, no HAProxy"
    fi
    r0=$(ticks "${relay_pids[@]}")
    h0=0
    [ "${#hap_pids[@]}" -gt 0 ] && h0=$(ticks "${hap_pids[@]}")
    t0=$(date +%s%N)
    out=$("$bench_bin" "$target" "$PAIRS" "$SECS" "$BODY")
    t1=$(date +%s%N)
    r1=$(ticks "${relay_pids[@]}")
    h1=0
    [ "${#hap_pids[@]}" -gt 0 ] && h1=$(ticks "${hap_pids[@]}")
    rate=${out##*rate=}
    wall_cs=$(((t1 - t0) / 10000000)) # centiseconds
    rcpu=$(((r1 - r0) * 10000 / hz / wall_cs))
    hcpu=$(((h1 - h0) * 10000 / hz / wall_cs))
    hcol="-"
    [ "$mode" = haproxy ] && hcol="$hcpu %"
    p50=${out##*p50_ms=}
    p99=${out##*p99_ms=}
    printf '| %-22s | %11s | %7s | %7s | %9s | %11s |\n' \
        "$label" "$rate" "${p50%% *}" "${p99%% *}" "$rcpu %" "$hcol"
    stop_all
    sleep 0.5
done
echo
