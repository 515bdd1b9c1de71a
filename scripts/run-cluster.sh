#!/usr/bin/env bash
# Starts a local cluster: PD and three stores on 127.0.0.1, data under
# ./data. Prints the endpoints; Ctrl-C stops everything cleanly.
#   PD_MEMBERS=1 (default): one PD with its state in $DATA/pd.
#   PD_MEMBERS=3: three PD members (2379, 2479, 2579) over a three-member
#                 etcd cluster (client ports 32379, 32389, 32399).
set -euo pipefail
BIN=${BIN:-$HOME/.cache/atoll-target/release}
DATA=${DATA:-./data}
PD_MEMBERS=${PD_MEMBERS:-1}
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

case $PD_MEMBERS in
1)
    "$BIN/atoll-pd" --client-addr 127.0.0.1:2379 --status-addr 127.0.0.1:2380 \
        --data-dir "$DATA/pd" >"$DATA/logs/pd.log" 2>&1 &
    pids+=($!)
    PD=127.0.0.1:2379
    ;;
3)
    command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
    initial=etcd1=http://127.0.0.1:32380,etcd2=http://127.0.0.1:32390,etcd3=http://127.0.0.1:32400
    for i in 1 2 3; do
        c=$((32379 + (i - 1) * 10)) p=$((32380 + (i - 1) * 10))
        etcd --name "etcd$i" --data-dir "$DATA/etcd$i" \
            --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
            --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --initial-cluster-token atoll-dev >"$DATA/logs/etcd$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        port=$((2279 + i * 100))
        "$BIN/atoll-pd" --name "pd$i" --client-addr "127.0.0.1:$port" \
            --status-addr "127.0.0.1:$((port + 1))" \
            --etcd 127.0.0.1:32379,127.0.0.1:32389,127.0.0.1:32399 \
            >"$DATA/logs/pd$i.log" 2>&1 &
        pids+=($!)
    done
    PD=127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579
    ;;
*)
    echo "PD_MEMBERS must be 1 or 3" >&2
    exit 2
    ;;
esac
sleep 0.5
for i in 1 2 3; do
    "$BIN/atoll-server" --config etc/dev-store.toml \
        --addr "127.0.0.1:2016$i" --status-addr "127.0.0.1:2018$i" \
        --data-dir "$DATA/store$i" --pd "$PD" >"$DATA/logs/store$i.log" 2>&1 &
    pids+=($!)
done

echo "waiting for the cluster to become writable..."
for _ in $(seq 1 120); do
    if "$BIN/atoll-ctl" --pd "$PD" put __atoll_ready 1 >/dev/null 2>&1; then
        break
    fi
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "a process exited; see $DATA/logs"; stop; }
    done
    sleep 0.5
done

cat <<EOT

Atoll is running.
  PD (gRPC, TiKV-compatible):  $PD
  PD HTTP API:                 http://127.0.0.1:2379/pd/api/v1/regions (on the leader; /pd/api/v1/members names it)
  PD status:                   http://127.0.0.1:2380/metrics
  stores (gRPC):               127.0.0.1:20161  127.0.0.1:20162  127.0.0.1:20163
  store status:                http://127.0.0.1:20181/metrics  (20182, 20183)
  logs:                        $DATA/logs/

Try:  $BIN/atoll-ctl --pd $PD put hello world && $BIN/atoll-ctl --pd $PD get hello
      $BIN/atoll-ctl --pd $PD status
Press Ctrl-C to stop.
EOT
wait
