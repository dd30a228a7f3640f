#!/usr/bin/env bash
# Make sure the system programs livefeat's make targets need are present.
# Usage: scripts/system-deps.sh [python] [redis]   (default: python)
# Missing Debian packages are installed with apt-get when running as root;
# otherwise the script names what is missing and exits non-zero.
set -euo pipefail

want=("${@:-python}")
missing=()

need_pkg() { missing+=("$1"); }

for what in "${want[@]}"; do
  case "$what" in
    python)
      if ! command -v python3 >/dev/null; then need_pkg python3; fi
      if command -v python3 >/dev/null && ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "livefeat needs Python >= 3.11; python3 is $(python3 -V 2>&1)" >&2; exit 1
      fi
      if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        need_pkg python3-venv
      fi
      ;;
    redis)
      command -v redis-server >/dev/null || need_pkg redis-server
      command -v redis-cli >/dev/null || need_pkg redis-tools
      ;;
    *) echo "system-deps.sh: unknown component '$what'" >&2; exit 2 ;;
  esac
done

if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing missing system packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "missing system packages: ${missing[*]} (install them with: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
