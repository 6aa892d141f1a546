#!/usr/bin/env bash
# Installs what the web app's browser tests need and prints the directory of
# the Node test tools: Debian's chromium (the browser), npm's playwright-core
# at a pinned version (the driver; it downloads no browser) and axe-core at a
# pinned version (the accessibility checks run on every page).
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYWRIGHT=1.65.1
AXE=4.14.1
if ! command -v chromium > /dev/null; then
  echo "installing chromium from Debian's packages" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
dir=.tools/ui-node-$PLAYWRIGHT
if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
  echo "installing playwright-core $PLAYWRIGHT from npm" >&2
  mkdir -p "$dir"
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT" >&2)
fi
if ! grep -q "\"version\": \"$AXE\"" "$dir/node_modules/axe-core/package.json" 2> /dev/null; then
  echo "installing axe-core $AXE from npm" >&2
  (cd "$dir" && npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT" "axe-core@$AXE" >&2)
fi
realpath "$dir"
