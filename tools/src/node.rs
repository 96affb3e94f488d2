//! `loopix node --config node.toml`: runs a mix or a provider on pinned glommio shards
//! until SIGINT or SIGTERM, then stops receiving, sends what its wheels hold (within the
//! grace period), flushes its store and exits 0.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use loopix_core::endpoint::Endpoint;
use loopix_core::mix::{Mix, MixConfig};
use loopix_core::provider::{Provider, ProviderConfig};
use loopix_core::topology::Role;
use loopix_crypto::SecretKey;
use loopix_runtime::config::NodeConfig;
use loopix_runtime::durable_inbox::DurableInbox;
use loopix_runtime::node::{Node, NodeLayout};
use loopix_runtime::peers::Peers;

use crate::keygen::read_secret;
use crate::metrics::{self, Snapshot};

/// Options of `loopix node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Validate the configuration (and key and topology) and exit.
    #[arg(long)]
    check: bool,
}

/// Loads, checks and (unless `--check`) runs the node.
pub fn run(args: &NodeArgs) -> Result<(), String> {
    let cfg =
        NodeConfig::load(&args.config).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let key = read_secret(&cfg.key_file)?;
    if key.public_key() != cfg.node.public_key {
        return Err(format!(
            "key_file: {} does not match the topology's key for node {}",
            cfg.key_file.display(),
            cfg.node.id.0
        ));
    }
    let role = match cfg.node.role {
        Role::Mix { layer } => format!("mix, layer {layer}"),
        Role::Provider => "provider".to_string(),
    };
    if args.check {
        println!(
            "ok: node {} ({role}), {} shard(s), listening on {}",
            cfg.node.id.0, cfg.shards, cfg.listen
        );
        return Ok(());
    }
    crate::logging::init();
    let node = start(&cfg, key)?;
    tracing::info!(id = cfg.node.id.0, %role, shards = cfg.shards, listen = %node.local_addr, "node started");
    let stack = loopix_crypto::stack_position::calibrate();
    tracing::info!(
        position = stack.position,
        mul_ns = stack.chosen_ns as u64,
        slowest_ns = stack.worst_ns as u64,
        "scalar multiplication placed on the stack"
    );
    serve_until_signal(&cfg, node)
}

fn start(cfg: &NodeConfig, key: SecretKey) -> Result<Node, String> {
    let params = cfg.topology.network.params;
    let peers = Peers::from_topology(&cfg.topology);
    let mut layout = NodeLayout {
        listen: cfg.listen,
        shards: cfg.shards,
        cpus: cfg.cpus.clone(),
        packet_len: params.packet_len(),
        datagram_len: 0,
        recv_buffer_bytes: 8 << 20,
        spin: (cfg.spin_us > 0).then(|| Duration::from_micros(cfg.spin_us)),
    };
    let seed = |shard: usize| {
        let mut s = [0u8; 32];
        let _ = getrandom::fill(&mut s);
        s[0] ^= shard as u8;
        s
    };
    let started = match cfg.node.role {
        Role::Mix { .. } => {
            let make = |shard| {
                let config = MixConfig {
                    id: cfg.node.id,
                    key: key.clone(),
                    limits: cfg.limits,
                    loop_window: 200,
                    loop_grace_us: 10_000_000,
                    seed: seed(shard),
                };
                Mix::new(&cfg.topology, config)
                    .expect("the config was checked against the topology")
            };
            layout.datagram_len = params.packet_len() + 1;
            Node::start(&layout, &peers, make)
        }
        Role::Provider => {
            let path = cfg
                .inbox_path
                .clone()
                .ok_or("inbox_path: a provider needs a store")?;
            let inbox = DurableInbox::open(&path, cfg.inbox_per_client)
                .map_err(|e| format!("inbox_path: {}: {e}", path.display()))?;
            let mut inbox = Some(inbox);
            let config = ProviderConfig {
                id: cfg.node.id,
                key: key.clone(),
                limits: cfg.limits,
                seed: seed(0),
            };
            let provider = Provider::new(&cfg.topology, config, inbox.take().ok_or("one shard")?)
                .map_err(|e| format!("{e:?}"))?;
            layout.datagram_len = provider.max_datagram_len() + 1;
            let mut provider = Some(provider);
            Node::start(&layout, &peers, move |_| {
                provider.take().expect("providers run one shard")
            })
        }
    };
    started.map_err(|e| format!("listen {}: {e}", cfg.listen))
}

/// SIGHUP: re-reads the key file (and the topology, for its key) and, if they agree,
/// switches every shard to it. A mismatch is logged and the old key stays.
fn reload_key(cfg: &NodeConfig, node: &Node, epoch: u64) {
    let loaded = NodeConfig::load(&cfg.source).and_then(|fresh| {
        let key = read_secret(&fresh.key_file)
            .map_err(|e| loopix_core::field_error::FieldError::new("key_file", e))?;
        if key.public_key() == fresh.node.public_key {
            Ok(key)
        } else {
            Err(loopix_core::field_error::FieldError::new(
                "key_file",
                "does not match the topology's key",
            ))
        }
    });
    match loaded {
        Ok(key) => {
            node.rotate_key(&key, epoch);
            tracing::info!(epoch, "key reloaded; replay sets start a new epoch");
        }
        Err(e) => tracing::error!(error = %e, "reload refused; keeping the current key"),
    }
}

fn serve_until_signal(cfg: &NodeConfig, mut node: Node) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| e.to_string())?;
    let mut epoch = 0;
    let shared = Arc::new(Mutex::new(Snapshot {
        mu_per_s: cfg.topology.network.mu_per_s,
        shards: cfg.shards,
        ..Snapshot::default()
    }));
    if let Some(addr) = cfg.metrics {
        let local = metrics::serve(addr, Arc::clone(&shared))
            .map_err(|e| format!("metrics {addr}: {e}"))?;
        tracing::info!(%local, "metrics on http://{local}/metrics");
    }
    let (mut last_held, mut last_at) = (0u64, Instant::now());
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if reload.swap(false, Ordering::SeqCst) {
            epoch += 1;
            reload_key(cfg, &node, epoch);
        }
        let reports = node.reports();
        let held: u64 = reports
            .iter()
            .map(|r| r.core.released + r.core.pending)
            .sum();
        let dt = last_at.elapsed().as_secs_f64();
        if let Ok(mut s) = shared.lock() {
            if dt >= 1.0 {
                s.held_rate_per_s = held.saturating_sub(last_held) as f64 / dt;
                (last_held, last_at) = (held, Instant::now());
            }
            s.reports = reports;
        }
    }
    tracing::info!(
        grace_ms = cfg.grace_ms,
        "stopping: sending what the wheels hold"
    );
    let last = node.shutdown(Duration::from_millis(cfg.grace_ms));
    let (received, sent): (u64, u64) = last
        .iter()
        .fold((0, 0), |(a, b), r| (a + r.core.received, b + r.core.sent));
    tracing::info!(received, sent, "stopped");
    Ok(())
}
