#!/usr/bin/env bash
# Runs every check and test of the workspace. This is the README's test
# command and what CI (.ci/run) calls; it installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> tools"
KUBECHAT_KUBECTL=$(bash scripts/install-kubectl.sh)
export KUBECHAT_KUBECTL
"$KUBECHAT_KUBECTL" version --client
KUBECHAT_TEST_POSTGRES_URL=$(bash scripts/postgres.sh)
export KUBECHAT_TEST_POSTGRES_URL
KUBECHAT_TINYPROXY=$(bash scripts/install-tinyproxy.sh)
export KUBECHAT_TINYPROXY
KUBECHAT_HELM_PY=$(bash scripts/install-helm.sh)
export KUBECHAT_HELM_PY

echo "==> formatting"
cargo fmt --all -- --check

echo "==> lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> fuzz targets compile (the README says how to run them)"
# Their own lock file and crate, outside the workspace; the workspace's
# target directory, so the dependencies clippy just built are reused.
cargo check --manifest-path fuzz/Cargo.toml --locked --bins --target-dir "${CARGO_TARGET_DIR:-target}"

echo "==> dev stack smoke test (the README's first command)"
bash scripts/dev-smoke.sh

echo "==> tests"
cargo test --workspace --all-targets --locked
