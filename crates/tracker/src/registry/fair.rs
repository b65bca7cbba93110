//! Making room when a table is full, so that no single source, or a handful, can keep an honest
//! peer out: each source (an IPv4 address, or an IPv6 /64, which one host usually holds whole) is
//! counted, and a newcomer takes the place of the most represented source's oldest entry as long
//! as that source holds at least two more than the newcomer's. To keep an honest peer off a file
//! of `peers_per_file` places, an attacker then needs about that many sources.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use shoal_proto::FileId;

use super::Registry;

/// What one source holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub peers: u32,
    pub registrations: u32,
}

/// The source a sender's IP counts towards: the address itself, or its /64 for IPv6.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Whether `heaviest` holds enough more than `mine` that taking one of its places is fair.
fn over_represented(heaviest: u32, mine: u32) -> bool {
    heaviest > mine + 1
}

impl Registry {
    pub(super) fn load(&self, source: IpAddr) -> Load {
        self.sources.get(&source).copied().unwrap_or_default()
    }

    /// Adjusts a source's counts, dropping it once it holds nothing.
    pub(super) fn adjust(&mut self, source: IpAddr, f: impl FnOnce(&mut Load)) {
        let load = self.sources.entry(source).or_default();
        f(load);
        if *load == Load::default() {
            self.sources.remove(&source);
        }
    }

    /// The source holding the most by `key`, if it holds enough more than `source` that taking
    /// one of its places for `source` is fair.
    fn over_represented_source(
        &self,
        source: IpAddr,
        key: impl Fn(&Load) -> u32,
    ) -> Option<IpAddr> {
        let mine = key(&self.load(source));
        let (heavy, n) = self
            .sources
            .iter()
            .map(|(s, l)| (*s, key(l)))
            .max_by_key(|(_, n)| *n)?;
        over_represented(n, mine).then_some(heavy)
    }

    /// Whether one more peer from `source` fits, after dropping the most represented source's
    /// least recently heard peer if that is fair.
    pub(super) fn room_for_peer(&mut self, source: IpAddr) -> bool {
        if self.peers.len() < self.config.limits.total_peers {
            return true;
        }
        let Some(heavy) = self.over_represented_source(source, |l| l.peers) else {
            return false;
        };
        let victim = self
            .peers
            .values()
            .filter(|p| source_of(p.owner.ip()) == heavy)
            .min_by_key(|p| p.last_seen)
            .map(|p| p.addr);
        match victim {
            Some(v) => {
                self.count_eviction();
                self.remove_peer(v, "evicted: its source holds the most peers")
            }
            None => false,
        }
    }

    /// Whether one more registration from `source` fits, after dropping one of the most
    /// represented source's if that is fair.
    pub(super) fn room_for_registration(&mut self, source: IpAddr) -> bool {
        if self.registrations < self.config.limits.registrations {
            return true;
        }
        let Some(heavy) = self.over_represented_source(source, |l| l.registrations) else {
            return false;
        };
        let victim = self
            .peers
            .values()
            .filter(|p| source_of(p.owner.ip()) == heavy && !p.files.is_empty())
            .min_by_key(|p| p.last_seen)
            .and_then(|p| Some((p.addr, *p.files.iter().next()?)));
        match victim {
            Some((key, id)) => {
                self.count_eviction();
                self.remove_file_of(key, id);
                true
            }
            None => false,
        }
    }

    /// Whether a peer from `source` fits on file `id` (at its cap), after dropping one of the
    /// registrations of the source most represented on it if that is fair.
    pub(super) fn room_in_file(&mut self, id: FileId, source: IpAddr) -> bool {
        let Some(record) = self.files.get(&id) else {
            return true;
        };
        if record.peer_count() < self.config.limits.peers_per_file {
            return true;
        }
        let mut counts: HashMap<IpAddr, (u32, SocketAddr)> = HashMap::new();
        for addr in record.peer_addrs() {
            let Some(p) = self.peers.get(&addr) else {
                continue;
            };
            counts.entry(source_of(p.owner.ip())).or_insert((0, addr)).0 += 1;
        }
        let mine = counts.get(&source).map_or(0, |c| c.0);
        let Some((_, (n, victim))) = counts.into_iter().max_by_key(|(_, (n, _))| *n) else {
            return false;
        };
        if !over_represented(n, mine) {
            return false;
        }
        self.count_eviction();
        self.remove_file_of(victim, id);
        true
    }

    /// Whether one more distinct file fits, after dropping a file that only the most represented
    /// source shares (its least recently heard peer's) if that is fair. Without it, a few sources
    /// that register made-up files until the table is full would keep every new file out.
    pub(super) fn room_for_file(&mut self, source: IpAddr) -> bool {
        if self.files.len() < self.config.limits.total_files {
            return true;
        }
        let Some(heavy) = self.over_represented_source(source, |l| l.registrations) else {
            return false;
        };
        // A file that only this source's peers share: dropping its registration frees a place.
        let mut peers: Vec<&super::Peer> = self
            .peers
            .values()
            .filter(|p| source_of(p.owner.ip()) == heavy)
            .collect();
        peers.sort_by_key(|p| p.last_seen);
        let victim = peers.iter().find_map(|p| {
            p.files
                .iter()
                .find(|id| self.files.get(id).is_some_and(|r| r.peer_count() == 1))
                .map(|id| (p.addr, *id))
        });
        match victim {
            Some((key, id)) => {
                self.count_eviction();
                self.remove_file_of(key, id);
                self.files.len() < self.config.limits.total_files
            }
            None => false,
        }
    }

    fn count_eviction(&mut self) {
        self.totals.evictions += 1;
    }
}
