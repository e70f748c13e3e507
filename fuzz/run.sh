#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets) with cargo-fuzz on the nightly toolchain:
#   fuzz/run.sh SECONDS [TARGET...]     each target for SECONDS (all targets by default)
#   FUZZ_RUNS=10000000 fuzz/run.sh 0    each target for that many executions instead
#   FUZZ_TIMEOUT=60 fuzz/run.sh ...      a longer watchdog for a campaign that shares the machine
# The corpus grows in ~/.cache/dray-fuzz/corpus/TARGET across runs; a crash leaves its input in
# fuzz/artifacts/TARGET/ and fails the run (turn it into a regression test of the crate it hit).
# cargo-fuzz is found on PATH or in ~/.cache/dray-tools/bin (tests/run.sh installs it there).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(manifest gotmpl chart_render yaml yaml_update json_update toml_update kustomize_build
    webhook_payload constraints strvals expressions)
fi
export PATH="$HOME/.cache/dray-tools/bin:$PATH"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz or the nightly toolchain is missing: run tests/run.sh, which installs both" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${DRAY_FUZZ_TARGET_DIR:-$HOME/.cache/dray-fuzz/target}"
corpora="$HOME/.cache/dray-fuzz/corpus"

# kustomize_build's seeds are the kustomize cases of the end-to-end tests, each made a txtar
# archive (a `-- name --` line before each file).
seed_dirs="$HOME/.cache/dray-fuzz/seeds"
rm -rf "$seed_dirs/kustomize_build"
mkdir -p "$seed_dirs/kustomize_build"
for case in ../tests/data/kustomize-corpus/*/; do
  (cd "$case" && find . -type f | sort | while read -r f; do
    echo "-- ${f#./} --"
    cat "$f"
  done) >"$seed_dirs/kustomize_build/$(basename "$case")"
done
for target in "${targets[@]}"; do
  mkdir -p "$corpora/$target"
  limit=(-max_total_time="$seconds")
  if [[ -n "${FUZZ_RUNS:-}" ]]; then
    limit=(-runs="$FUZZ_RUNS")
  fi
  echo "fuzz: $target (${FUZZ_RUNS:-$seconds s})"
  # 2 GiB per process, 10 s per input: a slower input is a hang, a bigger one a leak. The watchdog
  # counts wall time: a campaign at the lowest priority beside builds sets FUZZ_TIMEOUT higher.
  seeds=seeds/"$target"
  [[ -d $seeds ]] || seeds="$seed_dirs/$target"
  cargo +nightly fuzz run "$target" "$corpora/$target" "$seeds" -- \
    "${limit[@]}" -rss_limit_mb=2048 -timeout="${FUZZ_TIMEOUT:-10}" -print_final_stats=1 2>&1 |
    grep -E "^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|INFO: seed|==[0-9]+==|SUMMARY|.*panicked|Crash|artifact)" || true
  # A crash, a timeout, an out-of-memory or a leak fails the run. A slow unit does not:
  # libFuzzer measures wall time, and an input that takes 0.3 s alone can pass 10 s on a busy
  # machine; it is listed, to be timed alone (`fuzz/target/.../TARGET FILE`).
  if compgen -G "artifacts/$target/slow-unit-*" >/dev/null; then
    echo "fuzz: $target: slow inputs (time them alone): $(ls artifacts/"$target"/slow-unit-*)" >&2
  fi
  if compgen -G "artifacts/$target/[!s]*" >/dev/null; then
    echo "fuzz: $target crashed; the inputs are in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
