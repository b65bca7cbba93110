//! The tracker's state and its answer to every datagram, without I/O: [`Registry::handle`] takes
//! the time, the source address and the bytes, and returns the bytes to send back (if any).
//!
//! Soft state only: everything here is rebuilt from peers' announcements, so a restart loses
//! nothing that matters. Every collection a sender can grow is capped (see [`Limits`]), every
//! source is rate limited, and a source that has not proved it receives at its address never gets
//! a reply larger than its request.
//!
//! This file holds the state and its bookkeeping; `dispatch` answers a datagram, `announce`
//! registers files, `sample` picks the peers handed out, `listing` pages through the files.

mod announce;
mod dispatch;
mod fair;
mod listing;
pub mod record;
mod sample;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::tracker::{encoded_len, Have};
use shoal_proto::FileId;
use shoal_secret::datagram::OpenError;

use crate::activity::{Activity, Tally};
pub use crate::limits::Limits;
use crate::ratelimit::RateLimiter;
pub use fair::{source_of, Load};
pub use record::FileRecord;

// What the tests (children of this module, `use super::*`) use besides the state.
#[cfg(test)]
use {
    listing::prefix_matches,
    sample::Draw,
    shoal_proto::tracker::{
        Advertise, DecodeError, ErrorCode, FileEntry, Filter, ListEntry, PeerInfo, Progress,
        Request, RequestBody, Response, ResponseBody, MAGIC, MAX_DATAGRAM, MAX_NAME_LEN,
    },
    shoal_proto::{ConnectionId, IdPrefix},
    std::hash::Hasher,
};

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

    /// Counts a sealed datagram of `len` bytes that was dropped before the registry read it.
    pub fn count_unopened(&mut self, now: Instant, len: usize, why: OpenError) {
        self.count(now, |t| {
            t.datagrams += 1;
            t.bytes_in += len as u64;
            match why {
                OpenError::NotSealed | OpenError::TooLong => t.malformed += 1,
                OpenError::Forged => t.forged += 1,
                OpenError::Stale => t.stale += 1,
                OpenError::Replayed => t.replayed += 1,
            }
        });
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

/// Gives back the room of a set that emptied out, keeping its capacity within twice its length
/// plus three (what the worst-case memory counts).
fn shrink_set<T: Eq + Hash>(set: &mut HashSet<T>) {
    if set.capacity() > 2 * set.len() + 3 {
        set.shrink_to(set.len() + set.len() / 2);
    }
}

/// Whether a name is text a person can read on one line: nothing that
/// [`shoal_proto::names::unprintable`] refuses (control characters, bidirectional overrides,
/// isolates and marks, line separators, invisible characters).
pub fn printable_name(name: &str) -> bool {
    // The leecher's rule, so that the tracker never lists a name a leecher would show altered.
    !name.chars().any(shoal_proto::names::unprintable)
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod tests_partial;
