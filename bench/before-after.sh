#!/bin/bash
# Throughput of two `ordo` builds, interleaved so that both see the same machine noise:
#   bench/before-after.sh OLD_BINARY NEW_BINARY [ROUNDS=6] [SECONDS=30]
# Each round starts a fresh `ordo dev` cluster per binary and runs `ordo bench` with 64 clients,
# 10 messages per batch and then 1, printing one JSON line per run prefixed by old/new; the
# medians are printed at the end. OLD_ENV and NEW_ENV add environment variables to each side's
# nodes, so one binary can be compared with itself under two configurations, e.g. the cost of
# metrics:
#   OLD_ENV=ORDO_HTTP_METRICS=false bench/before-after.sh target/release/ordo target/release/ordo
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${3:-6} SECONDS_PER_RUN=${4:-30}
PORT=${ORDO_BENCH_BASE_PORT:-17101}
OUT=$(mktemp /tmp/ordo-before-after-XXXX.txt)
run() {
    local bin=$1 label=$2 settings=$3 dir
    dir=$(mktemp -d /tmp/ordo-before-after-XXXX)
    # shellcheck disable=SC2086 # the settings are NAME=VALUE words
    env $settings "$bin" dev --dir "$dir/dev" --base-port "$PORT" >"$dir/dev.log" 2>&1 &
    local dev=$!
    sleep 4
    local endpoints="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
    for batch in 10 1; do
        "$bin" bench --endpoints "$endpoints" --tls-dir "$dir/dev/tls" --clients 64 \
            --batch "$batch" --size 128 --duration "${SECONDS_PER_RUN}s" --json 2>/dev/null |
            tail -1 | sed "s/^/$label $batch /" | tee -a "$OUT"
    done
    kill -INT "$dev"
    wait "$dev" 2>/dev/null || true
    rm -rf "$dir"
}
for _ in $(seq 1 "$ROUNDS"); do
    run "$OLD" old "${OLD_ENV:-}"
    run "$NEW" new "${NEW_ENV:-}"
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, batch, body = line.split(" ", 2)
    runs.setdefault((label, int(batch)), []).append(json.loads(body)["batches_per_second"])
for batch in (10, 1):
    old, new = runs.get(("old", batch), []), runs.get(("new", batch), [])
    if old and new:
        a, b = statistics.median(old), statistics.median(new)
        print(f"64 x {batch}: median {a:,.0f} -> {b:,.0f} batches/s ({(b - a) / a:+.1%}), {len(old)} rounds")
PY
