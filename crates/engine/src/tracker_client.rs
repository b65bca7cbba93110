//! Talking to the tracker over UDP: requests with retries and backoff, connection ids, paged
//! listings; name resolution (with "did you mean") in `resolve`, and the [`Announcer`] that keeps
//! a peer registered in `announcer`.

mod announcer;
mod resolve;

pub use announcer::{peer_info, Announcer, Registration};
pub use resolve::{resolve, ResolveError};

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shoal_proto::tracker::{
    version_text, AddressProof, DecodeError, ErrorCode, Filter, ListEntry, Request, RequestBody,
    Response, ResponseBody, CONNECT_PADDING, PROTOCOL_VERSION,
};
use shoal_proto::{ConnectionId, FileId, TransactionId};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

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
    #[error("no tracker of this swarm answered; is P2P_SECRET the same on every machine? (asked {addr}; a clock behind the tracker's is refused too, by more than a minute, or on a busy tracker by more than the time its last 262,144 datagrams took)")]
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

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
