//! The optional status page (`tracker --http ADDR`): a live view of the swarm in a browser, the
//! same data as JSON under `/api/`, and `/metrics` in Prometheus text format.
//!
//! It runs on the tracker's runtime and only reads the registry, taking its lock for as long as
//! a snapshot takes. The UDP tracker never waits on it: it is off by default, and when it is on,
//! at most [`MAX_CONNECTIONS`] connections are served at once ([`MAX_PER_SOURCE`] from one
//! source), idle or old ones are closed (see [`crate::http_conn`]), snapshots are capped at
//! [`MAX_ROWS`] rows per table (`offset` pages through the rest), a row at [`NAMES_PER_ROW`]
//! other names, and every answer at [`MAX_ANSWER`] bytes (rows that would not fit are left for
//! the next page). Answers are built one at a time, so only one is ever half-built; hyper writes
//! one answer per connection before it builds the next, so a client that does not read holds
//! one answer until its connection is closed as idle. [`crate::limits::Limits::HTTP_BYTES`]
//! adds it up.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use shoal_proto::tracker::Have;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::activity::{Tally, HISTORY};
use crate::registry::{Gauges, Registry};

use crate::http_conn::Limited;
pub use crate::http_conn::{MAX_CONNECTIONS, MAX_PER_SOURCE};
use crate::http_cost::Cost;

/// Most files or peers in one snapshot; the totals are always given.
pub const MAX_ROWS: usize = 2_000;
/// Rows in a snapshot unless `?limit=` asks for another number.
const DEFAULT_ROWS: usize = 500;
/// Names of a peer's files shown beside it, and of the files it is downloading.
const NAMES_PER_PEER: usize = 3;
/// Other names shown beside a file (peers may give it up to `--max-peers-per-file` of them).
pub const NAMES_PER_ROW: usize = 8;
/// Downloaders shown beside a file (with their progress); the count is always given.
const DOWNLOADERS_PER_FILE: usize = 8;
/// The most bytes in any answer's body.
pub const MAX_ANSWER: usize = 512 * 1024;
/// Room kept in an answer for what is not rows (tracker info, gauges, totals, the last minute's
/// activity: about 11 KiB at most).
const NOT_ROWS: usize = 32 * 1024;
/// What the rows of one answer may cost (see [`Cost`]).
const ROW_BUDGET: usize = MAX_ANSWER - NOT_ROWS;

pub(crate) const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_CSS: &str = include_str!("ui/app.css");
const APP_JS: &str = include_str!("ui/app.js");
const ICON_SVG: &str = include_str!("ui/icon.svg");

/// What the handlers share.
pub struct Status {
    pub registry: Arc<Mutex<Registry>>,
    /// The UDP address the tracker listens on, as bound.
    pub udp: SocketAddr,
    /// The last unfiltered snapshot, encoded: every open page asks for it each second, and on a
    /// large tracker it is worth building once for all of them.
    cache: Mutex<Option<Cached>>,
    /// Held while an answer is built and encoded: one at a time, so one transient copy at most.
    building: Mutex<()>,
    /// A private swarm's page key: every route asks for it ([`crate::http_key`]).
    key: Option<Arc<str>>,
    /// The page, with the key in its links in a private swarm.
    index: Bytes,
}

struct Cached {
    at: Instant,
    generation: u64,
    limit: usize,
    json: axum::body::Bytes,
}

/// How long an unfiltered snapshot is served to everyone who asks, as long as no peer or file
/// came or went: only its counters and idle times can be this much behind.
const CACHE_FOR: std::time::Duration = std::time::Duration::from_millis(300);

impl Status {
    pub fn new(registry: Arc<Mutex<Registry>>, udp: SocketAddr) -> Status {
        Status {
            registry,
            udp,
            cache: Mutex::new(None),
            building: Mutex::new(()),
            key: None,
            index: Bytes::from_static(INDEX_HTML.as_bytes()),
        }
    }

    /// The page of a private swarm's tracker: not found without `key`.
    pub fn with_key(mut self, key: &str) -> Status {
        self.key = Some(key.into());
        self.index = crate::http_key::keyed_page(INDEX_HTML, key).into();
        self
    }
}

/// Serves the status page on `listener` until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(Limited::new(listener), router(status))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

/// The routes, for [`serve`] and for tests.
pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route(
            "/",
            get(|State(status): State<Arc<Status>>| async move {
                asset("text/html; charset=utf-8", status.index.clone())
            }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
        .route("/api/swarm", get(swarm))
        .route("/api/files", get(files))
        .route("/api/peers", get(peers))
        .route("/api/stats", get(stats))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::from_fn_with_state(
            status.key.clone(),
            crate::http_key::require_key,
        ))
        .with_state(status)
}

fn asset(content_type: &'static str, body: impl Into<Bytes>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Everything the page needs comes from here; nothing is fetched from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'; img-src 'self' data:"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body.into(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Params {
    /// Only files whose name contains this (case-insensitive) or whose id starts with it.
    q: Option<String>,
    limit: Option<usize>,
    /// Rows to skip: the next page starts at the previous one's offset plus its rows.
    offset: Option<usize>,
}

impl Params {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_ROWS).min(MAX_ROWS)
    }

    fn offset(&self) -> usize {
        self.offset.unwrap_or(0)
    }
}

#[derive(Serialize)]
pub struct Snapshot {
    pub tracker: TrackerInfo,
    pub gauges: GaugesView,
    pub totals: Tally,
    pub activity: ActivityView,
    pub files: Rows<FileView>,
    pub peers: Rows<PeerView>,
}

#[derive(Serialize)]
pub struct TrackerInfo {
    pub version: &'static str,
    pub udp: String,
    pub uptime_secs: u64,
    pub interval_secs: u64,
    pub peer_timeout_secs: u64,
    pub max_files: usize,
    pub max_peers: usize,
    pub max_registrations: usize,
    pub rate_limit: u32,
    pub worst_case_bytes: u64,
}

#[derive(Serialize)]
pub struct GaugesView {
    pub peers: usize,
    pub files: usize,
    pub registrations: usize,
    pub rate_sources: usize,
}

impl From<Gauges> for GaugesView {
    fn from(g: Gauges) -> Self {
        GaugesView {
            peers: g.peers,
            files: g.files,
            registrations: g.registrations,
            rate_sources: g.rate_sources,
        }
    }
}

/// The last minute, one number per second per series, oldest first.
#[derive(Serialize)]
pub struct ActivityView {
    pub seconds: usize,
    pub datagrams: Vec<u64>,
    pub registrations: Vec<u64>,
    pub heartbeats: Vec<u64>,
    pub queries: Vec<u64>,
    pub dropped: Vec<u64>,
    pub expirations: Vec<u64>,
    pub bytes_in: Vec<u64>,
    pub bytes_out: Vec<u64>,
}

#[derive(Serialize)]
pub struct Rows<T> {
    /// How many there are in all (matching the query, for files).
    pub total: usize,
    pub rows: Vec<T>,
}

#[derive(Serialize)]
pub struct FileView {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// Peers with the whole file.
    pub seeders: usize,
    /// Peers downloading it.
    pub leechers: usize,
    /// Some of them (the first few by address), with how much each has.
    pub downloaders: Vec<DownloaderView>,
    /// Other names peers give the same file (at most [`NAMES_PER_ROW`]), and how many there are.
    pub aliases: Vec<String>,
    pub alias_count: usize,
}

#[derive(Serialize)]
pub struct DownloaderView {
    pub addr: String,
    /// Bytes verified so far.
    pub bytes: u64,
}

/// A file a peer is downloading, and how far it got.
#[derive(Serialize)]
pub struct DownloadView {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct PeerView {
    pub addr: String,
    pub files: usize,
    /// A few of its files' names.
    pub names: Vec<String>,
    /// How many of its files it is still downloading, and a few of them.
    pub partial: usize,
    pub downloading: Vec<DownloadView>,
    /// Seconds since its last announce or heartbeat.
    pub idle_secs: f64,
}

fn tracker_info(reg: &Registry, udp: SocketAddr, now: Instant) -> TrackerInfo {
    let c = reg.config();
    TrackerInfo {
        version: env!("CARGO_PKG_VERSION"),
        udp: udp.to_string(),
        uptime_secs: now.saturating_duration_since(reg.epoch()).as_secs(),
        interval_secs: c.interval.as_secs(),
        peer_timeout_secs: c.peer_timeout.as_secs(),
        max_files: c.limits.total_files,
        max_peers: c.limits.total_peers,
        max_registrations: c.limits.registrations,
        rate_limit: c.limits.rate,
        worst_case_bytes: c.limits.worst_case_bytes(),
    }
}

fn activity(reg: &Registry, now: Instant) -> ActivityView {
    let m = reg.last_minute(now);
    let series = |f: fn(&Tally) -> u64| m.iter().map(f).collect();
    ActivityView {
        seconds: HISTORY,
        datagrams: series(|t| t.datagrams),
        registrations: series(|t| t.registrations),
        heartbeats: series(|t| t.heartbeats),
        queries: series(|t| t.queries),
        dropped: series(Tally::dropped),
        expirations: series(|t| t.expirations),
        bytes_in: series(|t| t.bytes_in),
        bytes_out: series(|t| t.bytes_out),
    }
}

fn file_rows(
    reg: &Registry,
    q: Option<&str>,
    offset: usize,
    limit: usize,
    budget: usize,
) -> Rows<FileView> {
    let q = q
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    // Only a query that could be an id prefix is compared with ids.
    let prefix = q
        .as_deref()
        .filter(|q| q.len() <= 64 && q.bytes().all(|c| c.is_ascii_hexdigit()));
    let mut total = 0;
    let mut rows = Vec::new();
    let mut spent = 0;
    let mut full = false;
    for (id, r) in reg.files() {
        let wanted = match &q {
            None => true,
            Some(q) => {
                prefix.is_some_and(|p| id.to_hex().starts_with(p))
                    || r.names().any(|n| n.to_lowercase().contains(q.as_str()))
            }
        };
        if !wanted {
            continue;
        }
        total += 1;
        if total > offset && rows.len() < limit && !full {
            let display = r.display();
            let row = FileView {
                id: id.to_hex(),
                name: display.to_string(),
                size: r.size,
                seeders: r.seeders(),
                leechers: r.leechers(),
                downloaders: r
                    .peers()
                    .filter_map(|(a, have)| match have {
                        Have::Partial { bytes } => Some(DownloaderView {
                            addr: a.to_string(),
                            bytes,
                        }),
                        Have::Complete => None,
                    })
                    .take(DOWNLOADERS_PER_FILE)
                    .collect(),
                aliases: r
                    .names()
                    .filter(|n| *n != &**display)
                    .take(NAMES_PER_ROW)
                    .map(String::from)
                    .collect(),
                alias_count: r.names().count().saturating_sub(1),
            };
            spent += row.cost();
            if spent > budget {
                // The rest is for the next page (`offset` + the rows given).
                full = true;
                continue;
            }
            rows.push(row);
        }
    }
    Rows { total, rows }
}

fn peer_rows(
    reg: &Registry,
    now: Instant,
    offset: usize,
    limit: usize,
    budget: usize,
) -> Rows<PeerView> {
    let mut all: Vec<_> = reg.peers().collect();
    let total = all.len();
    all.sort_unstable_by_key(|p| p.addr);
    all.truncate(offset.saturating_add(limit));
    all.drain(..offset.min(all.len()));
    let mut spent = 0;
    let rows = all
        .into_iter()
        .map(|p| {
            let mut names: Vec<&str> = p
                .files
                .iter()
                .filter_map(|id| reg.file(id).map(|r| &**r.display()))
                .collect();
            names.sort_unstable();
            names.truncate(NAMES_PER_PEER);
            let mut partial = 0;
            let mut downloading = Vec::new();
            for id in &p.files {
                let Some(r) = reg.file(id) else { continue };
                if let Some(Have::Partial { bytes }) = r.have_of(&p.addr) {
                    partial += 1;
                    downloading.push(DownloadView {
                        id: id.to_hex(),
                        name: r.display().to_string(),
                        size: r.size,
                        bytes,
                    });
                }
            }
            downloading.sort_unstable_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
            downloading.truncate(NAMES_PER_PEER);
            PeerView {
                addr: p.addr.to_string(),
                files: p.files.len(),
                names: names.into_iter().map(String::from).collect(),
                partial,
                downloading,
                idle_secs: (now.saturating_duration_since(p.last_seen).as_secs_f64() * 10.0)
                    .round()
                    / 10.0,
            }
        })
        .take_while(|row| {
            spent += row.cost();
            spent <= budget
        })
        .collect();
    Rows { total, rows }
}

/// Runs `f` on the registry, with stale peers dropped first so the page never shows them (and
/// the generation says so).
fn with_registry<T>(status: &Status, f: impl FnOnce(&Registry, Instant) -> T) -> T {
    let now = Instant::now();
    let mut reg = status.registry.lock().unwrap_or_else(|e| e.into_inner());
    reg.expire_due(now);
    f(&reg, now)
}

/// Builds an answer with `f` and encodes it, one answer at a time (see [`Status::building`]);
/// the bytes are exactly as many as the answer (no spare capacity is kept while it waits to be
/// written).
fn answer<T: Serialize>(status: &Status, f: impl FnOnce(&Registry, Instant) -> T) -> Bytes {
    let _one = status.building.lock().unwrap_or_else(|e| e.into_inner());
    let value = with_registry(status, f);
    let mut json = serde_json::to_vec(&value).expect("an answer always serialises");
    drop(value);
    json.shrink_to_fit();
    Bytes::from(json)
}

fn json(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn swarm(State(s): State<Arc<Status>>, Query(p): Query<Params>) -> Response {
    let limit = p.limit();
    let cacheable = p.q.as_deref().is_none_or(|q| q.trim().is_empty()) && p.offset() == 0;
    let generation = with_registry(&s, |reg, _| reg.generation());
    let mut cache = s.cache.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = cache.as_ref().filter(|c| {
        cacheable && c.limit == limit && c.generation == generation && c.at.elapsed() < CACHE_FOR
    });
    let json_bytes = match fresh {
        Some(c) => c.json.clone(),
        None => {
            // The files and the peers share the rows' budget.
            let json = answer(&s, |reg, now| Snapshot {
                tracker: tracker_info(reg, s.udp, now),
                gauges: reg.gauges().into(),
                totals: *reg.totals(),
                activity: activity(reg, now),
                files: file_rows(reg, p.q.as_deref(), p.offset(), limit, ROW_BUDGET / 2),
                peers: peer_rows(reg, now, p.offset(), limit, ROW_BUDGET / 2),
            });
            if cacheable {
                *cache = Some(Cached {
                    at: Instant::now(),
                    generation,
                    limit,
                    json: json.clone(),
                });
            }
            json
        }
    };
    json(json_bytes)
}

async fn files(State(s): State<Arc<Status>>, Query(p): Query<Params>) -> Response {
    json(answer(&s, |reg, _| {
        file_rows(reg, p.q.as_deref(), p.offset(), p.limit(), ROW_BUDGET)
    }))
}

async fn peers(State(s): State<Arc<Status>>, Query(p): Query<Params>) -> Response {
    json(answer(&s, |reg, now| {
        peer_rows(reg, now, p.offset(), p.limit(), ROW_BUDGET)
    }))
}

#[derive(Serialize)]
struct Stats {
    tracker: TrackerInfo,
    gauges: GaugesView,
    totals: Tally,
    activity: ActivityView,
}

async fn stats(State(s): State<Arc<Status>>) -> Response {
    json(answer(&s, |reg, now| Stats {
        tracker: tracker_info(reg, s.udp, now),
        gauges: reg.gauges().into(),
        totals: *reg.totals(),
        activity: activity(reg, now),
    }))
}

async fn metrics(State(s): State<Arc<Status>>) -> impl IntoResponse {
    let text = with_registry(&s, crate::metrics::render);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
}
