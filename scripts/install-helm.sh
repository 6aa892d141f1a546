#!/usr/bin/env bash
# Installs the real Helm library for Python (PyPI helm-sdkpy, which bundles
# Helm v4) into .tools/ and prints the directory to put on PYTHONPATH. It
# declares a newer Python than Debian's, hence --ignore-requires-python.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.1.32
DIR=".tools/helm-sdkpy-$VERSION"
if [ ! -d "$DIR/helm_sdkpy" ]; then
  TMP="$DIR.$$"
  python3 -m pip install --quiet --disable-pip-version-check --ignore-requires-python --target "$TMP" "helm-sdkpy==$VERSION" >&2
  mv "$TMP" "$DIR" 2>/dev/null || rm -rf "$TMP"
fi
echo "$PWD/$DIR"
