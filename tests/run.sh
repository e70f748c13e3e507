#!/usr/bin/env bash
# Runs Dray's whole test suite on a fresh machine: installs what the tests need, then lints,
# builds and tests the workspace. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust: rust-toolchain.toml pins the stable channel with the wasm32-wasip2 target, clippy and
# rustfmt; rustup installs whatever is missing on first use.
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs), then run tests/run.sh again" >&2
  exit 1
fi
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install

# System packages: none yet. When tests start real servers (registry, git daemon, lighttpd),
# this script installs their Debian packages here.

# A build directory outside the clone survives between runs (a fresh machine just starts empty).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dray-target}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests run the real `dray` binary: build it first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
