#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on Debian, or prints the exact command when not
# run as root. Idempotent: does nothing when everything is present.
#   - mariadb-server, mariadb-client: the private test server (mariadbd, mariadb-install-db)
#   - redis-server: the private Redis
#   - bsdutils (`script`): the pseudo-terminal of the `shoal watch` test
#   - python3-venv: scripts/validate-deploy.sh installs its validators from PyPI into a venv
#   - buf (npm @bufbuild/buf, into .tools/): proto lint
#   - cargo-nextest: the test runner
# protoc is not needed: shoal-proto builds with the vendored protoc (protoc-bin-vendored).
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

packages=()
have mariadbd || packages+=(mariadb-server)
have mariadb-install-db || packages+=(mariadb-server)
have mariadb || packages+=(mariadb-client)
have redis-server || packages+=(redis-server)
have npm || packages+=(npm)
have script || packages+=(bsdutils)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)

if [ ${#packages[@]} -gt 0 ]; then
  # shellcheck disable=SC2207
  packages=($(printf '%s\n' "${packages[@]}" | sort -u))
  command="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    echo "ensure-deps: installing ${packages[*]}"
    sh -c "$command"
  else
    echo "ensure-deps: missing Debian packages: ${packages[*]}. Run:" >&2
    echo "  sudo sh -c '$command'" >&2
    exit 1
  fi
fi

if ! have buf && [ ! -x .tools/node_modules/.bin/buf ]; then
  echo "ensure-deps: installing buf from npm into .tools/"
  mkdir -p .tools
  (cd .tools && npm install --silent --no-audit --no-fund @bufbuild/buf@1)
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "ensure-deps: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
