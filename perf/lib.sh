# Shared set-up of the perf scripts (sourced, not run): a release build for this CPU, a
# scratch directory with keys and a one-layer topology (node 1 is the mix under load,
# provider 1000 is the load generator, which a layer-1 mix takes packets from and sends
# them back to over authenticated links), and starting/stopping `loopix node` as node 1.
#
# After sourcing: $bin, $work, $metrics_port; start_node SHARDS [EXTRA_TOML_LINES];
# stop_node; node_pid.
# The build and the scratch directory come from perf/build.sh.

source perf/build.sh
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mix_port=$(free_port); gen_port=$(free_port); metrics_port=$(free_port)
# Epoch 0 starts now; each node publishes its keys for epochs 0..${epochs_published:-8}-1
# (${epoch_s:-1200} s each, so a run of the defaults has keys for 2 h 40 min).
epoch_s=${epoch_s:-1200}; epoch_grace_s=${epoch_grace_s:-60}; epoch_start=$(date +%s)
node_keys() { "$bin" keygen --epochs "${epochs_published:-8}" --first-epoch 0 --out "$work/$1"; }
k1=$(node_keys mix.key); k2=$(node_keys gen.key)
cat > "$work/topology.toml" <<TOML
[network]
layers = 1
mu_per_s = 10.0
lambda_payload_per_s = 0.0
lambda_loop_per_s = 0.0
lambda_drop_per_s = 0.0
lambda_mix_loop_per_s = 0.0
poll_size = 4
poll_rate_per_s = 1.0
epoch_s = $epoch_s
epoch_grace_s = $epoch_grace_s
epoch_start = $epoch_start

[[nodes]]
id = 1
role = "mix"
layer = 1
address = "127.0.0.1:$mix_port"
$k1

[[nodes]]
id = 1000
role = "provider"
address = "127.0.0.1:$gen_port"
$k2
TOML

node_pid=
# start_node SHARDS [EXTRA]: shards pinned to cores 0..SHARDS-1; EXTRA is appended to
# node.toml (e.g. a [limits] section). Returns once the node answers on its metrics port.
start_node() {
  local cpus; cpus=$(seq -s, 0 $(( $1 - 1 )))
  printf 'topology = "topology.toml"\nid = 1\nkey_file = "mix.key"\nshards = %s\ncpus = [%s]\nmetrics = "127.0.0.1:%s"\n%s\n' \
    "$1" "$cpus" "$metrics_port" "${2:-}" > "$work/mix.toml"
  "$bin" node --config "$work/mix.toml" 2> "$work/node-$1.log" &
  node_pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep -q "^loopix_packets_in_total" && return 0; sleep 0.1; done
  echo "node did not start; see $work/node-$1.log" >&2; return 1
}

stop_node() {
  kill -TERM "$node_pid"; wait "$node_pid" || true
}

# loadgen ARGS...: the load generator against node 1, reading its metrics; pinned to the
# CPUs in $generator_cpus when that is set (e.g. "1": off the 1-shard node's core 0).
loadgen() {
  ${generator_cpus:+taskset -c "$generator_cpus"} "$bin" loadgen --topology "$work/topology.toml" --target 1 --as 1000 --key "$work/gen.key" --metrics "127.0.0.1:$metrics_port" "$@"
}
