//! `loopix node --config node.toml`: runs a mix or a provider on pinned shards (on the
//! io_uring or the portable backend) until SIGINT or SIGTERM, then stops receiving, sends
//! what its wheels hold (within the grace period), flushes its store and exits 0.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Choice, Chosen};
use crate::clock::NetworkClock;
use crate::config::{Joining, NodeConfig};
use crate::directory_client::{DirectoryClient, DirectoryConfig, DirectorySync, NotYet};
use crate::durable_inbox::{self, ShardInbox, StoreOptions, StoreWriter, WriterFaults};
use crate::key_file::{self, read_seed};
use crate::node::{NodeLayout, RunningNode};
use crate::node_lock::{NodeLock, probe_listen};
use crate::replay_journal::{ReplayJournal, Syncer};
use crate::unwrap_rate;
use clap::Args;
use loopix_core::endpoint::Endpoint;
use loopix_core::network::link::LINK_OVERHEAD;
use loopix_core::network::topology::{Role, Topology};
use loopix_core::pipeline::faults::Faulty;
use loopix_core::pipeline::replay::ReplayFilter;
use loopix_core::pki::authority::Holder;
use loopix_core::pki::follower::{Follower, KeyPublisher, Want};
use loopix_core::roles::inbox::MemoryInbox;
use loopix_core::roles::{AnyRole, RoleConfig, build};
use loopix_crypto::{EpochSeed, NodeId, SessionPublic, SessionSecret};

use crate::service::metrics::{self, Snapshot};

/// Options of `loopix node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node's configuration file.
    #[arg(long)]
    pub config: PathBuf,
    /// Validate the configuration, key file, topology and this host (CPUs, free ports), and
    /// exit. With a directory: upload this node's keys and say what the authorities hold
    /// (registered, keys taken, what the network's document still lacks), without waiting
    /// for the rest of the network.
    #[arg(long)]
    pub check: bool,
    /// With `--check` and a directory: wait (up to the directory's `wait_s`) for a document
    /// that lists this node, and check the configuration against it.
    #[arg(long, requires = "check")]
    pub wait: bool,
    /// The I/O backend, instead of node.toml's `backend`: `auto` (io_uring where this host
    /// allows it, else portable, saying why), `io_uring`, or `portable`.
    #[arg(long, env = "LOOPIX_BACKEND")]
    pub backend: Option<crate::backend::Backend>,
}

/// What `--check` found at the authorities when no document lists the node yet.
struct Pending {
    report: String,
}

/// Loads, checks and (unless `--check`) runs the node.
pub fn run(args: &NodeArgs) -> Result<(), String> {
    let mut sync = None;
    let mut lock = None;
    let mut pending = None;
    let loaded = NodeConfig::load_with(&args.config, &mut |directory, joining| {
        // One node per identity on this host, and none on a port another process holds:
        // said before anything is uploaded in the node's name.
        if !args.check {
            lock = Some(NodeLock::acquire(joining.key_file, joining.id.0)?);
        }
        check_host_local(joining.cpus, joining.listen, joining.metrics, args.check)?;
        if args.check && !args.wait {
            match check_registration(directory, joining.id, joining.key_file)? {
                Ok(topology) => return Ok(topology),
                Err(p) => {
                    pending = Some(p);
                    return Err("no document lists this node yet".into());
                }
            }
        }
        let (topology, joined) = join_directory(directory, joining.id, joining.key_file)?;
        sync = Some(joined);
        Ok(topology)
    });
    if let Some(Pending { report }) = pending {
        // The host and the registration are as they should be: the rest of the network is
        // not this host's check.
        println!("ok: this host and this node's registration (no document lists it yet)");
        println!("{report}");
        println!(
            "the node waits for that document when it starts (up to the directory's wait_s); \
             `loopix node --config {} --check --wait` waits for it and checks the rest",
            args.config.display()
        );
        return Ok(());
    }
    let mut cfg = loaded.map_err(|e| format!("{}: {e}", args.config.display()))?;
    // Before anything is bound: a second process of this node must not start at all.
    let lock = match lock {
        Some(l) => Some(l),
        None if args.check => None,
        None => Some(NodeLock::acquire(&cfg.key_file, cfg.node.id.0)?),
    };
    let seed = read_seed(&cfg.key_file)
        .map_err(|e| format!("{}: key_file: {e}", args.config.display()))?;
    let clock = NetworkClock::start();
    let keys = cfg
        .check_keys(&seed, clock.now_us())
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    let role = cfg.node.role.to_string();
    check_host_local(&cfg.cpus, Some(cfg.listen), cfg.metrics, args.check)
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    // The backend, before anything is started on it: `io_uring` on a host that refuses it
    // is an error here, naming why; `auto` falls back and says so (`Backend::choose`).
    if let Some(b) = args.backend {
        cfg.backend = b;
    }
    let Choice {
        backend,
        fallback,
        executor_bytes,
    } = cfg
        .backend
        .choose()
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    // The replay filters hold every tag a shard can take: sized from what this CPU unwraps.
    let measured = match cfg.measure_unwrap_rate {
        true => unwrap_rate::measure(&cfg.topology.network.params),
        false => 0, // the configured max_packets_per_s, or the default, sizes them
    };
    let (rate, rate_warning) = cfg.size_replay_filters(measured);
    let session_key =
        node_session_key(&cfg).map_err(|e| format!("{}: {e}", args.config.display()))?;
    if args.check {
        let per_filter = ReplayFilter::bytes_for(cfg.limits.replay_tags);
        println!(
            "ok: node {} ({role}), {} shard(s), listening on {}",
            cfg.node.id.0, cfg.shards, cfg.listen
        );
        println!(
            "epoch {} ({} s to the next); keys published up to epoch {}; key file at epoch {}",
            keys.current,
            keys.until_next_us / 1_000_000,
            keys.last_published,
            seed.epoch()
        );
        println!(
            "a shard unwraps {measured} packets/s on this CPU (measured; kernel {})",
            loopix_crypto::lanes::Kernel::detect().name()
        );
        println!(
            "replay filters: 2 a shard of {} tags ({} packets/s{} over a key's {} s), {:.1} MB each, {:.1} MB for the node",
            cfg.limits.replay_tags,
            rate,
            if cfg.max_packets_per_s.is_some() {
                ", configured"
            } else {
                ", measured"
            },
            cfg.topology.network.epochs.key_lifetime_us() / 1_000_000,
            per_filter as f64 / 1e6,
            (2 * cfg.shards * per_filter) as f64 / 1e6
        );
        match &fallback {
            Some(why) => println!("backend: portable ({why})"),
            None => println!("backend: {backend}"),
        }
        print_memory(&cfg, &seed, &session_key, executor_bytes)?;
        for w in keys.warnings.iter().chain(&rate_warning) {
            println!("warning: {w}");
        }
        if let Some(d) = &cfg.directory {
            println!(
                "topology from the directory: {} authorities, {} signature(s) required",
                d.authorities.len(),
                d.trust.threshold()
            );
        }
        return Ok(());
    }
    for w in keys.warnings.iter().chain(&rate_warning) {
        tracing::warn!("{w}");
    }
    tracing::info!(
        measured_packets_per_s = measured,
        replay_filter_rate = rate,
        "replay filters sized"
    );
    let (syncer, sync_thread) = Syncer::start(Duration::from_millis(cfg.replay_sync_ms))
        .map_err(|e| format!("replay journal sync thread: {e}"))?;
    match &fallback {
        Some(why) => {
            tracing::warn!("io_uring is not available, running on the portable backend: {why}")
        }
        None => tracing::info!(%backend, "I/O backend"),
    }
    let lanes = loopix_crypto::lanes::calibrate::calibrate();
    let measured: Vec<String> = lanes
        .ns_per_packet
        .iter()
        .map(|(k, ns)| format!("{} {:.0} ns", k.name(), ns))
        .collect();
    tracing::info!(
        kernel = lanes.chosen.name(),
        chosen_by = lanes.chosen_by(),
        measured = measured.join(", "),
        "lane kernel"
    );
    let (node, store) = start(&cfg, &seed, &session_key, &syncer, backend)?;
    let stack = loopix_crypto::stack_position::calibrate();
    tracing::info!(
        position = stack.position,
        mul_ns = stack.chosen_ns as u64,
        slowest_ns = stack.worst_ns as u64,
        "scalar multiplication placed on the stack"
    );
    let started = Started {
        role,
        backend,
        epoch: keys.current,
        keys_until: keys.last_published,
    };
    let stats = store.as_ref().map(|w| Arc::clone(&w.stats));
    let served = serve_until_signal(cfg, node, clock, seed.epoch(), started, sync, stats);
    // The shards are gone: the writer commits what they last handed it, then stops.
    if let Some(writer) = store {
        writer.join();
    }
    drop(lock);
    drop(sync_thread);
    served
}

/// `--check`: the memory the node will keep resident, by part: what each shard's core
/// touches at start (computed from the limits), what its executor adds (`executor`:
/// [`Choice::executor_bytes`]), and this process as it stands.
fn print_memory(
    cfg: &NodeConfig,
    seed: &EpochSeed,
    session_key: &SessionSecret,
    executor: usize,
) -> Result<(), String> {
    let mb = |b: usize| b as f64 / 1e6;
    let resident = || crate::node::resident_bytes().map_err(|e| format!("resident memory: {e}"));
    let process = resident()?;
    // One shard's core, built as the node builds it, and measured.
    let core = {
        let config = RoleConfig::node(cfg.node.id, seed.clone(), session_key.clone())
            .limited(cfg.limits)
            .on_shard(0, cfg.shards);
        let inbox = || MemoryInbox::new(cfg.inbox.per_client, cfg.inbox.total);
        let built: AnyRole<MemoryInbox> = build(&cfg.topology, config, inbox)
            .map_err(|e| format!("node {}: {e}", cfg.node.id.0))?;
        let with_core = resident()?;
        drop(built);
        with_core.saturating_sub(process)
    };
    let parts =
        loopix_core::pipeline::hop::resident_memory(&cfg.limits, &cfg.topology.network.params);
    let total = process + cfg.shards * (core + executor);
    println!(
        "memory: about {:.0} MB resident: {} shard(s) of {:.1} MB (core {:.1} MB: packet \
         pool {:.1} MB, replay filters {:.1} MB; executor {:.1} MB) and {:.1} MB for the \
         process (measured)",
        mb(total),
        cfg.shards,
        mb(core + executor),
        mb(core),
        mb(parts.pool),
        mb(parts.replay_filters),
        mb(executor),
        mb(process)
    );
    if cfg.node.role == Role::Provider {
        println!("memory: a provider's inbox store adds its cache, which grows with what it holds");
    }
    Ok(())
}

/// What the configuration asks of this host: its CPUs exist, no other process holds its
/// listen port (if known before the document), and (for `--check`) its metrics address can
/// be bound now.
fn check_host_local(
    cpus: &[usize],
    listen: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    try_bind: bool,
) -> Result<(), String> {
    let host: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if let Some(cpu) = cpus.iter().find(|c| !host.contains(c)) {
        return Err(format!(
            "cpus: CPU {cpu} is not one this process may run on {host:?}"
        ));
    }
    if let Some(listen) = listen {
        probe_listen(listen)?;
    }
    if try_bind && let Some(m) = metrics {
        std::net::TcpListener::bind(m).map_err(|e| format!("metrics: {m}: {e}"))?;
    }
    Ok(())
}

/// A new seed for the RNG of one core.
fn rng_seed(shard: usize) -> Result<[u8; 32], String> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(|e| format!("no OS randomness: {e}"))?;
    s[0] ^= shard as u8;
    Ok(s)
}

/// The node's session key from its key file (its links, and a provider's client
/// sessions, derive from it), checked against the topology's.
fn node_session_key(cfg: &NodeConfig) -> Result<SessionSecret, String> {
    let key = key_file::read_session_key(&cfg.key_file)
        .map_err(|e| format!("key_file: {e}"))?
        .ok_or_else(|| {
            format!(
                "key_file: {}: no session key (every node needs one: its links to other \
                 nodes authenticate with it): make a new key file with \
                 `loopix keygen --epochs N --out F`",
                cfg.key_file.display()
            )
        })?;
    if cfg.node.session_key != Some(key.public()) {
        return Err(format!(
            "topology: node {}: session_key is not the public half of key_file's session key \
             ({})",
            cfg.node.id.0,
            hex::encode(key.public().0)
        ));
    }
    Ok(key)
}

/// Builds every shard's core, refills its replay filters from its journal, and starts
/// the shards; a provider's store writer with them.
fn start(
    cfg: &NodeConfig,
    seed: &EpochSeed,
    session_key: &SessionSecret,
    syncer: &Syncer,
    backend: Chosen,
) -> Result<(RunningNode, Option<StoreWriter>), String> {
    let params = cfg.topology.network.params;
    let mut layout = NodeLayout {
        listen: cfg.listen,
        shards: cfg.shards,
        cpus: cfg.cpus.clone(),
        packet_len: params.packet_len() + LINK_OVERHEAD,
        frame_len: 0,
        datagram_len: 0,
        recv_buffer_bytes: 8 << 20,
        spin: (cfg.spin_us > 0).then(|| Duration::from_micros(cfg.spin_us)),
        max_socket_wait: cfg.max_socket_wait,
        backend,
    };
    let journal = |shard: usize, core: &mut dyn Endpoint| {
        let mut journal = ReplayJournal::open(&cfg.replay_dir, shard, cfg.shards, syncer.clone())
            .map_err(|e| format!("replay_dir: {}: {e}", cfg.replay_dir.display()))?;
        let restored = journal
            .restore(core, NetworkClock::start().now_us())
            .map_err(|e| format!("replay_dir: {}: {e}", cfg.replay_dir.display()))?;
        tracing::info!(
            shard,
            epochs = restored.epochs,
            tags = restored.tags,
            expired_files = restored.expired_files,
            set_aside = restored.set_aside,
            "replay filters restored"
        );
        Ok::<_, String>(Some(journal))
    };
    if cfg.faults.is_on() {
        tracing::warn!(
            drop_fraction = cfg.faults.drop_fraction,
            extra_delay_ms = cfg.faults.extra_delay_us / 1000,
            "fault injection on ([faults]): for tests and demos, never a real network"
        );
    }
    // Shard `shard`'s core, as the topology describes this node.
    let role_config = |shard: usize| -> Result<RoleConfig, String> {
        Ok(
            RoleConfig::node(cfg.node.id, seed.clone(), session_key.clone())
                .seeded(rng_seed(shard)?)
                .limited(cfg.limits)
                .on_shard(shard, cfg.shards),
        )
    };
    let listening = |e: std::io::Error| format!("listen {}: {e}", cfg.listen);
    match cfg.node.role {
        Role::Mix { .. } => {
            let mut cores = VecDeque::new();
            for shard in 0..cfg.shards {
                // A mix keeps no store: the inbox is never made.
                let mut mix: AnyRole<MemoryInbox> =
                    build(&cfg.topology, role_config(shard)?, || {
                        MemoryInbox::new(0, 0)
                    })
                    .map_err(|e| format!("node {}: {e}", cfg.node.id.0))?;
                layout.datagram_len = mix.max_datagram_len() + 1;
                let journal = journal(shard, &mut mix)?;
                cores.push_back((Faulty::new(mix, cfg.faults, rng_seed(shard)?), journal));
            }
            let node =
                RunningNode::start(&layout, |_| cores.pop_front().expect("one core per shard"))
                    .map_err(listening)?;
            Ok((node, None))
        }
        Role::Provider => {
            let path = cfg
                .inbox_path
                .clone()
                .ok_or("inbox_path: a provider needs a store")?;
            let now_us = NetworkClock::start().now_us();
            let options = StoreOptions {
                per_client: cfg.inbox.per_client,
                total: cfg.inbox.total,
                queue: cfg.store_queue,
                faults: WriterFaults {
                    commit_delay: cfg.store_commit_delay,
                    fail_first: 0,
                },
            };
            if !cfg.store_commit_delay.is_zero() {
                tracing::warn!(
                    store_commit_delay_ms = cfg.store_commit_delay.as_millis() as u64,
                    "fault injection on ([faults]): every store commit is slowed"
                );
            }
            let (writer, inboxes) = durable_inbox::open(&path, cfg.shards, options, now_us)
                .map_err(|e| format!("inbox_path: {}: {e}", path.display()))?;
            let mut cores = VecDeque::new();
            for (shard, inbox) in inboxes.into_iter().enumerate() {
                let config = role_config(shard)?
                    .inbox_ttl(cfg.inbox.ttl_us)
                    .handshake_limits(cfg.handshakes);
                let mut provider: AnyRole<ShardInbox> =
                    build(&cfg.topology, config, || inbox).map_err(|e| e.to_string())?;
                layout.datagram_len = provider.max_datagram_len() + 1;
                let journal = journal(shard, &mut provider)?;
                cores.push_back((Faulty::new(provider, cfg.faults, rng_seed(shard)?), journal));
            }
            layout.frame_len =
                loopix_core::session::FrameLayout::new(&params, cfg.topology.network.poll_size)
                    .frame_len();
            let node =
                RunningNode::start(&layout, |_| cores.pop_front().expect("one core per shard"))
                    .map_err(listening)?;
            Ok((node, Some(writer)))
        }
    }
}

/// SIGHUP: re-reads the configuration's topology and the key file and, if they agree,
/// hands them to every shard: keys that did not change keep their replay filters, other
/// nodes' new epoch keys are used for loops from now on. A problem is logged and nothing
/// changes.
/// Returns the last epoch the re-read topology publishes this node's keys for, if taken.
fn reload_config(cfg: &NodeConfig, node: &RunningNode, now_us: u64) -> Option<u64> {
    let file = cfg.source.display();
    // With a directory, the topology is the document in force, not re-fetched.
    let held = cfg.topology.clone();
    let mut in_force = |_: &DirectoryConfig, _: &Joining<'_>| Ok(held.clone());
    let loaded = NodeConfig::load_with(&cfg.source, &mut in_force).and_then(|mut fresh| {
        fresh.size_replay_filters(cfg.measured_packets_per_s);
        let seed = read_seed(&fresh.key_file)
            .map_err(|e| loopix_core::field_error::FieldError::new("key_file", e))?;
        let keys = fresh.check_keys(&seed, now_us)?;
        Ok((fresh, seed, keys.last_published))
    });
    match loaded {
        Ok((fresh, seed, keys_until)) => {
            node.reload(&fresh.topology, &seed);
            let restart = cfg.needs_restart(&fresh);
            if restart.is_empty() {
                tracing::info!(%file, "reloaded: topology and key file");
            } else {
                tracing::warn!(
                    %file,
                    needs_restart = %restart.join(", "),
                    "reloaded topology and key file; these changes wait for a restart"
                );
            }
            Some(keys_until)
        }
        Err(e) => {
            tracing::error!(%file, error = %e, "reload refused; nothing changed");
            None
        }
    }
}

/// Moves the key file's seed past every epoch no longer in use (deleting their keys) once
/// the file is behind; `at` is the epoch the file is known to be at.
fn ratchet_key_file(cfg: &NodeConfig, now_us: u64, at: &mut u64) {
    let oldest = cfg.topology.network.epochs.oldest_live(now_us);
    if oldest <= *at {
        return;
    }
    match key_file::ratchet(&cfg.key_file, oldest) {
        Ok(seed) => {
            tracing::info!(
                epoch = seed.epoch(),
                "key file moved forward; earlier epochs' keys deleted"
            );
        }
        Err(e) => tracing::error!(error = %e, "could not move the key file forward"),
    }
    *at = oldest;
}

/// What "node started" reports, once every listener is bound.
struct Started {
    role: String,
    backend: Chosen,
    epoch: u64,
    /// The last epoch the topology publishes the node's keys for.
    keys_until: u64,
}

/// Joins the directory: uploads this node's keys (signed with its identity key) and
/// waits for a document that lists it with them; returns its topology and the sync that
/// keeps following.
fn join_directory(
    directory: &DirectoryConfig,
    id: NodeId,
    key_file: &std::path::Path,
) -> Result<(Topology, DirectorySync), String> {
    // The authorities may start after the node: ask until the wait is over.
    let (publisher, session_public) = key_publisher(directory, id, key_file, directory.wait)?;
    let mut sync = DirectorySync::new(directory.clone(), Some(publisher));
    // Ctrl-C ends the process here (no handler is installed until the node runs).
    let never = AtomicBool::new(false);
    let asker = DirectoryClient::new(directory.clone());
    let topology = sync.wait_for(directory.wait, &never, |t| {
        lists_node(&asker, t, id, session_public)
    })?;
    Ok((topology, sync))
}

/// The publisher of this node's keys (signed with its identity key), for the network's
/// epochs as the first authority to answer within `wait` gives them.
fn key_publisher(
    directory: &DirectoryConfig,
    id: NodeId,
    key_file: &std::path::Path,
    wait: Duration,
) -> Result<(KeyPublisher, SessionPublic), String> {
    let keys = key_file::read_node_keys(key_file).map_err(|e| format!("key_file: {e}"))?;
    let session = keys.session.ok_or(
        "key_file: no session key: make a new key file with `loopix keygen --epochs N --out F`",
    )?;
    let identity = keys.identity.ok_or(
        "key_file: no identity key, which signs the keys a node uploads to the directory: \
         make a new key file with `loopix keygen --epochs N --out F` and register its \
         identity_key",
    )?;
    let deadline = Instant::now() + wait;
    let client = DirectoryClient::new(directory.clone());
    let schedule = loop {
        match client.schedule() {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no authority answered: {e}"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no authority answered yet");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    let public = session.public();
    Ok((
        KeyPublisher::new(id, identity, public, keys.seed, schedule),
        public,
    ))
}

/// `--check` with a directory, without waiting: uploads the node's keys once (which tells
/// whether it is registered under this identity key), then fetches the current document.
/// `Ok(Ok(topology))` if it lists the node with these keys; `Ok(Err(pending))` with what
/// the authorities say of it and of the next documents if not; `Err` if an authority
/// refused the keys or none answered.
fn check_registration(
    directory: &DirectoryConfig,
    id: NodeId,
    key_file: &std::path::Path,
) -> Result<Result<Topology, Pending>, String> {
    let (mut publisher, session) = key_publisher(directory, id, key_file, Duration::ZERO)?;
    let client = DirectoryClient::new(directory.clone());
    let now = NetworkClock::start().now_us();
    let upload = publisher
        .poll_upload(now)
        .ok_or("no keys to upload: the key file has none for the current epoch")?;
    let would = client
        .check_upload(&upload)
        .map_err(|e| format!("the authorities would not take this node's keys: {e}"))?;
    // A document that an authority serves and this configuration refuses is an error here
    // (the wrong authority key, a threshold the document does not meet); none at all is
    // what a network still forming looks like.
    for a in &directory.authorities {
        let Ok(bytes) = client.current_document_from(a) else {
            continue;
        };
        let mut follower = Follower::new(directory.trust.clone());
        follower
            .handle_fetched(now, Want::Current, &bytes)
            .map_err(|e| format!("{}: document refused: {e}", a.address))?;
        if let Some(t) = follower.poll_topology(now)
            && lists_node(&client, &t, id, session).is_ok()
        {
            return Ok(Ok(t));
        }
    }
    let standing = client.standing(Holder::Node(id));
    let mut report = format!(
        "node {}: its keys, signed by its identity key, would be taken by {would} of {} \
         authorities; {}",
        id.0,
        directory.authorities.len(),
        standing.text
    );
    // What the next documents lack, from the first authority that says.
    if let Some(status) = directory
        .authorities
        .iter()
        .find_map(|a| client.status_from(a).ok())
    {
        for line in status.lines().filter(|l| l.starts_with("epoch ")) {
            report.push('\n');
            report.push_str(line);
        }
    }
    Ok(Err(Pending { report }))
}

/// Whether `topology` lists node `id` with `session`; if not, what the authorities say
/// of it (registered and published from a later epoch, or registered nowhere).
fn lists_node(
    asker: &DirectoryClient,
    topology: &Topology,
    id: NodeId,
    session: SessionPublic,
) -> Result<(), NotYet> {
    match topology.node(id) {
        Some(n) if n.session_key == Some(session) => Ok(()),
        Some(_) => Err(NotYet::Wait(format!(
            "the document lists another session key for node {} (the one before this key \
             file's; the next document takes the new one)",
            id.0
        ))),
        None => {
            let s = asker.standing(Holder::Node(id));
            let text = format!("node {} is not in the current document ({})", id.0, s.text);
            Err(if s.unknown_to_all {
                NotYet::GiveUp(format!(
                    "{text}: register it at the authorities (`loopix directory register-node`)"
                ))
            } else {
                NotYet::Wait(text)
            })
        }
    }
}

/// Takes the next epoch's document if the core's rule says so
/// ([`loopix_core::pki::take::take_document`]: it lists this node with its session key and
/// keys its key file gives, on the network the node was built for), then hands it to every
/// shard. A refusal is logged with the reason and nothing changes. Returns the epoch now in
/// force and the last epoch it publishes this node's keys for, if it changed.
fn apply_document(
    cfg: &mut NodeConfig,
    node: &RunningNode,
    topology: Topology,
    now_us: u64,
) -> Option<(u64, u64)> {
    let epoch = topology.network.epochs.epoch_at(now_us);
    let seed = match read_seed(&cfg.key_file) {
        Ok(seed) => seed,
        Err(e) => {
            tracing::error!(epoch, error = %e, "new document not taken: the key file; keeping the old");
            return None;
        }
    };
    let Some(session) = cfg.node.session_key else {
        tracing::error!(
            epoch,
            "new document not taken: this node has no session key"
        );
        return None;
    };
    let taken = loopix_core::pki::take::take_document(
        &cfg.topology,
        &topology,
        cfg.node.id,
        &seed,
        session,
        now_us,
    );
    match taken {
        Ok(keys) => {
            // Taken: it lists this node.
            let me = topology.node(cfg.node.id).cloned()?;
            node.reload(&topology, &seed);
            tracing::info!(
                epoch,
                nodes = topology.nodes.len(),
                clients = topology.clients.len(),
                "network document in force"
            );
            cfg.topology = topology;
            cfg.node = me;
            Some((epoch, keys.last_published))
        }
        Err(e) => {
            tracing::error!(epoch, error = %e, "new document refused; keeping the old");
            None
        }
    }
}

fn serve_until_signal(
    mut cfg: NodeConfig,
    mut node: RunningNode,
    clock: NetworkClock,
    mut key_file_epoch: u64,
    started: Started,
    sync: Option<DirectorySync>,
    store: Option<Arc<durable_inbox::StoreStats>>,
) -> Result<(), String> {
    // One document an epoch: four waiting means the main loop is stuck, not busy.
    let (documents_tx, documents) = std::sync::mpsc::sync_channel::<Topology>(4);
    let freshness = sync.as_ref().map(DirectorySync::freshness);
    let _watch = sync
        .map(|s| {
            s.spawn(move |t| {
                if documents_tx.try_send(t).is_err() {
                    tracing::error!("a network document could not be handed over");
                }
            })
        })
        .transpose()
        .map_err(|e| format!("directory thread: {e}"))?;
    let cfg = &mut cfg;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| e.to_string())?;
    let shared = Arc::new(Mutex::new(Snapshot {
        role: Some(cfg.node.role),
        mu_per_s: cfg.topology.network.mu_per_s,
        shards: cfg.shards,
        epochs: Some(cfg.topology.network.epochs),
        document_epoch: cfg
            .directory
            .as_ref()
            .map(|_| cfg.topology.network.epochs.epoch_at(clock.now_us())),
        directory: freshness,
        keys_published_until: Some(started.keys_until),
        backend: Some(started.backend),
        store,
        ..Snapshot::default()
    }));
    if let Some(addr) = cfg.metrics {
        let local = metrics::serve(addr, Arc::clone(&shared))
            .map_err(|e| format!("metrics {addr}: {e}"))?;
        tracing::info!(%local, "metrics on http://{local}/metrics");
    }
    let Started {
        role,
        epoch,
        backend,
        ..
    } = started;
    tracing::info!(id = cfg.node.id.0, %role, shards = cfg.shards, %backend, listen = %node.local_addr, epoch, "node started");
    let (mut last_held, mut last_at) = (0u64, Instant::now());
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        // A shard that failed to start or died: the node cannot do its job. The others
        // send what they hold, and the process exits non-zero saying why (a supervisor
        // restarts it), never running on with a dead shard.
        if let Some(why) = node.failed_shard() {
            tracing::error!("{why}; stopping the node");
            node.shutdown(Duration::from_millis(cfg.grace_ms));
            return Err(why);
        }
        if reload.swap(false, Ordering::SeqCst)
            && let Some(keys_until) = reload_config(cfg, &node, clock.now_us())
            && let Ok(mut s) = shared.lock()
        {
            s.keys_published_until = Some(keys_until);
        }
        while let Ok(topology) = documents.try_recv() {
            if let Some((epoch, keys_until)) = apply_document(cfg, &node, topology, clock.now_us())
                && let Ok(mut s) = shared.lock()
            {
                s.document_epoch = Some(epoch);
                s.keys_published_until = Some(keys_until);
            }
        }
        ratchet_key_file(cfg, clock.now_us(), &mut key_file_epoch);
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
            s.now_us = clock.now_us();
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
