//! `loopix client`: one or more clients against their provider, cover traffic always on.
//! Sends the messages given (as arguments or lines on stdin) from the first client to a
//! recipient, and prints every message the clients receive, one per line.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client_driver::{ClientOutput, RunningClient, follow_directory};
use crate::client_host::{ClientHost, host_threads};
use crate::delivered_log::DeliveredLog;
use crate::directory_client::{
    AuthorityAddress, DirectoryClient, DirectoryConfig, DirectorySync, NotYet,
};
use clap::Args;
use loopix_core::network::topology::Topology;
use loopix_core::pki::authority::Holder;
use loopix_core::pki::document::Threshold;
use loopix_core::roles::RoleConfig;
use loopix_core::roles::acks::AckConfig;
use loopix_core::roles::client::{Client, ClientEvent, DELIVERED_REMEMBERED};
use loopix_crypto::NodeId;

use crate::key_file::read_client_key as read_secret;

/// Options of `loopix client`.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The network's topology file (or follow directory authorities: `--authority`).
    #[arg(
        long,
        required_unless_present = "authorities",
        conflicts_with = "authorities"
    )]
    topology: Option<PathBuf>,
    /// A directory authority to take the network's signed documents from, as
    /// `<its key, 64 hex digits>@<host:port>` (repeat for several).
    #[arg(long = "authority")]
    authorities: Vec<String>,
    /// How many of the `--authority` keys must have signed a document (default: more than
    /// half of them).
    #[arg(long)]
    threshold: Option<usize>,
    /// Accept a `--threshold` of half the authorities or fewer: that many authorities
    /// together (one, at 1) could then give this client a forged network.
    #[arg(long)]
    allow_minority_threshold: bool,
    /// A client id from the topology (repeat for several clients).
    #[arg(long = "id", required = true)]
    ids: Vec<u64>,
    /// The secret key file of each `--id`, in the same order.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Recipient of the messages sent by the first client.
    #[arg(long)]
    send_to: Option<u64>,
    /// A message to send (repeat for several).
    #[arg(long = "message")]
    messages: Vec<String>,
    /// Also send every line of standard input as a message, each as it arrives (with
    /// `--until-sent` or `--until-acked`, the client waits for the end of the input too).
    #[arg(long)]
    stdin: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Stop once this many messages have been received.
    #[arg(long)]
    until_received: Option<usize>,
    /// Stop once every message given has left (all its fragments sent).
    #[arg(long)]
    until_sent: bool,
    /// Print received messages as JSON lines.
    #[arg(long)]
    json: bool,
    /// Sends of one fragment before its message is given up: each fragment asks its
    /// recipient for an acknowledgement and is sent again until it comes (0: no acks).
    #[arg(long, default_value_t = 8)]
    ack_attempts: u32,
    /// Stop once every message given has been acknowledged by its recipient (or given up).
    #[arg(long)]
    until_acked: bool,
    /// Attach this many single-use reply blocks to each message sent: the recipient can
    /// answer through them without learning where this client is (up to 255).
    #[arg(long, default_value_t = 0)]
    reply_blocks: u8,
    /// Answer every received message that carries reply blocks with this text, through
    /// its first block.
    #[arg(long)]
    answer: Option<String>,
}

/// Runs the clients.
pub fn run(args: &ClientArgs) -> Result<(), String> {
    // Everything local first: nothing is asked of anyone before the arguments and the keys
    // are known to be right.
    if args.ids.len() != args.keys.len() {
        return Err("give one --key per --id".into());
    }
    let run_for = args
        .duration_s
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| format!("--duration-s: {s} is not a number of seconds"))
        })
        .transpose()?;
    let sending = !args.messages.is_empty() || args.stdin;
    if sending != args.send_to.is_some() {
        return Err("--message and --stdin need --send-to, and --send-to needs a message".into());
    }
    let directory = match &args.topology {
        Some(_) => None,
        None => {
            let threshold = Threshold::from_options(args.threshold, args.allow_minority_threshold);
            Some(directory_config(&args.authorities, threshold)?)
        }
    };
    let keys = args
        .keys
        .iter()
        .map(|p| read_secret(p))
        .collect::<Result<Vec<_>, String>>()?;
    // Each client's record of what it delivered in earlier runs, beside its key.
    let mut records = BTreeMap::new();
    let mut delivered_before = Vec::new();
    for (id, key) in args.ids.iter().zip(&args.keys) {
        let mut path = key.as_os_str().to_os_string();
        path.push(".delivered");
        let (log, ids) = DeliveredLog::open(std::path::Path::new(&path), DELIVERED_REMEMBERED)?;
        records.insert(NodeId(*id), log);
        delivered_before.push(ids);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let (topology, sync) = match (&args.topology, directory) {
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let topology =
                Topology::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            (topology, None)
        }
        (None, None) => return Err("give --topology or --authority".into()),
        (None, Some(config)) => {
            let mut sync = DirectorySync::new(config.clone(), None);
            // Within --duration-s whatever the directory's wait: the run's whole length.
            let limit = run_for.map_or(config.wait, |d| d.min(config.wait));
            let asker = DirectoryClient::new(config.clone());
            let ids: Vec<NodeId> = args.ids.iter().map(|&i| NodeId(i)).collect();
            // Where each client stands, asked once: an id no authority registered is not
            // worth waiting for, and a wait says what it waits for.
            let standings = registered(&asker, &ids)?;
            let topology = sync
                .wait_for(limit, &stop, |t| listed(&asker, t, &ids))
                .map_err(|e| format!("{e} ({standings})"))?;
            (topology, Some(sync))
        }
    };
    if let Some(to) = args.send_to
        && topology.client(NodeId(to)).is_none()
    {
        return Err(format!("--send-to {to}: not a client of the topology"));
    }
    let mut clients = start(args, &topology, keys, delivered_before)?;
    let _watch = sync
        .map(|sync| follow_directory(sync, &clients, Arc::new(AtomicU64::new(0))))
        .transpose()
        .map_err(|e| format!("directory thread: {e}"))?;
    // Lines of standard input, each queued as it arrives (a pipe may stay open for ever).
    let lines = args.stdin.then(stdin_lines).transpose()?;
    let mut input_done = lines.is_none();
    let mut ledger = Ledger {
        records,
        collect_per_s: f64::from(topology.network.poll_size) * topology.network.poll_rate_per_s,
        ..Ledger::default()
    };
    if let Some(to) = args.send_to {
        for m in &args.messages {
            clients[0].send_with_replies(NodeId(to), m.clone().into_bytes(), args.reply_blocks);
            ledger.given += 1;
        }
    }
    let deadline = run_for.map(|d| started + d);
    while !stop.load(Ordering::SeqCst) {
        if let (Some(rx), Some(to)) = (&lines, args.send_to) {
            loop {
                match rx.try_recv() {
                    Ok(line) => {
                        clients[0].send_with_replies(
                            NodeId(to),
                            line.into_bytes(),
                            args.reply_blocks,
                        );
                        ledger.given += 1;
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        input_done = true;
                        break;
                    }
                }
            }
        }
        let all_sent = input_done && ledger.sent.len() + ledger.refused.len() == ledger.given;
        let all_settled = input_done && ledger.settled() == ledger.given;
        if deadline.is_some_and(|d| Instant::now() >= d)
            || args.until_received.is_some_and(|n| ledger.received >= n)
            || (args.until_sent && all_sent)
            || (args.until_acked && all_settled)
        {
            break;
        }
        for c in &clients {
            while let Ok(out) = c.output.try_recv() {
                ledger.take(args, c, out);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for c in &clients {
        c.request_stop();
    }
    for c in &mut clients {
        c.stop();
        // What came while it stopped (its last poll, fragments already on their way,
        // acks): counted and printed, never dropped.
        while let Ok(out) = c.output.try_recv() {
            ledger.take(args, c, out);
        }
    }
    let problems = ledger.problems(args);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// How often a client says again that a backlog waits at its provider.
const BACKLOG_REPORT: Duration = Duration::from_secs(10);

/// What became of the messages this run was given, from the clients' outputs.
#[derive(Default)]
struct Ledger {
    /// Messages given (arguments and lines of input).
    given: usize,
    /// Messages refused when queued, and why.
    refused: Vec<String>,
    /// Queued, in order.
    queued: Vec<u64>,
    /// Fragments sent of each message (by index: a resend counts once), and messages all
    /// of whose fragments left.
    fragments_sent: BTreeMap<u64, BTreeSet<u16>>,
    sent: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    gave_up: BTreeSet<u64>,
    /// Taken back at the stop: never to leave.
    withheld: BTreeSet<u64>,
    received: usize,
    /// Packets a second a client collects from its provider (N a poll), and when each
    /// client last said what waits there.
    collect_per_s: f64,
    backlog_said: BTreeMap<u64, Instant>,
    /// Each client's record of delivered messages, and failures to write it.
    records: BTreeMap<NodeId, DeliveredLog>,
    record_errors: Vec<String>,
}

impl Ledger {
    fn settled(&self) -> usize {
        self.acked.len() + self.gave_up.len() + self.refused.len()
    }

    /// Counts and prints one output of client `c`.
    fn take(&mut self, args: &ClientArgs, c: &RunningClient, out: ClientOutput) {
        let id = c.id.0;
        match out {
            ClientOutput::Event(ClientEvent::Delivered {
                msg_id, message, ..
            }) => {
                // On disk before it is shown: a crash in between loses the print, never
                // makes the next run deliver it again.
                if let Some(Err(e)) = self.records.get_mut(&c.id).map(|r| r.record(msg_id)) {
                    eprintln!("client {id}: delivered message {msg_id:016x} not recorded: {e}");
                    self.record_errors.push(e);
                }
                self.received += 1;
                eprintln!("client {id}: delivered message {msg_id:016x}");
                print_message(args.json, c.id, msg_id, &message);
            }
            ClientOutput::Queued(Ok(msg_id)) => {
                eprintln!("client {id}: queued message {msg_id:016x}");
                self.queued.push(msg_id);
            }
            ClientOutput::Queued(Err(e)) => self.refused.push(e.to_string()),
            ClientOutput::Event(ClientEvent::FragmentSent {
                msg_id,
                count,
                index,
                ..
            }) => {
                let left = self.fragments_sent.entry(msg_id).or_default();
                left.insert(index);
                if left.len() == usize::from(count) && self.sent.insert(msg_id) {
                    self.sent.insert(msg_id);
                    eprintln!("client {id}: sent message {msg_id:016x}");
                }
            }
            ClientOutput::Event(ClientEvent::RepliesOffered { msg_id, blocks }) => {
                if let (Some(text), Some(block)) = (&args.answer, blocks.first()) {
                    c.reply(block.clone(), text.clone().into_bytes());
                    eprintln!("client {id}: answered message {msg_id:016x}");
                }
            }
            ClientOutput::Event(ClientEvent::ReplyReceived {
                msg_id, message, ..
            }) => {
                self.received += 1;
                eprintln!("client {id}: answer to message {msg_id:016x}");
                print_message(args.json, c.id, msg_id, &message);
            }
            ClientOutput::ReplyRefused(e) => eprintln!("client {id}: answer not sent: {e}"),
            ClientOutput::Event(ClientEvent::Acked { msg_id, .. }) => {
                self.acked.insert(msg_id);
                eprintln!("client {id}: message {msg_id:016x} acknowledged");
            }
            ClientOutput::Event(ClientEvent::GaveUp { msg_id, .. }) => {
                eprintln!(
                    "client {id}: gave up message {msg_id:016x} (no acknowledgement after {} sends)",
                    args.ack_attempts
                );
                self.gave_up.insert(msg_id);
            }
            ClientOutput::Event(ClientEvent::Backlog { waiting, .. }) => {
                self.backlog(id, waiting);
            }
            ClientOutput::Withheld(ids) => self.withheld.extend(ids),
            ClientOutput::Stopped(stats) if stats.unacked_items > 0 => eprintln!(
                "client {id}: {} received item(s) not acknowledged before exit: the provider \
                 keeps them and the next run receives them again",
                stats.unacked_items
            ),
            _ => {}
        }
    }

    /// Says how many packets wait at a client's provider, and how long they take to
    /// collect: when a backlog appears, every [`BACKLOG_REPORT`] while it lasts, and once
    /// when it is collected.
    fn backlog(&mut self, id: u64, waiting: u32) {
        let said = self.backlog_said.get(&id).copied();
        let due = match said {
            None => waiting > 0,
            Some(at) => waiting == 0 || at.elapsed() >= BACKLOG_REPORT,
        };
        if !due {
            return;
        }
        if waiting == 0 {
            self.backlog_said.remove(&id);
            eprintln!("client {id}: its provider holds nothing more for it");
            return;
        }
        self.backlog_said.insert(id, Instant::now());
        eprintln!(
            "client {id}: {waiting} packet(s) wait at its provider (about {:.0} s to collect \
             at {} a second)",
            f64::from(waiting) / self.collect_per_s,
            self.collect_per_s
        );
    }

    /// Why this run did not do all it was given, each naming its messages: refused when
    /// queued, never left (nothing will leave after the exit), partly sent (will not arrive
    /// whole), given up, and (with acks, unless `--until-sent` asked for no more) sent but
    /// not acknowledged.
    fn problems(&self, args: &ClientArgs) -> Vec<String> {
        let mut out = Vec::new();
        if !self.record_errors.is_empty() {
            out.push(format!(
                "deliveries not recorded (a later run may deliver them again): {}",
                self.record_errors.join("; ")
            ));
        }
        let list = |ids: Vec<&u64>| {
            ids.iter()
                .map(|i| format!("{i:016x}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.refused.is_empty() {
            out.push(format!("refused: {}", self.refused.join(", ")));
        }
        let unqueued = self
            .given
            .saturating_sub(self.queued.len() + self.refused.len());
        if unqueued > 0 {
            out.push(format!(
                "{unqueued} message(s) never queued (stopped first)"
            ));
        }
        let unsent: Vec<&u64> = self
            .queued
            .iter()
            .filter(|m| !self.sent.contains(m))
            .collect();
        let (partly, never): (Vec<&u64>, Vec<&u64>) = unsent
            .into_iter()
            .partition(|m| self.fragments_sent.contains_key(m));
        if !never.is_empty() {
            out.push(format!(
                "never left ({} message(s), and none will): {}",
                never.len(),
                list(never)
            ));
        }
        if !partly.is_empty() {
            out.push(format!(
                "partly sent, will not arrive whole ({}): {}",
                partly.len(),
                list(partly)
            ));
        }
        let gave_up: Vec<&u64> = self.gave_up.iter().collect();
        if !gave_up.is_empty() {
            out.push(format!("given up (never acknowledged): {}", list(gave_up)));
        }
        if args.ack_attempts > 0 && !args.until_sent {
            let unacked: Vec<&u64> = self
                .queued
                .iter()
                .filter(|m| {
                    self.sent.contains(m) && !self.acked.contains(m) && !self.gave_up.contains(m)
                })
                .collect();
            if !unacked.is_empty() {
                out.push(format!(
                    "sent but not acknowledged yet ({}; they may still arrive): {}",
                    unacked.len(),
                    list(unacked)
                ));
            }
        }
        out
    }
}

/// Standard input's lines, read on a thread of their own as they come; the channel closes
/// at the end of the input (or a read error, said on stderr).
fn stdin_lines() -> Result<std::sync::mpsc::Receiver<String>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("loopix-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return; // the client stopped
                        }
                    }
                    Err(e) => {
                        eprintln!("loopix: stdin: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|e| format!("stdin thread: {e}"))?;
    Ok(rx)
}

/// What the authorities say of each client of `ids` (logged, and returned to quote if the
/// wait runs out); an error if one is registered at none of those that answered.
fn registered(asker: &DirectoryClient, ids: &[NodeId]) -> Result<String, String> {
    let mut said = Vec::new();
    for &id in ids {
        let s = asker.standing(Holder::Client(id));
        if s.unknown_to_all {
            return Err(not_registered(&id.0.to_string(), &s.text));
        }
        tracing::info!(client = id.0, standing = %s.text, "registration");
        said.push(format!("client {}: {}", id.0, s.text));
    }
    Ok(said.join("; "))
}

/// Whether `topology` lists every client of `ids`; if not, what the authorities say of
/// each missing one: registered and published from a later epoch (wait for it), or
/// registered nowhere (give up: no document will list it).
fn listed(asker: &DirectoryClient, topology: &Topology, ids: &[NodeId]) -> Result<(), NotYet> {
    let mut said = Vec::new();
    let mut unknown = Vec::new();
    for &id in ids.iter().filter(|&&id| topology.client(id).is_none()) {
        let s = asker.standing(Holder::Client(id));
        if s.unknown_to_all {
            unknown.push(id.0.to_string());
        }
        said.push(format!(
            "client {} is not in the current document ({})",
            id.0, s.text
        ));
    }
    match (said.is_empty(), unknown.is_empty()) {
        (true, _) => Ok(()),
        (false, true) => Err(NotYet::Wait(said.join("; "))),
        (false, false) => Err(NotYet::GiveUp(not_registered(
            &unknown.join(", "),
            &said.join("; "),
        ))),
    }
}

fn not_registered(ids: &str, said: &str) -> String {
    format!(
        "client {ids}: not registered at any authority that answered (its operator registers \
         a client with `loopix directory register-client`): {said}"
    )
}

/// `--authority KEY@HOST:PORT` flags as a directory to follow.
fn directory_config(
    authorities: &[String],
    threshold: Threshold,
) -> Result<DirectoryConfig, String> {
    let list = authorities
        .iter()
        .map(|a| a.parse().map_err(|e| format!("--authority {e}")))
        .collect::<Result<Vec<AuthorityAddress>, String>>()?;
    DirectoryConfig::new(list, threshold).map_err(|e| format!("--threshold: {e}"))
}

fn start(
    args: &ClientArgs,
    topology: &Topology,
    keys: Vec<loopix_crypto::SecretKey>,
    delivered_before: Vec<Vec<u64>>,
) -> Result<Vec<RunningClient>, String> {
    let mut out = Vec::new();
    // The clients share a thread per core, not one each.
    let mut host = ClientHost::new(host_threads(args.ids.len())).map_err(|e| e.to_string())?;
    let each = args
        .ids
        .iter()
        .zip(&args.keys)
        .zip(keys)
        .zip(delivered_before);
    for (((id, key_path), key), delivered) in each {
        let id = NodeId(*id);
        let me = topology
            .client(id)
            .ok_or_else(|| format!("--id {}: not a client of the topology", id.0))?;
        if key.public_key() != me.public_key {
            return Err(format!(
                "--key {}: does not match client {}",
                key_path.display(),
                id.0
            ));
        }
        let provider = topology
            .node(me.provider)
            .ok_or("client's provider")?
            .address;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
        let config = RoleConfig {
            acks: AckConfig {
                max_attempts: args.ack_attempts,
            },
            ..RoleConfig::client(id, key).seeded(seed)
        };
        let mut client = Client::new(topology, config).map_err(|e| e.to_string())?;
        client.restore_delivered(delivered);
        let bind: SocketAddr = if provider.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|_| "addr")?;
        out.push(host.start(client, bind).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn print_message(json: bool, to: NodeId, msg_id: u64, message: &[u8]) {
    let text = String::from_utf8_lossy(message);
    if json {
        let line = serde_json::json!({ "to": to.0, "msg_id": msg_id, "message": text });
        println!("{line}");
    } else {
        println!("{}: {text}", to.0);
    }
}
