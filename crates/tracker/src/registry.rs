//! The tracker's state and its answer to every datagram, without I/O: [`Registry::handle`] takes
//! the time, the source address and the bytes, and returns the bytes to send back (if any).
//!
//! Soft state only: everything here is rebuilt from peers' announcements, so a restart loses
//! nothing that matters. Every collection a sender can grow is capped (see [`Limits`]), every
//! source is rate limited, and a source that has not proved it receives at its address never gets
//! a reply larger than its request.

mod fair;
pub mod record;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::tracker::{
    encoded_len, Advertise, DecodeError, ErrorCode, FileEntry, Filter, Have, ListEntry, PeerInfo,
    Progress, Request, RequestBody, Response, ResponseBody, MAGIC, MAX_DATAGRAM, MAX_NAME_LEN,
};
use shoal_proto::{ConnectionId, FileId, IdPrefix, TransactionId};

use crate::activity::{Activity, Tally};
pub use crate::limits::Limits;
use crate::ratelimit::{RateLimiter, Verdict};
pub use fair::{source_of, Load};
pub use record::FileRecord;

#[derive(Clone, Debug)]
pub struct Config {
    /// How often peers should heartbeat; told to them in every acknowledgement.
    pub interval: Duration,
    /// A peer silent this long is dropped.
    pub peer_timeout: Duration,
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(10),
            peer_timeout: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// A peer: where it serves, who registered it, when it was last heard, what it has.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The source (IP and UDP port) of the datagrams that registered it: only this source may
    /// refresh, change or remove it.
    pub owner: SocketAddr,
    pub last_seen: Instant,
    pub files: HashSet<FileId>,
}

/// Downloads in progress right now, over all files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Downloads {
    /// (peer, file) registrations of peers that have part of the file.
    pub count: u64,
    /// Bytes they have verified, and the sizes of their files, summed.
    pub bytes: u64,
    pub size: u64,
}

/// Sizes of the state right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub peers: usize,
    pub files: usize,
    pub registrations: usize,
    /// Source addresses the rate limiter is tracking.
    pub rate_sources: usize,
}

/// Finds this host's own address as seen from a requester on another host: what stands in for the
/// loopback address of a peer that registered from the tracker's host. Lookups are I/O, so the
/// server supplies one (see [`Registry::set_host_address`]); without one, such peers are only
/// handed to requesters on this host.
pub type HostAddress = Box<dyn Fn(IpAddr) -> Option<IpAddr> + Send>;

/// Connection ids are good for the minute they are issued in and the next.
const CONNECTION_SLOT: Duration = Duration::from_secs(60);

/// A listing that tests a filter against this many files costs its sender one more request's
/// worth of rate limit, so scans of a large tracker cannot eat its CPU.
const FILES_PER_TOKEN: usize = 5_000;

pub struct Registry {
    config: Config,
    /// The connection-id MAC's key.
    key: [u8; 16],
    epoch: Instant,
    peers: HashMap<SocketAddr, Peer>,
    files: HashMap<FileId, FileRecord>,
    /// What each source holds (see [`fair`]); an entry only while it holds something.
    sources: HashMap<IpAddr, Load>,
    /// Every file as (display name, id): the order of listings, kept so that a page costs a walk
    /// to the cursor rather than a sort of everything.
    by_name: BTreeSet<(Arc<str>, FileId)>,
    registrations: usize,
    /// Goes up whenever a peer or a registration comes or goes, so that a view of the state can
    /// tell it is out of date.
    generation: u64,
    /// No peer can be stale before this (a lower bound; `None` when there are no peers).
    next_sweep: Option<Instant>,
    limiter: RateLimiter,
    totals: Tally,
    activity: Activity,
    host_address: Option<HostAddress>,
    /// The most bytes one address takes in a reply, so that most peer lists need not be measured.
    max_addr_len: usize,
}

impl Registry {
    /// A registry whose connection ids are keyed with 128 bits from the OS's random source.
    pub fn new(config: Config, now: Instant) -> Registry {
        let mut key = [0; 16];
        // Linux's getrandom(2) does not fail once the pool is initialised (it blocks until then).
        getrandom::fill(&mut key).expect("the OS random number generator failed");
        Registry::with_key(config, now, key)
    }

    /// A registry with a given connection-id key (tests, reproducible runs).
    pub fn with_key(config: Config, now: Instant, key: [u8; 16]) -> Registry {
        let l = &config.limits;
        let limiter = RateLimiter::new(l.rate, l.burst, l.rate_table, now);
        Registry {
            config,
            key,
            epoch: now,
            peers: HashMap::new(),
            files: HashMap::new(),
            sources: HashMap::new(),
            by_name: BTreeSet::new(),
            registrations: 0,
            generation: 0,
            next_sweep: None,
            limiter,
            totals: Tally::default(),
            activity: Activity::default(),
            host_address: None,
            // IPv6 with the longest port: every address encodes to at most this.
            max_addr_len: encoded_len(&SocketAddr::from(([u16::MAX; 8], u16::MAX))),
        }
    }

    /// Lets peers that registered over loopback (from the tracker's own host) be handed to
    /// requesters elsewhere, at the address `lookup` gives for each requester.
    pub fn set_host_address(&mut self, lookup: HostAddress) {
        self.host_address = Some(lookup);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// When the registry started.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Every file, in listing order (display name, then id).
    pub fn files(&self) -> impl Iterator<Item = (&FileId, &FileRecord)> {
        self.by_name
            .iter()
            .filter_map(|(_, id)| self.files.get_key_value(id))
    }

    pub fn file(&self, id: &FileId) -> Option<&FileRecord> {
        self.files.get(id)
    }

    /// Counters since start.
    pub fn totals(&self) -> &Tally {
        &self.totals
    }

    /// Counters per second over the last minute, oldest first, the current second last.
    pub fn last_minute(&self, now: Instant) -> Vec<Tally> {
        self.activity.last_minute(self.second(now))
    }

    /// Changes whenever the set of peers, files or registrations (or a file's name) changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            peers: self.peers.len(),
            files: self.files.len(),
            registrations: self.registrations,
            rate_sources: self.limiter.tracked(),
        }
    }

    /// Sums over every partial registration (a walk of every registration).
    pub fn downloads(&self) -> Downloads {
        let mut d = Downloads::default();
        for r in self.files.values().filter(|r| r.leechers() > 0) {
            for (_, have) in r.peers() {
                if let Have::Partial { bytes } = have {
                    d.count += 1;
                    d.bytes += bytes;
                    d.size += r.size;
                }
            }
        }
        d
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Adds to the counters since start and to the current second's.
    fn count(&mut self, now: Instant, f: impl Fn(&mut Tally)) {
        f(&mut self.totals);
        let sec = self.second(now);
        f(self.activity.at(sec));
    }

    /// SipHash-2-4 of the source and the time slot under the tracker's key: only the tracker can
    /// make one, so a sender that shows one received it at that source.
    pub fn connection_id(&self, src: SocketAddr, slot: u64) -> ConnectionId {
        ConnectionId(connection_mac(&self.key, src, slot))
    }

    pub fn slot(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_secs()) / CONNECTION_SLOT.as_secs()
    }

    fn connection_ok(&self, src: SocketAddr, conn: ConnectionId, now: Instant) -> bool {
        let slot = self.slot(now);
        conn == self.connection_id(src, slot)
            || (slot > 0 && conn == self.connection_id(src, slot - 1))
    }

    /// Whether a peer may be handed out at the address it advertises (not its source IP): it
    /// proved it receives there, with a connection id this tracker gave a socket at that address.
    /// So a sender cannot point leechers at a host it does not run on.
    fn advertise_ok(&self, now: Instant, info: &PeerInfo) -> bool {
        let Some(Advertise {
            ip,
            proof: Some(proof),
        }) = info.advertise
        else {
            return false;
        };
        self.connection_ok(
            SocketAddr::new(ip.to_canonical(), proof.port),
            proof.conn,
            now,
        )
    }

    /// Answers one datagram. `None` means send nothing: malformed, rate limited, or a reply
    /// would be larger than the request from an address that has not proved it can receive.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.handle_into(now, src, datagram, &mut out)
            .then_some(out)
    }

    /// [`Registry::handle`] into a buffer the caller keeps: on `true`, `out` holds the reply to
    /// send; on `false` send nothing (`out` is then empty).
    pub fn handle_into(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        // A socket on [::] sees IPv4 senders as ::ffff:a.b.c.d. Keyed, rate limited and handed
        // out as plain IPv4, so one sender has one identity whichever socket it reached, peer
        // lists never carry mapped addresses, and ::ffff:127.0.0.1 counts as loopback.
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        let len = datagram.len() as u64;
        self.count(now, |t| {
            t.datagrams += 1;
            t.bytes_in += len;
        });
        self.expire_due(now);
        if let Verdict::Deny { first } = self.limiter.check(now, src.ip()) {
            // Tell an honest client once why it hears nothing; drop the rest unread.
            let txn = match Request::decode(datagram) {
                Ok(req) if first => req.txn,
                _ => {
                    self.count(now, |t| t.rate_limited += 1);
                    return false;
                }
            };
            let code = ErrorCode::RateLimited;
            let reply = Response {
                txn,
                body: ResponseBody::Error { code },
            };
            return self.reply(now, datagram.len(), false, &reply, out);
        }
        let req = match Request::decode(datagram) {
            Ok(req) => req,
            Err(DecodeError::OtherVersion(_)) => {
                // A peer of another version: the bare magic tells it which one we speak, and is
                // never larger than its request (which starts with a magic of its own).
                self.count(now, |t| t.other_version += 1);
                out.extend_from_slice(&MAGIC);
                return self.checked(now, datagram.len(), false, out);
            }
            Err(_) => {
                self.count(now, |t| t.malformed += 1);
                return false;
            }
        };
        let verified = !matches!(req.body, RequestBody::Connect { .. })
            && self.connection_ok(src, req.conn, now);
        let body = match req.body {
            RequestBody::Connect { .. } => ResponseBody::Connected {
                conn: self.connection_id(src, self.slot(now)),
            },
            _ if !verified => {
                self.count(now, |t| t.bad_connection += 1);
                ResponseBody::Error {
                    code: ErrorCode::BadConnection,
                }
            }
            RequestBody::Announce { peer, files } => self.announce(now, src, &peer, files),
            RequestBody::Heartbeat {
                peer,
                files,
                progress,
            } => {
                self.count(now, |t| t.heartbeats += 1);
                let key = peer_addr(src, &peer);
                match self.peers.get_mut(&key) {
                    // Another source's registration is not this sender's to keep alive.
                    Some(p) if p.owner == src && p.files.len() == files as usize => {
                        p.last_seen = now;
                        for Progress { id, bytes } in progress {
                            // Only files this peer registered: `p.files` is the peer's own set.
                            if p.files.contains(&id) {
                                if let Some(r) = self.files.get_mut(&id) {
                                    r.set_progress(&key, bytes);
                                }
                            }
                        }
                        self.ack()
                    }
                    _ => ResponseBody::Unknown,
                }
            }
            RequestBody::Unregister { peer, files } => {
                let key = peer_addr(src, &peer);
                if self.peers.get(&key).is_some_and(|p| p.owner != src) {
                    self.count(now, |t| t.not_owner += 1);
                    let reply = Response {
                        txn: req.txn,
                        body: ResponseBody::Error {
                            code: ErrorCode::NotOwner,
                        },
                    };
                    return self.reply(now, datagram.len(), verified, &reply, out);
                }
                match files {
                    None => {
                        if self.remove_peer(key, "left") {
                            self.count(now, |t| t.departures += 1);
                        }
                    }
                    Some(ids) => {
                        for id in ids {
                            self.remove_file_of(key, id);
                        }
                    }
                }
                self.ack()
            }
            RequestBody::GetPeers { file } => {
                self.count(now, |t| t.queries += 1);
                if self.encode_sampled_peers(req.txn, &file, src.ip(), out) {
                    return self.checked(now, datagram.len(), verified, out);
                }
                ResponseBody::Peers {
                    interval_secs: self.interval_secs(),
                    peers: self.sample_peers(&file, src.ip()),
                }
            }
            RequestBody::List { filter, cursor } => {
                self.count(now, |t| t.queries += 1);
                let (body, tested) = self.list(&filter, cursor);
                let cost = (tested / FILES_PER_TOKEN) as f32;
                if cost > 0.0 {
                    self.limiter.charge(now, src.ip(), cost);
                }
                body
            }
        };
        let reply = Response { txn: req.txn, body };
        self.reply(now, datagram.len(), verified, &reply, out)
    }

    /// Encodes a reply into `out` unless it is too large to send, or larger than the request of
    /// a source that has not proved it receives (which could be spoofed: amplification).
    fn reply(
        &mut self,
        now: Instant,
        request_len: usize,
        verified: bool,
        reply: &Response,
        out: &mut Vec<u8>,
    ) -> bool {
        reply.encode_into(out);
        self.checked(now, request_len, verified, out)
    }

    /// Whether the reply encoded in `out` may go: not if it is too large to send, or larger than
    /// the request of a source that has not proved it receives (which could be spoofed:
    /// amplification). Counts it either way, and empties `out` if it may not.
    fn checked(
        &mut self,
        now: Instant,
        request_len: usize,
        verified: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        if out.len() > MAX_DATAGRAM || (!verified && out.len() > request_len) {
            out.clear();
            self.count(now, |t| t.suppressed += 1);
            return false;
        }
        let n = out.len() as u64;
        self.count(now, |t| {
            t.replies += 1;
            t.bytes_out += n;
        });
        true
    }

    fn interval_secs(&self) -> u32 {
        self.config.interval.as_secs().clamp(1, u32::MAX.into()) as u32
    }

    fn ack(&self) -> ResponseBody {
        ResponseBody::Ack {
            interval_secs: self.interval_secs(),
        }
    }

    fn announce(
        &mut self,
        now: Instant,
        src: SocketAddr,
        info: &PeerInfo,
        files: Vec<FileEntry>,
    ) -> ResponseBody {
        let max_name = self.config.limits.name_len.min(MAX_NAME_LEN);
        if files
            .iter()
            .any(|f| f.name.is_empty() || f.name.len() > max_name)
        {
            return ResponseBody::Error {
                code: ErrorCode::BadName,
            };
        }
        if files.iter().any(|f| !printable_name(&f.name)) {
            return ResponseBody::Error {
                code: ErrorCode::UnprintableName,
            };
        }
        let key = peer_addr(src, info);
        if key.ip() != src.ip() && !self.advertise_ok(now, info) {
            return ResponseBody::Error {
                code: ErrorCode::BadAdvertise,
            };
        }
        if let Some(p) = self.peers.get(&key) {
            if p.owner != src {
                // Another source registered this address. It keeps it while it heartbeats; once
                // it has missed one (a seeder restarted on a new socket), the address is free.
                let grace = self.config.interval + self.config.interval / 2;
                if now.saturating_duration_since(p.last_seen) <= grace {
                    self.count(now, |t| t.not_owner += 1);
                    return ResponseBody::Error {
                        code: ErrorCode::NotOwner,
                    };
                }
                self.remove_peer(key, "replaced by a new registration");
            }
        }
        let full = ResponseBody::Error {
            code: ErrorCode::Full,
        };
        let source = source_of(src.ip());
        if !self.peers.contains_key(&key) {
            if !self.room_for_peer(source) {
                return full;
            }
            self.adjust(source, |l| l.peers += 1);
            tracing::info!(peer = %key, "peer registered");
            self.peers.insert(
                key,
                Peer {
                    addr: key,
                    owner: src,
                    last_seen: now,
                    files: HashSet::new(),
                },
            );
            self.generation += 1;
            let due = now + self.config.peer_timeout;
            self.next_sweep = Some(self.next_sweep.map_or(due, |t| t.min(due)));
        }
        let (files_per_peer, total_files) = (
            self.config.limits.files_per_peer,
            self.config.limits.total_files,
        );
        let peer = self.peers.get_mut(&key).expect("inserted above");
        peer.last_seen = now;
        let mut added = 0;
        let mut result = self.ack();
        for f in files {
            let peer = self.peers.get(&key).expect("inserted above");
            let new_for_peer = !peer.files.contains(&f.id);
            if new_for_peer
                && (peer.files.len() >= files_per_peer
                    || !self.room_for_registration(source)
                    || !self.room_in_file(f.id, source))
            {
                result = full;
                break;
            }
            if !self.files.contains_key(&f.id) && !self.room_for_file(source) {
                result = full;
                break;
            }
            let known_files = self.files.len();
            let peer = self.peers.get_mut(&key).expect("inserted above");
            let record = match self.files.get_mut(&f.id) {
                Some(r) => r,
                None if known_files >= total_files => {
                    result = full;
                    break;
                }
                None => self.files.entry(f.id).or_insert(FileRecord::new(f.size)),
            };
            let change = record.set(key, &f.name, f.size, f.have);
            if change.added || change.completeness || change.old_display.is_some() {
                self.generation += 1;
            }
            if change.added {
                added += 1;
                self.registrations += 1;
                peer.files.insert(f.id);
                self.adjust(source, |l| l.registrations += 1);
                // `?`: a name is a peer's string; quoted and escaped, it cannot forge log lines
                // or send escape sequences to the operator's terminal.
                tracing::info!(peer = %key, file = %f.id.short(), name = ?f.name, "file registered");
            }
            self.reindex(f.id, change.old_display);
        }
        self.count(now, |t| t.registrations += added);
        result
    }

    /// Moves a file in the listing order after its display name changed from `old` (or drops
    /// it, once no peer shares it).
    fn reindex(&mut self, id: FileId, old: Option<Arc<str>>) {
        let Some(old) = old else { return };
        self.by_name.remove(&(old, id));
        match self.files.get(&id) {
            Some(r) if r.is_empty() => {
                self.files.remove(&id);
            }
            Some(r) => {
                self.by_name.insert((r.display().clone(), id));
            }
            None => {}
        }
    }

    fn remove_file_of(&mut self, key: SocketAddr, id: FileId) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.files.remove(&id);
        shrink_set(&mut p.files);
        let source = source_of(p.owner.ip());
        self.unlink(key, id, source);
    }

    /// Removes the registration of `key` (registered by `source`) from file `id`'s side.
    fn unlink(&mut self, key: SocketAddr, id: FileId, source: IpAddr) {
        let Some(record) = self.files.get_mut(&id) else {
            return;
        };
        if !record.has(&key) {
            return;
        }
        let old = record.remove(&key);
        self.registrations -= 1;
        self.adjust(source, |l| l.registrations -= 1);
        self.generation += 1;
        self.reindex(id, old);
    }

    /// Returns whether the peer was there.
    fn remove_peer(&mut self, key: SocketAddr, why: &str) -> bool {
        let Some(peer) = self.peers.remove(&key) else {
            return false;
        };
        self.generation += 1;
        let source = source_of(peer.owner.ip());
        for id in peer.files {
            self.unlink(key, id, source);
        }
        self.adjust(source, |l| l.peers -= 1);
        tracing::info!(peer = %key, "peer {why}");
        true
    }

    /// Drops peers not heard from within the peer timeout, if any can be due by `now`. Called on
    /// every datagram, so a dropped peer never shows up in a reply.
    pub fn expire_due(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now > t) {
            self.expire(now);
        }
    }

    /// Drops every peer not heard from within the peer timeout.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.config.peer_timeout;
        let stale: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| now.saturating_duration_since(p.last_seen) > timeout)
            .map(|p| p.addr)
            .collect();
        for key in stale {
            self.count(now, |t| t.expirations += 1);
            self.remove_peer(key, "timed out");
        }
        self.next_sweep = self.peers.values().map(|p| p.last_seen + timeout).min();
    }

    /// What [`Registry::sample_peers`] does in the usual case, with the reply encoded into `out`
    /// straight from the file's own table. Declines (returns false, `out` to be overwritten) when
    /// the general way is needed: no more peers than fit in a list, a long list that could
    /// overflow a datagram, or a loopback peer drawn for a requester on another host.
    fn encode_sampled_peers(
        &self,
        txn: TransactionId,
        file: &FileId,
        requester: IpAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        const MOST: usize = 64;
        let wanted = self.config.limits.peers_per_reply;
        let Some(record) = self.files.get(file) else {
            return false;
        };
        let n = record.peer_count();
        if n <= wanted || wanted > MOST || wanted * self.max_addr_len > MAX_DATAGRAM - 32 {
            return false;
        }
        let shown_as_is = requester.is_loopback();
        let mut picked = [0usize; MOST];
        let mut taken = Taken::new(n, wanted);
        let mut rng = fastrand::Rng::new();
        for (slot, j) in picked.iter_mut().zip(n - wanted..n) {
            let i = taken.take(rng.usize(..=j), j);
            if !shown_as_is && record.peer_at(i).ip().is_loopback() {
                return false;
            }
            *slot = i;
        }
        let peers = picked[..wanted].iter().map(|&i| record.peer_at(i));
        Response::encode_peers_into(txn, self.interval_secs(), peers, out);
        true
    }

    /// A bounded, shuffled subset of a file's peers. A loopback address is only handed to a
    /// requester on the same host; elsewhere that peer (which runs on the tracker's host) goes
    /// by this host's address as the requester sees it, when a [`HostAddress`] lookup is set.
    fn sample_peers(&self, file: &FileId, requester: IpAddr) -> Vec<SocketAddr> {
        let Some(record) = self.files.get(file) else {
            return Vec::new();
        };
        let wanted = self.config.limits.peers_per_reply;
        // Looked up at most once per request, and only when a loopback peer is to be shown.
        let here = std::cell::OnceCell::new();
        let visible = |a: SocketAddr| -> Option<SocketAddr> {
            if !a.ip().is_loopback() || requester.is_loopback() {
                return Some(a);
            }
            let ip = here.get_or_init(|| {
                let lookup = self.host_address.as_ref()?;
                lookup(requester).filter(|ip: &IpAddr| !ip.is_loopback() && !ip.is_unspecified())
            });
            ip.map(|ip| SocketAddr::new(ip, a.port()))
        };
        let n = record.peer_count();
        // The hot path: pick `wanted` distinct random peers in O(wanted) (Floyd's algorithm)
        // rather than shuffling every peer of a popular file on every request.
        let mut peers = Vec::with_capacity(wanted.min(n));
        if n > wanted {
            let shown_as_is = requester.is_loopback();
            let mut taken = Taken::new(n, wanted);
            let mut rng = fastrand::Rng::new();
            for j in n - wanted..n {
                let a = record.peer_at(taken.take(rng.usize(..=j), j));
                if shown_as_is || !a.ip().is_loopback() {
                    // A copy of the whole address at once (as `push` would not).
                    peers.extend_from_slice(std::slice::from_ref(a));
                } else if let Some(a) = visible(*a) {
                    peers.push(a);
                }
            }
        }
        if peers.len() < wanted.min(n) {
            // Few peers, or some were hidden from this requester: take every visible one.
            peers = record.peer_addrs().filter_map(visible).collect();
            fastrand::shuffle(&mut peers);
            peers.truncate(wanted);
        }
        if here.get().is_some_and(|h| h.is_some()) {
            // A peer registered both over loopback and from outside would be listed twice.
            let mut seen = std::collections::HashSet::with_capacity(peers.len());
            peers.retain(|a| seen.insert(*a));
        }
        // Keep the reply within one datagram whatever the address family mix (measured only
        // when the longest addresses could overflow it).
        if peers.len() * self.max_addr_len > MAX_DATAGRAM - 32 {
            while encoded_len(&peers) > MAX_DATAGRAM - 32 {
                peers.pop();
            }
        }
        peers
    }

    /// One page of the files matching `filter`, in listing order, and how many files the filter
    /// was tested against (the cost of the request).
    pub fn list(&self, filter: &Filter, cursor: u32) -> (ResponseBody, usize) {
        let cursor = cursor as usize;
        let mut entries = Vec::new();
        let mut used = 32;
        let mut next = None;
        let matcher = Matcher::new(filter);
        let mut tested = 0;
        let mut found = 0;
        // Without a filter the cursor is a position in the index: skip there directly.
        let start = if matcher.is_all() { cursor } else { 0 };
        for (name, id) in self.by_name.iter().skip(start) {
            let record = &self.files[id];
            if !matcher.is_all() {
                tested += 1;
                if !matcher.matches(id, record) {
                    continue;
                }
                found += 1;
                if found <= cursor {
                    continue;
                }
            }
            let e = ListEntry {
                id: *id,
                size: record.size,
                seeders: record.seeders() as u32,
                leechers: record.leechers() as u32,
                name: name.to_string(),
            };
            let n = encoded_len(&e);
            if used + n > MAX_DATAGRAM - 16 {
                next = Some((cursor + entries.len()) as u32);
                break;
            }
            used += n;
            entries.push(e);
        }
        (ResponseBody::Files { entries, next }, tested)
    }

    /// Every file matching `filter`, in listing order.
    pub fn matching(&self, filter: &Filter) -> Vec<ListEntry> {
        let matcher = Matcher::new(filter);
        self.files()
            .filter(|(id, r)| matcher.matches(id, r))
            .map(|(id, r)| ListEntry {
                id: *id,
                size: r.size,
                seeders: r.seeders() as u32,
                leechers: r.leechers() as u32,
                name: r.display().to_string(),
            })
            .collect()
    }

    /// Checks that the indexes agree with each other and with the caps, for tests.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let l = &self.config.limits;
        assert!(self.peers.len() <= l.total_peers);
        assert!(self.files.len() <= l.total_files);
        assert!(self.registrations <= l.registrations);
        assert_eq!(self.by_name.len(), self.files.len());
        let mut pairs = 0;
        for (id, r) in &self.files {
            r.check();
            assert!(!r.is_empty());
            assert!(r.peer_count() <= l.peers_per_file);
            assert!(self.by_name.contains(&(r.display().clone(), *id)));
            for a in r.peer_addrs() {
                assert!(self.peers[&a].files.contains(id));
            }
            pairs += r.peer_count();
        }
        for p in self.peers.values() {
            assert!(p.files.len() <= l.files_per_peer);
            assert!(p.files.iter().all(|id| self.files[id].has(&p.addr)));
        }
        assert_eq!(pairs, self.registrations);
        let mut loads: HashMap<IpAddr, Load> = HashMap::new();
        for p in self.peers.values() {
            let l = loads.entry(source_of(p.owner.ip())).or_default();
            l.peers += 1;
            l.registrations += p.files.len() as u32;
        }
        assert_eq!(loads, self.sources);
    }
}

/// A listing filter, prepared once per request.
enum Matcher<'a> {
    All,
    Prefix(&'a IdPrefix),
    NameIs(&'a str),
    /// Lowercased; ASCII-only patterns are matched without allocating.
    Contains(String),
}

impl<'a> Matcher<'a> {
    fn new(filter: &'a Filter) -> Matcher<'a> {
        match filter {
            Filter::All => Matcher::All,
            Filter::NameContains(s) if s.is_empty() => Matcher::All,
            Filter::NameContains(s) => Matcher::Contains(s.to_lowercase()),
            Filter::NameIs(n) => Matcher::NameIs(n),
            Filter::IdPrefix(p) => Matcher::Prefix(p),
        }
    }

    fn is_all(&self) -> bool {
        matches!(self, Matcher::All)
    }

    fn matches(&self, id: &FileId, record: &FileRecord) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Prefix(p) => prefix_matches(p.as_str(), id),
            Matcher::NameIs(n) => record.names().any(|x| x == *n),
            Matcher::Contains(pat) if pat.is_ascii() => record.names().any(|x| {
                x.as_bytes()
                    .windows(pat.len())
                    .any(|w| w.eq_ignore_ascii_case(pat.as_bytes()))
            }),
            Matcher::Contains(pat) => record
                .names()
                .any(|x| x.to_lowercase().contains(pat.as_str())),
        }
    }
}

/// Whether `id`'s hex form starts with `prefix`, without building the hex string. Prefixes from
/// the network are not validated by the decoder: anything that is not hex matches nothing.
fn prefix_matches(prefix: &str, id: &FileId) -> bool {
    if prefix.len() > 64 {
        return false;
    }
    prefix.bytes().enumerate().all(|(i, c)| {
        let nibble = (id.0[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 15;
        (c as char).to_digit(16) == Some(u32::from(nibble))
    })
}

/// The indices Floyd's algorithm has picked so far, for drawing `k` distinct indices below `n` in
/// O(k): for each `j` in `n - k..n`, take a random `t <= j`, or `j` itself if `t` was taken
/// already (`j` cannot have been). The result is a uniformly random subset.
// Large on purpose: it lives on the stack for one request, where boxing the bitmap would cost the
// allocation it is there to avoid.
#[allow(clippy::large_enum_variant)]
enum Taken {
    /// Up to [`Taken::BITMAP`] candidates: a bitmap on the stack.
    Bits([u64; Taken::BITMAP / 64]),
    /// More: the list of those taken (at most `k`).
    List(Vec<usize>),
}

impl Taken {
    const BITMAP: usize = 4096;

    fn new(n: usize, k: usize) -> Taken {
        if n <= Taken::BITMAP {
            Taken::Bits([0; Taken::BITMAP / 64])
        } else {
            Taken::List(Vec::with_capacity(k))
        }
    }

    /// `t`, or `j` if `t` was taken already; either way, taken from now on.
    #[inline(always)]
    fn take(&mut self, t: usize, j: usize) -> usize {
        match self {
            Taken::Bits(bits) => {
                let i = if bits[t / 64] & (1 << (t % 64)) != 0 {
                    j
                } else {
                    t
                };
                bits[i / 64] |= 1 << (i % 64);
                i
            }
            Taken::List(list) => {
                let i = if list.contains(&t) { j } else { t };
                list.push(i);
                i
            }
        }
    }
}

/// Gives back the room of a set that emptied out, keeping its capacity within twice its length
/// plus three (what the worst-case memory counts).
fn shrink_set<T: Eq + Hash>(set: &mut HashSet<T>) {
    if set.capacity() > 2 * set.len() + 3 {
        set.shrink_to(set.len() + set.len() / 2);
    }
}

/// Whether a name is text a person can read on one line: no control characters (newlines,
/// escapes) and no bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069), which can
/// make `exe.txt` show as `txt.exe`.
pub fn printable_name(name: &str) -> bool {
    !name
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}

/// SipHash-2-4 under `key` of a source address (family, IP, port) and a time slot.
fn connection_mac(key: &[u8; 16], src: SocketAddr, slot: u64) -> u64 {
    let mut h = siphasher::sip::SipHasher24::new_with_key(key);
    match src.ip() {
        IpAddr::V4(ip) => {
            h.write_u8(4);
            h.write(&ip.octets());
        }
        IpAddr::V6(ip) => {
            h.write_u8(6);
            h.write(&ip.octets());
        }
    }
    h.write_u16(src.port());
    h.write_u64(slot);
    h.finish()
}

/// The address a peer serves on: the datagram's source IP (canonical, see [`Registry::handle`])
/// unless it asked to advertise another. An advertised address that cannot be where the peer
/// serves is ignored: unspecified or multicast, or loopback from a sender that is not on this
/// host (a loopback peer is taken to run on the tracker's host, and is handed out as such).
/// Whether any other advertised address is one the peer may use is [`Registry::advertise_ok`]'s
/// question, asked at announce: later requests only name the registration.
fn peer_addr(src: SocketAddr, info: &PeerInfo) -> SocketAddr {
    let ip = match info.advertise.map(|a| a.ip.to_canonical()) {
        Some(a) if a.is_unspecified() || a.is_multicast() => src.ip(),
        Some(a) if a.is_loopback() && !src.ip().is_loopback() => src.ip(),
        Some(a) => a,
        None => src.ip(),
    };
    SocketAddr::new(ip, info.port)
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod tests_partial;
