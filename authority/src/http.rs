//! The directory authority's HTTP server: fetches of the schedule and the documents, key
//! uploads, and the authority's counters, served so that no peer can stall it.
//!
//! It runs on a tokio runtime of its own thread, one task per connection, beside the
//! loop that publishes (which never waits on a client). Every connection has:
//! - a deadline on its request head ([`HEAD_DEADLINE`]) and its body ([`BODY_DEADLINE`]),
//!   and one on the whole connection, response written included ([`CONNECTION_DEADLINE`]),
//!   so a peer that trickles its request or never reads its answer is cut off;
//! - caps on the head's size and header count and on the body's size;
//! - one request only (no keep-alive, so requests pipelined behind it are never read);
//! - a place among at most [`Limits::connections`] at once, and [`Limits::per_source`]
//!   from one IP address, so one host cannot take every place. A connection beyond either
//!   cap is closed at once, unread.
//!
//! Every refusal is counted (`GET /metrics`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use loopix_core::pki::authority::{Authority, AuthorityGauges, Holder, Standing};
use loopix_core::pki::key_upload::MAX_UPLOAD_BYTES;
use loopix_crypto::NodeId;
use loopix_runtime::clock::NetworkClock;
use loopix_runtime::directory_client::{
    PATH_DOCUMENT, PATH_KEYS, PATH_KEYS_CHECK, PATH_SCHEDULE, PATH_STATUS, schedule_text,
};

/// A request's head must arrive whole within this.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// A request's body must arrive whole within this.
pub const BODY_DEADLINE: Duration = Duration::from_secs(2);
/// A connection is closed this long after it was accepted, whatever it is doing: long
/// enough to send the largest document to a reader on a slow link, short enough that a
/// peer that stops reading holds its place briefly.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(20);
/// The largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The most headers a request may carry.
pub const MAX_HEADERS: usize = 32;
/// Pause after a failed accept (out of descriptors): the pending peer is retried then.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How many connections are served at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// In all.
    pub connections: usize,
    /// From one IP address.
    pub per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 512,
            per_source: 16,
        }
    }
}

/// What the server counted, and what the publishing loop counts beside it.
#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_per_source: AtomicU64,
    pub timed_out: AtomicU64,
    pub bad_requests: AtomicU64,
    pub uploads_taken: AtomicU64,
    pub uploads_refused: AtomicU64,
    pub fetches: AtomicU64,
    pub documents_published: AtomicU64,
    pub nodes_left_out: AtomicU64,
    pub registry_reloads: AtomicU64,
}

impl Counters {
    fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (labels, v) in rows {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        counter(
            "loopix_directory_connections_total",
            "Connections accepted and served.",
            &[("", get(&self.connections))],
        );
        counter(
            "loopix_directory_connections_refused_total",
            "Connections closed unread: every place taken, or the source's places taken.",
            &[
                ("{reason=\"full\"}", get(&self.refused_full)),
                ("{reason=\"per_source\"}", get(&self.refused_per_source)),
            ],
        );
        counter(
            "loopix_directory_connections_timed_out_total",
            "Connections cut off at a deadline (head, body or the whole connection).",
            &[("", get(&self.timed_out))],
        );
        counter(
            "loopix_directory_bad_requests_total",
            "Requests refused as malformed, oversized or for an unknown path.",
            &[("", get(&self.bad_requests))],
        );
        counter(
            "loopix_directory_uploads_total",
            "Key uploads, by result.",
            &[
                ("{result=\"taken\"}", get(&self.uploads_taken)),
                ("{result=\"refused\"}", get(&self.uploads_refused)),
            ],
        );
        counter(
            "loopix_directory_fetches_total",
            "Schedule and document fetches answered.",
            &[("", get(&self.fetches))],
        );
        counter(
            "loopix_directory_documents_published_total",
            "Documents this authority made and signed.",
            &[("", get(&self.documents_published))],
        );
        counter(
            "loopix_directory_registry_reloads_total",
            "Registries re-read on SIGHUP and taken.",
            &[("", get(&self.registry_reloads))],
        );
        counter(
            "loopix_directory_nodes_left_out_total",
            "Nodes with keys held that a published document left out (keys it cannot list).",
            &[("", get(&self.nodes_left_out))],
        );
        out
    }
}

/// What requests are answered from.
pub struct Shared {
    pub authority: Mutex<Authority>,
    pub clock: NetworkClock,
    /// Where accepted uploads are kept (`uploads/node-<id>.txt`).
    pub dir: PathBuf,
    pub counters: Counters,
}

/// Serves `listener` until the process ends; returns only if the runtime cannot start.
pub fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, limits: Limits) -> String {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => return format!("the HTTP runtime: {e}"),
    };
    runtime.block_on(accept_loop(listener, shared, limits))
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
) -> String {
    if let Err(e) = listener.set_nonblocking(true) {
        return format!("the listening socket: {e}");
    }
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return format!("the listening socket: {e}"),
    };
    let places = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let sources: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            shared.counters.refused_full.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(source) = SourcePlace::take(&sources, peer.ip(), limits.per_source) else {
            shared
                .counters
                .refused_per_source
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            serve_connection(stream, peer, &shared).await;
            drop((place, source));
        });
    }
}

/// One of a source address's places, given back when dropped.
struct SourcePlace {
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourcePlace {
    fn take(sources: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<Self> {
        let mut held = sources.lock().ok()?;
        let n = held.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Self {
            sources: Arc::clone(sources),
            ip,
        })
    }
}

impl Drop for SourcePlace {
    fn drop(&mut self) {
        if let Ok(mut held) = self.sources.lock()
            && let Some(n) = held.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let service = service_fn(|request| {
        let shared = Arc::clone(shared);
        async move { Ok::<_, Infallible>(answer(request, &shared).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            if e.is_timeout() {
                shared.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            } else if e.is_parse() || e.is_parse_too_large() {
                shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(%peer, error = %e, "connection ended");
        }
        Err(_) => {
            shared.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection cut off at its deadline");
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, text: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r
}

/// A document's text as a body, shared with the authority's copy (never copied).
struct DocumentBody(Arc<str>);

impl AsRef<[u8]> for DocumentBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

async fn answer(request: Request<Incoming>, shared: &Shared) -> Answer {
    let now_us = shared.clock.now_us();
    let counters = &shared.counters;
    let path = request.uri().path().to_string();
    let fetch = || counters.fetches.fetch_add(1, Ordering::Relaxed);
    match (request.method(), path.as_str()) {
        (&Method::GET, PATH_SCHEDULE) => {
            fetch();
            match shared.authority.lock() {
                Ok(a) => text(StatusCode::OK, schedule_text(&a.schedule()).trim()),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authority state poisoned",
                ),
            }
        }
        (&Method::GET, "/metrics") => {
            let mut out = counters.render();
            if let Ok(a) = shared.authority.lock() {
                render_gauges(&mut out, &a.gauges(now_us));
            }
            text(StatusCode::OK, out.trim_end())
        }
        (&Method::GET, PATH_STATUS) => match shared.authority.lock() {
            Ok(a) => text(StatusCode::OK, a.status(now_us).trim_end()),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "authority state poisoned",
            ),
        },
        (&Method::GET, p) if p.starts_with(PATH_STATUS) && p.len() > PATH_STATUS.len() => {
            let who = standing_of(&p[PATH_STATUS.len()..]);
            let said = shared.authority.lock().ok().map(|a| {
                who.map(|w| {
                    let standing = a.standing(w, now_us);
                    (standing == Standing::Unknown, format!("{w}: {standing}"))
                })
            });
            match said {
                Some(Some((false, line))) => text(StatusCode::OK, &line),
                Some(Some((true, line))) => text(StatusCode::NOT_FOUND, &line),
                Some(None) => {
                    counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                    text(StatusCode::NOT_FOUND, "not found")
                }
                None => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authority state poisoned",
                ),
            }
        }
        (&Method::GET, p) if p.starts_with(PATH_DOCUMENT) => {
            let rest = &p[PATH_DOCUMENT.len()..];
            let doc = shared.authority.lock().ok().and_then(|a| match rest {
                "" => a.current_document(now_us),
                _ => rest
                    .strip_prefix('/')
                    .and_then(|e| e.parse().ok())
                    .and_then(|e| a.document(e)),
            });
            fetch();
            match doc {
                Some(d) => Response::new(Full::new(Bytes::from_owner(DocumentBody(d)))),
                None => text(StatusCode::NOT_FOUND, "no such document (yet)"),
            }
        }
        (&Method::POST, PATH_KEYS) => upload(request, shared, now_us, false).await,
        (&Method::POST, PATH_KEYS_CHECK) => upload(request, shared, now_us, true).await,
        _ => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            text(StatusCode::NOT_FOUND, "not found")
        }
    }
}

/// `POST /keys` (`check` false): takes a node's keys. `POST /keys/check`: says whether it
/// would, and keeps nothing (what `loopix node --check` asks).
async fn upload(request: Request<Incoming>, shared: &Shared, now_us: u64, check: bool) -> Answer {
    let counters = &shared.counters;
    let refuse = |status, why: &str| {
        counters.uploads_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %why, "upload refused");
        text(status, why)
    };
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > MAX_UPLOAD_BYTES) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("larger than {MAX_UPLOAD_BYTES} bytes"),
        );
    }
    let body = Limited::new(request.into_body(), MAX_UPLOAD_BYTES);
    let body = match tokio::time::timeout(BODY_DEADLINE, body.collect()).await {
        Err(_) => {
            counters.timed_out.fetch_add(1, Ordering::Relaxed);
            return refuse(StatusCode::REQUEST_TIMEOUT, "the body took too long");
        }
        Ok(Err(e)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("the body: {e} (at most {MAX_UPLOAD_BYTES} bytes)"),
            );
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if check {
        let checked = shared
            .authority
            .lock()
            .map_err(|_| "authority state poisoned".to_string())
            .and_then(|a| a.check_upload(now_us, &body).map_err(|e| e.to_string()));
        return match checked {
            Ok(node) => text(StatusCode::OK, &format!("would be taken: node {}", node.0)),
            Err(e) => refuse(StatusCode::BAD_REQUEST, &e),
        };
    }
    let taken = shared
        .authority
        .lock()
        .map_err(|_| "authority state poisoned".to_string())
        .and_then(|mut a| {
            let node = a.handle_upload(now_us, &body).map_err(|e| e.to_string())?;
            Ok((node, a.upload_text(node).unwrap_or_default().to_string()))
        });
    match taken {
        Ok((node, text_held)) => {
            crate::store_upload(&shared.dir, node, &text_held);
            counters.uploads_taken.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = node.0, "keys uploaded");
            text(StatusCode::OK, &format!("taken: node {}", node.0))
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, &e),
    }
}

/// The authority's state as gauges: who is registered, what is published, and how far
/// each node's keys reach (what `loopix directory status` says, for alerting).
fn render_gauges(out: &mut String, g: &AuthorityGauges) {
    use std::fmt::Write;
    let mut gauge = |name: &str, help: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let bare = |v: f64| std::iter::once((String::new(), v));
    gauge(
        "loopix_directory_nodes_registered",
        "Nodes in the registry.",
        &mut bare(g.nodes_registered as f64),
    );
    gauge(
        "loopix_directory_clients_registered",
        "Clients in the registry.",
        &mut bare(g.clients_registered as f64),
    );
    gauge(
        "loopix_directory_newest_document_epoch",
        "The newest epoch with a published document.",
        &mut g
            .newest_document
            .map(|e| (String::new(), e as f64))
            .into_iter(),
    );
    gauge(
        "loopix_directory_document_published",
        "Whether the current and the next epoch's documents are published (1) or not (0).",
        &mut [("current", g.current_published), ("next", g.next_published)]
            .into_iter()
            .map(|(e, p)| (format!("{{epoch=\"{e}\"}}"), f64::from(u8::from(p)))),
    );
    gauge(
        "loopix_directory_node_keys_until_epoch",
        "Each registered node: the last epoch its uploaded keys cover (0: none uploaded).",
        &mut g
            .keys_until
            .iter()
            .map(|(id, until)| (format!("{{node=\"{}\"}}", id.0), until.unwrap_or(0) as f64)),
    );
}

/// `/node/<id>` or `/client/<id>` (after [`PATH_STATUS`]): whom a standing request asks of.
fn standing_of(rest: &str) -> Option<Holder> {
    let (kind, id) = rest.strip_prefix('/')?.split_once('/')?;
    let id = NodeId(id.parse().ok()?);
    match kind {
        "node" => Some(Holder::Node(id)),
        "client" => Some(Holder::Client(id)),
        _ => None,
    }
}
