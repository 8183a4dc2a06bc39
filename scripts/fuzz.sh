#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS each (default 45), starting from the corpus
# committed in fuzz/corpus/. New inputs go to a scratch directory, so the committed corpus only
# changes by hand (`cargo fuzz cmin`). A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/: add it to fuzz/corpus/<target>/ with the fix, as a regression test.
#
# Stable Rust is enough: the targets run without a sanitizer (`-s none`); the assertions in
# the targets, Rust's own checks and debug assertions are what catch a bug.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-45}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cd fuzz
cargo fuzz build -s none
for target in $(cargo fuzz list); do
  mkdir -p "$scratch/$target"
  echo "fuzz: $target for ${seconds}s"
  log="$scratch/$target.log"
  if ! cargo fuzz run -s none "$target" "$scratch/$target" "corpus/$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target failed; a crash's input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "DONE" "$log" | tail -n 1
done
echo "fuzz: every target ran ${seconds}s without a crash"
