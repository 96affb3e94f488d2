# The release build every perf script measures (sourced, not run), and a scratch
# directory removed on exit with any job still running. After sourcing: $bin, $work.
# RUSTFLAGS and CARGO_TARGET_DIR are honoured, so a build for another CPU class is measured
# the same way (e.g. as an AVX2-only CPU: RUSTFLAGS='-C target-cpu=x86-64-v3'
# CARGO_TARGET_DIR=/tmp/v3-target, with LOOPIX_KERNEL naming the lane kernel).
cargo build --release -p loopix-tools >&2
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/loopix
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
