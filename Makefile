# The documented entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
BUF := $(shell command -v buf 2>/dev/null || echo .tools/node_modules/.bin/buf)

.PHONY: all deps build lint deploy-check test demo bench chaos

all: test

# Debian packages (MariaDB, Redis), buf and cargo-nextest; installs them as root, else prints the command.
deps:
	@scripts/ensure-deps.sh

build:
	cargo build --workspace --bins

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BUF) lint

# deploy/: Dockerfile, compose and Kubernetes manifests checked offline against the built binaries.
deploy-check: deps build
	scripts/validate-deploy.sh

# Everything: formatting, clippy, buf lint, deploy/ validation, then every test against a private
# MariaDB 10.11 and Redis, then the end-to-end tests again against a private MySQL 9.7
# (`both_servers.rs` runs each of its bodies on both and `mysql_only.rs` on private MySQL
# servers, so neither is repeated; tests named `…_two_connections` drive MariaDB's
# two-connection cut-over step by step, which MySQL does not run: it swaps in one session).
test: lint build deploy-check
	cargo nextest run --workspace
	SHOAL_TEST_SERVER=mysql cargo nextest run -p shoal-tests -E 'not (binary(both_servers) | binary(mysql_only) | test(/_two_connections$$/))'

# A fleet end to end on private servers: MariaDB, Redis, a coordinator and two workers.
# SERVER=mysql: on a private MySQL 9.7 instead of MariaDB.
SERVER ?= mariadb
demo: deps build
	SHOAL_DEMO_SERVER=$(SERVER) cargo run --quiet -p shoal-tests --bin shoal-demo

# shoal vs the server's own copy and pt-online-schema-change, side by side (release build).
# A full run rewrites the generated part of docs/benchmarks.md.
# BENCH_ARGS: --rows N, --reps R, --skip-ptosc, --skip-sysbench, --skip-perf, --quick,
# --rss-rows A,B, --only-rss, --no-docs, --only-throttle, --throttle-chunk-time T,
# --latency-factor F, --nice-ratio R.
bench: deps
	@missing=""; for tool in pt-online-schema-change:percona-toolkit sysbench:sysbench perf:linux-perf; do \
	  command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -eq 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	  else echo "bench: install$$missing (apt-get) to include every case"; fi; fi
	cargo build --release --workspace --bins
	SHOAL_BIN_DIR=target/release target/release/shoal-bench $(BENCH_ARGS)

# A seeded fault campaign on private servers (docs/reliability.md). SEED, RUNS, FAULTS, ROWS;
# SERVER=mysql for MySQL 9.7.
SEED ?= 1
RUNS ?= 10
FAULTS ?= 5
ROWS ?= 200000
chaos: deps build
	cargo run --quiet -p shoal-tests --bin shoal-chaos -- --seed $(SEED) --runs $(RUNS) --faults $(FAULTS) --rows $(ROWS) --server $(SERVER)
