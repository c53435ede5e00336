#!/usr/bin/env bash
# Prepare a checkout on a fresh Debian machine: system tools the demo and the
# tests use (mosquitto, socat), a virtualenv in .venv, the package with its
# test and demo extras. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)   # checks the unit file in tests
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)   # Tahu's JS decoder in tests
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)   # the power-loss model in tests/faults
# the broker interop tests (tests/faults/test_f22_brokers.py) start private instances of these
[ -x /usr/sbin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
[ -e /usr/lib/"$(uname -m)"-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(faketime)   # F21: a clock that steps
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "setup: python3 -m venv failed: apt-get install python3-venv" >&2; exit 1; }
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev,demo]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

# Tahu's JavaScript decoder for the Sparkplug tests, pinned by its lock file. Installed
# here, once, so that test workers never run npm side by side; a failed try is retried.
js=tests/support/js
if [ ! -d "$js/node_modules/sparkplug-payload" ]; then
  for try in 1 2 3; do
    rm -rf "$js/node_modules"
    npm ci --prefix "$js" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null && break
    echo "setup: npm ci in $js failed (try $try of 3)" >&2
    [ "$try" -eq 3 ] && exit 1
    sleep 2
  done
fi
