#!/usr/bin/env bash
# Install the Debian packages the tests need, only when a command is missing.
# Usage: ensure-apt.sh PKG...   (the package name is also the command checked, except systemd
# and postgresql, whose server binaries live in /usr/lib/postgresql/<version>/bin, off PATH;
# $PG_ROOT names another folder for that, for tests)
set -euo pipefail
PG_ROOT="${PG_ROOT:-/usr/lib/postgresql}"
missing=()
for pkg in "$@"; do
  cmd="$pkg"
  [ "$pkg" = systemd ] && cmd=systemd-analyze
  if [ "$pkg" = postgresql ]; then
    compgen -G "$PG_ROOT/*/bin/initdb" >/dev/null || missing+=("$pkg")
    continue
  fi
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure-apt: missing ${missing[*]} and not root; install them by hand" >&2; exit 1
  fi
fi
echo "ensure-apt: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
