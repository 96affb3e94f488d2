//! The clients of a run: started on a thread per core against a network, given real
//! messages at Poisson times, and stopped so that their last acknowledgements leave.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use loopix_core::pki::document::Threshold;
use loopix_core::roles::RoleConfig;
use loopix_core::roles::acks::AckConfig;
use loopix_core::roles::client::Client;
use loopix_crypto::NodeId;
use loopix_runtime::client_driver::{RunningClient, follow_directory};
use loopix_runtime::client_host::{ClientHost, host_threads};
use loopix_runtime::directory_client::{DirectoryConfig, DirectorySync, DirectoryWatch};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::traffic::Traffic;
use crate::network::{Layout, Nodes, unix_ms};

/// What one run of clients does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// How many of the network's clients run (the first, by id: spread over providers).
    pub clients: usize,
    /// How long clients are given real messages.
    pub duration: Duration,
    /// How long to wait after that for the last to arrive.
    pub drain: Duration,
    /// Mean seconds between one client's real messages.
    pub message_interval_s: f64,
    /// Sends of one fragment before its message is given up (0: no acks).
    pub ack_attempts: u32,
    /// Each client's departure times kept for the Poisson test (0: none).
    pub departures_per_client: usize,
}

/// Running clients, and with a directory the thread that hands them each new document.
pub(crate) struct Population {
    pub(crate) clients: Vec<RunningClient>,
    watch: Option<DirectoryWatch>,
    /// Documents handed over after the first.
    pub(crate) switched: Arc<AtomicU64>,
}

impl Population {
    /// Starts the first `plan.clients` clients of `layout`, sharing a thread per core.
    pub(crate) fn start(layout: &Layout, plan: &Plan) -> Result<Self, String> {
        // With a directory, the clients build paths from its documents only.
        let (topology, sync) = match layout.authorities.len() {
            0 => (layout.topology.clone(), None),
            all => {
                let config =
                    DirectoryConfig::new(layout.authorities.clone(), Threshold::AtLeast(all))
                        .map_err(|e| e.to_string())?;
                let mut sync = DirectorySync::new(config, None);
                let topology =
                    sync.wait_for(Duration::from_secs(60), &AtomicBool::new(false), |_| Ok(()))?;
                (topology, Some(sync))
            }
        };
        if plan.clients > layout.client_keys.len() {
            return Err(format!(
                "{} clients asked for, the network has {}",
                plan.clients,
                layout.client_keys.len()
            ));
        }
        let mut host = ClientHost::new(host_threads(plan.clients))
            .map_err(|e| e.to_string())?
            .recording_departures(plan.departures_per_client);
        let mut clients = Vec::with_capacity(plan.clients);
        for (id, key) in layout.client_keys.iter().take(plan.clients) {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
            let config = RoleConfig {
                max_buffered_fragments: 10_000,
                acks: AckConfig {
                    max_attempts: plan.ack_attempts,
                },
                ..RoleConfig::client(*id, key.clone()).seeded(seed)
            };
            let client = Client::new(&topology, config).map_err(|e| e.to_string())?;
            clients.push(
                host.start(client, layout.client_bind)
                    .map_err(|e| e.to_string())?,
            );
        }
        let switched = Arc::new(AtomicU64::new(0));
        let watch = sync
            .map(|sync| follow_directory(sync, &clients, Arc::clone(&switched)))
            .transpose()
            .map_err(|e| format!("directory thread: {e}"))?;
        Ok(Self {
            clients,
            watch,
            switched,
        })
    }

    /// How late the clients' timers fired: (the most, µs; how many over 50 ms).
    pub(crate) fn timer_lag(&self) -> (u64, u64) {
        self.clients
            .iter()
            .map(RunningClient::timer_lag)
            .fold((0, 0), |a, b| (a.0.max(b.0), a.1 + b.1))
    }

    /// Stops every client (all asked first, so their last polls overlap), takes their
    /// last outputs into `traffic`, and returns (sends, receives) their sockets refused.
    pub(crate) fn stop(mut self, traffic: &mut Traffic) -> (u64, u64) {
        for c in &self.clients {
            c.request_stop();
        }
        let errors = self
            .clients
            .iter()
            .map(RunningClient::socket_errors)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        for c in &mut self.clients {
            c.stop();
            traffic.collect(c);
        }
        drop(self.watch.take());
        errors
    }
}

/// Gives the clients real messages (each at Poisson times of mean
/// `plan.message_interval_s`, to another running client chosen at random) for
/// `plan.duration`, then waits for them to settle or the drain to end. A node that dies
/// ends the run (kept in `traffic`). `tick` runs every few ms with the nodes, the time
/// since the start and whether messages are still being given. Progress goes to
/// `progress` every 5 s.
pub(crate) fn drive(
    plan: &Plan,
    clients: &[RunningClient],
    t: &mut Traffic,
    stop: &AtomicBool,
    nodes: &mut Nodes,
    mut tick: impl FnMut(&mut Nodes, Duration, bool),
    progress: &dyn Fn(&str),
) {
    let mut rng = ChaCha20Rng::seed_from_u64(unix_ms() as u64);
    let ids: Vec<NodeId> = clients.iter().map(|c| c.id).collect();
    let start = Instant::now();
    let send_until = start + plan.duration;
    let drain_until = send_until + plan.drain;
    let mut next_send: Vec<Instant> = ids
        .iter()
        .map(|_| start + exp(&mut rng, plan.message_interval_s))
        .collect();
    let mut last_progress = start;
    let mut last_death_check = start;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= drain_until || (now >= send_until && t.settled(plan.ack_attempts > 0)) {
            break;
        }
        if now.duration_since(last_death_check) >= Duration::from_millis(100) {
            last_death_check = now;
            if let Some(why) = nodes.died() {
                progress(&why);
                t.node_died = Some(why);
                break;
            }
        }
        tick(nodes, now.duration_since(start), now < send_until);
        for (i, c) in clients.iter().enumerate() {
            if now < send_until && now >= next_send[i] {
                let to =
                    ids[(i + 1 + (rng.next_u64() as usize % (ids.len() - 1).max(1))) % ids.len()];
                n += 1;
                let message = format!("message {n} from {} to {}", c.id.0, to.0).into_bytes();
                t.queue(c.id, to, now, message.clone());
                c.send(to, message);
                next_send[i] = now + exp(&mut rng, plan.message_interval_s);
            }
        }
        for c in clients {
            t.collect(c);
        }
        if now.duration_since(last_progress) >= Duration::from_secs(5) {
            last_progress = now;
            let phase = if now < send_until {
                "sending"
            } else {
                "draining"
            };
            progress(&format!(
                "{:>4.0} s {phase}: {} real messages sent, {} delivered",
                now.duration_since(start).as_secs_f64(),
                t.sent_count(),
                t.delivered_count()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    t.ended = Some(Instant::now());
}

fn exp(rng: &mut ChaCha20Rng, mean_s: f64) -> Duration {
    let us = loopix_core::roles::rate::exp_us(rng, 1.0 / mean_s.max(1e-6)).unwrap_or(0);
    Duration::from_micros(us)
}
