# Atoll build entry points. One cargo profile (release) serves run, test and
# bench, and the target dir persists across clones, so RocksDB's C++ build
# happens once per machine.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO_TARGET_DIR ?= $(HOME)/.cache/atoll-target
export CARGO_TARGET_DIR
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := $(CARGO_TARGET_DIR)/release
# A virtualenv with tikv-python, the pure-Python TiKV client the API V1 test drives.
PYENV := $(CARGO_TARGET_DIR)/pyenv
TIKV_PYTHON_VERSION := 0.1.1

.PHONY: all deps pyenv build test soak lint run bench chaos fuzz compat clean fmt

all: build

# protoc (prost/tonic codegen, raft-rs) and libclang (RocksDB bindings).
deps:
	@if ! command -v protoc >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then \
		echo "installing protobuf-compiler and clang"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq protobuf-compiler clang libclang-dev; \
	fi
	@if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then \
		echo "installing python3 and python3-venv (tikv-python test)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv; \
	fi
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v etcd >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then \
		echo "installing prometheus, etcd-server and openssl (dashboard test, PD groups, TLS test certificates)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus etcd-server openssl; \
	fi

	@if ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then \
		echo "installing nftables and iproute2 (chaos partitions in network namespaces)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2; \
	fi

build: deps
	$(CARGO) build --release --workspace --all-targets

# tikv-python from PyPI, pinned, in a virtualenv kept with the target dir.
pyenv: deps
	@if ! $(PYENV)/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("tikv-python") != "$(TIKV_PYTHON_VERSION)")' >/dev/null 2>&1; then \
		echo "installing tikv-python $(TIKV_PYTHON_VERSION) into $(PYENV)"; \
		rm -rf $(PYENV) && python3 -m venv $(PYENV) && $(PYENV)/bin/pip install -q --disable-pip-version-check tikv-python==$(TIKV_PYTHON_VERSION); \
	fi

# The fuzz targets that also run with overflow checks and debug assertions
# (profile fuzz-checked, its own target dir), and the environment cargo
# builds that profile in (`$(checked-env) VAR=... $(CARGO) ...`): linked
# against the release build's RocksDB, so the C++ is not compiled twice.
CHECKED_TARGETS := txn,kv
CHECKED_BIN := $(CARGO_TARGET_DIR)/fuzz-checked
checked-env = lib=$$(ls -t $(BIN)/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true); \
	[ -n "$$lib" ] || { echo "no librocksdb.a under $(BIN)/build: the release build makes it"; exit 1; }; \
	ROCKSDB_LIB_DIR=$$(dirname $$lib) ROCKSDB_STATIC=1

# Builds the binaries first: the multi-process tests run them. Every test
# binary runs even after one fails (--no-fail-fast), then the saved txn and
# kv fuzz inputs in the checked profile, then the upstream tikv-client
# suite (make compat, all 27 must pass). Ends with one summary line over
# every test binary, failures counted, and fails if anything did.
test: build pyenv
	@rc=0; \
	ATOLL_TEST_PYTHON=$(PYENV)/bin/python $(CARGO) test --release --workspace --no-fail-fast 2>&1 | tee $(CARGO_TARGET_DIR)/test-output.log || rc=1; \
	$(checked-env) ATOLL_FUZZ_CHECKED=1 ATOLL_FUZZ_TARGETS=$(CHECKED_TARGETS) $(CARGO) test --profile fuzz-checked -p atoll-fuzz --no-fail-fast --test regressions --test checked_profile 2>&1 | tee -a $(CARGO_TARGET_DIR)/test-output.log || rc=1; \
	BIN=$(BIN) scripts/compat.sh 2>&1 | tee -a $(CARGO_TARGET_DIR)/test-output.log || rc=1; \
	awk '/^test result:/ { p += $$4; f += $$6 } /^SKIPPED: / { s++ } END { printf "total: %d passed, %d failed, %d SKIPPED\n", p, f, s }' $(CARGO_TARGET_DIR)/test-output.log; \
	exit $$rc

# The multi-process tests, SOAK_RUNS times each, one after another; prints
# a pass count per test and keeps the output of every failed run.
SOAK_RUNS ?= 10
SOAK_TESTS ?= pd_ha pd_failover deploy placement chaos tls txn
soak: build pyenv
	ATOLL_TEST_PYTHON=$(PYENV)/bin/python SOAK_RUNS=$(SOAK_RUNS) scripts/soak.sh $(SOAK_TESTS)

# PD + 3 stores on 127.0.0.1, data under ./data; Ctrl-C stops them cleanly.
# `make run PD_MEMBERS=3`: three PD members over a local three-member etcd.
PD_MEMBERS ?= 1
# The same build as make test's (one feature set), so either after the
# other starts at once.
run: build
	BIN=$(BIN) PD_MEMBERS=$(PD_MEMBERS) scripts/run-cluster.sh

bench: build
	$(BIN)/atoll-bench-engine
	$(BIN)/atoll-bench-regions
	$(BIN)/atoll-bench-ycsb --txn

# Fault injection against a real cluster (PD + 5 stores, each in its own
# network namespace when root) with the linearizability and set checkers
# (long: ~35 s per history). E.g. `make chaos CHAOS_ARGS="--histories 5"`.
CHAOS_ARGS ?= --histories 200
chaos: build
	$(BIN)/atoll-chaos $(CHAOS_ARGS)

# Every fuzz target for FUZZ_SECONDS each, then the txn and kv targets
# again built with overflow checks and debug assertions; a panic saves its
# inputs under fuzz/regressions/<target>/ (commit them: make test replays
# them).
FUZZ_SECONDS ?= 120
FUZZ_ARGS ?=
fuzz: build
	$(BIN)/atoll-fuzz --seconds $(FUZZ_SECONDS) --out $(CURDIR)/fuzz/regressions $(FUZZ_ARGS)
	$(checked-env) $(CARGO) build --profile fuzz-checked -p atoll-fuzz --bin atoll-fuzz
	$(CHECKED_BIN)/atoll-fuzz --seconds $(FUZZ_SECONDS) --out $(CURDIR)/fuzz/regressions --target $(CHECKED_TARGETS) $(FUZZ_ARGS)

# The tikv-client 0.4.0 crate's own integration tests (tests/integration_tests.rs,
# unmodified, copied from the cargo registry) against a fresh cluster
# (scripts/compat.sh). COMPAT_ARGS filters tests, e.g. COMPAT_ARGS=txn_crud.
COMPAT_ARGS ?=
compat: build
	BIN=$(BIN) scripts/compat.sh $(COMPAT_ARGS)

fmt:
	$(CARGO) fmt --all

# Formatting (rustfmt.toml) and clippy with warnings as errors; CI runs it
# before the tests. Shares the release profile, so it reuses the build.
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

clean:
	rm -rf ./data
