//! Talking to directory authorities over HTTP: fetching documents and uploading a node's
//! keys, driving the core's [`Follower`] and [`KeyPublisher`]. Documents are verified by
//! the follower whichever authority served them, so any authority (or a cache in front
//! of one) can be asked; a refused document is logged and the next authority is tried.
//!
//! An authority answers:
//! - `GET /schedule`: its network's epochs, `start_s length_s grace_s` (unsigned: a node
//!   uses it only to choose which keys to upload before it holds a document);
//! - `GET /document`: the current epoch's document; `GET /document/<epoch>`: that epoch's;
//! - `POST /keys`: a signed key upload; 200 when taken, 400 with the reason when not;
//!   `POST /keys/check`: the same answer, and nothing kept;
//! - `GET /status`: what it holds and what its next documents lack (text, for operators);
//!   `GET /status/node/<id>`, `GET /status/client/<id>`: whether that node or client is
//!   registered and from which epoch it is published (404 when not registered).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loopix_core::network::epoch::EpochSchedule;
use loopix_core::network::topology::Topology;
use loopix_core::pki::authority::Holder;
use loopix_core::pki::document::{MAX_DOCUMENT_BYTES, Threshold, Trust, TrustError};
use loopix_core::pki::follower::{Follower, KeyPublisher, Want};
use loopix_crypto::IdentityPublic;

use crate::clock::NetworkClock;

pub const PATH_SCHEDULE: &str = "/schedule";
pub const PATH_DOCUMENT: &str = "/document";
pub const PATH_KEYS: &str = "/keys";
/// Whether an upload would be taken; nothing is kept.
pub const PATH_KEYS_CHECK: &str = "/keys/check";
/// What the authority holds and what its next documents lack (plain text, unsigned).
pub const PATH_STATUS: &str = "/status";

/// How long one request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What the authorities say of one node or client ([`DirectoryClient::standing`]).
#[derive(Clone, Debug)]
pub struct Standings {
    /// Each authority's answer, or why it gave none.
    pub text: String,
    /// Every authority that answered said it is not registered.
    pub unknown_to_all: bool,
}

/// How often the watch thread looks at what is due.
const TICK: Duration = Duration::from_millis(100);

/// One authority: where it answers and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityAddress {
    /// `host:port` of its HTTP server.
    pub address: String,
    pub key: IdentityPublic,
}

impl std::str::FromStr for AuthorityAddress {
    type Err = String;

    /// `<key, 64 hex digits>@<host:port>`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (key, address) = text
            .split_once('@')
            .ok_or_else(|| format!("{text}: expected <key>@<host:port>"))?;
        let key = loopix_core::pki::registry::parse_identity_key("key", key)
            .map_err(|e| format!("{text}: {e}"))?;
        check_host_port(address).map_err(|e| format!("{text}: {e}"))?;
        Ok(Self {
            address: address.to_string(),
            key,
        })
    }
}

/// An authority's address must name a host and a port (a name or an IP; IPv6 in brackets):
/// without one, every fetch would fail the same way until the wait ran out.
pub fn check_host_port(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` has no port: give <host>:<port>"))?;
    if host.is_empty() || host.contains('/') || (host.contains(':') && !host.starts_with('[')) {
        return Err(format!("`{address}` is not <host>:<port>"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{address}`: `{port}` is not a port")),
    }
}

/// The authorities a node or client follows, and how many must sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryConfig {
    pub authorities: Vec<AuthorityAddress>,
    pub trust: Trust,
    /// At start: how long to wait for a document that will do.
    pub wait: Duration,
}

impl DirectoryConfig {
    /// Follows `authorities`, trusting a document `threshold` of them signed.
    pub fn new(
        authorities: Vec<AuthorityAddress>,
        threshold: Threshold,
    ) -> Result<Self, TrustError> {
        let trust = Trust::new(authorities.iter().map(|a| a.key).collect(), threshold)?;
        Ok(Self {
            authorities,
            trust,
            wait: Duration::from_secs(600),
        })
    }
}

/// HTTP calls to the authorities.
#[derive(Clone)]
pub struct DirectoryClient {
    agent: ureq::Agent,
    config: DirectoryConfig,
}

impl DirectoryClient {
    pub fn new(config: DirectoryConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Self { agent, config }
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.config
    }

    /// `GET path` from `authority`: the status and body (at most `limit` bytes).
    fn get_any(&self, authority: &str, path: &str, limit: usize) -> Result<(u16, Vec<u8>), String> {
        let url = format!("http://{authority}{path}");
        let mut answer = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| format!("{url}: {e}"))?;
        let status = answer.status().as_u16();
        let body = answer
            .body_mut()
            .with_config()
            .limit(limit as u64)
            .read_to_vec()
            .map_err(|e| format!("{url}: {e}"))?;
        Ok((status, body))
    }

    /// `GET path` from `authority`: the body of a 200 answer, at most `limit` bytes.
    fn get(&self, authority: &str, path: &str, limit: usize) -> Result<Vec<u8>, String> {
        let url = format!("http://{authority}{path}");
        let (status, body) = self.get_any(authority, path, limit)?;
        if status != 200 {
            return Err(format!(
                "{url}: {status} {}",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            ));
        }
        Ok(body)
    }

    /// The document of `epoch` as `authority` serves it (unverified: the caller checks).
    pub fn document_from(
        &self,
        authority: &AuthorityAddress,
        epoch: u64,
    ) -> Result<Vec<u8>, String> {
        self.get(
            &authority.address,
            &format!("{PATH_DOCUMENT}/{epoch}"),
            MAX_DOCUMENT_BYTES,
        )
    }

    /// `authority`'s current document (unverified: the caller checks).
    pub fn current_document_from(&self, authority: &AuthorityAddress) -> Result<Vec<u8>, String> {
        self.get(&authority.address, PATH_DOCUMENT, MAX_DOCUMENT_BYTES)
    }

    /// `authority`'s status report ([`PATH_STATUS`]): informational, not signed.
    pub fn status_from(&self, authority: &AuthorityAddress) -> Result<String, String> {
        self.get(&authority.address, PATH_STATUS, 1 << 20)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// What each authority says of `who`: registered (and from which epoch it is
    /// published) or not. What a node or client missing from the document it fetched
    /// reports, so that "not yet published" and "unknown" read differently.
    pub fn standing(&self, who: Holder) -> Standings {
        let path = match who {
            Holder::Node(id) => format!("{PATH_STATUS}/node/{}", id.0),
            Holder::Client(id) => format!("{PATH_STATUS}/client/{}", id.0),
        };
        let mut said = Vec::new();
        let (mut unknown, mut answered) = (0, 0);
        for a in &self.config.authorities {
            match self.get_any(&a.address, &path, 1024) {
                Ok((status, body)) if status == 200 || status == 404 => {
                    answered += 1;
                    unknown += usize::from(status == 404);
                    let text = String::from_utf8_lossy(&body).trim().to_string();
                    said.push(format!("authority {}: {text}", a.address));
                }
                Ok((status, _)) => said.push(format!("authority {}: {status}", a.address)),
                Err(e) => said.push(e),
            }
        }
        Standings {
            text: said.join("; "),
            unknown_to_all: answered > 0 && unknown == answered,
        }
    }

    /// The network's epochs, from the first authority that answers.
    pub fn schedule(&self) -> Result<EpochSchedule, String> {
        let mut errors = Vec::new();
        for a in &self.config.authorities {
            match self
                .get(&a.address, PATH_SCHEDULE, 256)
                .and_then(|b| parse_schedule(&b))
            {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }

    /// Sends a signed upload to every authority; Ok with how many took it if any did.
    pub fn upload(&self, text: &str) -> Result<usize, String> {
        self.post_keys(PATH_KEYS, text)
    }

    /// Asks every authority whether it would take a signed upload (nothing is kept); Ok
    /// with how many would if any would, else what each one said.
    pub fn check_upload(&self, text: &str) -> Result<usize, String> {
        self.post_keys(PATH_KEYS_CHECK, text)
    }

    fn post_keys(&self, path: &str, text: &str) -> Result<usize, String> {
        let mut taken = 0;
        let mut errors = Vec::new();
        for a in &self.config.authorities {
            let url = format!("http://{}{path}", a.address);
            match self.agent.post(&url).send(text.as_bytes()) {
                Ok(answer) if answer.status().as_u16() == 200 => taken += 1,
                Ok(mut answer) => {
                    let why = answer
                        .body_mut()
                        .with_config()
                        .limit(1024)
                        .read_to_string()
                        .unwrap_or_default();
                    errors.push(format!("{url}: {} {}", answer.status(), why.trim()));
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        if taken > 0 {
            Ok(taken)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Fetches the document `want` names from each authority in turn until `follower`
    /// takes one; if none is taken, what went wrong with each.
    pub fn fetch_into(
        &self,
        follower: &mut Follower,
        now_us: u64,
        want: Want,
    ) -> Result<u64, String> {
        let mut problems = Vec::new();
        let path = match want {
            Want::Current => PATH_DOCUMENT.to_string(),
            Want::Epoch(e) => format!("{PATH_DOCUMENT}/{e}"),
        };
        for a in &self.config.authorities {
            match self.get(&a.address, &path, MAX_DOCUMENT_BYTES) {
                Ok(bytes) => match follower.handle_fetched(now_us, want, &bytes) {
                    Ok(epoch) => {
                        tracing::info!(authority = %a.address, epoch, "network document taken");
                        return Ok(epoch);
                    }
                    Err(e) => {
                        tracing::warn!(authority = %a.address, error = %e, "network document refused");
                        problems.push(format!("{}: document refused: {e}", a.address));
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "no network document");
                    problems.push(e);
                }
            }
        }
        follower.handle_fetch_failed(now_us);
        Err(problems.join("; "))
    }
}

fn parse_schedule(bytes: &[u8]) -> Result<EpochSchedule, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "schedule: not UTF-8")?;
    let n: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("schedule: not three numbers: {text:?}"))?;
    let [start, length, grace] = n[..] else {
        return Err(format!("schedule: not three numbers: {text:?}"));
    };
    EpochSchedule::from_secs(start, length, grace).map_err(|e| format!("schedule: {e:?}"))
}

/// The `GET /schedule` answer for `epochs`.
pub fn schedule_text(epochs: &EpochSchedule) -> String {
    const S: u64 = 1_000_000;
    format!(
        "{} {} {}\n",
        epochs.start_us / S,
        epochs.length_us / S,
        epochs.grace_us / S
    )
}

/// How often a wait that learns nothing new says so again.
pub const WAIT_REPORT: Duration = Duration::from_secs(10);

/// Why a document [`DirectorySync::wait_for`] fetched will not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotYet {
    /// A later one may (said while waiting, and if the wait runs out).
    Wait(String),
    /// None will: waiting is pointless (an id no authority has registered).
    GiveUp(String),
}

/// How fresh what a [`DirectorySync`] holds is, for metrics: unix µs of the last document
/// taken and of the last upload taken (0: none yet), and the last epoch the uploaded keys
/// cover. Written by the sync's thread, read by whoever serves metrics.
#[derive(Debug, Default)]
pub struct DirectoryFreshness {
    pub last_fetch_us: AtomicU64,
    pub last_upload_us: AtomicU64,
    pub keys_uploaded_until: AtomicU64,
}

/// A follower (and, for a node, its key publisher) kept up to date with the authorities.
pub struct DirectorySync {
    client: DirectoryClient,
    follower: Follower,
    publisher: Option<KeyPublisher>,
    clock: NetworkClock,
    /// What went wrong last (a fetch or an upload), for a caller that gives up waiting.
    last_problem: Option<String>,
    freshness: Arc<DirectoryFreshness>,
}

impl DirectorySync {
    /// Follows `config`'s authorities; a node passes its publisher to upload its keys.
    pub fn new(config: DirectoryConfig, publisher: Option<KeyPublisher>) -> Self {
        Self {
            follower: Follower::new(config.trust.clone()),
            client: DirectoryClient::new(config),
            publisher,
            clock: NetworkClock::start(),
            last_problem: None,
            freshness: Arc::default(),
        }
    }

    /// How fresh what it holds is (shared: it stays current as the sync runs).
    pub fn freshness(&self) -> Arc<DirectoryFreshness> {
        Arc::clone(&self.freshness)
    }

    /// One round: uploads keys if due, fetches what is due; returns the topology to use
    /// from now if it changed.
    pub fn step(&mut self) -> Option<Topology> {
        let now = self.clock.now_us();
        if let Some(p) = &mut self.publisher
            && let Some(upload) = p.poll_upload(now)
        {
            match self.client.upload(&upload) {
                Ok(n) => {
                    tracing::info!(authorities = n, "epoch keys uploaded");
                    p.handle_uploaded(now, true);
                    self.freshness.last_upload_us.store(now, Ordering::Relaxed);
                    if let Some(until) = p.uploaded_until() {
                        self.freshness
                            .keys_uploaded_until
                            .store(until, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "epoch keys not taken; trying again");
                    p.handle_uploaded(now, false);
                    self.last_problem = Some(format!("keys not taken: {e}"));
                }
            }
        }
        if let Some(want) = self.follower.poll_fetch(now) {
            match self.client.fetch_into(&mut self.follower, now, want) {
                Ok(_) => self.freshness.last_fetch_us.store(now, Ordering::Relaxed),
                Err(e) => self.last_problem = Some(e),
            }
        }
        let topology = self.follower.poll_topology(now)?;
        if let Some(p) = &mut self.publisher {
            p.set_schedule(topology.network.epochs);
        }
        Some(topology)
    }

    /// Runs rounds until a topology that `accept` takes arrives (a node waits for a
    /// document that lists it), `limit` passes or `stop` is set (Ctrl-C). What it waits
    /// for is logged when it changes, and every [`WAIT_REPORT`] while it does not.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        stop: &AtomicBool,
        accept: impl Fn(&Topology) -> Result<(), NotYet>,
    ) -> Result<Topology, String> {
        let start = Instant::now();
        let deadline = start + limit;
        let mut said: Option<(String, Instant)> = None;
        loop {
            if let Some(problem) = &self.last_problem {
                let due = said
                    .as_ref()
                    .is_none_or(|(text, at)| text != problem || at.elapsed() >= WAIT_REPORT);
                if due {
                    tracing::warn!(
                        waited_s = start.elapsed().as_secs(),
                        limit_s = limit.as_secs(),
                        "waiting for a network document: {problem}"
                    );
                    said = Some((problem.clone(), Instant::now()));
                }
            }
            if stop.load(Ordering::SeqCst) {
                let last = self.last_problem.as_deref().unwrap_or("no answer yet");
                return Err(format!(
                    "stopped while waiting for a network document: {last}"
                ));
            }
            if let Some(t) = self.step() {
                match accept(&t) {
                    Ok(()) => return Ok(t),
                    Err(NotYet::GiveUp(e)) => return Err(e),
                    Err(NotYet::Wait(e)) => {
                        tracing::info!(problem = %e, "waiting for a document that will do");
                        self.last_problem = Some(e);
                        // Ask again for the current one after a pause.
                        self.follower = Follower::new(self.client.config.trust.clone());
                        self.follower.handle_fetch_failed(self.clock.now_us());
                    }
                }
            }
            if Instant::now() >= deadline {
                let last = self.last_problem.as_deref().unwrap_or("no answer yet");
                return Err(format!(
                    "no usable network document within {} s: {last}",
                    limit.as_secs()
                ));
            }
            std::thread::sleep(TICK);
        }
    }

    /// Keeps following on a thread of its own, handing each new topology to
    /// `on_topology`, until the returned watch is dropped.
    pub fn spawn(
        mut self,
        mut on_topology: impl FnMut(Topology) + Send + 'static,
    ) -> std::io::Result<DirectoryWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("loopix-directory".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    if let Some(t) = self.step() {
                        on_topology(t);
                    }
                    std::thread::sleep(TICK);
                }
            })?;
        Ok(DirectoryWatch {
            stop,
            thread: Some(thread),
        })
    }
}

/// A running [`DirectorySync::spawn`]; stops when dropped.
pub struct DirectoryWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for DirectoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_round_trips_and_garbage_is_refused() {
        let s = EpochSchedule::new(7_000_000, 60_000_000, 5_000_000).unwrap();
        assert_eq!(parse_schedule(schedule_text(&s).as_bytes()), Ok(s));
        assert!(parse_schedule(b"1 2").is_err());
        assert!(parse_schedule(b"0 60 40").is_err(), "grace too long");
        assert!(parse_schedule(b"a b c").is_err());
    }
}
