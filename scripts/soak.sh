#!/usr/bin/env bash
# `make soak`: runs each named test binary of tests/tests/ SOAK_RUNS times
# in a row (already built by `make build`; --workspace keeps make test's
# feature set, so nothing rebuilds), prints one line per test with
# its pass count, keeps the output of every failed run under
# $CARGO_TARGET_DIR/soak/, and exits non-zero if any run failed.
set -uo pipefail
RUNS=${SOAK_RUNS:-10}
OUT="${SOAK_OUT:-${CARGO_TARGET_DIR:?}/soak}"
CARGO=${CARGO:-cargo}
[ "$#" -gt 0 ] || { echo "usage: soak.sh TEST..." >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT"
summary=()
failed=0
for t in "$@"; do
    [ -f "tests/tests/$t.rs" ] || { echo "soak: no test tests/tests/$t.rs" >&2; exit 2; }
    pass=0
    for i in $(seq 1 "$RUNS"); do
        start=$(date +%s)
        if "$CARGO" test --release -q --workspace --test "$t" >"$OUT/$t.$i.log" 2>&1; then
            pass=$((pass + 1))
            rm -f "$OUT/$t.$i.log"
            echo "soak: $t run $i/$RUNS passed ($(( $(date +%s) - start )) s)"
        else
            failed=$((failed + 1))
            echo "soak: $t run $i/$RUNS FAILED ($(( $(date +%s) - start )) s), output in $OUT/$t.$i.log"
        fi
    done
    summary+=("$(printf '%-14s %d/%d passed' "$t" "$pass" "$RUNS")")
done
echo "soak summary ($RUNS runs each):"
printf '  %s\n' "${summary[@]}"
[ "$failed" -eq 0 ]
