#!/usr/bin/env bash
# Make sure the system programs livefeat's make targets need are present.
# Usage: scripts/system-deps.sh [python] [redis] [java] [prometheus] [kubectl] [chromium] [loadgen]   (default: python)
# Missing Debian packages are installed with apt-get when running as root;
# otherwise the script names what is missing and exits non-zero.
set -euo pipefail

want=("${@:-python}")
missing=()
unavailable=()  # needed, but no Debian 12 package provides it

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
    prometheus)
      # promtool (rule checks and unit tests) and the server (tests/deploy scrape test).
      # The package may try to start its own service on :9090; the tests never use it.
      { command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need_pkg prometheus
      ;;
    chromium)
      # Headless browser for the report and console tests (driven by Playwright; never downloaded).
      command -v chromium >/dev/null || need_pkg chromium
      ;;
    java)
      # Spark (make pipeline, tests/pipeline/): a Java 17 runtime.
      java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
      [ "${java_major:-0}" -ge 17 ] 2>/dev/null || need_pkg openjdk-17-jre-headless
      ;;
    loadgen)
      # The compiled load generator of the benchmarks (loadtest/native/loadgen.cc).
      command -v g++ >/dev/null || need_pkg g++
      command -v pkg-config >/dev/null || need_pkg pkg-config
      pkg-config --exists grpc++ 2>/dev/null || need_pkg libgrpc++-dev
      pkg-config --exists libnghttp2 2>/dev/null || need_pkg libnghttp2-dev
      ;;
    kubectl)
      command -v kubectl >/dev/null || unavailable+=("kubectl (renders deploy/ with 'kubectl kustomize'): Debian 12 has no package for it; install it from the Kubernetes project's own apt repository or its release binary, then run this again")
      ;;
    *) echo "system-deps.sh: unknown component '$what'" >&2; exit 2 ;;
  esac
done

report_unavailable() {
  if [ ${#unavailable[@]} -gt 0 ]; then
    printf 'missing, and not installable with apt-get: %s\n' "${unavailable[@]}" >&2
    exit 1
  fi
}

if [ ${#missing[@]} -eq 0 ]; then report_unavailable; exit 0; fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing missing system packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  report_unavailable
else
  echo "missing system packages: ${missing[*]} (install them with: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
