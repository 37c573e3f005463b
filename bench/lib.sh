# Helpers shared by the benchmark scripts (sourced, not run). The sourcing script sets `work`
# (its temporary directory, with logs/ in it) and `keep`, and calls `start_bookkeeping`.

log() { echo "${0##*/}: $*" >&2; }
die() { log "$*"; exit 1; }

# Every argument must be a positive integer (a usage error otherwise).
require_positive() {
    local n
    for n in "$@"; do
        [[ $n =~ ^[1-9][0-9]*$ ]] || { log "$n is not a positive integer"; exit 2; }
    done
}

port_in_use() { # PROTO PORT
    ss -Hln "$1" "sport = :$2" 2>/dev/null | grep -q .
}

# A JSON number field from one line of `--json` output.
field() { sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" <<<"$1"; }

# The machine, in one line: CPUs, memory, the filesystem under `work`, the kernel.
hardware() {
    local cpu memory fs_type fs_device
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    memory=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    fs_type=$(df -PT "$work" | awk 'NR == 2 { print $2 }')
    fs_device=$(df -PT "$work" | awk 'NR == 2 { print $1 }')
    echo "$(nproc) CPUs ($cpu), $memory RAM, data on $fs_type ($fs_device), $(uname -sr)"
}

# Refuses a data directory on a filesystem where fsync costs nothing.
require_disk() { # DIR
    local fs_type
    fs_type=$(df -PT "$1" | awk 'NR == 2 { print $2 }')
    if [[ $fs_type == tmpfs || $fs_type == ramfs ]]; then
        die "$1 is on $fs_type, where fsync costs nothing: choose a data directory on a disk"
    fi
}

# --- process bookkeeping: every server started (its pid in `pids`) is stopped on exit ---------

pids=()
stop_servers() {
    local pid waited
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        waited=0
        while kill -0 "$pid" 2>/dev/null && ((waited < 100)); do sleep 0.1; waited=$((waited + 1)); done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid ignored SIGTERM for 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
on_exit() {
    local status=$?
    trap - EXIT INT TERM
    stop_servers
    if ((status != 0)); then
        for f in "$work"/logs/*.log; do
            [[ -s $f ]] || continue
            echo "--- last lines of $f" >&2
            tail -n 15 "$f" >&2
        done
    fi
    if ((keep)); then
        log "data and logs kept in $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
start_bookkeeping() {
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

all_alive() {
    local pid
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done
}

# What the servers have used so far, summed over them: "CPU_SECONDS BYTES_WRITTEN" (user +
# system time from /proc/PID/stat, bytes sent to the storage layer from /proc/PID/io).
server_usage() {
    local pid ticks=0 written=0 stat
    for pid in "${pids[@]}"; do
        stat=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
        ticks=$((ticks + ${stat% *} + ${stat#* }))
        written=$((written + $(sed -n 's/^write_bytes: //p' "/proc/$pid/io" 2>/dev/null || echo 0)))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v w="$written" 'BEGIN { printf "%.3f %.0f", t / hz, w }'
}

# Runs a load generator printing one `--json` line, adds the servers' CPU and disk bytes per
# message (per acquisition for locks) to it, keeps it as results/NAME.json and logs a summary.
run_load() { # NAME UNIT COMMAND... (UNIT: batches or acquisitions)
    local name=$1 unit=$2 line before after per_message
    shift 2
    before=$(server_usage)
    if line=$("$@" 2>>"$work/logs/load.log" | grep '^{' | tail -n 1) && [[ -n $line ]]; then
        after=$(server_usage)
        per_message=$(awk -v b="$before" -v a="$after" -v rate="$(field "$line" "${unit/batches/messages}_per_second")" \
            -v seconds="$(field "$line" seconds)" 'BEGIN {
                split(b, x, " "); split(a, y, " "); n = rate * seconds
                if (n > 0) printf "\"server_cpu_us_per_message\":%.2f,\"disk_bytes_per_message\":%.1f", (y[1] - x[1]) * 1e6 / n, (y[2] - x[2]) / n
            }')
        if [[ -n $per_message ]]; then line="${line%\}},$per_message}"; fi
        echo "$line" >"$work/results/$name.json"
        log "$(printf '%-22s %8.0f %s/s  p50 %6.2f ms  p99 %6.2f ms  errors %s  CPU %s µs/msg  disk %s B/msg' \
            "$name" "$(field "$line" "${unit}_per_second")" "$unit" \
            "$(field "$line" latency_ms_p50)" "$(field "$line" latency_ms_p99)" "$(field "$line" errors)" \
            "$(field "$line" server_cpu_us_per_message)" "$(field "$line" disk_bytes_per_message)")"
    else
        log "$name: the load generator failed (see logs/load.log)"
    fi
}

# One field of results/NAME.json, formatted, or "failed".
cell() { # NAME FIELD FORMAT
    local file=$work/results/$1.json value
    [[ -f $file ]] && value=$(field "$(<"$file")" "$2") && [[ -n $value ]] || { printf 'failed'; return; }
    awk -v v="$value" -v f="$3" 'BEGIN { printf f, v }'
}
