#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on Debian, or prints the exact command when not
# run as root. Idempotent: does nothing when everything is present.
#   - mariadb-server, mariadb-client: the private test server (mariadbd, mariadb-install-db)
#   - redis-server: the private Redis
#   - bsdutils (`script`): the pseudo-terminal of the `shoal watch` test
#   - python3-venv: scripts/validate-deploy.sh installs its validators from PyPI into a venv
#   - buf (npm @bufbuild/buf, into .tools/): proto lint
#   - cargo-nextest: the test runner
#   - MySQL 9.7 (Debian sid mysql-server-core) in a debootstrapped root at $SHOAL_SID_ROOT
#     (default /opt/sid): the tests' second server
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

# MySQL 9.7: Debian 12 has no MySQL server; Debian sid's mysql-server-core runs in a
# debootstrapped root (about a minute and 650 MB the first time), shared with the host's
# network. The tests start private servers in it (tests/src/mysql.rs).
SID_ROOT="${SHOAL_SID_ROOT:-/opt/sid}"
if [ ! -x "$SID_ROOT/usr/sbin/mysqld" ]; then
  mirror=$( (grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
    | grep -v security | head -1 | awk '{print $2}')
  mirror="${mirror:-http://deb.debian.org/debian}"
  command="debootstrap --variant=minbase --include=mysql-server-core,mysql-client,ca-certificates sid $SID_ROOT $mirror"
  if [ "$(id -u)" -eq 0 ]; then
    echo "ensure-deps: installing MySQL 9.7 (Debian sid) into $SID_ROOT"
    have debootstrap || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap)
    $command >/dev/null
  else
    echo "ensure-deps: MySQL 9.7 is missing. Run:" >&2
    echo "  sudo $command" >&2
    exit 1
  fi
fi
# sid moves daily: the suite needs the 9.7 series and says which build it runs (tested here:
# 9.7.4-2). A root from another series fails here, in one line, before any test.
MYSQL_SERIES="9.7"
MYSQL_TESTED="9.7.4-2"
mysql_version=$(chroot "$SID_ROOT" dpkg-query -W -f='${Version}' mysql-server-core 2>/dev/null || echo none)
case "$mysql_version" in
  "$MYSQL_SERIES".*) ;;
  *) echo "ensure-deps: $SID_ROOT holds mysql-server-core $mysql_version, the tests need MySQL $MYSQL_SERIES (tested: $MYSQL_TESTED); remove $SID_ROOT to rebuild it, or point SHOAL_SID_ROOT at another root" >&2
     exit 1 ;;
esac
if ! chroot "$SID_ROOT" /usr/sbin/mysqld --version | grep -q "Ver ${mysql_version%%-*}"; then
  echo "ensure-deps: $SID_ROOT/usr/sbin/mysqld does not report version ${mysql_version%%-*} (dpkg says $mysql_version); remove $SID_ROOT to rebuild it" >&2
  exit 1
fi
if [ "$mysql_version" != "$MYSQL_TESTED" ]; then
  echo "ensure-deps: note: MySQL $mysql_version from Debian sid; last tested by hand with $MYSQL_TESTED"
fi
if ! chroot "$SID_ROOT" id -u mysql >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    chroot "$SID_ROOT" groupadd --system mysql
    chroot "$SID_ROOT" useradd --system --gid mysql --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin mysql
  else
    echo "ensure-deps: the MySQL root $SID_ROOT has no mysql user; run make deps as root" >&2
    exit 1
  fi
fi
