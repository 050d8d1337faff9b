#!/usr/bin/env bash
# Idempotent install: the project's virtualenv (Airflow 3.3 + google provider) and the BigQuery
# emulator's own virtualenv, each re-installed only when its requirement files change.
# Needs nothing but Python 3.11 and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"

install_venv() {  # venv_dir requirements constraints [file the requirements include]
  local venv="$1" req="$2" con="$3" included="${4:-}"
  local stamp="$venv/.installed-$(cat "$req" "$con" ${included:+"$included"} | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ]; then return 0; fi
  echo "installing $venv from $req (pinned by $con)..."
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$req" -c "$con"
  rm -f "$venv"/.installed-*
  touch "$stamp"
}

install_venv .venv requirements-dev.txt constraints.txt requirements.txt
install_venv .venv-bq requirements-bqemulator.txt constraints-bqemulator.txt

# docker-compose.yaml is validated by a compose client in the tests (no Docker engine needed).
if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing docker-compose (Debian) to validate docker-compose.yaml..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  else
    echo "warning: docker-compose not found; the compose validation test will fail" >&2
  fi
fi

# The CeleryExecutor stack (CP_EXECUTOR=CeleryExecutor, and its end-to-end test) runs its own Redis.
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian) for the CeleryExecutor stack..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "warning: redis-server not found; the CeleryExecutor stack needs it (or CP_REDIS_URL)" >&2
  fi
fi

# The fleet page's browser test drives Debian's Chromium with Playwright (no browser download).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian) for the fleet page's browser test..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium not found; the fleet page's browser test will fail" >&2
  fi
fi
