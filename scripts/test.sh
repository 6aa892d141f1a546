#!/usr/bin/env bash
# Runs every check and test of the workspace. This is the README's test
# command and what CI (.ci/run) calls; it installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> formatting"
cargo fmt --all -- --check

echo "==> lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> tests"
cargo test --workspace --all-targets --locked
