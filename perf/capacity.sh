#!/usr/bin/env bash
# Capacity of one mix node, for 1 shard and for all shards, against the crypto floor.
#
#   perf/capacity.sh [--json] [--step-s S] [--p99-bound-us U]
#
# Builds release for this CPU, writes keys and a topology into a scratch directory, starts
# `loopix node` (shards pinned to cores 0..N-1) and runs `loopix loadgen --find-capacity`
# against it with 1 shard, then with all cores. Writes perf/reports/capacity-<time>.md (with
# the per-step JSON and an SVG plot of p99 against offered load) and prints where it went;
# with --json prints one object instead: floor_pps, capacity_pps_1, capacity_pps_all, shards,
# p99_us_at_80pct (the 1-shard p99 of the step nearest 80 % of its capacity).
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; step_s=3; bound=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --step-s) step_s=$2; shift ;;
    --p99-bound-us) bound=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release -p loopix-tools >&2
bin=$PWD/target/release/loopix
cores=$(nproc)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mix_port=$(free_port); gen_port=$(free_port); metrics_port=$(free_port)
k1=$("$bin" keygen --out "$work/mix.key"); k2=$("$bin" keygen --out "$work/gen.key"); k3=$("$bin" keygen --out "$work/p.key")
cat > "$work/topology.toml" <<TOML
[network]
layers = 2
mu_per_s = 10.0
lambda_payload_per_s = 0.0
lambda_loop_per_s = 0.0
lambda_drop_per_s = 0.0
lambda_mix_loop_per_s = 0.0
poll_size = 4
poll_rate_per_s = 1.0

[[nodes]]
id = 1
role = "mix"
layer = 1
address = "127.0.0.1:$mix_port"
public_key = "$k1"

[[nodes]]
id = 2
role = "mix"
layer = 2
address = "127.0.0.1:$gen_port"
public_key = "$k2"

[[nodes]]
id = 1000
role = "provider"
address = "127.0.0.1:9"
public_key = "$k3"
TOML

run_capacity() { # $1 = shards
  local cpus; cpus=$(seq -s, 0 $(( $1 - 1 )))
  printf 'topology = "topology.toml"\nid = 1\nkey_file = "mix.key"\nshards = %s\ncpus = [%s]\nmetrics = "127.0.0.1:%s"\n' \
    "$1" "$cpus" "$metrics_port" > "$work/mix.toml"
  "$bin" node --config "$work/mix.toml" 2> "$work/node-$1.log" &
  local node=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep -q "^loopix_packets_in_total" && break; sleep 0.1; done
  "$bin" loadgen --topology "$work/topology.toml" --target 1 --as 2 --duration-s "$step_s" \
    --metrics "127.0.0.1:$metrics_port" --p99-bound-us "$bound" --find-capacity --json \
    2> "$work/loadgen-$1.log" > "$work/capacity-$1.json"
  kill -TERM "$node"; wait "$node" || true
}
run_capacity 1
run_capacity "$cores"
mkdir -p perf/reports
report=perf/reports/capacity-$stamp.md
python3 perf/capacity_report.py "$work/capacity-1.json" "$work/capacity-$cores.json" "$report" "$json"
[ "$json" = 1 ] || echo "capacity report: $report"
