#!/usr/bin/env bash
# Capacity of one provider under a population of client sessions, for 1 shard and for all
# shards, against the crypto floor.
#
#   perf/provider.sh [--json] [--repeats N] [--clients C] [--step-s S] [--p99-bound-us U]
#                    [--handshakes-per-s H] [--pin-generator] [--backend auto|io_uring|portable]
#
# Builds release for this CPU, writes a one-layer network into a scratch directory
# (`loopix provider-load --setup`: mix 1, which the generator plays, provider 1000 and C
# client keys, default 256), starts the provider (`loopix node`, shards pinned to cores
# 0..N-1, its inbox store in the scratch directory) and runs `loopix provider-load
# --find-capacity` against it with 1 shard, then with all cores. Each step offers R
# packets/s for the provider to unwrap, half sent by clients in their sessions (relayed to
# the mix, where the hop is timed) and half delivered by the mix (stored, collected by the
# clients' polls, which acknowledge them), with polls at the default ratio (two for every
# three client packets) and H re-keying handshakes a second (default 8). A step passes
# with no loss (< 0.1 %, every packet forwarded or collected) and the hop's p99 within U µs
# (default 2000). Writes perf/reports/provider-<time>.md (the steps, the store's commits,
# an SVG plot of p99 against offered load) and prints where it went; with --json prints one
# object: floor_pps, capacity_pps_1, capacity_pps_all, shards, efficiency_1, scaling,
# polls_per_s and handshakes_per_s (at the all-shards capacity), store_commits_per_s,
# store_commit_p99_us, max_shard_block_us (the longest any shard waited on anything but
# the network, over both runs), lost (packets lost at the capacity steps) and backend.
# The generator shares the cores with the shards unless --pin-generator, which pins the
# 1-shard run's generator to the cores the shard does not use (1..N-1). --repeats N (default
# 1) runs the whole search N times per shard count, each on a fresh provider and store: the
# capacities are then the medians, with capacity_pps_1_spread, capacity_pps_all_spread and
# node_cpu_us_per_packet_1_spread ({median, min, max, runs}); the other figures are the
# median search's.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; clients=256; step_s=3; bound=2000; handshakes=8; backend=auto; repeats=1
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --clients) clients=$2; shift ;;
    --repeats) repeats=$2; shift ;;
    --step-s) step_s=$2; shift ;;
    --p99-bound-us) bound=$2; shift ;;
    --handshakes-per-s) handshakes=$2; shift ;;
    --backend) backend=$2; shift ;;
    --pin-generator) pin_generator=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if ! [ "$repeats" -ge 1 ] 2>/dev/null; then echo "--repeats must be a positive integer" >&2; exit 2; fi
source perf/build.sh
export LOOPIX_BACKEND=$backend
cores=$(nproc)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$bin" provider-load --dir "$work" --setup --clients "$clients" >&2
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

run_capacity() { # $1 = shards, $2 = which search (1..N)
  rm -f "$work/inbox.redb"
  printf 'topology = "topology.toml"\nid = 1000\nkey_file = "provider.key"\nshards = %s\ncpus = [%s]\nmetrics = "127.0.0.1:%s"\ninbox_path = "inbox.redb"\n' \
    "$1" "$(seq -s, 0 $(( $1 - 1 )))" "$metrics_port" > "$work/provider.toml"
  "$bin" node --config "$work/provider.toml" 2> "$work/node-$1-$2.log" &
  local node=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep -q "^loopix_packets_in_total" && break; sleep 0.1; done
  local pin=
  [ "${pin_generator:-0}" = 1 ] && [ "$1" -lt "$cores" ] && pin="taskset -c $1-$((cores - 1))"
  $pin "$bin" provider-load --dir "$work" --metrics "127.0.0.1:$metrics_port" --find-capacity --json \
    --duration-s "$step_s" --p99-bound-us "$bound" --handshakes-per-s "$handshakes" \
    2> "$work/load-$1-$2.log" > "$work/provider-$1-$2.json"
  kill -TERM "$node"; wait "$node" || true
}
for i in $(seq "$repeats"); do
  [ "$repeats" -gt 1 ] && echo "provider: search $i of $repeats" >&2
  run_capacity 1 "$i"
  run_capacity "$cores" "$i"
done
mkdir -p perf/reports
report=perf/reports/provider-$stamp.md
python3 perf/provider_report.py "$work" "$cores" "$repeats" "$report" "$json" "$backend"
[ "$json" = 1 ] || echo "provider report: $report"
