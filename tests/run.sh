#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs the suite.
#   bash tests/run.sh [pytest args]
# Needs redis-server (the suite starts its own on free ports) and Debian's chromium at /usr/bin/chromium
# (the browser tests drive it with Playwright; `playwright install` is never used: no internet here).
# Missing ones are installed with apt when we are root; otherwise one line says how.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "${missing[*]} missing: install (sudo apt-get install ${missing[*]}) and run again" >&2
    exit 1
  fi
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
# Lint and types first (seconds): configured in pyproject.toml, on the runtime packages.
python3 -m ruff check playtotv roles protocol
python3 tests/typecheck.py
exec python3 -m pytest "$@"
