//! `loopix directory`: a directory authority.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand};
use loopix_core::pki::authority::{Authority, AuthorityConfig, Publish};
use loopix_core::pki::document::Threshold;
use loopix_core::pki::key_upload::MAX_UPLOAD_BYTES;
use loopix_core::pki::registry::{Registry, parse_identity_key};
use loopix_crypto::{Address, IdentitySecret};
use loopix_runtime::clock::NetworkClock;
use loopix_runtime::directory_client::{
    AuthorityAddress, DirectoryClient, DirectoryConfig, PATH_DOCUMENT, PATH_KEYS, PATH_SCHEDULE,
    schedule_text,
};
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
}

const KEY_FILE: &str = "authority.key";
const REGISTRY: &str = "registry.toml";

/// Uploads read at once; more are answered 503 (each holds a thread while it reads).
const MAX_REQUESTS_IN_FLIGHT: usize = 32;

/// The whole of a request's body must arrive within this.
const BODY_DEADLINE: Duration = Duration::from_secs(2);

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
    crate::logging::init()?;
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
    let server =
        tiny_http::Server::http(args.listen).map_err(|e| format!("listen {}: {e}", args.listen))?;
    let local = server
        .server_addr()
        .to_ip()
        .map_or(args.listen.to_string(), |a| a.to_string());
    tracing::info!(%local, key = %hex::encode(public.to_bytes()), "directory authority serving");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let clock = NetworkClock::start();
    let authority = Arc::new(Mutex::new(authority));
    let in_flight = Arc::new(AtomicUsize::new(0));
    if !peers.is_empty() {
        let (authority, stop, dir) = (Arc::clone(&authority), Arc::clone(&stop), dir.clone());
        std::thread::Builder::new()
            .name("loopix-directory-peers".into())
            .spawn(move || gather_signatures(&peers, &authority, &dir, clock, &stop))
            .map_err(|e| format!("peer thread: {e}"))?;
    }
    while !stop.load(Ordering::SeqCst) {
        publish_due(&authority, dir, clock.now_us());
        let request = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "receiving a request");
                continue;
            }
        };
        // Fetches are answered here at once: they read no body. Uploads read one, each on
        // a thread of its own, so a slow sender holds up neither fetches nor other uploads.
        if request.method() != &tiny_http::Method::Post {
            answer(request, &authority, dir, clock);
            continue;
        }
        if in_flight.load(Ordering::SeqCst) >= MAX_REQUESTS_IN_FLIGHT {
            let _ = request.respond(text_response(503, "busy"));
            continue;
        }
        in_flight.fetch_add(1, Ordering::SeqCst);
        let (authority, in_flight, dir) =
            (Arc::clone(&authority), Arc::clone(&in_flight), dir.clone());
        let spawned = std::thread::Builder::new()
            .name("loopix-directory-request".into())
            .spawn(move || {
                answer(request, &authority, &dir, clock);
                in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no thread for a request");
        }
    }
    tracing::info!("directory authority stopped");
    Ok(())
}

/// Once a second: for the current and the next epoch's documents, asks each peer whose
/// signature ours lacks for its copy and adds its signature if it signed the same
/// document (stored before it is served).
fn gather_signatures(
    peers: &[AuthorityAddress],
    authority: &Mutex<Authority>,
    dir: &Path,
    clock: NetworkClock,
    stop: &AtomicBool,
) {
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
                        let path = dir.join("documents").join(format!("{epoch}.txt"));
                        match write_file(&path, text) {
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
fn publish_due(authority: &Mutex<Authority>, dir: &Path, now_us: u64) {
    let Ok(mut a) = authority.lock() else {
        return;
    };
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
                let path = dir.join("documents").join(format!("{epoch}.txt"));
                match write_file(&path, &text) {
                    Ok(()) => tracing::info!(epoch, bytes = text.len(), "document published"),
                    Err(e) => tracing::error!(epoch, error = %e, "document not stored"),
                }
            }
            Publish::Waiting { epoch, problem } => {
                tracing::warn!(epoch, %problem, "document not published yet")
            }
        }
    }
}

fn text_response(status: u16, text: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(format!("{text}\n")).with_status_code(status)
}

fn answer(
    mut request: tiny_http::Request,
    authority: &Mutex<Authority>,
    dir: &Path,
    clock: NetworkClock,
) {
    let now_us = clock.now_us();
    let url = request.url().to_string();
    let response = match (request.method(), url.as_str()) {
        (tiny_http::Method::Get, PATH_SCHEDULE) => authority
            .lock()
            .map(|a| text_response(200, schedule_text(&a.schedule()).trim()))
            .unwrap_or_else(|_| text_response(500, "authority state poisoned")),
        (tiny_http::Method::Get, path) if path.starts_with(PATH_DOCUMENT) => {
            let rest = &path[PATH_DOCUMENT.len()..];
            let doc = authority.lock().ok().and_then(|a| match rest {
                "" => a.current_document(now_us).map(str::to_string),
                _ => rest
                    .strip_prefix('/')
                    .and_then(|e| e.parse().ok())
                    .and_then(|e| a.document(e).map(str::to_string)),
            });
            match doc {
                Some(d) => tiny_http::Response::from_data(d.into_bytes()),
                None => text_response(404, "no such document (yet)"),
            }
        }
        (tiny_http::Method::Post, PATH_KEYS) => match read_body(&mut request) {
            Err(e) => text_response(400, &e),
            Ok(body) => {
                let taken = authority
                    .lock()
                    .map_err(|_| "authority state poisoned".to_string())
                    .and_then(|mut a| {
                        let node = a.handle_upload(now_us, &body).map_err(|e| e.to_string())?;
                        Ok((node, a.upload_text(node).unwrap_or_default().to_string()))
                    });
                match taken {
                    Ok((node, text)) => {
                        store_upload(dir, node, &text);
                        tracing::info!(node = node.0, "keys uploaded");
                        text_response(200, &format!("taken: node {}", node.0))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "upload refused");
                        text_response(400, &e)
                    }
                }
            }
        },
        _ => text_response(404, "not found"),
    };
    let _ = request.respond(response);
}

fn store_upload(dir: &Path, node: Address, text: &str) {
    let path = dir.join("uploads").join(format!("node-{}.txt", node.0));
    if let Err(e) = write_file(&path, text) {
        tracing::error!(node = node.0, error = %e, "upload not stored");
    }
}

/// A request's body, at most an upload's size, whole within [`BODY_DEADLINE`].
fn read_body(request: &mut tiny_http::Request) -> Result<Vec<u8>, String> {
    if request.body_length().is_some_and(|n| n > MAX_UPLOAD_BYTES) {
        return Err(format!("larger than {MAX_UPLOAD_BYTES} bytes"));
    }
    let deadline = std::time::Instant::now() + BODY_DEADLINE;
    let mut body = Vec::new();
    let mut chunk = [0u8; 1024];
    let reader = request.as_reader();
    loop {
        if std::time::Instant::now() > deadline {
            return Err("the body took too long".into());
        }
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) => {
                body.extend_from_slice(&chunk[..n]);
                if body.len() > MAX_UPLOAD_BYTES {
                    return Err(format!("larger than {MAX_UPLOAD_BYTES} bytes"));
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
