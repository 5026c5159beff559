#!/usr/bin/env bash
# The whole test suite, as the README's quick start runs it: formatting, lints, then every
# test of the workspace. Installs nothing the Rust toolchain does not already bring.
set -euo pipefail
cd "$(dirname "$0")"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --workspace --release
