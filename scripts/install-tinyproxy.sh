#!/usr/bin/env bash
# Installs tinyproxy (Debian's package) if missing and prints its path: the
# real HTTPS proxy (CONNECT) the WebSocket-fallback tests go through. Tests
# start their own instance on a free port; the system service is not used.
set -euo pipefail
if ! command -v tinyproxy > /dev/null; then
  echo "installing tinyproxy from Debian's packages" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy >&2
  # The package starts a system instance; the tests run their own.
  (service tinyproxy stop || pkill -x tinyproxy || true) > /dev/null 2>&1
fi
command -v tinyproxy
