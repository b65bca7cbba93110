//! The tracker's state and its answer to every datagram, without I/O: [`Registry::handle`] takes
//! the time, the source address and the bytes, and returns the bytes to send back (if any).
//!
//! Soft state only: everything here is rebuilt from peers' announcements, so a restart loses
//! nothing that matters. Every collection a sender can grow is capped (see [`Limits`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shoal_proto::tracker::{
    encoded_len, ErrorCode, FileEntry, Filter, ListEntry, PeerInfo, Request, RequestBody, Response,
    ResponseBody, MAX_DATAGRAM, MAX_NAME_LEN,
};
use shoal_proto::{ConnectionId, FileId};

/// Caps on what senders can make the tracker hold. Each is a command-line option.
#[derive(Clone, Debug)]
pub struct Limits {
    pub files_per_peer: usize,
    pub peers_per_file: usize,
    pub total_files: usize,
    pub total_peers: usize,
    /// Peers in one reply to "get peers".
    pub peers_per_reply: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            files_per_peer: 10_000,
            peers_per_file: 1_000,
            total_files: 100_000,
            total_peers: 10_000,
            peers_per_reply: 50,
        }
    }
}

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

/// Counters since start, for logs and the status page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams: u64,
    pub dropped: u64,
    pub registrations: u64,
    pub queries: u64,
    pub departures: u64,
    pub expirations: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A peer: where it serves, when it was last heard, what it has.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub last_seen: Instant,
    pub files: HashSet<FileId>,
}

#[derive(Clone, Debug)]
struct FileRecord {
    size: u64,
    /// Each peer's name for the file: the name is a label, not part of the id.
    peers: BTreeMap<SocketAddr, String>,
}

impl FileRecord {
    /// The name most peers use (ties broken by the smallest).
    fn name(&self) -> &str {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for n in self.peers.values() {
            *counts.entry(n).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map_or("", |(n, _)| n)
    }
}

pub struct Registry {
    config: Config,
    secret: RandomState,
    epoch: Instant,
    peers: HashMap<SocketAddr, Peer>,
    files: HashMap<FileId, FileRecord>,
    pub counters: Counters,
}

/// Connection ids are good for the minute they are issued in and the next.
const CONNECTION_SLOT: Duration = Duration::from_secs(60);

impl Registry {
    pub fn new(config: Config, now: Instant) -> Registry {
        Registry {
            config,
            secret: RandomState::new(),
            epoch: now,
            peers: HashMap::new(),
            files: HashMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    fn connection_id(&self, src: SocketAddr, slot: u64) -> ConnectionId {
        let mut h = self.secret.build_hasher();
        src.hash(&mut h);
        slot.hash(&mut h);
        ConnectionId(h.finish())
    }

    fn slot(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_secs()) / CONNECTION_SLOT.as_secs()
    }

    fn connection_ok(&self, src: SocketAddr, conn: ConnectionId, now: Instant) -> bool {
        let slot = self.slot(now);
        conn == self.connection_id(src, slot)
            || (slot > 0 && conn == self.connection_id(src, slot - 1))
    }

    /// Answers one datagram. `None` means send nothing (malformed, or a reply would be larger than
    /// the request from an address that has not proved it can receive).
    pub fn handle(&mut self, now: Instant, src: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        self.counters.datagrams += 1;
        self.counters.bytes_in += datagram.len() as u64;
        let Ok(req) = Request::decode(datagram) else {
            self.counters.dropped += 1;
            return None;
        };
        let verified = !matches!(req.body, RequestBody::Connect { .. })
            && self.connection_ok(src, req.conn, now);
        let body = match req.body {
            RequestBody::Connect { .. } => ResponseBody::Connected {
                conn: self.connection_id(src, self.slot(now)),
            },
            _ if !verified => ResponseBody::Error {
                code: ErrorCode::BadConnection,
            },
            RequestBody::Announce { peer, files } => self.announce(now, src, &peer, files),
            RequestBody::Heartbeat { peer, files } => {
                let key = peer_addr(src, &peer);
                match self.peers.get_mut(&key) {
                    Some(p) if p.files.len() == files as usize => {
                        p.last_seen = now;
                        self.ack()
                    }
                    _ => ResponseBody::Unknown,
                }
            }
            RequestBody::Unregister { peer, files } => {
                let key = peer_addr(src, &peer);
                match files {
                    None => self.remove_peer(key, "left"),
                    Some(ids) => {
                        for id in ids {
                            self.remove_file_of(key, id);
                        }
                    }
                }
                self.ack()
            }
            RequestBody::GetPeers { file } => {
                self.counters.queries += 1;
                ResponseBody::Peers {
                    interval_secs: self.interval_secs(),
                    peers: self.sample_peers(&file, src.ip()),
                }
            }
            RequestBody::List { filter, cursor } => {
                self.counters.queries += 1;
                self.list(&filter, cursor)
            }
        };
        let reply = Response { txn: req.txn, body }.encode();
        if reply.len() > MAX_DATAGRAM || (!verified && reply.len() > datagram.len()) {
            self.counters.dropped += 1;
            return None;
        }
        self.counters.bytes_out += reply.len() as u64;
        Some(reply)
    }

    fn interval_secs(&self) -> u32 {
        self.config.interval.as_secs().max(1) as u32
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
        if files
            .iter()
            .any(|f| f.name.is_empty() || f.name.len() > MAX_NAME_LEN)
        {
            return ResponseBody::Error {
                code: ErrorCode::BadName,
            };
        }
        let key = peer_addr(src, info);
        let limits = self.config.limits.clone();
        if !self.peers.contains_key(&key) {
            if self.peers.len() >= limits.total_peers {
                return ResponseBody::Error {
                    code: ErrorCode::Full,
                };
            }
            tracing::info!(peer = %key, "peer registered");
            self.peers.insert(
                key,
                Peer {
                    addr: key,
                    last_seen: now,
                    files: HashSet::new(),
                },
            );
        }
        let mut added = 0;
        for f in files {
            let peer = self.peers.get_mut(&key).expect("inserted above");
            peer.last_seen = now;
            if !peer.files.contains(&f.id) && peer.files.len() >= limits.files_per_peer {
                return ResponseBody::Error {
                    code: ErrorCode::Full,
                };
            }
            let known = self.files.contains_key(&f.id);
            if !known && self.files.len() >= limits.total_files {
                return ResponseBody::Error {
                    code: ErrorCode::Full,
                };
            }
            let record = self.files.entry(f.id).or_insert_with(|| FileRecord {
                size: f.size,
                peers: BTreeMap::new(),
            });
            if !record.peers.contains_key(&key) && record.peers.len() >= limits.peers_per_file {
                if record.peers.is_empty() {
                    self.files.remove(&f.id);
                }
                return ResponseBody::Error {
                    code: ErrorCode::Full,
                };
            }
            if record.size != f.size {
                // Sizes are part of the manifest, so this peer is confused or lying: skip it.
                continue;
            }
            if record.peers.insert(key, f.name.clone()).is_none() {
                added += 1;
                tracing::info!(peer = %key, file = %f.id.short(), name = %f.name, "file registered");
            }
            self.peers
                .get_mut(&key)
                .expect("inserted above")
                .files
                .insert(f.id);
        }
        self.counters.registrations += added;
        self.ack()
    }

    fn remove_file_of(&mut self, key: SocketAddr, id: FileId) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.files.remove(&id);
        }
        if let Some(record) = self.files.get_mut(&id) {
            record.peers.remove(&key);
            if record.peers.is_empty() {
                self.files.remove(&id);
            }
        }
    }

    fn remove_peer(&mut self, key: SocketAddr, why: &str) {
        if let Some(peer) = self.peers.remove(&key) {
            for id in peer.files {
                if let Some(record) = self.files.get_mut(&id) {
                    record.peers.remove(&key);
                    if record.peers.is_empty() {
                        self.files.remove(&id);
                    }
                }
            }
            self.counters.departures += 1;
            tracing::info!(peer = %key, "peer {why}");
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
            self.counters.expirations += 1;
            self.remove_peer(key, "timed out");
        }
    }

    /// A bounded, shuffled subset of a file's peers. A loopback address is only handed to a
    /// requester on the same host.
    fn sample_peers(&self, file: &FileId, requester: IpAddr) -> Vec<SocketAddr> {
        let Some(record) = self.files.get(file) else {
            return Vec::new();
        };
        let mut peers: Vec<SocketAddr> = record
            .peers
            .keys()
            .filter(|a| !a.ip().is_loopback() || requester.is_loopback())
            .copied()
            .collect();
        fastrand::shuffle(&mut peers);
        peers.truncate(self.config.limits.peers_per_reply);
        // Keep the reply within one datagram whatever the address family mix.
        while encoded_len(&peers) > MAX_DATAGRAM - 32 {
            peers.pop();
        }
        peers
    }

    /// One page of the files matching `filter`, sorted by name then id.
    pub fn list(&self, filter: &Filter, cursor: u32) -> ResponseBody {
        let mut all = self.matching(filter);
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut entries = Vec::new();
        let mut used = 32;
        let mut next = None;
        for (i, e) in all.into_iter().enumerate().skip(cursor as usize) {
            let n = encoded_len(&e);
            if used + n > MAX_DATAGRAM - 16 {
                next = Some(i as u32);
                break;
            }
            used += n;
            entries.push(e);
        }
        ResponseBody::Files { entries, next }
    }

    /// Every file matching `filter`, one entry per id.
    pub fn matching(&self, filter: &Filter) -> Vec<ListEntry> {
        let wanted = |id: &FileId, r: &FileRecord| match filter {
            Filter::All => true,
            Filter::IdPrefix(p) => p.matches(id),
            Filter::NameIs(n) => r.peers.values().any(|x| x == n),
            Filter::NameContains(s) => {
                let s = s.to_lowercase();
                r.peers.values().any(|x| x.to_lowercase().contains(&s))
            }
        };
        self.files
            .iter()
            .filter(|(id, r)| wanted(id, r))
            .map(|(id, r)| ListEntry {
                id: *id,
                size: r.size,
                seeders: r.peers.len() as u32,
                name: r.name().to_string(),
            })
            .collect()
    }
}

/// The address a peer serves on: the datagram's source IP unless it asked to advertise another.
fn peer_addr(src: SocketAddr, info: &PeerInfo) -> SocketAddr {
    SocketAddr::new(info.advertise.unwrap_or(src.ip()), info.port)
}

#[cfg(test)]
mod tests;
