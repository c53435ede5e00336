#!/usr/bin/env bash
# Install or upgrade edge-agent on an edge box (run as root). See docs/INSTALL.md.
#
#   install.sh                    from this checkout (pip fetches the dependencies)
#   install.sh --wheels DIR       offline, from a wheel folder (scripts/download-wheels.sh)
#   install.sh --site FILE        use FILE as the site file if none is installed yet
#   install.sh --root DIR         into a throw-away root (tests, image builds): every path
#                                 is prefixed with DIR; no user is created, systemctl not run
#
# What it does, each step safe to repeat:
#   - system user edge-agent (group edge-agent, member of dialout)
#   - a fresh virtualenv /opt/edge-agent/venv-<time> with the package; /opt/edge-agent/venv
#     is switched to it only after it installed and validated the site file, so a failed
#     upgrade leaves the running version alone (the previous venv is kept for a rollback)
#   - /usr/local/bin/edge-agent -> /opt/edge-agent/venv/bin/edge-agent
#   - /etc/edge-agent/ (0750 root:edge-agent): site.yaml (0640, from an example only if
#     absent), mqtt-password (0600 root, empty if absent), profiles/
#   - /var/lib/edge-agent/ (0750 edge-agent): the buffer; never touched when it exists
#   - /etc/systemd/system/edge-agent.service; with systemd running: daemon-reload, enable,
#     and restart (an upgrade) or, on a first install, a hint to edit the site file first
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=""
WHEELS=""
SITE=""
PY=${PYTHON:-python3}
USER_NAME=edge-agent

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$(realpath -m "${2:?--root needs a directory}"); shift 2 ;;
    --wheels) WHEELS=$(realpath "${2:?--wheels needs a directory}"); shift 2 ;;
    --site) SITE=$(realpath "${2:?--site needs a file}"); shift 2 ;;
    --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

OPT=$ROOT/opt/edge-agent
ETC=$ROOT/etc/edge-agent
VAR=$ROOT/var/lib/edge-agent
UNIT_DIR=$ROOT/etc/systemd/system
BIN_DIR=$ROOT/usr/local/bin
TEMPLATE=$SRC/config/examples/edge-box.yaml
export PIP_DISABLE_PIP_VERSION_CHECK=1

# A bundle made by download-wheels.sh has no pyproject.toml but a wheels/ folder.
if [ -z "$WHEELS" ] && [ ! -f "$SRC/pyproject.toml" ]; then
  [ -d "$SRC/wheels" ] || die "$SRC is neither a checkout nor a wheel bundle"
  WHEELS=$SRC/wheels
fi

preflight() {
  if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo $0 $*), or use --root DIR for a test install"
  fi
  [ -f "$SRC/systemd/edge-agent.service" ] || die "missing $SRC/systemd/edge-agent.service"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PY is missing or older than Python 3.11 (apt-get install python3 python3-venv)"
  "$PY" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$PY cannot create virtualenvs (apt-get install python3-venv)"
  if [ -n "$SITE" ] && [ ! -f "$SITE" ]; then die "no site file $SITE"; fi
  if [ -n "$WHEELS" ] && ! compgen -G "$WHEELS/edge_agent-*.whl" >/dev/null; then
    die "no edge_agent-*.whl in $WHEELS (make the folder with scripts/download-wheels.sh)"
  fi
}

# owner USER:GROUP for install(1), or nothing in a --root install (no such user there).
own() { [ -z "$ROOT" ] && echo "-o $1 -g $2"; true; }

ensure_user() {
  if [ -n "$ROOT" ]; then
    say "(--root) not creating system user $USER_NAME"
    return
  fi
  getent group dialout >/dev/null || groupadd --system dialout
  if id -u "$USER_NAME" >/dev/null 2>&1; then
    usermod -a -G dialout "$USER_NAME"
  else
    useradd --system --user-group --groups dialout --home-dir /var/lib/edge-agent \
      --no-create-home --shell /usr/sbin/nologin --comment "edge-agent service" "$USER_NAME"
    say "created system user $USER_NAME (groups: $USER_NAME, dialout)"
  fi
}

# Install the package into a new venv; print its path. (Called as `$(build_venv) || die`,
# where bash ignores set -e: every step checks its own status.)
build_venv() {
  local new
  new=$OPT/venv-$(date -u +%Y%m%dT%H%M%S)-$$
  mkdir -p "$OPT"
  if ! fill_venv "$new" >&2; then
    rm -rf "$new"
    return 1
  fi
  echo "$new"
}

fill_venv() {
  "$PY" -m venv "$1" || return 1
  if [ -n "$WHEELS" ]; then
    say "installing from $WHEELS (offline)"
    "$1/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" edge-agent || return 1
  else
    say "installing from $SRC"
    # Build from a copy: an in-tree build would leave build/ and egg-info in the checkout.
    local tmp status=0
    tmp=$(mktemp -d) || return 1
    tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./data \
      --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
      --exclude=.mypy_cache --exclude=.ruff_cache -cf - . | tar -C "$tmp" -xf - || status=1
    [ $status -eq 0 ] && { "$1/bin/python" -m pip install --quiet "$tmp" || status=1; }
    rm -rf "$tmp"
    [ $status -eq 0 ] || return 1
  fi
}

install_config() {
  # shellcheck disable=SC2046 # own prints separate words on purpose
  install -d -m 0750 $(own root "$USER_NAME") "$ETC" "$ETC/profiles"
  if [ ! -e "$ETC/site.yaml" ]; then
    local from=${SITE:-$TEMPLATE}
    # shellcheck disable=SC2046
    install -m 0640 $(own root "$USER_NAME") "$from" "$ETC/site.yaml"
    say "installed $ETC/site.yaml from $from: edit it"
  elif [ -n "$SITE" ] && ! cmp -s "$SITE" "$ETC/site.yaml"; then
    say "kept the existing $ETC/site.yaml (--site $SITE not copied over it)"
  fi
  if [ ! -e "$ETC/mqtt-password" ]; then
    # systemd refuses to start a unit whose LoadCredential= file is missing.
    # shellcheck disable=SC2046
    install -m 0600 $(own root root) /dev/null "$ETC/mqtt-password"
  fi
  # shellcheck disable=SC2046
  install -d -m 0750 $(own "$USER_NAME" "$USER_NAME") "$VAR"
  if [ -d "$SRC/docs" ] && [ -f "$SRC/docs/INSTALL.md" ]; then
    install -m 0644 "$SRC/docs/INSTALL.md" "$OPT/INSTALL.md"
  fi
}

# The new venv must run and accept the site file before it replaces the current one.
check_venv() {
  "$1/bin/edge-agent" --help >/dev/null || die "the new install does not run: $1"
  if ! CREDENTIALS_DIRECTORY=$ETC "$1/bin/edge-agent" validate -c "$ETC/site.yaml" >/dev/null; then
    rm -rf "$1"
    die "the new version refuses $ETC/site.yaml (errors above); nothing was changed"
  fi
}

switch_venv() {
  local new=$1 link=$OPT/venv
  if [ -d "$link" ] && [ ! -L "$link" ]; then
    mv "$link" "$OPT/venv-old-$$" # a plain directory from an earlier layout
  fi
  ln -sfn "$(basename "$new")" "$OPT/venv.tmp"
  mv -T "$OPT/venv.tmp" "$link" # rename(2): atomic, the service never sees no venv
  # Keep the new venv and the newest older one (a rollback target); remove the rest.
  local old
  find "$OPT" -maxdepth 1 -name 'venv-*' -type d ! -path "$new" -printf '%T@ %p\n' \
    | sort -rn | tail -n +2 | cut -d' ' -f2- | while IFS= read -r old; do rm -rf "$old"; done
  mkdir -p "$BIN_DIR"
  ln -sfn "$ROOT/opt/edge-agent/venv/bin/edge-agent" "$BIN_DIR/edge-agent"
}

install_unit() {
  mkdir -p "$UNIT_DIR"
  install -m 0644 "$SRC/systemd/edge-agent.service" "$UNIT_DIR/edge-agent.service"
  if [ -n "$ROOT" ] || [ ! -d /run/systemd/system ]; then
    say "systemd is not running here (or --root): unit installed, not enabled"
    return
  fi
  systemctl daemon-reload
  systemctl enable --quiet edge-agent
  if cmp -s "$ETC/site.yaml" "$TEMPLATE"; then # still the template: nothing to run yet
    say "enabled; edit /etc/edge-agent/site.yaml (and mqtt-password), check it with"
    say "  edge-agent doctor -c /etc/edge-agent/site.yaml"
    say "then start it: systemctl start edge-agent"
  else
    systemctl restart edge-agent
    say "restarted edge-agent; systemctl status edge-agent / journalctl -u edge-agent"
  fi
}

main() {
  preflight "$@"
  ensure_user
  local new
  new=$(build_venv) || die "package install failed; the current install is unchanged"
  install_config
  check_venv "$new"
  switch_venv "$new"
  install_unit
  local version
  version=$("$OPT/venv/bin/python" -I -c 'import agent; print(agent.__version__)')
  say "edge-agent $version installed in $OPT/$(basename "$new")"
}

main "$@"
