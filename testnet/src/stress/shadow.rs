//! A network for Shadow, the discrete-event network simulator that runs unmodified Linux
//! binaries in simulated time: every mix and provider a `loopix node` process on a host
//! of its own (the portable backend: Shadow has no io_uring), and the clients spread over
//! client hosts, each a `loopix stress` process loading the network through its own slice
//! of the clients' keys.
//!
//! [`write`] writes the network (keys, topology, node configurations, with each host's
//! address) and `shadow.yaml`. The configuration is written as JSON, which is YAML, so
//! it is checked here by parsing it back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::StressArgs;
use crate::network::{self, CLIENT_KEY_DIR, Placement, prepare};

/// Seconds after the start the nodes start, and the client hosts (once nodes listen).
const NODES_START_S: u64 = 1;
const CLIENTS_START_S: u64 = 5;

/// Node `index` (in id order) lives at 11.0.x.y; client host `h` at 11.1.x.y.
fn node_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        11,
        0,
        (index / 250) as u8,
        (index % 250 + 1) as u8,
    ))
}

fn client_host_ip(h: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(11, 1, (h / 250) as u8, (h % 250 + 1) as u8))
}

/// Writes the network into `out/net` and its Shadow configuration to `out/shadow.yaml`;
/// returns the configuration's path. `loopix` is the binary Shadow runs.
pub fn write(args: &StressArgs, out: &Path, loopix: &Path) -> Result<PathBuf, String> {
    let hosts = args.client_hosts.max(1) as usize;
    let clients = *args.clients.iter().max().unwrap_or(&1);
    if (clients as usize) < hosts {
        return Err(format!(
            "--clients {clients}: fewer than --client-hosts {hosts}"
        ));
    }
    if args.message_interval_s.len() != 1 || args.clients.len() != 1 {
        return Err("with --write-shadow, give one --clients and one --message-interval-s".into());
    }
    let out = std::path::absolute(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut net_args = args.network.clone();
    net_args.dir = Some(out.join("net"));
    net_args.backend = loopix_runtime::backend::Backend::Portable;
    // The nodes' ids in order, to give each an address.
    let spec = network::spec(&net_args, clients, 0.0);
    let ids = network::node_ids(&spec);
    let place = |host: &str| {
        let id: u64 = host.strip_prefix("node-")?.parse().ok()?;
        let index = ids.iter().position(|n| n.0 == id)?;
        Some(node_ip(index))
    };
    if net_args.with_directory() {
        return Err(
            "--write-shadow: the Shadow network takes a topology file (no --directory)".into(),
        );
    }
    let run_s = CLIENTS_START_S as f64 + args.step_s + args.drain_s + 60.0;
    let layout = prepare(&net_args, clients, 0, run_s, &Placement::Hosts(&place))?;
    // Each client host its share of the keys, in a directory of its own.
    let all_keys = layout.dir.join(CLIENT_KEY_DIR);
    let mut per_host = vec![0u32; hosts];
    for (i, id) in layout.client_keys.keys().enumerate() {
        let h = i % hosts;
        let dir = layout.dir.join(format!("{CLIENT_KEY_DIR}-{h}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = format!("client-{}.key", id.0);
        std::fs::rename(all_keys.join(&name), dir.join(&name))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        per_host[h] += 1;
    }
    let stop_s = run_s.ceil() as u64;
    let mut shadow_hosts = serde_json::Map::new();
    for (index, id) in ids.iter().enumerate() {
        let config = layout.dir.join(format!("node-{}.toml", id.0));
        shadow_hosts.insert(
            format!("node-{}", id.0),
            json!({
                "network_node_id": 0,
                "ip_addr": node_ip(index).to_string(),
                "processes": [{
                    "path": loopix,
                    "args": ["node", "--config", config],
                    "environment": { "LOOPIX_LOG": "warn" },
                    "start_time": format!("{NODES_START_S}s"),
                    "expected_final_state": "running",
                }],
            }),
        );
    }
    // The first client host scrapes every node; the others only load the network.
    let metrics: Vec<String> = layout
        .metrics
        .iter()
        .map(|(id, addr)| format!("{}={addr}", id.0))
        .collect();
    for (h, &n) in per_host.iter().enumerate() {
        let ip = client_host_ip(h);
        let mut argv: Vec<String> = vec![
            "stress".into(),
            "--topology".into(),
            layout.dir.join("topology.toml").display().to_string(),
            "--client-keys".into(),
            layout
                .dir
                .join(format!("{CLIENT_KEY_DIR}-{h}"))
                .display()
                .to_string(),
            "--bind".into(),
            SocketAddr::new(ip, 0).to_string(),
            "--clients".into(),
            n.to_string(),
            "--message-interval-s".into(),
            args.message_interval_s[0].to_string(),
            "--step-s".into(),
            args.step_s.to_string(),
            "--drain-s".into(),
            args.drain_s.to_string(),
            "--ack-attempts".into(),
            args.network.ack_attempts.to_string(),
            "--skip-floor".into(),
            "--json".into(),
            "--report-dir".into(),
            out.join(format!("report-{h}")).display().to_string(),
        ];
        if h == 0 && !metrics.is_empty() {
            argv.push("--metrics".into());
            argv.push(metrics.join(","));
        }
        shadow_hosts.insert(
            format!("clients-{h}"),
            json!({
                "network_node_id": 0,
                "ip_addr": ip.to_string(),
                "processes": [{
                    "path": loopix,
                    "args": argv,
                    "start_time": format!("{CLIENTS_START_S}s"),
                    "expected_final_state": { "exited": 0 },
                }],
            }),
        );
    }
    let config = json!({
        "general": {
            "stop_time": format!("{stop_s}s"),
            "seed": args.seed,
            "model_unblocked_syscall_latency": true,
            "data_directory": out.join("shadow.data"),
        },
        "network": { "graph": { "type": "1_gbit_switch" } },
        "hosts": Value::Object(shadow_hosts),
    });
    let path = out.join("shadow.yaml");
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        stress: StressArgs,
    }

    #[test]
    fn the_shadow_configuration_runs_every_node_and_every_client_once() {
        let out = std::env::temp_dir().join(format!("loopix-shadow-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let cli = Cli::parse_from([
            "stress",
            "--layers",
            "2",
            "--mixes-per-layer",
            "3",
            "--providers",
            "2",
            "--clients",
            "25",
            "--client-hosts",
            "3",
            "--step-s",
            "20",
            "--drain-s",
            "10",
        ]);
        let path = write(&cli.stress, &out, Path::new("/usr/bin/loopix")).unwrap();
        let config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let hosts = config["hosts"].as_object().unwrap();
        let nodes: Vec<&Value> = hosts
            .iter()
            .filter(|(name, _)| name.starts_with("node-"))
            .map(|(_, h)| h)
            .collect();
        assert_eq!(nodes.len(), 2 * 3 + 2);
        // Every host its own address; every node on the portable backend, its config there.
        let mut ips: Vec<&str> = hosts
            .values()
            .map(|h| h["ip_addr"].as_str().unwrap())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        assert_eq!(ips.len(), hosts.len());
        for node in &nodes {
            let p = &node["processes"][0];
            assert_eq!(p["args"][0], "node");
            let config = std::fs::read_to_string(p["args"][2].as_str().unwrap()).unwrap();
            assert!(config.contains("backend = \"portable\""), "{config}");
            assert!(config.contains("measure_unwrap_rate = false"), "{config}");
            assert!(config.contains("max_socket_wait_ms = 0"), "{config}");
            // It listens at its host's address.
            let topology = std::fs::read_to_string(out.join("net/topology.toml")).unwrap();
            assert!(topology.contains(node["ip_addr"].as_str().unwrap()));
        }
        // The clients split over three hosts, each with its keys, 9 + 8 + 8.
        let mut split = Vec::new();
        for h in 0..3 {
            let host = &hosts[&format!("clients-{h}")];
            let args: Vec<&str> = host["processes"][0]["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let at = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
            let n: usize = at("--clients").parse().unwrap();
            let keys = std::fs::read_dir(at("--client-keys")).unwrap().count();
            assert_eq!(n, keys);
            assert!(at("--bind").starts_with(host["ip_addr"].as_str().unwrap()));
            assert_eq!(args.contains(&"--metrics"), h == 0, "one host scrapes");
            split.push(n);
        }
        assert_eq!(split, [9, 8, 8]);
        assert_eq!(config["general"]["stop_time"], "95s");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
