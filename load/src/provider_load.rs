//! `loopix provider-load`: a provider under a population of real client sessions.
//!
//! The generator plays every client of one provider (each a Noise session of the core's
//! client side, over a few dozen sockets so that initiations spread over the provider's
//! shards as a population's do) and the one layer-1 mix of a one-layer network. Per
//! second of a step at rate R, the provider unwraps R packets: R/2 sent by clients in their
//! sessions (each relayed to the mix, where the generator times the hop), and R/2 delivered
//! by the mix to clients (each stored, then collected by its client's polls, which
//! acknowledge what they got). Clients poll at the default ratio of polls to packets
//! (λ + λL + λD = 1.5/s against 1 poll/s: two polls for every three packets) and re-key
//! at `--handshakes-per-s`. Every packet sent is accounted for: forwarded or collected,
//! or lost, with the provider's drops by reason beside the generator's own kernel drops.
//!
//! `--setup` writes the benchmark network into `--dir` (a topology, the mix's and the
//! provider's key files, one key file per client); `perf/provider.sh` starts the provider
//! on it and runs `--find-capacity` for 1 shard and for all.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use loopix_core::formats::wire::read_item;
use loopix_core::network::topology::{Role, Topology};
use loopix_core::session::initiator::Opened;
use loopix_core::session::{ClientSession, FrameKind, FrameLayout};
use loopix_crypto::params::{HEADER_LEN, MAC_LEN};
use loopix_crypto::{Command, Hop, NodeId, SessionSecret};
use loopix_runtime::clock::NetworkClock;
use loopix_sim::network::{NetworkSpec, generate_at};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use crate::attribution::{GeneratorCounts, LossBySide, node_counters, own_kernel_drops};
use crate::setup::{LoadNodes, Pool, Setup, build_pool};

/// Options of `loopix provider-load`.
#[derive(Args, Debug, Clone)]
pub struct ProviderLoadArgs {
    /// The benchmark network's directory (written by `--setup`).
    #[arg(long)]
    dir: PathBuf,
    /// Write the network into `--dir` (one mix, one provider, `--clients` clients) and exit.
    #[arg(long)]
    setup: bool,
    /// With `--setup`: clients of the provider.
    #[arg(long, default_value_t = 256)]
    clients: u32,
    /// Packets a second the provider unwraps: half from clients, half delivered by the mix.
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// Seconds of load a step.
    #[arg(long, default_value_t = 3.0)]
    duration_s: f64,
    /// Client handshakes a second (re-keying sessions), spread over the clients.
    #[arg(long, default_value_t = 8.0)]
    handshakes_per_s: f64,
    /// The provider's metrics address: its drops, store and shards beside our counts.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Ramp the rate and report the highest with no loss and the hop's p99 within the bound
    /// (needs --metrics, to count the provider's shards).
    #[arg(long)]
    find_capacity: bool,
    /// Capacity mode: the p99 of a client packet's hop through the provider, µs.
    #[arg(long, default_value_t = 2_000.0)]
    p99_bound_us: f64,
    /// Send datagrams due within this of now at once (wake once per quantum), µs.
    #[arg(long, default_value_t = 300)]
    send_quantum_us: u32,
    /// Capacity mode: bisection steps after the first failure.
    #[arg(long, default_value_t = 2)]
    refine: usize,
}

/// Client sockets: initiations are steered by their source, so a population spreads
/// over the provider's shards only if it sends from many addresses.
const CLIENT_SOCKETS: usize = 32;

/// Per client, packets a second the topology's quota allows (λP + λL + λD, held to twice
/// that) and polls: far above what a step sends, so quotas never decide the figures.
const LAMBDA_PER_S: f64 = 100.0;
const POLL_RATE_PER_S: f64 = 200.0;

/// Polls per client packet at the default rates (1 poll/s against 1.5 packets/s).
const POLLS_PER_PACKET: f64 = 2.0 / 3.0;

/// How long after the load clients go on polling for what is still stored.
const DRAIN: Duration = Duration::from_secs(5);

/// Largest loss a capacity step may show.
const MAX_LOSS: f64 = 0.001;

/// One step's figures.
#[derive(Serialize, Debug, Clone)]
pub struct StepReport {
    pub offered_pps: f64,
    /// Client packets sent, and forwarded to the mix.
    pub client_sent: u64,
    pub forwarded: u64,
    /// Packets the mix delivered, and collected by their clients' polls.
    pub delivered_sent: u64,
    pub collected: u64,
    /// Meant to be sent and neither forwarded nor collected (a failed send included).
    pub lost: u64,
    pub loss: f64,
    /// A client packet's hop through the provider, µs.
    pub latency_us: crate::loadgen::Percentiles,
    pub polls_per_s: f64,
    pub answer_items: u64,
    pub handshakes_per_s: f64,
    pub handshakes_done: u64,
    pub cookies: u64,
    /// Every lost packet by side: the generator's own (its sockets' receive buffers full),
    /// the provider's (its drops, with its counters over the step), or neither's.
    pub loss_by_side: LossBySide,
    /// The provider's time on received batches per datagram, µs.
    pub node_receive_us_per_datagram: Option<f64>,
    /// The provider process's CPU time (every thread: shards, store writer) per packet it
    /// was offered to unwrap, µs: its cost against the crypto floor, whatever share of the
    /// cores the generator beside it took.
    pub node_cpu_us_per_packet: Option<f64>,
    /// Store commits a second, their p99 (histogram bound) and the longest, µs.
    pub store_commits_per_s: Option<f64>,
    pub store_commit_p99_us: Option<f64>,
    pub store_commit_max_us: Option<f64>,
    /// The longest any shard waited on anything but the network, since it started, µs;
    /// and of that, on the store and on the replay journal.
    pub max_shard_block_us: Option<f64>,
    pub max_shard_block_store_us: Option<f64>,
    pub max_shard_block_journal_us: Option<f64>,
    pub passed: bool,
}

/// What `--find-capacity --json` prints.
#[derive(Serialize, Debug)]
pub struct CapacityReport {
    pub capacity_pps: f64,
    pub shards: usize,
    pub clients: usize,
    pub floor_ns: f64,
    pub floor_pps: f64,
    pub efficiency: f64,
    pub p99_bound_us: f64,
    /// The last step that passed (all zeros if none did).
    pub at_capacity: Option<StepReport>,
    pub steps: Vec<StepReport>,
}

/// Runs `loopix provider-load`.
pub fn run(args: &ProviderLoadArgs) -> Result<(), String> {
    if args.setup {
        return setup(&args.dir, args.clients);
    }
    let bench = Bench::open(args)?;
    if args.find_capacity {
        let report = bench.find_capacity(args)?;
        if args.json {
            return crate::json::print(&report);
        }
        println!(
            "capacity {:.0} packets/s on {} shard(s) with {} client sessions (no loss, hop p99 <= {:.0} us); floor {:.0} packets/s per core; efficiency {:.2}",
            report.capacity_pps,
            report.shards,
            report.clients,
            report.p99_bound_us,
            report.floor_pps,
            report.efficiency
        );
        return Ok(());
    }
    let step = bench.step(args, args.rate)?;
    if args.json {
        return crate::json::print(&step);
    }
    println!(
        "offered {:.0} packets/s: {} of {} client packets forwarded, {} of {} deliveries collected ({} lost); hop p99 {:.0} us; {:.0} polls/s, {:.1} handshakes/s",
        step.offered_pps,
        step.forwarded,
        step.client_sent,
        step.collected,
        step.delivered_sent,
        step.lost,
        step.latency_us.p99,
        step.polls_per_s,
        step.handshakes_per_s
    );
    Ok(())
}

/// Writes the benchmark network: a one-layer topology of mix 1 and provider 1000 on
/// loopback ports free now, their key files, and every client's.
fn setup(dir: &Path, clients: u32) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir.join("clients")).map_err(io)?;
    let ports: Vec<SocketAddr> = (0..2)
        .map(|_| {
            UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map_err(io)
        })
        .collect::<Result<_, _>>()?;
    let now_s = NetworkClock::start().now_us() / 1_000_000;
    let spec = NetworkSpec {
        layers: 1,
        mixes_per_layer: 1,
        providers: 1,
        clients,
        lambda_payload_per_s: LAMBDA_PER_S / 3.0,
        lambda_loop_per_s: LAMBDA_PER_S / 3.0,
        lambda_drop_per_s: LAMBDA_PER_S / 3.0,
        lambda_mix_loop_per_s: 0.0,
        poll_rate_per_s: POLL_RATE_PER_S,
        epoch_start_s: now_s,
        published_epochs: 8,
        ..NetworkSpec::default()
    };
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| format!("no OS randomness: {e}"))?;
    let net = generate_at(&spec, u64::from_le_bytes(seed), |id| {
        if id.0 == 1 { ports[0] } else { ports[1] }
    })
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("topology.toml"), net.topology.to_toml()).map_err(io)?;
    for n in &net.topology.nodes {
        let name = match n.role {
            Role::Mix { .. } => "mix.key",
            Role::Provider => "provider.key",
        };
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        loopix_runtime::key_file::write_seed(
            &path,
            &net.keys.nodes[&n.id],
            &net.keys.sessions[&n.id],
            None,
        )
        .map_err(io)?;
    }
    for (id, key) in &net.keys.clients {
        let path = client_key_path(dir, *id);
        let _ = std::fs::remove_file(&path);
        loopix_runtime::key_file::write_client_key(&path, key).map_err(io)?;
    }
    eprintln!(
        "provider-load: network in {}: mix 1 at {}, provider 1000 at {}, {clients} clients",
        dir.display(),
        ports[0],
        ports[1]
    );
    Ok(())
}

fn client_key_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join("clients").join(format!("{}.key", id.0))
}

/// One client as the generator plays it.
struct Client {
    id: NodeId,
    session: ClientSession,
    /// Ids of the items its last answers carried, acknowledged by its next polls.
    acks: VecDeque<u64>,
    socket: usize,
}

/// The generator's fixed part.
struct Bench {
    setup: Setup,
    topology: Topology,
    provider: NodeId,
    provider_addr: SocketAddr,
    layout: FrameLayout,
    clients: Vec<Mutex<Client>>,
    sockets: Vec<UdpSocket>,
    /// Which client each session index we use belongs to (ours, in the provider's frames).
    owners: Mutex<HashMap<u32, usize>>,
    metrics: Option<SocketAddr>,
    handshakes_done: AtomicU64,
    cookies: AtomicU64,
}

impl Bench {
    fn open(args: &ProviderLoadArgs) -> Result<Self, String> {
        let path = args.dir.join("topology.toml");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let topology =
            Topology::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let provider = topology
            .providers()
            .next()
            .ok_or("the topology has no provider")?;
        let mix = topology
            .mixes_in_layer(1)
            .next()
            .ok_or("the topology has no mix")?;
        let nodes = LoadNodes::new(path.clone(), provider.id, args.dir.join("mix.key"), mix.id);
        let setup = Setup::for_nodes(&nodes, 0)?;
        let layout = FrameLayout::new(&topology.network.params, topology.network.poll_size);
        let provider_key = provider
            .session_key
            .ok_or("the provider has no session key")?;
        let sockets: Vec<UdpSocket> = (0..CLIENT_SOCKETS)
            .map(|_| crate::setup::bind_large("127.0.0.1:0".parse().expect("an address")))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("client sockets: {e}"))?;
        let clients = topology
            .clients_of(provider.id)
            .enumerate()
            .map(|(i, c)| {
                let key =
                    loopix_runtime::key_file::read_client_key(&client_key_path(&args.dir, c.id))?;
                Ok(Mutex::new(Client {
                    id: c.id,
                    session: ClientSession::new(
                        SessionSecret::derive_from(&key),
                        provider_key,
                        layout,
                    ),
                    acks: VecDeque::new(),
                    socket: i % CLIENT_SOCKETS,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if clients.is_empty() {
            return Err("the provider has no clients".into());
        }
        Ok(Self {
            provider_addr: provider.address,
            provider: provider.id,
            setup,
            topology,
            layout,
            clients,
            sockets,
            owners: Mutex::new(HashMap::new()),
            metrics: args.metrics,
            handshakes_done: AtomicU64::new(0),
            cookies: AtomicU64::new(0),
        })
    }

    /// Client `c` sends a handshake initiation.
    fn handshake(&self, c: usize, now_us: u64, rng: &mut ChaCha20Rng, frame: &mut [u8]) {
        let mut client = lock(&self.clients[c]);
        let Some(len) = client.session.write_initiation(now_us, rng, frame) else {
            return;
        };
        let index = u32::from_le_bytes(frame[4..8].try_into().unwrap_or_default());
        lock(&self.owners).insert(index, c);
        let _ = self.sockets[client.socket].send_to(&frame[..len], self.provider_addr);
    }

    /// Client `c` seals `plain` and sends it; false without a session.
    fn send_plain(&self, c: usize, plain: &[u8], frame: &mut [u8]) -> bool {
        let mut client = lock(&self.clients[c]);
        let Some(len) = client.session.seal(plain, frame) else {
            return false;
        };
        self.sockets[client.socket]
            .send_to(&frame[..len], self.provider_addr)
            .is_ok()
    }

    /// Client `c` polls, acknowledging what it collected since its last poll.
    fn poll(&self, c: usize, plain: &mut [u8], frame: &mut [u8]) -> bool {
        plain.fill(0);
        plain[0] = FrameKind::Poll as u8;
        let n = usize::from(self.topology.network.poll_size);
        {
            let mut client = lock(&self.clients[c]);
            for slot in plain[1..].chunks_exact_mut(8).take(n) {
                match client.acks.pop_front() {
                    Some(id) => slot.copy_from_slice(&id.to_le_bytes()),
                    None => break,
                }
            }
        }
        self.send_plain(c, plain, frame)
    }

    /// Brings every client's session up (initiations paced, retried after a cookie or a
    /// loss), before any load.
    fn establish(&self) -> Result<(), String> {
        let clock = NetworkClock::start();
        let mut rng = os_seeded()?;
        let mut frame = vec![0u8; self.layout.frame_len()];
        let deadline = Instant::now() + Duration::from_secs(30);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let receiver = s.spawn(|| self.receive_answers(&stop, None));
            loop {
                let down: Vec<usize> = (0..self.clients.len())
                    .filter(|&c| !lock(&self.clients[c]).session.is_up(clock.now_us()))
                    .collect();
                if down.is_empty() || Instant::now() > deadline {
                    break;
                }
                for c in down {
                    self.handshake(c, clock.now_us(), &mut rng, &mut frame);
                    // 400 a second: under a provider's default load bound.
                    std::thread::sleep(Duration::from_micros(2_500));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            stop.store(true, Ordering::SeqCst);
            let _ = receiver.join();
        });
        let up = (0..self.clients.len())
            .filter(|&c| lock(&self.clients[c]).session.is_up(clock.now_us()))
            .count();
        if up < self.clients.len() {
            return Err(format!(
                "only {up} of {} client sessions came up",
                self.clients.len()
            ));
        }
        Ok(())
    }

    /// Until `stop`: reads every client socket, opening what the provider sent; with
    /// `delivered`, counts each delivered packet collected (by its MAC) once.
    fn receive_answers(&self, stop: &AtomicBool, delivered: Option<(&Pool, &[AtomicBool])>) -> u64 {
        let clock = NetworkClock::start();
        let mut fds: Vec<libc::pollfd> = self
            .sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut buf = vec![0u8; 65_536];
        let mut plain = vec![0u8; self.layout.plaintext_len()];
        let mut items = 0;
        while !stop.load(Ordering::SeqCst) {
            // SAFETY: valid pollfds for sockets we hold, for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
            if ready <= 0 {
                continue;
            }
            for (i, fd) in fds.iter_mut().enumerate() {
                if fd.revents == 0 {
                    continue;
                }
                fd.revents = 0;
                while let Ok(n) = recv_nonblocking(&self.sockets[i], &mut buf) {
                    let frame = &buf[..n];
                    let Some(index) = frame.first_chunk::<4>().map(|b| u32::from_be_bytes(*b))
                    else {
                        continue;
                    };
                    let Some(&c) = lock(&self.owners).get(&index) else {
                        continue;
                    };
                    let mut client = lock(&self.clients[c]);
                    match client.session.open(clock.now_us(), frame, &mut plain) {
                        Opened::Established => {
                            self.handshakes_done.fetch_add(1, Ordering::Relaxed);
                        }
                        Opened::CookieTaken => {
                            self.cookies.fetch_add(1, Ordering::Relaxed);
                        }
                        Opened::Plain(p) if p.kind == FrameKind::Item => {
                            let Some(item) = read_item(p.body) else {
                                continue;
                            };
                            items += 1;
                            client.acks.push_back(item.id);
                            let Some((pool, seen)) = delivered else {
                                continue;
                            };
                            let mac = item
                                .packet
                                .get(HEADER_LEN - MAC_LEN..HEADER_LEN)
                                .and_then(|m| <&[u8; MAC_LEN]>::try_from(m).ok());
                            if let Some(&k) = mac.and_then(|m| pool.by_mac.get(m)) {
                                seen[k as usize].store(true, Ordering::Relaxed);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        items
    }
}

/// One step's schedule: what is due next, every kind at its own constant spacing.
struct Schedule {
    /// Next due time of each kind (client packet, delivery, poll, handshake), ns from the
    /// start, and its spacing.
    due_ns: [f64; 4],
    gap_ns: [f64; 4],
}

impl Schedule {
    fn new(gaps_s: [f64; 4]) -> Self {
        let gap_ns = gaps_s.map(|g| {
            if g.is_finite() && g > 0.0 {
                g * 1e9
            } else {
                f64::INFINITY
            }
        });
        Self {
            due_ns: gap_ns,
            gap_ns,
        }
    }

    /// The next kind due and when; moves it on.
    fn next(&mut self) -> (usize, f64) {
        let (kind, &at) = self
            .due_ns
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("four kinds");
        self.due_ns[kind] += self.gap_ns[kind];
        (kind, at)
    }
}

const CLIENT_PACKET: usize = 0;
const DELIVERY: usize = 1;
const POLL: usize = 2;
const HANDSHAKE: usize = 3;

impl Bench {
    /// One step at `rate`: sessions up, the packets built, then the load, then polls until
    /// everything stored was collected (or [`DRAIN`] passed).
    fn step(&self, args: &ProviderLoadArgs, rate: f64) -> Result<StepReport, String> {
        self.establish()?;
        let clock = NetworkClock::start();
        let params = self.setup.params;
        let half = rate / 2.0;
        let count = (half * args.duration_s).ceil() as usize;
        let now = clock.now_us();
        let relay = self.setup.path_at(now)?;
        eprintln!(
            "provider-load: building {} packets for {rate:.0} packets/s",
            2 * count
        );
        let client_pool = build_pool(&params, &|_| relay, count)?;
        let epoch = self.setup.epochs.epoch_at(now);
        let provider = self.topology.node(self.provider).ok_or("no provider")?;
        let paths: Vec<[Hop; 2]> = self
            .clients
            .iter()
            .map(|c| {
                let id = lock(c).id;
                let deliver = Command::Deliver {
                    client: id,
                    delay_us: 0,
                };
                let first = provider.epoch_keys.hop(epoch, deliver);
                let final_key = self.topology.client(id).map(|c| c.public_key);
                match (first, final_key) {
                    (Some(first), Some(key)) => Ok([first, Hop::new(key, Command::Final)]),
                    _ => Err(format!("no key of the provider for epoch {epoch}")),
                }
            })
            .collect::<Result<_, String>>()?;
        let delivery_pool = build_pool(&params, &|i| paths[i % paths.len()], count)?;
        // Building saturates every core; start on a quiet machine.
        std::thread::sleep(Duration::from_millis(300));
        let before = self.metrics.and_then(crate::scrape::scrape);
        let own_drops_before = own_kernel_drops(self.all_sockets());
        let handshakes_before = self.handshakes_done.load(Ordering::Relaxed);
        let cookies_before = self.cookies.load(Ordering::Relaxed);

        let sent_at: Vec<AtomicU64> = (0..count).map(|_| AtomicU64::new(0)).collect();
        let collected: Vec<AtomicBool> = (0..count).map(|_| AtomicBool::new(false)).collect();
        let stop = AtomicBool::new(false);
        let mut rx = self.setup.socket.try_clone().map_err(|e| e.to_string())?;
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| e.to_string())?;
        let mut rng = os_seeded()?;
        let started = Instant::now();
        let (sent, (forwarded, latency), items) = std::thread::scope(|s| {
            let forwarder = s.spawn(|| forwarded(&mut rx, &client_pool, &sent_at, &stop));
            let answers =
                s.spawn(|| self.receive_answers(&stop, Some((&delivery_pool, &collected))));
            let sent = self.send(args, half, &client_pool, &delivery_pool, &sent_at, &mut rng);
            self.drain(&collected, sent[DELIVERY]);
            // The last forwarded packets' way back.
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::SeqCst);
            let forwarded = forwarder
                .join()
                .unwrap_or_else(|_| (0, crate::loadgen::latency_histogram()));
            let items = answers.join().unwrap_or(0);
            (sent, forwarded, items)
        });
        let load_s = args.duration_s;
        let after = self.metrics.and_then(crate::scrape::scrape);
        let collected = collected
            .iter()
            .filter(|c| c.load(Ordering::Relaxed))
            .count() as u64;
        let [client_sent, delivered_sent, polls, handshakes] = sent;
        // A packet whose send failed is lost too: the generator's loss.
        let send_errors = (client_pool.packets.len() as u64).saturating_sub(client_sent)
            + (delivery_pool.packets.len() as u64).saturating_sub(delivered_sent);
        let lost = client_sent.saturating_sub(forwarded)
            + delivered_sent.saturating_sub(collected)
            + send_errors;
        let total = client_sent + delivered_sent + send_errors;
        let latency_us = crate::loadgen::percentiles(&latency);
        let loss = if total == 0 {
            0.0
        } else {
            lost as f64 / total as f64
        };
        let node = NodeFigures::between(before.as_deref(), after.as_deref(), started.elapsed());
        let report = StepReport {
            offered_pps: total as f64 / load_s,
            client_sent,
            forwarded,
            delivered_sent,
            collected,
            lost,
            loss,
            passed: loss < MAX_LOSS && latency_us.p99 <= args.p99_bound_us,
            latency_us,
            polls_per_s: polls as f64 / load_s,
            answer_items: items,
            handshakes_per_s: handshakes as f64 / load_s,
            handshakes_done: self.handshakes_done.load(Ordering::Relaxed) - handshakes_before,
            cookies: self.cookies.load(Ordering::Relaxed) - cookies_before,
            loss_by_side: LossBySide::attribute(
                lost,
                GeneratorCounts {
                    kernel_drops: own_kernel_drops(self.all_sockets())
                        .saturating_sub(own_drops_before),
                    send_errors,
                },
                node_counters(before.as_deref(), after.as_deref()),
                0,
            ),
            node_receive_us_per_datagram: node.receive_us,
            node_cpu_us_per_packet: node.cpu_s.map(|cpu| cpu * 1e6 / total.max(1) as f64),
            store_commits_per_s: node.commits_per_s,
            store_commit_p99_us: node.commit_p99_us,
            store_commit_max_us: node.commit_max_us,
            max_shard_block_us: node.max_block_us,
            max_shard_block_store_us: node.max_block_store_us,
            max_shard_block_journal_us: node.max_block_journal_us,
        };
        eprintln!(
            "provider-load: {rate:.0}/s: lost {} of {} ({} forwarded of {}, {} collected of {}), hop p99 {:.0} us, {:.0} polls/s, {:.1} handshakes/s: {}",
            report.lost,
            total,
            report.forwarded,
            report.client_sent,
            report.collected,
            report.delivered_sent,
            report.latency_us.p99,
            report.polls_per_s,
            report.handshakes_per_s,
            if report.passed { "pass" } else { "fail" }
        );
        Ok(report)
    }

    /// Sends the step's load; returns what it sent of each kind.
    fn send(
        &self,
        args: &ProviderLoadArgs,
        half: f64,
        client_pool: &Pool,
        delivery_pool: &Pool,
        sent_at: &[AtomicU64],
        rng: &mut ChaCha20Rng,
    ) -> [u64; 4] {
        let clock = NetworkClock::start();
        let mut schedule = Schedule::new([
            1.0 / half,
            1.0 / half,
            1.0 / (half * POLLS_PER_PACKET),
            1.0 / args.handshakes_per_s,
        ]);
        let quantum_ns = f64::from(args.send_quantum_us) * 1e3;
        let mut plain = vec![0u8; self.layout.plaintext_len()];
        let mut frame = vec![0u8; self.layout.frame_len()];
        let mut sent = [0u64; 4];
        let (mut next_client, mut next_delivery) = (0, 0);
        let mut turn = [0usize; 4];
        let n = self.clients.len();
        let start = Instant::now();
        while next_client < client_pool.packets.len() || next_delivery < delivery_pool.packets.len()
        {
            let (kind, due_ns) = schedule.next();
            let ahead = due_ns - start.elapsed().as_nanos() as f64;
            if ahead > quantum_ns {
                std::thread::sleep(Duration::from_nanos(ahead as u64));
            }
            let c = turn[kind] % n;
            turn[kind] += 1;
            match kind {
                CLIENT_PACKET if next_client < client_pool.packets.len() => {
                    let packet = &client_pool.packets[next_client];
                    plain.fill(0);
                    plain[0] = FrameKind::Packet as u8;
                    plain[1..1 + packet.len()].copy_from_slice(packet);
                    sent_at[next_client]
                        .store(loopix_runtime::rx_timestamp::now_ns(), Ordering::Relaxed);
                    if self.send_plain(c, &plain, &mut frame) {
                        sent[kind] += 1;
                    }
                    next_client += 1;
                }
                DELIVERY if next_delivery < delivery_pool.packets.len() => {
                    // Sealed as it goes: link counters in send order.
                    let d = self
                        .setup
                        .seal(clock.now_us(), &delivery_pool.packets[next_delivery]);
                    if self.setup.socket.send_to(&d, self.provider_addr).is_ok() {
                        sent[kind] += 1;
                    }
                    next_delivery += 1;
                }
                POLL if self.poll(c, &mut plain, &mut frame) => sent[kind] += 1,
                HANDSHAKE => {
                    self.handshake(c, clock.now_us(), rng, &mut frame);
                    sent[kind] += 1;
                }
                _ => {}
            }
        }
        sent
    }

    /// After the load: every client polls every 100 ms until each delivered packet was
    /// collected or [`DRAIN`] passed.
    fn drain(&self, collected: &[AtomicBool], delivered: u64) {
        let deadline = Instant::now() + DRAIN;
        let mut plain = vec![0u8; self.layout.plaintext_len()];
        let mut frame = vec![0u8; self.layout.frame_len()];
        while Instant::now() < deadline {
            let got = collected
                .iter()
                .filter(|c| c.load(Ordering::Relaxed))
                .count() as u64;
            if got >= delivered {
                return;
            }
            for c in 0..self.clients.len() {
                self.poll(c, &mut plain, &mut frame);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The generator's sockets: its clients' and the one playing the mix.
    fn all_sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        self.sockets
            .iter()
            .chain(std::iter::once(&self.setup.socket))
    }

    /// Ramps the rate as `loopix loadgen --find-capacity` does.
    fn find_capacity(&self, args: &ProviderLoadArgs) -> Result<CapacityReport, String> {
        let metrics = args
            .metrics
            .ok_or("--find-capacity needs --metrics, to count the provider's shards")?;
        let shards =
            crate::loadgen::wait_for_shards(metrics).ok_or("the provider reports no shard")?;
        std::thread::sleep(Duration::from_secs(1));
        let floor_ns =
            crate::speed::measure(&self.setup.params, 2, 15, Duration::from_millis(20)).floor_ns;
        let floor_pps = 1e9 / floor_ns;
        let mut steps: Vec<StepReport> = Vec::new();
        // A first, unjudged step: sessions come up and the node's first moments settle.
        let _ = self.step(args, 0.1 * floor_pps * shards as f64)?;
        let capacity =
            crate::loadgen::search_capacity(floor_pps * shards as f64, args.refine, |rate| {
                let step = self.step(args, rate)?;
                let passed = step.passed;
                steps.push(step);
                Ok(passed)
            })?;
        let at_capacity = steps
            .iter()
            .filter(|s| s.passed)
            .max_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps))
            .cloned();
        Ok(CapacityReport {
            capacity_pps: capacity,
            shards,
            clients: self.clients.len(),
            floor_ns,
            floor_pps,
            efficiency: capacity / (floor_pps * shards as f64),
            p99_bound_us: args.p99_bound_us,
            at_capacity,
            steps,
        })
    }
}

/// Until `stop`: the client packets the provider forwarded to the mix (the generator's
/// socket), each timed once by its MAC: how many, and their hop latency, ns.
fn forwarded(
    rx: &mut UdpSocket,
    pool: &Pool,
    sent_at: &[AtomicU64],
    stop: &AtomicBool,
) -> (u64, Histogram<u64>) {
    let mut latency = crate::loadgen::latency_histogram();
    let mut seen = vec![false; pool.packets.len()];
    let mut buf = vec![0u8; 65_536];
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let Ok((len, arrived_ns)) = loopix_runtime::rx_timestamp::recv(rx, &mut buf) else {
            continue;
        };
        let mac = buf[..len]
            .get(HEADER_LEN - MAC_LEN..HEADER_LEN)
            .and_then(|m| <&[u8; MAC_LEN]>::try_from(m).ok());
        let Some(&i) = mac.and_then(|m| pool.by_mac.get(m)) else {
            continue;
        };
        let i = i as usize;
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        n += 1;
        let sent = sent_at[i].load(Ordering::Relaxed);
        let _ = latency.record(arrived_ns.saturating_sub(sent).max(1));
    }
    (n, latency)
}

/// The provider's own figures over a step, from two scrapes of its metrics.
#[derive(Default)]
struct NodeFigures {
    receive_us: Option<f64>,
    /// Process CPU seconds over the step.
    cpu_s: Option<f64>,
    commits_per_s: Option<f64>,
    commit_p99_us: Option<f64>,
    commit_max_us: Option<f64>,
    max_block_us: Option<f64>,
    max_block_store_us: Option<f64>,
    max_block_journal_us: Option<f64>,
}

impl NodeFigures {
    fn between(before: Option<&str>, after: Option<&str>, elapsed: Duration) -> Self {
        let (Some(b), Some(a)) = (before, after) else {
            return Self::default();
        };
        use crate::scrape::{buckets, label, quantile_bound, samples, sum};
        let delta = |name| Some(sum(a, name)? - sum(b, name)?);
        let max_with = |name: &str, cause: Option<&str>| {
            samples(a)
                .filter(|(n, labels, _)| {
                    *n == name && cause.is_none_or(|c| label(labels, "cause") == Some(c))
                })
                .map(|(_, _, v)| v)
                .reduce(f64::max)
        };
        let max = |name: &str| max_with(name, None);
        let block = "loopix_shard_max_block_seconds";
        let commit = "loopix_store_commit_seconds";
        Self {
            receive_us: crate::loadgen::node_receive_us_per_packet(b, a),
            cpu_s: delta("process_cpu_seconds_total"),
            commits_per_s: delta("loopix_store_commits_total").map(|n| n / elapsed.as_secs_f64()),
            commit_p99_us: buckets(b, commit)
                .zip(buckets(a, commit))
                .and_then(|(b, a)| quantile_bound(&b, &a, 0.99))
                .map(|s| s * 1e6),
            commit_max_us: max("loopix_store_commit_max_seconds").map(|s| s * 1e6),
            max_block_us: max(block).map(|s| s * 1e6),
            max_block_store_us: max_with(block, Some("store")).map(|s| s * 1e6),
            max_block_journal_us: max_with(block, Some("journal")).map(|s| s * 1e6),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn recv_nonblocking(s: &UdpSocket, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: recv into a buffer we own, MSG_DONTWAIT.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A generator's RNG seeded from the OS (its clients' handshake randomness).
fn os_seeded() -> Result<ChaCha20Rng, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(ChaCha20Rng::from_seed(seed))
}
