# The documented entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
BUF := $(shell command -v buf 2>/dev/null || echo .tools/node_modules/.bin/buf)

.PHONY: all deps build lint test demo

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

# Everything: formatting, clippy, buf lint, then every test against private MariaDB and Redis.
test: lint build
	cargo nextest run --workspace

# A fleet end to end on private servers: MariaDB, Redis, a coordinator and two workers.
demo: deps build
	cargo run --quiet -p shoal-tests --bin shoal-demo
