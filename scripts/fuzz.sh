#!/usr/bin/env bash
# A short run of every fuzz target: SECONDS each (default 20). New inputs
# go to a scratch directory; the checked-in corpus under fuzz/corpus is
# only read. cargo-fuzz drives libFuzzer through unstable compiler flags,
# which RUSTC_BOOTSTRAP allows on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in markers peer_json session_json log_line times; do
  mkdir -p "$scratch/$target"
  echo "== $target (${seconds}s)"
  cargo fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E "^(#|Done|stat::number_of_executed_units|==|SUMMARY|ERROR)" | tail -3
done
