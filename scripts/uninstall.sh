#!/usr/bin/env bash
# Remove edge-agent from an edge box (run as root). See docs/INSTALL.md.
#
#   uninstall.sh            stop and disable the service, remove the program
#                           (/opt/edge-agent, the unit, /usr/local/bin/edge-agent);
#                           keep /etc/edge-agent (config) and /var/lib/edge-agent (buffer)
#   uninstall.sh --purge    also remove the config, the buffer (unpublished data is lost)
#                           and the edge-agent system user
#   uninstall.sh --root DIR the same inside a throw-away root made by install.sh --root
set -euo pipefail

ROOT=""
PURGE=no
USER_NAME=edge-agent

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
say() { echo "uninstall: $*"; }
die() { echo "uninstall: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$(realpath -m "${2:?--root needs a directory}"); shift 2 ;;
    --purge) PURGE=yes; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then die "run as root"; fi

UNIT=$ROOT/etc/systemd/system/edge-agent.service
systemd_here() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

if systemd_here; then
  # Stopping flushes the buffer and publishes what it can within a few seconds.
  systemctl disable --now --quiet edge-agent 2>/dev/null || true
fi
rm -f "$UNIT"
rm -rf "$ROOT/etc/systemd/system/edge-agent.service.d"
systemd_here && systemctl daemon-reload

link=$ROOT/usr/local/bin/edge-agent
if [ -L "$link" ] && [[ "$(readlink "$link")" == */opt/edge-agent/* ]]; then rm -f "$link"; fi
rm -rf "$ROOT/opt/edge-agent"
say "removed the program, the unit and $link"

if [ "$PURGE" = yes ]; then
  rm -rf "$ROOT/etc/edge-agent" "$ROOT/var/lib/edge-agent" "$ROOT/run/edge-agent"
  say "purged $ROOT/etc/edge-agent and $ROOT/var/lib/edge-agent (buffer)"
  if [ -z "$ROOT" ] && id -u "$USER_NAME" >/dev/null 2>&1; then
    userdel "$USER_NAME" 2>/dev/null || say "could not remove user $USER_NAME"
    getent group "$USER_NAME" >/dev/null && groupdel "$USER_NAME" 2>/dev/null || true
    say "removed system user $USER_NAME"
  fi
else
  say "kept $ROOT/etc/edge-agent (config) and $ROOT/var/lib/edge-agent (buffer); --purge removes them"
fi
