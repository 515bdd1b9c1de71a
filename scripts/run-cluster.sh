#!/usr/bin/env bash
# Starts a local cluster: one PD and three stores on 127.0.0.1, data under
# ./data. Prints the endpoints; Ctrl-C stops everything cleanly.
set -euo pipefail
BIN=${BIN:-$HOME/.cache/atoll-target/release}
DATA=${DATA:-./data}
mkdir -p "$DATA/logs"
pids=()

stop() {
    echo
    echo "stopping cluster..."
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    echo "stopped; data kept in $DATA"
    exit 0
}
trap stop INT TERM

"$BIN/atoll-pd" --client-addr 127.0.0.1:2379 --status-addr 127.0.0.1:2380 \
    --data-dir "$DATA/pd" >"$DATA/logs/pd.log" 2>&1 &
pids+=($!)
sleep 0.5
for i in 1 2 3; do
    "$BIN/atoll-server" --config etc/dev-store.toml \
        --addr "127.0.0.1:2016$i" --status-addr "127.0.0.1:2018$i" \
        --data-dir "$DATA/store$i" --pd 127.0.0.1:2379 >"$DATA/logs/store$i.log" 2>&1 &
    pids+=($!)
done

echo "waiting for the cluster to become writable..."
for _ in $(seq 1 120); do
    if "$BIN/atoll-ctl" --pd 127.0.0.1:2379 put __atoll_ready 1 >/dev/null 2>&1; then
        break
    fi
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "a process exited; see $DATA/logs"; stop; }
    done
    sleep 0.5
done

cat <<EOT

Atoll is running.
  PD (gRPC, TiKV-compatible):  127.0.0.1:2379   HTTP: http://127.0.0.1:2379/pd/api/v1/regions
  PD status:                   http://127.0.0.1:2380/metrics
  stores (gRPC):               127.0.0.1:20161  127.0.0.1:20162  127.0.0.1:20163
  store status:                http://127.0.0.1:20181/metrics  (20182, 20183)
  logs:                        $DATA/logs/

Try:  $BIN/atoll-ctl put hello world && $BIN/atoll-ctl get hello
      $BIN/atoll-ctl status
Press Ctrl-C to stop.
EOT
wait
