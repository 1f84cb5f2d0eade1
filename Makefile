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

# Everything: formatting, clippy, buf lint, deploy/ validation, then every test against private
# MariaDB and Redis.
test: lint build deploy-check
	cargo nextest run --workspace

# A fleet end to end on private servers: MariaDB, Redis, a coordinator and two workers.
demo: deps build
	cargo run --quiet -p shoal-tests --bin shoal-demo

# shoal vs the server's own copy and pt-online-schema-change, side by side (release build).
# BENCH_ARGS: --rows N, --reps R, --skip-ptosc, --skip-sysbench, --quick, --rss-rows A,B, --only-rss.
bench: deps
	@command -v pt-online-schema-change >/dev/null || { [ "$$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends percona-toolkit; } || echo "install percona-toolkit to include pt-online-schema-change"
	cargo build --release --workspace --bins
	SHOAL_BIN_DIR=target/release target/release/shoal-bench $(BENCH_ARGS)

# A seeded fault campaign on private servers (docs/reliability.md). SEED, RUNS, FAULTS, ROWS.
SEED ?= 1
RUNS ?= 10
FAULTS ?= 5
ROWS ?= 200000
chaos: deps build
	cargo run --quiet -p shoal-tests --bin shoal-chaos -- --seed $(SEED) --runs $(RUNS) --faults $(FAULTS) --rows $(ROWS)
