//! A directory authority (`loopix directory`): its registry, key uploads, the signed
//! document of each epoch, and the HTTP server that hands them out.
//!
//! - `loopix directory init --dir D` makes the authority's key (`D/authority.key`, mode
//!   0600) and a registry (`D/registry.toml`) with the default network parameters, and
//!   prints the public key nodes and clients must be given.
//! - `loopix directory register-node --dir D --id 1 --role mix --layer 1 --address A
//!   --identity-key K` and `register-client --dir D --id 1001 --provider 100 --public-key
//!   P --session-key S` add to the registry (refused, unchanged, if the result is invalid).
//! - `loopix directory serve --dir D --listen 0.0.0.0:8000` takes signed key uploads,
//!   publishes each epoch's document and serves it over HTTP (see
//!   `loopix_runtime::directory_client` for the paths). Uploads are kept in `D/uploads/`,
//!   documents in `D/documents/`; a restarted authority serves what it published.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand};
use loopix_core::pki::authority::{Authority, AuthorityConfig, KEPT_DOCUMENTS, Publish};
use loopix_core::pki::document::Threshold;
use loopix_core::pki::registry::{Registry, parse_identity_key};
use loopix_crypto::{IdentitySecret, NodeId};
use loopix_runtime::clock::NetworkClock;
use loopix_runtime::directory_client::{AuthorityAddress, DirectoryClient, DirectoryConfig};

pub mod http;

use crate::http::{Counters, Limits, Shared};
use loopix_runtime::key_file::{read_identity_key, write_identity_key};

/// Options of `loopix directory`.
#[derive(Args, Debug)]
pub struct DirectoryArgs {
    #[command(subcommand)]
    command: DirectoryCmd,
}

#[derive(Subcommand, Debug)]
enum DirectoryCmd {
    /// Make an authority: its key and a registry with the default network parameters.
    Init {
        /// The authority's directory (created).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Register a mix or a provider: its operator gives its address and identity key.
    RegisterNode {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's id.
        #[arg(long)]
        id: u64,
        /// `mix` or `provider`.
        #[arg(long)]
        role: String,
        /// A mix's layer.
        #[arg(long)]
        layer: Option<u8>,
        /// Where it listens, IP:port.
        #[arg(long)]
        address: String,
        /// Its identity key (the `identity_key` line `loopix keygen` printed).
        #[arg(long)]
        identity_key: String,
    },
    /// Register a client at its provider.
    RegisterClient {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The client's id.
        #[arg(long)]
        id: u64,
        /// Its provider's id.
        #[arg(long)]
        provider: u64,
        /// Its public key (`loopix keygen --out client.key` prints it).
        #[arg(long)]
        public_key: String,
        /// Its session key.
        #[arg(long)]
        session_key: String,
    },
    /// Serve: take key uploads, publish every epoch's document, answer fetches.
    Serve(ServeArgs),
    /// Ask a running authority what it holds: for the current and the next epoch, whether
    /// the document is published or what it still lacks, and each registered node's keys.
    Status {
        /// The authority, `<its key>@<host:port>` (as nodes and clients name it).
        #[arg(long)]
        authority: String,
    },
}

/// Options of `loopix directory serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The authority's directory (from `init`).
    #[arg(long)]
    dir: PathBuf,
    /// Where to answer HTTP.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// After starting, how long to wait for every registered node's keys before the
    /// first document is published without the missing ones, s.
    #[arg(long, default_value_t = 30)]
    bootstrap_wait_s: u64,
    /// Another authority of the network, `<its key>@<host:port>` (repeat for each): its
    /// signatures of the same document are added to this one's, so readers can require
    /// several.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Connections served at once; more are closed unread (counted).
    #[arg(long, default_value_t = Limits::default().connections)]
    max_connections: usize,
    /// Connections served at once from one IP address; more are closed unread (counted).
    #[arg(long, default_value_t = Limits::default().per_source)]
    max_connections_per_source: usize,
}

const KEY_FILE: &str = "authority.key";
const REGISTRY: &str = "registry.toml";

/// How often the publishing loop looks for a document due.
const PUBLISH_TICK: Duration = Duration::from_millis(100);

impl DirectoryArgs {
    /// Whether the command serves (and so logs) rather than prints and exits.
    pub fn serves(&self) -> bool {
        matches!(self.command, DirectoryCmd::Serve(_))
    }
}

/// Runs `loopix directory`'s subcommand.
pub fn run(args: &DirectoryArgs) -> Result<(), String> {
    match &args.command {
        DirectoryCmd::Init { dir } => init(dir),
        DirectoryCmd::RegisterNode {
            dir,
            id,
            role,
            layer,
            address,
            identity_key,
        } => {
            parse_identity_key("--identity-key", identity_key).map_err(|e| e.to_string())?;
            let layer = layer.map(|l| format!("layer = {l}\n")).unwrap_or_default();
            append(
                dir,
                &format!(
                    "\n[[nodes]]\nid = {id}\nrole = {role:?}\n{layer}address = {address:?}\nidentity_key = {identity_key:?}\n"
                ),
            )
        }
        DirectoryCmd::RegisterClient {
            dir,
            id,
            provider,
            public_key,
            session_key,
        } => append(
            dir,
            &format!(
                "\n[[clients]]\nid = {id}\nprovider = {provider}\npublic_key = {public_key:?}\nsession_key = {session_key:?}\n"
            ),
        ),
        DirectoryCmd::Serve(args) => serve(args),
        DirectoryCmd::Status { authority } => {
            let authority: AuthorityAddress =
                authority.parse().map_err(|e| format!("--authority {e}"))?;
            let config = DirectoryConfig::new(vec![authority.clone()], Threshold::AtLeast(1))
                .map_err(|e| e.to_string())?;
            let report = DirectoryClient::new(config).status_from(&authority)?;
            print!("{report}");
            Ok(())
        }
    }
}

fn init(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key_path = dir.join(KEY_FILE);
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| format!("no OS randomness: {e}"))?;
    let key = IdentitySecret::from_bytes(*seed);
    write_identity_key(&key_path, &key).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let registry = dir.join(REGISTRY);
    if !registry.exists() {
        write_file(&registry, DEFAULT_REGISTRY)?;
    }
    println!("authority key: {}", hex::encode(key.public().to_bytes()));
    println!(
        "registry: {} (set [network], then register nodes and clients)",
        registry.display()
    );
    Ok(())
}

const DEFAULT_REGISTRY: &str = "\
# A loopix directory authority's registry: the network's parameters and who is in it.
[network]
payload_bytes = 2048
layers = 3
mu_per_s = 20.0
lambda_payload_per_s = 2.0
lambda_loop_per_s = 2.0
lambda_drop_per_s = 2.0
lambda_mix_loop_per_s = 2.0
poll_size = 4
poll_rate_per_s = 1.0
epoch_s = 1200
epoch_start = 0
epoch_grace_s = 60
";

/// Appends `entry` to the registry if the result is valid.
fn append(dir: &Path, entry: &str) -> Result<(), String> {
    let path = dir.join(REGISTRY);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let new = format!("{text}{entry}");
    Registry::from_toml(&new).map_err(|e| format!("not registered: {e}"))?;
    write_file(&path, &new)?;
    println!("registered in {}", path.display());
    Ok(())
}

/// Writes `text` to `path` through a file beside it, so a crash leaves the old or the new.
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("next");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    let dir = &args.dir;
    let key = read_identity_key(&dir.join(KEY_FILE))?;
    let registry_path = dir.join(REGISTRY);
    let text = std::fs::read_to_string(&registry_path)
        .map_err(|e| format!("{}: {e}", registry_path.display()))?;
    let registry =
        Registry::from_toml(&text).map_err(|e| format!("{}: {e}", registry_path.display()))?;
    let public = key.public();
    let mut authority = Authority::new(
        registry,
        key,
        AuthorityConfig {
            bootstrap_wait_us: args.bootstrap_wait_s.saturating_mul(1_000_000),
        },
    );
    restore(&mut authority, dir)?;
    let peers = args
        .peers
        .iter()
        .map(|p| p.parse().map_err(|e| format!("--peer {e}")))
        .collect::<Result<Vec<AuthorityAddress>, String>>()?;
    if args.max_connections == 0 || args.max_connections_per_source == 0 {
        return Err("--max-connections and --max-connections-per-source must be at least 1".into());
    }
    let limits = Limits {
        connections: args.max_connections,
        per_source: args.max_connections_per_source,
    };
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|e| format!("listen {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_or(args.listen.to_string(), |a| a.to_string());
    tracing::info!(%local, key = %hex::encode(public.to_bytes()), "directory authority serving");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let reread = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reread))
        .map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        authority: Mutex::new(authority),
        clock: NetworkClock::start(),
        dir: dir.clone(),
        counters: Counters::default(),
    });
    let http = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("loopix-directory-http".into())
            .spawn(move || http::serve(listener, shared, limits))
            .map_err(|e| format!("HTTP thread: {e}"))?
    };
    if !peers.is_empty() {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("loopix-directory-peers".into())
            .spawn(move || gather_signatures(&peers, &shared, &stop))
            .map_err(|e| format!("peer thread: {e}"))?;
    }
    // Publishing: this loop only; the server answers from the same state, and nothing here
    // waits on a client.
    while !stop.load(Ordering::SeqCst) {
        if http.is_finished() {
            let why = http
                .join()
                .unwrap_or_else(|_| "the HTTP thread panicked".to_string());
            return Err(format!("the HTTP server stopped: {why}"));
        }
        if reread.swap(false, Ordering::SeqCst) {
            reload_registry(&shared, &registry_path);
        }
        publish_due(&shared, shared.clock.now_us());
        std::thread::sleep(PUBLISH_TICK);
    }
    tracing::info!("directory authority stopped");
    Ok(())
}

/// Once a second: for the current and the next epoch's documents, asks each peer whose
/// signature ours lacks for its copy and adds its signature if it signed the same
/// document (stored before it is served).
fn gather_signatures(peers: &[AuthorityAddress], shared: &Shared, stop: &AtomicBool) {
    let (authority, dir, clock) = (&shared.authority, &shared.dir, shared.clock);
    let keys: Vec<_> = peers.iter().map(|p| p.key).collect();
    // Each peer's copy is fetched for its own signature, checked when merged.
    let Ok(config) = DirectoryConfig::new(peers.to_vec(), Threshold::AllowMinority(1)) else {
        tracing::error!("--peer: the same authority twice");
        return;
    };
    let client = DirectoryClient::new(config);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
        let now = clock.now_us();
        let current = match authority.lock() {
            Ok(a) => a.schedule().epoch_at(now),
            Err(_) => return,
        };
        for epoch in [current, current + 1] {
            for peer in peers {
                let lacking = authority
                    .lock()
                    .ok()
                    .and_then(|a| a.signed_by(epoch, &peer.key))
                    == Some(false);
                if !lacking {
                    continue;
                }
                let theirs = match client.document_from(peer, epoch) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(peer = %peer.address, epoch, error = %e, "no peer document");
                        continue;
                    }
                };
                let Ok(mut a) = authority.lock() else {
                    return;
                };
                match a.merge_peer_document(epoch, &theirs, &keys) {
                    Ok(Some(text)) => {
                        drop(a);
                        let path = dir.join("documents").join(format!("{epoch}.txt"));
                        match write_file(&path, &text) {
                            Ok(()) => {
                                tracing::info!(peer = %peer.address, epoch, "peer's signature added")
                            }
                            Err(e) => tracing::error!(epoch, error = %e, "document not stored"),
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(peer = %peer.address, epoch, error = %e, "peer's document not merged")
                    }
                }
            }
        }
    }
}

/// Deletes the stored documents of epochs before `oldest` (the authority serves only the
/// newest [`KEPT_DOCUMENTS`], so its disk stays bounded); how many it deleted.
fn prune_documents(documents: &Path, oldest: u64) -> Result<usize, String> {
    let mut deleted = 0;
    let entries =
        std::fs::read_dir(documents).map_err(|e| format!("{}: {e}", documents.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let epoch = path
            .extension()
            .filter(|x| *x == "txt")
            .and(path.file_stem())
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok());
        if epoch.is_some_and(|e| e < oldest) {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// SIGHUP: re-reads the registry, so nodes and clients registered (or removed) while the
/// authority runs are in (or out of) the next document. A registry that does not parse, or
/// changes the network's parameters, is refused with the reason and nothing changes.
fn reload_registry(shared: &Shared, path: &Path) {
    let read = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| Registry::from_toml(&text).map_err(|e| e.to_string()));
    let registry = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "registry not reloaded");
            return;
        }
    };
    let (nodes, clients) = (registry.nodes.len(), registry.clients.len());
    let Ok(mut a) = shared.authority.lock() else {
        return;
    };
    match a.set_registry(registry) {
        Ok(dropped) => {
            drop(a);
            for node in &dropped {
                let stored = shared
                    .dir
                    .join("uploads")
                    .join(format!("node-{}.txt", node.0));
                if let Err(e) = std::fs::remove_file(&stored) {
                    tracing::warn!(file = %stored.display(), error = %e, "upload not deleted");
                }
            }
            shared
                .counters
                .registry_reloads
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                nodes,
                clients,
                uploads_dropped = dropped.len(),
                "registry reloaded"
            );
        }
        Err(e) => tracing::error!(file = %path.display(), error = %e, "registry not reloaded"),
    }
}

/// Loads the uploads and documents kept in `dir`.
fn restore(authority: &mut Authority, dir: &Path) -> Result<(), String> {
    for sub in ["uploads", "documents"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let entries = |sub: &str| -> Result<Vec<PathBuf>, String> {
        let d = dir.join(sub);
        let mut out: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        out.sort();
        Ok(out)
    };
    for path in entries("documents")? {
        let epoch: Option<u64> = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok());
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match epoch
            .ok_or("file name is not an epoch".to_string())
            .and_then(|e| authority.restore_document(e, text))
        {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "stored document set aside")
            }
        }
    }
    for path in entries("uploads")? {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Err(e) = authority.restore_upload(&bytes) {
            tracing::warn!(file = %path.display(), error = %e, "stored upload set aside");
        }
    }
    Ok(())
}

/// Publishes what is due, keeping each new document on disk before it is served.
fn publish_due(shared: &Shared, now_us: u64) {
    let Ok(mut a) = shared.authority.lock() else {
        return;
    };
    let (dir, counters) = (&shared.dir, &shared.counters);
    while let Some(p) = a.poll_publish(now_us) {
        match p {
            Publish::Published {
                epoch,
                text,
                left_out,
            } => {
                for (node, reason) in &left_out {
                    tracing::warn!(epoch, node = node.0, %reason, "node left out of the document");
                }
                let left = left_out.len() as u64;
                counters.nodes_left_out.fetch_add(left, Ordering::Relaxed);
                counters.documents_published.fetch_add(1, Ordering::Relaxed);
                let path = dir.join("documents").join(format!("{epoch}.txt"));
                match write_file(&path, &text) {
                    Ok(()) => tracing::info!(epoch, bytes = text.len(), "document published"),
                    Err(e) => tracing::error!(epoch, error = %e, "document not stored"),
                }
                let oldest = epoch.saturating_sub(KEPT_DOCUMENTS as u64 - 1);
                if let Err(e) = prune_documents(&dir.join("documents"), oldest) {
                    tracing::warn!(error = %e, "old documents not deleted");
                }
            }
            Publish::Waiting { epoch, problem } => {
                tracing::warn!(epoch, %problem, "document not published yet")
            }
        }
    }
}

/// Keeps an accepted upload, so a restarted authority has it.
pub fn store_upload(dir: &Path, node: NodeId, text: &str) {
    let path = dir.join("uploads").join(format!("node-{}.txt", node.0));
    if let Err(e) = write_file(&path, text) {
        tracing::error!(node = node.0, error = %e, "upload not stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_before_the_kept_ones_are_deleted_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("loopix-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "3.txt", "9.txt", "10.txt", "11.txt", "notes.md", "x.txt", "9.next",
        ] {
            std::fs::write(dir.join(name), "d").unwrap();
        }
        assert_eq!(prune_documents(&dir, 10), Ok(2));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["10.txt", "11.txt", "9.next", "notes.md", "x.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
