#!/usr/bin/env bash
# Ordo beside etcd on one machine, under the same load shape.
#
# Starts a 3-member etcd cluster and then a 3-node Ordo cluster on loopback, with their data in
# one temporary directory (same filesystem, fsync on in both), and for every batch size K and
# submitter count C runs C concurrent submitters, each waiting for its acknowledgement, for D
# seconds: `ordo bench` on Ordo, bench/etcd-load (one Txn of K puts per batch) on etcd. Prints a
# markdown table and the hardware it ran on. Every process it starts is stopped on exit.
#
# Then locks, with each system's own lock (Ordo's `ordo bench --lock`, etcd's
# clientv3/concurrency.Mutex recipe in bench/etcd-load): one client taking and releasing a lock of
# its own (uncontended: the latency of acquire + release), and C clients taking turns on one lock
# (contended: hand-offs per second).
#
#   bench/compare.sh                                  # K = 1 10 100, C = 1 64, 10 s each
#   bench/compare.sh --batches "" --clients "" --lock-clients "1 8"   # locks only
#   bench/compare.sh --duration 2s --batches 10 --clients 64
#   bench/compare.sh --output bench/results-$(date +%F).md
#
# Only one system runs at a time: etcd is started, measured and stopped, then Ordo.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/compare.sh [options]            (each option also as an environment variable)
  --duration D          each run's length                          COMPARE_DURATION   10s
  --batches "K ..."     messages per batch (comma or space list)   COMPARE_BATCHES    "1 10 100"
  --clients "C ..."     concurrent submitters (list)               COMPARE_CLIENTS    "1 64"
  --lock-clients "C ..." lock clients: 1 runs uncontended, more contend for one lock
                                                                   COMPARE_LOCK_CLIENTS "1 8"
  --size S              bytes per message                          COMPARE_SIZE       128
  --etcd-port P         etcd clients on P..P+2, peers on P+3..P+5  COMPARE_ETCD_PORT  23790
  --ordo-port P         Ordo nodes on P..P+2 (UDP, QUIC)           COMPARE_ORDO_PORT  7101
  --data-parent DIR     where the temporary data directory goes    COMPARE_DATA_PARENT ${TMPDIR:-/tmp}
  --etcd-connections N  HTTP/2 connections of the etcd load generator  COMPARE_ETCD_CONNECTIONS 4
  --etcd-target T       leader (connect to the leader) or all (round-robin over the members)
                                                                   COMPARE_ETCD_TARGET leader
  --output FILE         also write the table to FILE                COMPARE_OUTPUT
  --no-build            use the binaries already built (target/release/ordo, etcd-load)
  --keep                keep the data directory and logs (printed at the end)
EOF
}

duration=${COMPARE_DURATION:-10s}
batches=${COMPARE_BATCHES-1 10 100}
clients=${COMPARE_CLIENTS-1 64}
lock_clients=${COMPARE_LOCK_CLIENTS-1 8}
size=${COMPARE_SIZE:-128}
etcd_port=${COMPARE_ETCD_PORT:-23790}
ordo_port=${COMPARE_ORDO_PORT:-7101}
data_parent=${COMPARE_DATA_PARENT:-${TMPDIR:-/tmp}}
etcd_connections=${COMPARE_ETCD_CONNECTIONS:-4}
etcd_target=${COMPARE_ETCD_TARGET:-leader}
output=${COMPARE_OUTPUT:-}
build=1
keep=0

while (($#)); do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --batches) batches=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --lock-clients) lock_clients=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --etcd-port) etcd_port=$2; shift 2 ;;
        --ordo-port) ordo_port=$2; shift 2 ;;
        --data-parent) data_parent=$2; shift 2 ;;
        --etcd-connections) etcd_connections=$2; shift 2 ;;
        --etcd-target) etcd_target=$2; shift 2 ;;
        --output) output=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
batches=${batches//,/ }
clients=${clients//,/ }
lock_clients=${lock_clients//,/ }
require_positive $batches $clients $lock_clients $size $etcd_port $ordo_port $etcd_connections


# Both systems run with their defaults: no configuration leaks in from this shell.
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(ORDO_|ETCD_|ETCDCTL_)' || true)
unset RUST_LOG

# --- prerequisites ----------------------------------------------------------------------------

if ! command -v etcd >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "etcd is missing: installing Debian's etcd-server package"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
    else
        die "etcd is not on PATH. On Debian or Ubuntu: sudo apt-get install etcd-server (or put an etcd v3.4+ binary on PATH)"
    fi
fi
etcd_version=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')

target_dir=${CARGO_TARGET_DIR:-$root/target}
ordo=$target_dir/release/ordo
etcd_load=${CARGO_TARGET_DIR:-$root/bench/etcd-load/target}/release/etcd-load
if ((build)); then
    log "building ordo and etcd-load (release)"
    (cd "$root" && cargo build --release --bin ordo)
    cargo build --release --manifest-path "$root/bench/etcd-load/Cargo.toml"
fi
[[ -x $ordo ]] || die "$ordo is missing: run without --no-build"
[[ -x $etcd_load ]] || die "$etcd_load is missing: run without --no-build"

for i in 0 1 2 3 4 5; do
    ! port_in_use -t $((etcd_port + i)) || die "TCP port $((etcd_port + i)) is in use: choose --etcd-port"
done
for i in 0 1 2; do
    ! port_in_use -u $((ordo_port + i)) || die "UDP port $((ordo_port + i)) is in use: choose --ordo-port"
done

mkdir -p "$data_parent"
require_disk "$data_parent"
work=$(mktemp -d "$data_parent/ordo-compare.XXXXXX")
mkdir -p "$work/logs" "$work/results"
fs_type=$(df -PT "$work" | awk 'NR == 2 { print $2 }')
start_bookkeeping

run_pair() { # SYSTEM K C COMMAND... (K is a batch size, or lock for the lock runs)
    local system=$1 k=$2 c=$3 unit=batches
    shift 3
    if [[ $k == lock ]]; then unit=acquisitions; fi
    run_load "$system-$k-$c" "$unit" "$@"
    all_alive || die "a $system server exited during K=$k C=$c"
}

# One client on a lock of its own; more take turns on one lock.
lock_load() { if (($1 == 1)); then echo uncontended; else echo contended; fi; }

measure() { # SYSTEM RUNNER LOCK_RUNNER: a warm-up, every (K, C) pair, the locks, then stop
    local system=$1 runner=$2 lock_runner=$3 k c
    "$runner" 8 10 2s >/dev/null 2>>"$work/logs/$system-load.log" || die "the $system warm-up failed"
    all_alive || die "a $system server exited during the warm-up"
    for k in $batches; do
        for c in $clients; do
            run_pair "$system" "$k" "$c" "$runner" "$c" "$k" "$duration"
        done
    done
    for c in $lock_clients; do
        run_pair "$system" lock "$c" "$lock_runner" "$c" "$(lock_load "$c")" "$duration"
    done
    stop_servers
}

max_k=0
for k in $batches; do
    if ((k > max_k)); then max_k=$k; fi
done

# --- etcd ---------------------------------------------------------------------------------------

etcd_endpoints=127.0.0.1:$etcd_port,127.0.0.1:$((etcd_port + 1)),127.0.0.1:$((etcd_port + 2))
etcd_cluster=""
for i in 1 2 3; do
    etcd_cluster+="${etcd_cluster:+,}e$i=http://127.0.0.1:$((etcd_port + 2 + i))"
done
# Defaults allow 128 operations and 1.5 MiB per request; raise them only if the load needs it.
# The 8 GiB backend quota (etcd's suggested maximum; default 2 GiB) keeps long runs from
# raising the NOSPACE alarm; it changes no write path.
etcd_limits=(--quota-backend-bytes=$((8 * 1024 * 1024 * 1024)))
if ((max_k > 128)); then etcd_limits+=(--max-txn-ops="$max_k"); fi
request_bytes=$((max_k * (size + 64) + 4096))
if ((request_bytes > 1572864)); then etcd_limits+=(--max-request-bytes="$request_bytes"); fi

log "etcd $etcd_version: 3 members on $etcd_endpoints, data in $work/etcd ($fs_type)"
for i in 1 2 3; do
    client_url=http://127.0.0.1:$((etcd_port + i - 1))
    peer_url=http://127.0.0.1:$((etcd_port + 2 + i))
    etcd --name "e$i" --data-dir "$work/etcd/e$i" --logger zap \
        --listen-client-urls "$client_url" --advertise-client-urls "$client_url" \
        --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
        --initial-cluster "$etcd_cluster" --initial-cluster-state new \
        --initial-cluster-token "ordo-compare-$$" "${etcd_limits[@]}" \
        >"$work/logs/etcd-$i.log" 2>&1 &
    pids+=($!)
done
etcd_load_run() { # C K DURATION
    "$etcd_load" --endpoints "$etcd_endpoints" --connections "$etcd_connections" \
        --target "$etcd_target" --clients "$1" --batch "$2" --size "$size" --duration "$3" --json
}
etcd_lock_run() { # C LOAD DURATION
    "$etcd_load" --endpoints "$etcd_endpoints" --connections "$etcd_connections" \
        --target "$etcd_target" --clients "$1" --lock "$2" --duration "$3" --json
}
# etcd-load waits for a leader (up to 30 s) before the warm-up starts.
measure etcd etcd_load_run etcd_lock_run
rm -rf "$work/etcd"

# --- Ordo ---------------------------------------------------------------------------------------

ordo_endpoints=127.0.0.1:$ordo_port,127.0.0.1:$((ordo_port + 1)),127.0.0.1:$((ordo_port + 2))
ordo_peers=1=127.0.0.1:$ordo_port,2=127.0.0.1:$((ordo_port + 1)),3=127.0.0.1:$((ordo_port + 2))
tls=$work/ordo/tls
ordo_revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
"$ordo" certs --dir "$tls" --nodes 3 --clients cli >/dev/null
log "ordo $ordo_revision: 3 nodes on $ordo_endpoints, data in $work/ordo ($fs_type)"
for id in 1 2 3; do
    "$ordo" serve --id "$id" --listen "127.0.0.1:$((ordo_port + id - 1))" --peers "$ordo_peers" \
        --data-dir "$work/ordo/node-$id" --tls-dir "$tls" >"$work/logs/ordo-$id.log" 2>&1 &
    pids+=($!)
done
deadline=$((SECONDS + 30))
until "$ordo" status --endpoints "$ordo_endpoints" --tls-dir "$tls" --json 2>/dev/null |
    grep -q '"role":"leader"'; do
    all_alive || die "an Ordo node exited"
    ((SECONDS < deadline)) || die "no Ordo leader within 30 s"
    sleep 0.2
done
ordo_bench_run() { # C K DURATION
    "$ordo" bench --endpoints "$ordo_endpoints" --tls-dir "$tls" \
        --clients "$1" --batch "$2" --size "$size" --duration "$3" --json
}
ordo_lock_run() { # C LOAD DURATION
    "$ordo" bench --endpoints "$ordo_endpoints" --tls-dir "$tls" \
        --clients "$1" --lock "$2" --duration "$3" --json
}
measure ordo ordo_bench_run ordo_lock_run

# --- the table ----------------------------------------------------------------------------------

kc_cell() { cell "$1-$2-$3" "$4" "$5"; } # SYSTEM K C FIELD FORMAT
ratio() { # K C [FIELD]
    local e o field=${3:-batches_per_second}
    e=$(kc_cell etcd "$1" "$2" "$field" %.6f)
    o=$(kc_cell ordo "$1" "$2" "$field" %.6f)
    awk -v e="$e" -v o="$o" 'BEGIN { if (e + 0 > 0 && o != "failed") printf "%.2f", o / e; else printf "-" }'
}
table=$(
    echo "Ordo beside etcd, $(date -u '+%Y-%m-%d %H:%M UTC'), each run $duration, messages of $size B"
    echo
    echo "- hardware: $(hardware)"
    echo "- etcd $etcd_version: 3 members, default fsync; load: bench/etcd-load, one Txn of K puts per batch, $etcd_connections HTTP/2 connections to the $etcd_target"
    echo "- Ordo $ordo_revision: 3 \`ordo serve\` nodes; load: \`ordo bench\`"
    echo
    echo "| K | C | etcd batches/s | etcd msgs/s | etcd p50 ms | etcd p99 ms | Ordo batches/s | Ordo msgs/s | Ordo p50 ms | Ordo p99 ms | Ordo/etcd batches/s | errors etcd/Ordo |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for k in $batches; do
        for c in $clients; do
            echo "| $k | $c | $(kc_cell etcd "$k" "$c" batches_per_second %.0f) | $(kc_cell etcd "$k" "$c" messages_per_second %.0f) | $(kc_cell etcd "$k" "$c" latency_ms_p50 %.2f) | $(kc_cell etcd "$k" "$c" latency_ms_p99 %.2f) | $(kc_cell ordo "$k" "$c" batches_per_second %.0f) | $(kc_cell ordo "$k" "$c" messages_per_second %.0f) | $(kc_cell ordo "$k" "$c" latency_ms_p50 %.2f) | $(kc_cell ordo "$k" "$c" latency_ms_p99 %.2f) | $(ratio "$k" "$c") | $(kc_cell etcd "$k" "$c" errors %d)/$(kc_cell ordo "$k" "$c" errors %d) |"
        done
    done
    echo
    echo "Cost per message, all three servers together (the load generator not counted): CPU time (user + system) and bytes they wrote to storage (\`/proc/PID/io\` write_bytes, which counts what reaches the page cache for writing: the WAL or log, the B-trees, their free-page churn)."
    echo
    echo "| K | C | etcd CPU µs/msg | Ordo CPU µs/msg | etcd disk B/msg | Ordo disk B/msg |"
    echo "|---|---|---|---|---|---|"
    for k in $batches; do
        for c in $clients; do
            echo "| $k | $c | $(kc_cell etcd "$k" "$c" server_cpu_us_per_message %.1f) | $(kc_cell ordo "$k" "$c" server_cpu_us_per_message %.1f) | $(kc_cell etcd "$k" "$c" disk_bytes_per_message %.0f) | $(kc_cell ordo "$k" "$c" disk_bytes_per_message %.0f) |"
        done
    done
    if [[ -n $lock_clients ]]; then
        echo
        echo 'Locks: acquire + release, over and over; latency is one acquire + release (for contended runs, mostly the wait for its turn). etcd: the clientv3/concurrency.Mutex recipe (Txn, watch of the predecessor, Get; Delete) with a lease per client. Ordo: a session per client, `Session::lock`, `LockGuard::release`.'
        echo
        echo "| lock | C | etcd acquisitions/s | etcd p50 ms | etcd p99 ms | Ordo acquisitions/s | Ordo p50 ms | Ordo p99 ms | Ordo/etcd acquisitions/s | errors etcd/Ordo |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        for c in $lock_clients; do
            echo "| $(lock_load "$c") | $c | $(kc_cell etcd lock "$c" acquisitions_per_second %.0f) | $(kc_cell etcd lock "$c" latency_ms_p50 %.2f) | $(kc_cell etcd lock "$c" latency_ms_p99 %.2f) | $(kc_cell ordo lock "$c" acquisitions_per_second %.0f) | $(kc_cell ordo lock "$c" latency_ms_p50 %.2f) | $(kc_cell ordo lock "$c" latency_ms_p99 %.2f) | $(ratio lock "$c" acquisitions_per_second) | $(kc_cell etcd lock "$c" errors %d)/$(kc_cell ordo lock "$c" errors %d) |"
        done
    fi
)
echo "$table"
if [[ -n $output ]]; then
    echo "$table" >"$output"
    log "table written to $output"
fi
