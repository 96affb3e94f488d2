#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, from its seed corpus in
# fuzz/seeds/<target> and the corpus it grew before in fuzz/corpus/<target> (not in git).
# Stops at the first finding: libFuzzer writes the input to fuzz/artifacts/<target>/ and
# cargo fuzz exits non-zero.
#
#   fuzz/run.sh [SECONDS] [TARGET...]          # default: 30 s, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); nightly features are enabled on a
# stable toolchain with RUSTC_BOOTSTRAP=1. FUZZ_ARGS adds cargo-fuzz options (e.g.
# "--sanitizer none" for a faster long campaign of safe Rust).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
# shellcheck disable=SC2086
cargo fuzz build ${FUZZ_ARGS:-} >&2
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for $seconds s" >&2
  log=$(mktemp)
  # shellcheck disable=SC2086
  if ! cargo fuzz run ${FUZZ_ARGS:-} "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" \
    -print_final_stats=1 > "$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t found an input that fails (fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$log" | tr '\n' ' ' >&2
  echo >&2
  rm -f "$log"
done
