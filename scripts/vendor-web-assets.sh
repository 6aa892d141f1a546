#!/usr/bin/env bash
# Refreshes the web app's vendored JavaScript from npm at the pinned
# versions below, into control-plane/assets/vendor/ (embedded in the
# control plane binary: running it needs no Node). Writes SHA256SUMS, which
# a test checks against the embedded files. Run it only to change a version.
set -euo pipefail
cd "$(dirname "$0")/.."
HTMX=2.0.11
HTMX_SSE=2.2.4
out=control-plane/assets/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@$HTMX" "htmx-ext-sse@$HTMX_SSE" >/dev/null)
tar xzf "$work/htmx.org-$HTMX.tgz" -C "$work" package/dist/htmx.min.js package/LICENSE
cp "$work/package/dist/htmx.min.js" "$out/htmx.min.js"
cp "$work/package/LICENSE" "$out/htmx.LICENSE"
rm -rf "$work/package"
tar xzf "$work/htmx-ext-sse-$HTMX_SSE.tgz" -C "$work" package/dist/sse.min.js package/LICENSE
cp "$work/package/dist/sse.min.js" "$out/htmx-ext-sse.min.js"
cp "$work/package/LICENSE" "$out/htmx-ext-sse.LICENSE"
printf 'htmx.org %s\nhtmx-ext-sse %s\n' "$HTMX" "$HTMX_SSE" > "$out/VERSIONS"
(cd "$out" && sha256sum htmx.min.js htmx-ext-sse.min.js > SHA256SUMS)
echo "vendored htmx.org $HTMX and htmx-ext-sse $HTMX_SSE into $out"
