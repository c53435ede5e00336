#!/usr/bin/env bash
# Make an offline install bundle (a USB stick for a box without internet). See docs/INSTALL.md.
#
#   download-wheels.sh DIR                       for boxes like this machine (same CPU, Python)
#   download-wheels.sh DIR --platform manylinux2014_aarch64 --python-version 3.11
#                                                for another box: binary wheels only
#
# DIR gets the package and every dependency as wheels in DIR/wheels, plus the
# installer, the systemd unit, profiles, examples and docs in the checkout's
# layout. On the box:  sudo DIR/scripts/install.sh   (it finds DIR/wheels itself).
# Compiled dependencies (pydantic-core, orjson, cryptography) are built for one
# CPU and Python version: the box's Python minor version must match.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
DEST=""
PLATFORM=""
PYVER=""

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
say() { echo "download-wheels: $*"; }
die() { echo "download-wheels: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --platform) PLATFORM=${2:?--platform needs a tag}; shift 2 ;;
    --python-version) PYVER=${2:?--python-version needs X.Y}; shift 2 ;;
    --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) [ -z "$DEST" ] || die "one destination only"; DEST=$1; shift ;;
  esac
done
[ -n "$DEST" ] || { usage >&2; exit 2; }
[ -f "$SRC/pyproject.toml" ] || die "run it from a checkout ($SRC has no pyproject.toml)"
mkdir -p "$DEST/wheels"
DEST=$(realpath "$DEST")
export PIP_DISABLE_PIP_VERSION_CHECK=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip)

# The package itself, built from a copy so the checkout stays clean.
tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./data \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
  --exclude=.mypy_cache --exclude=.ruff_cache -cf - . | (mkdir "$work/src" && tar -C "$work/src" -xf -)
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$DEST/wheels" "$work/src"
wheel=$(ls -t "$DEST"/wheels/edge_agent-*.whl | head -1)
say "built $(basename "$wheel")"

# Its dependencies.
if [ -n "$PLATFORM" ] || [ -n "$PYVER" ]; then
  target=(--only-binary=:all: --implementation cp)
  [ -n "$PLATFORM" ] && target+=(--platform "$PLATFORM")
  [ -n "$PYVER" ] && target+=(--python-version "$PYVER")
  "${pip[@]}" download --quiet "${target[@]}" --dest "$DEST/wheels" \
    --find-links "$DEST/wheels" "$wheel"
else
  # pip wheel also turns any source-only dependency into a wheel, so the box needs no compiler.
  "${pip[@]}" wheel --quiet --wheel-dir "$DEST/wheels" --find-links "$DEST/wheels" "$wheel"
fi

# What install.sh needs next to the wheels, in the checkout's layout.
mkdir -p "$DEST/scripts" "$DEST/systemd" "$DEST/config" "$DEST/docs"
cp -p "$SRC/scripts/install.sh" "$SRC/scripts/uninstall.sh" "$DEST/scripts/"
cp -p "$SRC/systemd/edge-agent.service" "$DEST/systemd/"
rm -rf "$DEST/config/profiles" "$DEST/config/examples"
cp -rp "$SRC/config/profiles" "$SRC/config/examples" "$DEST/config/"
[ -f "$SRC/docs/INSTALL.md" ] && cp -p "$SRC/docs/INSTALL.md" "$DEST/docs/"
say "$(find "$DEST/wheels" -name '*.whl' | wc -l) wheels in $DEST/wheels"
say "on the box: sudo $DEST/scripts/install.sh"
