#!/usr/bin/env bash
# Raft beside Multi-Paxos on one machine, under the same load and the same faults.
#
# For each consensus engine in turn: starts a 3-node Ordo cluster on loopback with
# `--consensus-engine ENGINE` (data in one temporary directory on disk, fsync on), runs
# `ordo bench` for every batch size K and submitter count C (C concurrent submitters, each
# waiting for its acknowledgement, for D seconds), stops it, and then measures failover as a
# client sees it: `cargo bench --bench cluster` part (d) on a cluster of that engine (one SDK
# client submitting one batch after another; the leader killed with SIGKILL; the time from the
# kill until the submit it left unanswered is acknowledged). Prints one markdown table and the
# hardware it ran on. Every process it starts is stopped on exit.
#
#   bench/engines.sh                                  # K = 1 10, C = 1 64, 10 s each, 10 failovers
#   bench/engines.sh --duration 2s --failovers 3      # a quick look
#   bench/engines.sh --output bench/engines-$(date +%F).md
#
# Only one cluster runs at a time.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

usage() {
    cat <<'USAGE'
usage: bench/engines.sh [options]            (each option also as an environment variable)
  --duration D          each load run's length                     ENGINES_DURATION   10s
  --batches "K ..."     messages per batch (comma or space list)   ENGINES_BATCHES    "1 10"
  --clients "C ..."     concurrent submitters (list)               ENGINES_CLIENTS    "1 64"
  --failovers N         leader kills per engine (0: none)          ENGINES_FAILOVERS  10
  --engines "E ..."     engines, in order                          ENGINES_ENGINES    "raft multi-paxos"
  --size S              bytes per message                          ENGINES_SIZE       128
  --ordo-port P         nodes on P..P+2 (UDP, QUIC)                ENGINES_ORDO_PORT  7111
  --data-parent DIR     where the temporary data directory goes    ENGINES_DATA_PARENT ${TMPDIR:-/tmp}
  --output FILE         also write the table to FILE                ENGINES_OUTPUT
  --no-build            use the binaries already built
  --keep                keep the data directory and logs (printed at the end)
USAGE
}

duration=${ENGINES_DURATION:-10s}
batches=${ENGINES_BATCHES-1 10}
clients=${ENGINES_CLIENTS-1 64}
failovers=${ENGINES_FAILOVERS:-10}
engines=${ENGINES_ENGINES:-raft multi-paxos}
size=${ENGINES_SIZE:-128}
ordo_port=${ENGINES_ORDO_PORT:-7111}
data_parent=${ENGINES_DATA_PARENT:-${TMPDIR:-/tmp}}
output=${ENGINES_OUTPUT:-}
build=1
keep=0

while (($#)); do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --batches) batches=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --failovers) failovers=$2; shift 2 ;;
        --engines) engines=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --ordo-port) ordo_port=$2; shift 2 ;;
        --data-parent) data_parent=$2; shift 2 ;;
        --output) output=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) log "unknown option $1"; usage >&2; exit 2 ;;
    esac
done
batches=${batches//,/ }
clients=${clients//,/ }
engines=${engines//,/ }
require_positive $batches $clients $size $ordo_port
[[ $failovers =~ ^[0-9]+$ ]] || { log "--failovers $failovers is not a count"; exit 2; }
for engine in $engines; do
    [[ $engine == raft || $engine == multi-paxos ]] ||
        { log "$engine is not an engine (raft, multi-paxos)"; exit 2; }
done

# Ordo runs on its defaults (and the engine named here): nothing leaks in from this shell.
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^ORDO_' || true)
unset RUST_LOG

ordo=${CARGO_TARGET_DIR:-$root/target}/release/ordo
if ((build)); then
    log "building ordo and the cluster benchmark (release)"
    (cd "$root" && cargo build --release --bin ordo && cargo bench --bench cluster --no-run)
fi
[[ -x $ordo ]] || die "$ordo is missing: run without --no-build"
for i in 0 1 2; do
    ! port_in_use -u $((ordo_port + i)) || die "UDP port $((ordo_port + i)) is in use: choose --ordo-port"
done

mkdir -p "$data_parent"
require_disk "$data_parent"
work=$(mktemp -d "$data_parent/ordo-engines.XXXXXX")
mkdir -p "$work/logs" "$work/results"
start_bookkeeping

endpoints=127.0.0.1:$ordo_port,127.0.0.1:$((ordo_port + 1)),127.0.0.1:$((ordo_port + 2))
peers=1=127.0.0.1:$ordo_port,2=127.0.0.1:$((ordo_port + 1)),3=127.0.0.1:$((ordo_port + 2))
tls=$work/tls
revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
"$ordo" certs --dir "$tls" --nodes 3 --clients cli >/dev/null

bench_run() { # C K DURATION
    "$ordo" bench --endpoints "$endpoints" --tls-dir "$tls" \
        --clients "$1" --batch "$2" --size "$size" --duration "$3" --json
}

measure_load() { # ENGINE
    local engine=$1 id k c deadline
    log "$engine: 3 nodes on $endpoints, data in $work/$engine"
    for id in 1 2 3; do
        "$ordo" serve --id "$id" --listen "127.0.0.1:$((ordo_port + id - 1))" --peers "$peers" \
            --data-dir "$work/$engine/node-$id" --tls-dir "$tls" --consensus-engine "$engine" \
            >"$work/logs/$engine-$id.log" 2>&1 &
        pids+=($!)
    done
    deadline=$((SECONDS + 30))
    until "$ordo" status --endpoints "$endpoints" --tls-dir "$tls" --json 2>/dev/null |
        grep '"role":"leader"' | grep -q "\"engine\":\"$engine\""; do
        all_alive || die "an Ordo node exited"
        ((SECONDS < deadline)) || die "no $engine leader within 30 s"
        sleep 0.2
    done
    bench_run 8 10 2s >/dev/null 2>>"$work/logs/load.log" || die "the $engine warm-up failed"
    for k in $batches; do
        for c in $clients; do
            run_load "$engine-$k-$c" batches bench_run "$c" "$k" "$duration"
            all_alive || die "a $engine node exited during K=$k C=$c"
        done
    done
    stop_servers
    rm -rf "${work:?}/$engine"
}

# Part (d) of the cluster benchmark, on ENGINE: its summary line, e.g. "client failover over
# 10 runs: median 1210.52 ms, p90 ..., max ..., mean ...", kept as results/ENGINE-failover.
measure_failover() { # ENGINE
    local engine=$1 line
    log "$engine: $failovers failovers (cargo bench --bench cluster, part d)"
    (cd "$root" && TMPDIR=$work ORDO_TEST_ENGINE=$engine ORDO_BENCH_ONLY=d \
        ORDO_BENCH_CLIENT_FAILOVERS=$failovers cargo bench -q --bench cluster) \
        >"$work/logs/$engine-failover.log" 2>&1 || die "the $engine failover runs failed"
    line=$(grep -m1 'client failover over' "$work/logs/$engine-failover.log") ||
        die "no failover summary in $engine-failover.log"
    log "$engine: $line"
    echo "$line" >"$work/results/$engine-failover"
}

# One statistic from a failover summary, in ms with no decimals, or "-".
failover_stat() { # ENGINE NAME (median, p90, max)
    local file=$work/results/$1-failover
    [[ -f $file ]] || { printf -- '-'; return; }
    sed -n "s/.* $2 \([0-9.]*\) ms.*/\1/p" "$file" | awk '{ printf "%.0f", $1 }'
}

for engine in $engines; do
    measure_load "$engine"
    if ((failovers > 0)); then measure_failover "$engine"; fi
done

# --- the table ----------------------------------------------------------------------------------

# A markdown table with a row per (K, C) and, per engine, a column per (TITLE, FIELD, FORMAT).
engine_table() { # TITLE FIELD FORMAT [TITLE FIELD FORMAT ...]
    local header="| K | C |" rule="|---|---|" row engine k c i columns=("$@")
    for engine in $engines; do
        for ((i = 0; i < ${#columns[@]}; i += 3)); do
            header+=" $engine ${columns[i]} |"
            rule+="---|"
        done
    done
    echo "$header"
    echo "$rule"
    for k in $batches; do
        for c in $clients; do
            row="| $k | $c |"
            for engine in $engines; do
                for ((i = 0; i < ${#columns[@]}; i += 3)); do
                    row+=" $(cell "$engine-$k-$c" "${columns[i + 1]}" "${columns[i + 2]}") |"
                done
            done
            echo "$row"
        done
    done
}

table=$(
    echo "Raft beside Multi-Paxos, $(date -u '+%Y-%m-%d %H:%M UTC'), each load run $duration, messages of $size B"
    echo
    echo "- hardware: $(hardware)"
    echo "- Ordo $revision: 3 \`ordo serve\` nodes per engine, shipped settings but the engine; load: \`ordo bench\`"
    echo
    engine_table "batches/s" batches_per_second %.0f "msgs/s" messages_per_second %.0f \
        "p50 ms" latency_ms_p50 %.2f "p99 ms" latency_ms_p99 %.2f
    if ((failovers > 0)); then
        echo
        echo "Failover as a client sees it: kill -9 of the leader, until the submit it left unanswered is acknowledged ($failovers kills per engine, 1 s election timeout)."
        echo
        echo "| engine | median ms | p90 ms | max ms |"
        echo "|---|---|---|---|"
        for engine in $engines; do
            echo "| $engine | $(failover_stat "$engine" median) | $(failover_stat "$engine" p90) | $(failover_stat "$engine" max) |"
        done
    fi
    echo
    echo "Cost per message, all three servers together: CPU µs (user + system) and bytes written."
    echo
    engine_table "CPU µs/msg" server_cpu_us_per_message %.1f "disk B/msg" disk_bytes_per_message %.0f
)
echo "$table"
if [[ -n $output ]]; then
    echo "$table" >"$output"
    log "table written to $output"
fi
