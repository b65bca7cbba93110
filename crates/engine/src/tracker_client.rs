//! Talking to the tracker over UDP: requests with retries and backoff, connection ids, paged
//! listings, name resolution, and the [`Announcer`] that keeps a peer registered.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::tracker::{
    encoded_len, version_text, AddressProof, Advertise, DecodeError, ErrorCode, FileEntry, Filter,
    Have, ListEntry, PeerInfo, Progress, Request, RequestBody, Response, ResponseBody,
    CONNECT_PADDING, MAX_DATAGRAM, PROTOCOL_VERSION,
};
use shoal_proto::{ConnectionId, FileId, IdPrefix, TransactionId};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::store::Library;

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("the tracker at {addr} did not answer after {attempts} tries; start one with `tracker`, or choose another with --tracker HOST:PORT or P2P_TRACKER")]
    Unreachable { addr: SocketAddr, attempts: u32 },
    #[error("no tracker answered at {addr} and none answered discovery on the local network; start one with `tracker`, or choose one with --tracker HOST:PORT or P2P_TRACKER")]
    NotFound { addr: SocketAddr },
    #[error("could not resolve tracker address {0:?}; give it as HOST[:PORT]")]
    BadAddress(String),
    #[error("the tracker refused: {0}")]
    Refused(ErrorCode),
    #[error("the tracker at {addr} kept rate limiting this machine for {} s; wait a little, or ask its operator to raise --rate-limit", .waited.as_secs())]
    RateLimited { addr: SocketAddr, waited: Duration },
    #[error("the tracker at {addr} kept offering more pages ({pages} pages, {entries} files so far); it is misbehaving")]
    EndlessListing {
        addr: SocketAddr,
        pages: usize,
        entries: usize,
    },
    #[error("the tracker sent an unexpected reply")]
    Protocol,
    #[error("the tracker at {addr} speaks protocol {}, this client speaks {PROTOCOL_VERSION}; run the same version of shoal on both", version_text(*.theirs))]
    OtherVersion {
        addr: SocketAddr,
        theirs: Option<u8>,
    },
    #[error("no tracker of this swarm answered; is P2P_SECRET the same on every machine? (asked {addr}; the machines' clocks must also agree to within a minute)")]
    NotOfSwarm { addr: SocketAddr },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl TrackerError {
    /// In a private swarm, silence means the secret (or the clock) differs as likely as that no
    /// tracker runs: say so.
    pub(crate) fn unanswered(self) -> TrackerError {
        match self {
            TrackerError::Unreachable { addr, .. } | TrackerError::NotFound { addr }
                if crate::private::keys().is_some() =>
            {
                TrackerError::NotOfSwarm { addr }
            }
            other => other,
        }
    }
}

/// How long to wait for each reply, in turn; after the last, give up.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub waits: Vec<Duration>,
}

impl Default for RetryPolicy {
    /// 0.25 + 0.5 + 1 + 2 s: under four seconds before "unreachable".
    fn default() -> Self {
        RetryPolicy {
            waits: [250, 500, 1000, 2000].map(Duration::from_millis).to_vec(),
        }
    }
}

/// After a rate-limit answer, wait this long before trying again, doubling each time up to
/// [`RATE_LIMIT_BACKOFF_MAX`]: the tracker refills a source's allowance every second.
const RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(250);
const RATE_LIMIT_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// Rate-limit answers are waited out this long in all unless the client is told otherwise; a
/// caller's own timeout can cut it shorter.
pub const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(30);

/// A listing stops with an error past this many entries: more than a tracker can hold
/// (`--max-files` is 100,000 by default), so only a tracker that offers page after page forever
/// gets there, and memory stays bounded.
pub const MAX_LIST_ENTRIES: usize = 1_000_000;
/// A listing stops with an error past this many pages (a tracker that offers empty pages).
pub const MAX_LIST_PAGES: usize = 100_000;

/// A connection id is good for at least a minute at the tracker; renew it a little before.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(50);

struct ClientState {
    conn: Option<(ConnectionId, Instant)>,
}

/// A tracker client over one UDP socket. Requests are serialised: each waits for its reply.
pub struct TrackerClient {
    addr: SocketAddr,
    socket: UdpSocket,
    retry: RetryPolicy,
    rate_limit_patience: Duration,
    state: Mutex<ClientState>,
}

impl TrackerClient {
    /// Resolves `addr` (host names work; without a port, the tracker's default port) and binds a
    /// socket of the matching family.
    pub async fn connect(addr: &str, retry: RetryPolicy) -> Result<TrackerClient, TrackerError> {
        let resolved = tokio::net::lookup_host(with_default_port(addr))
            .await
            .map_err(|_| TrackerError::BadAddress(addr.to_string()))?;
        let resolved =
            prefer_ipv4(resolved).ok_or_else(|| TrackerError::BadAddress(addr.to_string()))?;
        let local: SocketAddr = if resolved.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(resolved).await?;
        Ok(TrackerClient {
            addr: resolved,
            socket,
            retry,
            rate_limit_patience: RATE_LIMIT_PATIENCE,
            state: Mutex::new(ClientState { conn: None }),
        })
    }

    /// How long in all to wait out rate-limit answers before [`TrackerError::RateLimited`].
    pub fn with_rate_limit_patience(mut self, patience: Duration) -> TrackerClient {
        self.rate_limit_patience = patience;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a tracker answers: one connect handshake.
    pub async fn ping(&self) -> Result<(), TrackerError> {
        let padding = [0; CONNECT_PADDING];
        match self
            .round_trip(ConnectionId(0), RequestBody::Connect { padding })
            .await?
        {
            ResponseBody::Connected { conn } => {
                self.state.lock().await.conn = Some((conn, Instant::now()));
                Ok(())
            }
            _ => Err(TrackerError::Protocol),
        }
    }

    /// Sends a request and returns the reply, connecting (or reconnecting) first when needed. A
    /// rate-limit answer is waited out with backoff, for up to [`RATE_LIMIT_PATIENCE`] (or what
    /// [`TrackerClient::with_rate_limit_patience`] set).
    pub async fn request(&self, body: RequestBody) -> Result<ResponseBody, TrackerError> {
        let start = tokio::time::Instant::now();
        let mut wait = RATE_LIMIT_BACKOFF;
        loop {
            match self.request_once(body.clone()).await {
                Err(TrackerError::Refused(ErrorCode::RateLimited)) => {
                    let waited = start.elapsed();
                    if waited + wait > self.rate_limit_patience {
                        return Err(TrackerError::RateLimited {
                            addr: self.addr,
                            waited,
                        });
                    }
                    tracing::debug!("rate limited by the tracker; trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RATE_LIMIT_BACKOFF_MAX);
                }
                other => return other,
            }
        }
    }

    async fn request_once(&self, body: RequestBody) -> Result<ResponseBody, TrackerError> {
        let mut state = self.state.lock().await;
        for _ in 0..2 {
            let conn = match state.conn {
                Some((c, at)) if at.elapsed() < CONNECTION_LIFETIME => c,
                _ => {
                    let padding = [0; CONNECT_PADDING];
                    match self
                        .round_trip(ConnectionId(0), RequestBody::Connect { padding })
                        .await?
                    {
                        ResponseBody::Connected { conn } => {
                            state.conn = Some((conn, Instant::now()));
                            conn
                        }
                        ResponseBody::Error { code } => return Err(TrackerError::Refused(code)),
                        _ => return Err(TrackerError::Protocol),
                    }
                }
            };
            match self.round_trip(conn, body.clone()).await? {
                // The tracker restarted or the id expired: connect again, once.
                ResponseBody::Error {
                    code: ErrorCode::BadConnection,
                } => state.conn = None,
                ResponseBody::Error { code } => return Err(TrackerError::Refused(code)),
                other => return Ok(other),
            }
        }
        Err(TrackerError::Refused(ErrorCode::BadConnection))
    }

    async fn round_trip(
        &self,
        conn: ConnectionId,
        body: RequestBody,
    ) -> Result<ResponseBody, TrackerError> {
        self.round_trip_on(&self.socket, conn, body).await
    }

    /// Proof that this machine receives at `ip`, for advertising it: a connection id the tracker
    /// gives a socket bound there. `None` when `ip` is not this machine's (a NAT's public
    /// address, say), or the tracker does not answer that socket.
    pub async fn prove(&self, ip: IpAddr) -> Option<AddressProof> {
        let socket = UdpSocket::bind((ip, 0)).await.ok()?;
        socket.connect(self.addr).await.ok()?;
        let port = socket.local_addr().ok()?.port();
        let padding = [0; CONNECT_PADDING];
        match self
            .round_trip_on(&socket, ConnectionId(0), RequestBody::Connect { padding })
            .await
        {
            Ok(ResponseBody::Connected { conn }) => Some(AddressProof { port, conn }),
            _ => None,
        }
    }

    async fn round_trip_on(
        &self,
        socket: &UdpSocket,
        conn: ConnectionId,
        body: RequestBody,
    ) -> Result<ResponseBody, TrackerError> {
        let txn = TransactionId(fastrand::u32(..));
        let connect = matches!(body, RequestBody::Connect { .. });
        let bytes = Request { txn, conn, body }.encode();
        let private = crate::private::keys().is_some();
        let mut buf = vec![0u8; crate::private::DATAGRAM_ROOM];
        for (attempt, wait) in self.retry.waits.iter().enumerate() {
            let deadline = tokio::time::Instant::now() + *wait;
            // A refused send (nothing listening yet) is one more lost datagram: wait and retry.
            // Sealed anew for every try in a private swarm: the tracker drops a datagram it has
            // seen as a replay, so resending the same bytes after a lost reply would never be
            // answered.
            let _ = socket.send(&crate::private::outgoing(bytes.clone())).await;
            if connect && attempt > 0 && !private {
                // A version 1 tracker drops our datagrams unanswered. Its connect request was
                // the same bytes under its own magic, so ask that way too: its answer lets us
                // say why nothing works, instead of "did not answer".
                let _ = socket.send(&v1_probe(&bytes)).await;
            }
            loop {
                match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(_)) => {
                        // ICMP "port unreachable" surfaces here at once; keep the backoff anyway.
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                    Ok(Ok(n)) => match crate::private::incoming(&buf[..n])
                        .map_err(|_| DecodeError::Malformed)
                        .and_then(|opened| Response::decode(&opened))
                    {
                        Ok(resp) if resp.txn == txn => return Ok(resp.body),
                        Err(DecodeError::OtherVersion(theirs)) => {
                            return Err(TrackerError::OtherVersion {
                                addr: self.addr,
                                theirs,
                            })
                        }
                        // A late reply to an earlier try, or noise: keep waiting.
                        _ => continue,
                    },
                }
            }
        }
        Err(TrackerError::Unreachable {
            addr: self.addr,
            attempts: self.retry.waits.len() as u32,
        }
        .unanswered())
    }

    /// Every page of a listing, up to [`MAX_LIST_ENTRIES`] entries and [`MAX_LIST_PAGES`] pages.
    /// A caller with a deadline wraps it in a timeout (it is cancel-safe).
    pub async fn list(&self, filter: Filter) -> Result<Vec<ListEntry>, TrackerError> {
        self.list_bounded(filter, MAX_LIST_ENTRIES, MAX_LIST_PAGES)
            .await
    }

    async fn list_bounded(
        &self,
        filter: Filter,
        max_entries: usize,
        max_pages: usize,
    ) -> Result<Vec<ListEntry>, TrackerError> {
        let mut all = Vec::new();
        let mut cursor = 0;
        let mut pages = 0;
        while pages < max_pages {
            pages += 1;
            match self
                .request(RequestBody::List {
                    filter: filter.clone(),
                    cursor,
                })
                .await?
            {
                ResponseBody::Files { entries, next } => {
                    all.extend(entries);
                    if all.len() > max_entries {
                        break;
                    }
                    match next {
                        Some(n) if n > cursor => cursor = n,
                        _ => return Ok(all),
                    }
                }
                _ => return Err(TrackerError::Protocol),
            }
        }
        Err(TrackerError::EndlessListing {
            addr: self.addr,
            pages,
            entries: all.len(),
        })
    }

    pub async fn peers(&self, file: FileId) -> Result<Vec<SocketAddr>, TrackerError> {
        match self.request(RequestBody::GetPeers { file }).await? {
            ResponseBody::Peers { peers, .. } => Ok(peers),
            _ => Err(TrackerError::Protocol),
        }
    }
}

/// A connect request under version 1's magic (its body encodes the same in both versions).
fn v1_probe(connect: &[u8]) -> Vec<u8> {
    let mut probe = connect.to_vec();
    probe[3] = b'1';
    probe
}

/// `HOST:PORT` as given; `HOST` alone (a name, an IPv4 address, an IPv6 address bare or in
/// brackets) with the tracker's default port, as a person typing `--tracker nas` means.
fn with_default_port(addr: &str) -> String {
    if addr.parse::<SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if let Ok(ip) = addr.trim_matches(['[', ']']).parse::<IpAddr>() {
        return SocketAddr::new(ip, crate::discovery::DEFAULT_PORT).to_string();
    }
    match addr.rsplit_once(':') {
        // A name and a port, or something lookup_host will refuse as it stands.
        Some(_) => addr.to_string(),
        None => format!("{addr}:{}", crate::discovery::DEFAULT_PORT),
    }
}

/// Of the addresses a name resolves to, the first IPv4 one if there is one. A tracker listens on
/// 0.0.0.0 unless told otherwise, and one on [::] takes IPv4 as well, so IPv4 reaches both; the
/// resolver's own order often puts IPv6 first (`localhost` is ::1 on many systems).
fn prefer_ipv4(addrs: impl IntoIterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let mut first = None;
    for a in addrs {
        if a.is_ipv4() {
            return Some(a);
        }
        first = first.or(Some(a));
    }
    first
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "the tracker knows no file named or with id {query:?}{}; `leecher --list` shows what it has",
        .suggestion.as_deref().map(|s| format!(" (did you mean {}?)", shoal_proto::names::printable(s))).unwrap_or_default()
    )]
    NotFound {
        query: String,
        /// A known name that differs only in case, or by a letter or two.
        suggestion: Option<String>,
    },
    #[error("id prefixes need at least {} hex characters; {query:?} is the start of:\n{}", IdPrefix::MIN_LEN, list_lines(.matches))]
    ShortPrefix {
        query: String,
        matches: Vec<ListEntry>,
    },
    #[error("{query:?} matches {} files; give more of the id:\n{}", .matches.len(), list_lines(.matches))]
    Ambiguous {
        query: String,
        matches: Vec<ListEntry>,
    },
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

fn list_lines(entries: &[ListEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "  {} {} {}",
                e.id,
                e.size,
                shoal_proto::names::printable(&e.name)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns what the user typed (an id, a unique id prefix of 8+ hex characters, or a name) into one
/// file the tracker knows.
pub async fn resolve(client: &TrackerClient, query: &str) -> Result<ListEntry, ResolveError> {
    if let Some(prefix) = IdPrefix::parse(query) {
        let found = client.list(Filter::IdPrefix(prefix)).await?;
        if !found.is_empty() {
            return one(query, found);
        }
    }
    let found = client.list(Filter::NameIs(query.to_string())).await?;
    if found.is_empty() {
        return Err(not_found(client, query).await);
    }
    // The listing shows the name most seeders use; the same bytes may be shared under several.
    // Asked for by one of its names, the file keeps the name asked for.
    one(query, found).map(|entry| ListEntry {
        name: query.to_string(),
        ..entry
    })
}

/// Listed at most, to explain a miss: enough for any tracker a person browses, and bounded so
/// that a typo never walks a huge tracker.
const EXPLAIN_ENTRIES: usize = 20_000;
const EXPLAIN_PAGES: usize = 1_000;

/// Why `query` found nothing: an id prefix too short to be looked up, or a name close to one the
/// tracker knows. Only this path lists the tracker's files.
async fn not_found(client: &TrackerClient, query: &str) -> ResolveError {
    let known = client
        .list_bounded(Filter::All, EXPLAIN_ENTRIES, EXPLAIN_PAGES)
        .await
        .unwrap_or_default();
    if !query.is_empty()
        && query.len() < IdPrefix::MIN_LEN
        && query.bytes().all(|c| c.is_ascii_hexdigit())
    {
        let start = query.to_ascii_lowercase();
        let matches: Vec<ListEntry> = known
            .iter()
            .filter(|e| e.id.to_hex().starts_with(&start))
            .cloned()
            .collect();
        if !matches.is_empty() {
            return ResolveError::ShortPrefix {
                query: query.to_string(),
                matches,
            };
        }
    }
    ResolveError::NotFound {
        query: query.to_string(),
        suggestion: closest_name(query, known.iter().map(|e| e.name.as_str())).map(str::to_string),
    }
}

/// The known name a person most likely meant: one equal but for case, else the nearest within a
/// few edits (a quarter of the name's length, 1 to 3), the first in order among equals.
fn closest_name<'a>(query: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let want = query.to_lowercase();
    let most = (want.chars().count() / 4).clamp(1, 3);
    names
        .filter_map(|n| {
            let d = strsim::damerau_levenshtein(&want, &n.to_lowercase());
            (d <= most).then_some((d, n))
        })
        .min()
        .map(|(_, n)| n)
}

fn one(query: &str, mut found: Vec<ListEntry>) -> Result<ListEntry, ResolveError> {
    if found.len() == 1 {
        Ok(found.remove(0))
    } else {
        Err(ResolveError::Ambiguous {
            query: query.to_string(),
            matches: found,
        })
    }
}

/// Keeps a peer's files registered: announces what the [`Library`] holds (complete files and
/// downloads in progress), heartbeats at the interval the tracker asks for with the progress of
/// downloads, announces a download again when it completes, announces again at once when the
/// tracker has forgotten us (it restarted), follows additions and withdrawals, and unregisters on
/// cancellation.
pub struct Announcer {
    pub client: Arc<TrackerClient>,
    pub library: Arc<Library>,
    pub peer: PeerInfo,
    /// Kept up to date with what the tracker has registered, for whoever waits on it.
    pub registration: tokio::sync::watch::Sender<Registration>,
}

/// What the tracker has accepted, as the [`Announcer`] last learned it: the seeder prints a file's
/// id only once it is here, and gives up if the first registration fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// The files the tracker holds for us, complete or in progress.
    pub files: BTreeSet<FileId>,
    /// Why the last attempt to register failed; `None` once one succeeds.
    pub failure: Option<String>,
}

/// Used until the tracker tells us its interval.
const FIRST_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed exchange, try again this soon (the tracker may be restarting).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the tracker has been told about each registered file: complete, or how many bytes.
type Registered = BTreeMap<FileId, Have>;

impl Announcer {
    pub async fn run(self, cancel: CancellationToken) {
        let mut registered = Registered::new();
        let mut interval = FIRST_INTERVAL;
        let mut next_heartbeat = tokio::time::Instant::now() + interval;
        loop {
            let changed = self.library.changed();
            let synced = self.sync(&mut registered).await;
            self.registration.send_if_modified(|r| {
                let now = Registration {
                    files: registered.keys().copied().collect(),
                    failure: synced.as_ref().err().map(|e| e.to_string()),
                };
                std::mem::replace(r, now.clone()) != now
            });
            match synced {
                Ok(Some(i)) => {
                    interval = i;
                    next_heartbeat = tokio::time::Instant::now() + interval;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("could not register with the tracker: {e}");
                    // A refusal (full, bad name) will not change in a second; silence might.
                    let wait = if matches!(e, TrackerError::Refused(_)) {
                        interval
                    } else {
                        RETRY_AFTER
                    };
                    next_heartbeat = tokio::time::Instant::now() + wait;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = changed => continue,
                _ = tokio::time::sleep_until(next_heartbeat) => {}
            }
            let progress = progress_report(&self.library.entries(), &registered);
            let peer = self.peer.clone();
            match self
                .client
                .request(RequestBody::Heartbeat {
                    peer,
                    files: registered.len() as u32,
                    progress: progress.clone(),
                })
                .await
            {
                Ok(ResponseBody::Ack { interval_secs }) => {
                    interval = Duration::from_secs(interval_secs.max(1).into());
                    for p in progress {
                        registered.insert(p.id, Have::Partial { bytes: p.bytes });
                    }
                }
                Ok(ResponseBody::Unknown) => {
                    tracing::info!("the tracker forgot us (it restarted?); registering again");
                    registered.clear();
                }
                Ok(_) => tracing::warn!("unexpected heartbeat reply from the tracker"),
                Err(e) => tracing::warn!("heartbeat failed: {e}"),
            }
            next_heartbeat = tokio::time::Instant::now()
                + if registered.is_empty() {
                    RETRY_AFTER
                } else {
                    interval
                };
        }
        // One quick try: the tracker drops us after its timeout anyway.
        let unregister = self.client.request(RequestBody::Unregister {
            peer: self.peer.clone(),
            files: None,
        });
        match tokio::time::timeout(Duration::from_secs(2), unregister).await {
            Ok(Ok(_)) => tracing::info!("unregistered from the tracker"),
            Ok(Err(e)) => tracing::warn!("could not unregister from the tracker: {e}"),
            Err(_) => {
                tracing::warn!("the tracker did not confirm; it drops us after its peer timeout")
            }
        }
    }

    /// Brings the tracker in line with the library; returns the tracker's interval if it said one.
    async fn sync(&self, registered: &mut Registered) -> Result<Option<Duration>, TrackerError> {
        let live = self.library.entries();
        let live_ids: BTreeSet<FileId> = live.iter().map(|e| e.id).collect();
        let gone: Vec<FileId> = registered
            .keys()
            .filter(|id| !live_ids.contains(id))
            .copied()
            .collect();
        let mut interval = None;
        for page in pages(&gone, encoded_len) {
            self.client
                .request(RequestBody::Unregister {
                    peer: self.peer.clone(),
                    files: Some(page.to_vec()),
                })
                .await?;
            for id in page {
                registered.remove(id);
                tracing::info!(file = %id.short(), "withdrawn from the tracker");
            }
        }
        let new = to_announce(live, registered);
        let mut peer = self.peer.clone();
        if let (Some(adv), false) = (&mut peer.advertise, new.is_empty()) {
            // Proved afresh for each round of announcements: a proof is good for a minute or two.
            adv.proof = self.client.prove(adv.ip).await;
        }
        for page in pages(&new, encoded_len) {
            match self
                .client
                .request(RequestBody::Announce {
                    peer: peer.clone(),
                    files: page.to_vec(),
                })
                .await?
            {
                ResponseBody::Ack { interval_secs } => {
                    interval = Some(Duration::from_secs(interval_secs.max(1).into()))
                }
                _ => return Err(TrackerError::Protocol),
            }
            registered.extend(page.iter().map(|e| (e.id, e.have)));
        }
        if !new.is_empty() {
            let complete = new.iter().filter(|e| e.have.is_complete()).count();
            tracing::info!(
                complete,
                partial = new.len() - complete,
                tracker = %self.client.addr(),
                "registered with the tracker"
            );
        }
        Ok(interval)
    }
}

/// The entries the tracker must be told about: those it does not know, and those whose
/// completeness changed (a download that finished registers again, as complete). Progress alone
/// goes in heartbeats.
fn to_announce(live: Vec<FileEntry>, registered: &Registered) -> Vec<FileEntry> {
    live.into_iter()
        .filter(|e| {
            registered
                .get(&e.id)
                .is_none_or(|h| h.is_complete() != e.have.is_complete())
        })
        .collect()
}

/// The progress of registered downloads that moved since the tracker last heard it, as much as
/// fits in a heartbeat (about 26 downloads): those the tracker believes furthest behind first.
fn progress_report(live: &[FileEntry], registered: &Registered) -> Vec<Progress> {
    // Room for the magic, ids, peer info and the list's length; each entry is at most 32 + 10.
    const ROOM: usize = (MAX_DATAGRAM - 64) / (32 + 10);
    let mut moved: Vec<(u64, Progress)> = live
        .iter()
        .filter_map(|e| match (e.have, registered.get(&e.id)?) {
            (Have::Partial { bytes }, Have::Partial { bytes: told }) if bytes != *told => {
                Some((*told, Progress { id: e.id, bytes }))
            }
            _ => None,
        })
        .collect();
    moved.sort_by_key(|(told, p)| (*told, p.id));
    moved.truncate(ROOM);
    moved.into_iter().map(|(_, p)| p).collect()
}

/// Splits items into runs whose encodings fit in one request datagram.
fn pages<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    // Room for the magic, transaction, connection id, peer info and the list's length.
    const BUDGET: usize = MAX_DATAGRAM - 64;
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && used + n > BUDGET {
            out.push(&items[start..i]);
            (start, used) = (i, 0);
        }
        used += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The peer info to register: our serving port, and an address override if one was given.
pub fn peer_info(port: u16, advertise: Option<IpAddr>) -> PeerInfo {
    PeerInfo {
        port,
        advertise: advertise.map(|ip| Advertise { ip, proof: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_port_means_the_default_port() {
        assert_eq!(with_default_port("10.0.0.5"), "10.0.0.5:6969");
        assert_eq!(with_default_port("10.0.0.5:7000"), "10.0.0.5:7000");
        assert_eq!(with_default_port("nas.local"), "nas.local:6969");
        assert_eq!(with_default_port("nas.local:7000"), "nas.local:7000");
        assert_eq!(with_default_port("::1"), "[::1]:6969");
        assert_eq!(with_default_port("[fd00::5]"), "[fd00::5]:6969");
        assert_eq!(with_default_port("[fd00::5]:7000"), "[fd00::5]:7000");
    }

    #[test]
    fn a_near_name_is_suggested() {
        let names = ["Big.iso", "notes.txt", "big-old.iso", "Song.mp3"];
        let best = |q| closest_name(q, names.iter().copied());
        assert_eq!(best("big.iso"), Some("Big.iso"));
        assert_eq!(best("BIG.ISO"), Some("Big.iso"));
        assert_eq!(best("Bgi.iso"), Some("Big.iso"));
        assert_eq!(best("note.txt"), Some("notes.txt"));
        assert_eq!(best("holiday.jpg"), None);
        assert_eq!(best("ab"), None);
    }

    #[test]
    fn names_resolve_to_ipv4_first() {
        let v6: SocketAddr = "[::1]:6969".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:6969".parse().unwrap();
        let other: SocketAddr = "[fd77::1]:6969".parse().unwrap();
        assert_eq!(prefer_ipv4([v6, v4]), Some(v4));
        assert_eq!(prefer_ipv4([v4, v6]), Some(v4));
        assert_eq!(prefer_ipv4([v6, other]), Some(v6));
        assert_eq!(prefer_ipv4([]), None);
    }

    fn entry(n: u8, have: Have) -> FileEntry {
        FileEntry {
            id: FileId([n; 32]),
            size: 1000,
            name: format!("f{n}"),
            have,
        }
    }

    #[test]
    fn downloads_register_and_register_again_when_complete() {
        let p = |bytes| Have::Partial { bytes };
        let live = vec![
            entry(1, p(10)),
            entry(2, Have::Complete),
            entry(3, p(20)),
            entry(4, Have::Complete),
        ];
        let registered: Registered = [(FileId([2; 32]), Have::Complete), (FileId([3; 32]), p(5))]
            .into_iter()
            .chain([(FileId([4; 32]), p(900))])
            .collect();
        let ids: Vec<u8> = to_announce(live.clone(), &registered)
            .iter()
            .map(|e| e.id.0[0])
            .collect();
        // 1 is new, 4 finished; 3's progress goes in a heartbeat, not an announcement.
        assert_eq!(ids, [1, 4]);
        assert_eq!(
            progress_report(&live, &registered),
            [Progress {
                id: FileId([3; 32]),
                bytes: 20
            }]
        );
    }

    #[test]
    fn progress_reports_fit_a_heartbeat() {
        let live: Vec<FileEntry> = (0..=255)
            .map(|n| entry(n, Have::Partial { bytes: u64::MAX }))
            .collect();
        let registered: Registered = live
            .iter()
            .map(|e| (e.id, Have::Partial { bytes: 0 }))
            .collect();
        let progress = progress_report(&live, &registered);
        assert!(progress.len() > 10);
        let beat = Request {
            txn: TransactionId(u32::MAX),
            conn: ConnectionId(u64::MAX),
            body: RequestBody::Heartbeat {
                peer: peer_info(u16::MAX, Some("ffff::1".parse().unwrap())),
                files: u32::MAX,
                progress,
            },
        };
        assert!(beat.encode().len() <= MAX_DATAGRAM);
    }

    #[test]
    fn pages_fit_a_datagram() {
        let items: Vec<usize> = vec![100; 50];
        let p = pages(&items, |n| *n);
        assert!(p.len() > 1);
        assert!(p
            .iter()
            .all(|page| page.iter().sum::<usize>() <= MAX_DATAGRAM - 64));
        assert_eq!(p.iter().map(|page| page.len()).sum::<usize>(), 50);
        assert!(pages(&[] as &[usize], |n| *n).is_empty());
    }
}

/// The client against trackers that misbehave: one that offers pages forever, one that rate
/// limits, one that rate limits forever. Each is a UDP socket on loopback answering as told.
#[cfg(test)]
mod hostile_tests {
    use super::*;

    /// A tracker that answers each request with `answer(request)`, until the test ends.
    async fn fake(answer: impl Fn(&Request) -> Option<ResponseBody> + Send + 'static) -> String {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut buf = vec![0; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(req) = Request::decode(&buf[..n]) else {
                    continue;
                };
                let body = match req.body {
                    RequestBody::Connect { .. } => Some(ResponseBody::Connected {
                        conn: ConnectionId(1),
                    }),
                    _ => answer(&req),
                };
                if let Some(body) = body {
                    let reply = Response { txn: req.txn, body }.encode();
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        addr
    }

    fn entry(n: u32) -> ListEntry {
        ListEntry {
            id: FileId([n as u8; 32]),
            size: 1,
            seeders: 1,
            leechers: 0,
            name: format!("f{n}"),
        }
    }

    /// An announcer over `library`, against the fake tracker at `addr`, and its registrations.
    async fn announcer(
        addr: &str,
        library: Arc<Library>,
    ) -> (Announcer, tokio::sync::watch::Receiver<Registration>) {
        let client = TrackerClient::connect(addr, RetryPolicy::default())
            .await
            .unwrap();
        let (registration, watch) = tokio::sync::watch::channel(Registration::default());
        let announcer = Announcer {
            client: Arc::new(client),
            library,
            peer: peer_info(7000, None),
            registration,
        };
        (announcer, watch)
    }

    #[tokio::test]
    async fn registrations_and_refusals_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, b"some bytes").unwrap();
        let hashed = || {
            let done = std::sync::atomic::AtomicU64::new(0);
            crate::store::SharedFile::hash(&path, 16 * 1024, &done).unwrap()
        };
        // Every request is acknowledged, except announcements when told to refuse them.
        for (answer, accepted) in [(None, true), (Some(ErrorCode::BadName), false)] {
            let addr = fake(move |req| match (answer, &req.body) {
                (Some(code), RequestBody::Announce { .. }) => Some(ResponseBody::Error { code }),
                _ => Some(ResponseBody::Ack { interval_secs: 60 }),
            })
            .await;
            let library = Library::new();
            let id = library.add(hashed()).id;
            let (announcer, mut watch) = announcer(&addr, library).await;
            let cancel = CancellationToken::new();
            let task = tokio::spawn(announcer.run(cancel.clone()));
            let now = watch
                .wait_for(|r| r.files.contains(&id) || r.failure.is_some())
                .await
                .unwrap()
                .clone();
            assert_eq!(now.files.contains(&id), accepted, "{now:?}");
            match answer {
                None => assert_eq!(now.failure, None),
                Some(_) => assert_eq!(
                    now.failure.as_deref(),
                    Some(
                        TrackerError::Refused(ErrorCode::BadName)
                            .to_string()
                            .as_str()
                    )
                ),
            }
            cancel.cancel();
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_listing_that_never_ends_is_cut_off_with_one_sentence() {
        let addr = fake(|req| match &req.body {
            RequestBody::List { cursor, .. } => Some(ResponseBody::Files {
                entries: vec![entry(*cursor)],
                next: Some(cursor + 1),
            }),
            _ => None,
        })
        .await;
        let client = TrackerClient::connect(&addr, RetryPolicy::default())
            .await
            .unwrap();
        let err = client
            .list_bounded(Filter::All, 50, 1000)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                TrackerError::EndlessListing {
                    entries: 51,
                    pages: 51,
                    ..
                }
            ),
            "{err}"
        );
        let err = client
            .list_bounded(Filter::All, 1000, 20)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                TrackerError::EndlessListing {
                    entries: 20,
                    pages: 20,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("the tracker at {addr} kept offering more pages (20 pages, 20 files so far); it is misbehaving")
        );
    }

    #[tokio::test]
    async fn rate_limit_answers_are_waited_out_then_named() {
        // Refuses the first three requests for peers, then answers.
        let refused = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = refused.clone();
        let addr = fake(move |req| match req.body {
            RequestBody::GetPeers { .. } => {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(if n < 3 {
                    ResponseBody::Error {
                        code: ErrorCode::RateLimited,
                    }
                } else {
                    ResponseBody::Peers {
                        interval_secs: 1,
                        peers: vec![SocketAddr::from(([127, 0, 0, 1], 7000))],
                    }
                })
            }
            _ => None,
        })
        .await;
        let client = TrackerClient::connect(&addr, RetryPolicy::default())
            .await
            .unwrap();
        let peers = client.peers(FileId([1; 32])).await.unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 4);

        // One that never stops: its own error, after the patience it was given.
        let addr = fake(|_| {
            Some(ResponseBody::Error {
                code: ErrorCode::RateLimited,
            })
        })
        .await;
        let client = TrackerClient::connect(&addr, RetryPolicy::default())
            .await
            .unwrap()
            .with_rate_limit_patience(Duration::from_secs(1));
        let err = client.peers(FileId([1; 32])).await.unwrap_err();
        assert!(matches!(err, TrackerError::RateLimited { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "the tracker at {addr} kept rate limiting this machine"
            )),
            "{err}"
        );
    }
}
