#!/usr/bin/env bash
# Make sure the programs the tests start are installed: redis-server, the PostgreSQL server
# (initdb, pg_ctl, postgres) and Debian's Chromium. As root, missing ones are installed with apt-get;
# otherwise this says what to install and fails. Does nothing when everything is present.
set -euo pipefail

have_pg() { # on PATH, or in Debian's versioned directory, which is not on PATH
  local prog
  for prog in initdb pg_ctl postgres; do
    command -v "$prog" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$prog" >/dev/null || return 1
  done
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
have_pg || missing+=(postgresql)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "missing system packages for the tests: ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install -y ${missing[*]}) and run make test again" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages for the tests: ${missing[*]}; no apt-get here, install them with this system's package manager" >&2
  exit 1
fi

echo "installing system packages for the tests: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
