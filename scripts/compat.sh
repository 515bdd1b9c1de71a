#!/usr/bin/env bash
# `make compat`: the tikv-client 0.4.0 crate's own integration tests
# (tests/integration_tests.rs), unmodified, against a freshly started Atoll
# cluster (PD + 3 stores, API V2, tiny regions). The crate is copied from
# the cargo registry (the workspace depends on it, so `make build` put it
# there) and built in its own target dir. Extra arguments go to the test
# binary (e.g. a test name filter).
set -euo pipefail
BIN=${BIN:?BIN must name the release dir}
TARGET=${CARGO_TARGET_DIR:?}
WORK="$TARGET/compat"
CRATE=tikv-client-0.4.0
# tests/integration_tests.rs of that crate: 6 raw_* and 21 txn_* tests.
SUITE_TESTS=27
REGISTRY=${CARGO_HOME:-$HOME/.cargo}/registry

src=$(ls -d "$REGISTRY"/src/*/"$CRATE" 2>/dev/null | head -n 1 || true)
if [ -z "$src" ]; then
    archive=$(ls "$REGISTRY"/cache/*/"$CRATE".crate 2>/dev/null | head -n 1 || true)
    [ -n "$archive" ] || { echo "compat: $CRATE is not in the cargo registry; run make build first" >&2; exit 1; }
    mkdir -p "$WORK/unpacked" && tar -xzf "$archive" -C "$WORK/unpacked"
    src="$WORK/unpacked/$CRATE"
fi
rm -rf "$WORK/crate" "$WORK/cluster"
mkdir -p "$WORK/cluster/logs"
cp -r "$src" "$WORK/crate"
# The crate pins a toolchain for its own CI; build with ours.
rm -f "$WORK/crate/rust-toolchain.toml" "$WORK/crate/rust-toolchain"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PD_PORT=$(port)
PD_STATUS=$(port)
pids=()
status=()
stop() {
    # Each store's metrics as the suite left them (errors by request type).
    for i in "${!status[@]}"; do
        curl -s "http://${status[$i]}/metrics" >"$WORK/cluster/logs/store$((i + 1)).metrics" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop EXIT

"$BIN/atoll-pd" --client-addr "127.0.0.1:$PD_PORT" --status-addr "127.0.0.1:$PD_STATUS" \
    --data-dir "$WORK/cluster/pd" >"$WORK/cluster/logs/pd.log" 2>&1 &
pids+=($!)
sleep 0.5
for i in 1 2 3; do
    status+=("127.0.0.1:$(port)")
    "$BIN/atoll-server" --config etc/compat-store.toml \
        --addr "127.0.0.1:$(port)" --status-addr "${status[-1]}" \
        --data-dir "$WORK/cluster/store$i" --pd "127.0.0.1:$PD_PORT" \
        >"$WORK/cluster/logs/store$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 120); do
    "$BIN/atoll-ctl" --pd "127.0.0.1:$PD_PORT" put __compat_ready 1 >/dev/null 2>&1 && break
    sleep 0.5
done
"$BIN/atoll-ctl" --pd "127.0.0.1:$PD_PORT" delete __compat_ready >/dev/null

cd "$WORK/crate"
echo "compat: tikv-client $CRATE integration tests against PD 127.0.0.1:$PD_PORT (logs: $WORK/cluster/logs)"
PD_ADDRS="127.0.0.1:$PD_PORT" MULTI_REGION=1 CARGO_TARGET_DIR="$TARGET/compat-target" \
    cargo test --features integration-tests --test integration_tests -- --test-threads 1 "$@" \
    2>&1 | tee "$WORK/cluster/logs/suite.log"
# Unfiltered, every test of the suite must have run and passed.
if [ $# -eq 0 ] && ! grep -q "^test result: ok. $SUITE_TESTS passed; 0 failed" "$WORK/cluster/logs/suite.log"; then
    echo "compat: expected all $SUITE_TESTS tests of the suite to pass" >&2
    exit 1
fi
