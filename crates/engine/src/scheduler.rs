//! Which chunk is where during a download: sans-IO bookkeeping, the invariants of which are written
//! down in `SCHEDULER.md` beside this file.
//!
//! Workers (one per peer connection) ask [`Scheduler::next_for`] for work, and report what became
//! of it: [`Scheduler::completed`], [`Scheduler::hash_failed`], [`Scheduler::release`],
//! [`Scheduler::peer_gone`]. Nothing here does I/O or reads a clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use shoal_proto::ChunkIndex;

/// A peer is identified by its address, so strikes survive reconnections.
pub type PeerKey = SocketAddr;

/// Hash failures after which a peer is banned for the rest of the download.
pub const MAX_STRIKES: u32 = 2;
/// In endgame, how many peers may be asked for the same chunk at once.
pub const MAX_HOLDERS: usize = 3;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Chunks this peer delivered that were verified and written first.
    pub chunks: u32,
    pub bytes: u64,
    /// Chunks this peer sent that failed their hash.
    pub strikes: u32,
    pub banned: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// First verified copy: it counts.
    Accepted,
    /// Another copy got there first (endgame): discard.
    Duplicate,
}

pub struct Scheduler {
    num_chunks: u32,
    done: Vec<bool>,
    done_count: u32,
    /// Chunks nobody is fetching, lowest first (front-to-back keeps the disk writes sequential).
    missing: BTreeSet<u32>,
    /// Chunks being fetched, with every peer that was asked for them.
    in_flight: BTreeMap<u32, Vec<PeerKey>>,
    peers: HashMap<PeerKey, PeerStats>,
}

impl Scheduler {
    /// A scheduler for `num_chunks` chunks, of which those marked in `have` are already verified.
    pub fn new(num_chunks: u32, have: &[bool]) -> Scheduler {
        let done: Vec<bool> = (0..num_chunks as usize)
            .map(|i| have.get(i).copied().unwrap_or(false))
            .collect();
        let missing = (0..num_chunks).filter(|&i| !done[i as usize]).collect();
        let done_count = done.iter().filter(|d| **d).count() as u32;
        Scheduler {
            num_chunks,
            done,
            done_count,
            missing,
            in_flight: BTreeMap::new(),
            peers: HashMap::new(),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.done_count == self.num_chunks
    }

    pub fn done_count(&self) -> u32 {
        self.done_count
    }

    pub fn is_done(&self, index: ChunkIndex) -> bool {
        self.done.get(index.0 as usize).copied().unwrap_or(true)
    }

    pub fn is_banned(&self, peer: &PeerKey) -> bool {
        self.peers.get(peer).is_some_and(|p| p.banned)
    }

    pub fn stats(&self) -> &HashMap<PeerKey, PeerStats> {
        &self.peers
    }

    /// The next chunk `peer` should fetch: the lowest missing one; or, once none is missing
    /// (endgame), a chunk in flight elsewhere that fewest peers hold, so that a slow peer cannot
    /// hold the download hostage. `None` when there is nothing for this peer to do now.
    pub fn next_for(&mut self, peer: PeerKey) -> Option<ChunkIndex> {
        if self.is_banned(&peer) {
            return None;
        }
        self.peers.entry(peer).or_default();
        if let Some(i) = self.missing.pop_first() {
            self.in_flight.insert(i, vec![peer]);
            return Some(ChunkIndex(i));
        }
        let (&i, holders) = self
            .in_flight
            .iter_mut()
            .filter(|(_, h)| h.len() < MAX_HOLDERS && !h.contains(&peer))
            .min_by_key(|(_, h)| h.len())?;
        holders.push(peer);
        Some(ChunkIndex(i))
    }

    /// `peer` delivered `index` and it was verified and written.
    pub fn completed(&mut self, peer: PeerKey, index: ChunkIndex, len: u32) -> Completion {
        let i = index.0;
        if self.is_done(index) {
            self.drop_holder(peer, i);
            return Completion::Duplicate;
        }
        self.done[i as usize] = true;
        self.done_count += 1;
        self.missing.remove(&i);
        self.in_flight.remove(&i);
        let stats = self.peers.entry(peer).or_default();
        stats.chunks += 1;
        stats.bytes += u64::from(len);
        Completion::Accepted
    }

    /// `peer` sent data for `index` that failed its hash (or had the wrong length): strike it, ban
    /// it after [`MAX_STRIKES`], and put the chunk back for someone else. Returns whether the peer
    /// is now banned.
    pub fn hash_failed(&mut self, peer: PeerKey, index: ChunkIndex) -> bool {
        let stats = self.peers.entry(peer).or_default();
        stats.strikes += 1;
        if stats.strikes >= MAX_STRIKES && !stats.banned {
            stats.banned = true;
            self.peer_gone(peer);
            return true;
        }
        self.release(peer, index);
        self.is_banned(&peer)
    }

    /// `peer` will not deliver `index` (rejected, or the worker gave up on it).
    pub fn release(&mut self, peer: PeerKey, index: ChunkIndex) {
        self.drop_holder(peer, index.0);
    }

    /// `peer`'s connection ended: everything it was asked for goes back to whoever is left.
    pub fn peer_gone(&mut self, peer: PeerKey) {
        let held: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, h)| h.contains(&peer))
            .map(|(&i, _)| i)
            .collect();
        for i in held {
            self.drop_holder(peer, i);
        }
    }

    fn drop_holder(&mut self, peer: PeerKey, i: u32) {
        if let Some(holders) = self.in_flight.get_mut(&i) {
            holders.retain(|p| *p != peer);
            if holders.is_empty() {
                self.in_flight.remove(&i);
                if !self.done[i as usize] {
                    self.missing.insert(i);
                }
            }
        }
    }

    /// Checks the invariants of `SCHEDULER.md`; for tests.
    pub fn check_invariants(&self) {
        let done = self.done.iter().filter(|d| **d).count() as u32;
        assert_eq!(done, self.done_count);
        for i in 0..self.num_chunks {
            let states = [
                self.done[i as usize],
                self.missing.contains(&i),
                self.in_flight.contains_key(&i),
            ];
            assert_eq!(
                states.iter().filter(|s| **s).count(),
                1,
                "chunk {i} must be in exactly one state: {states:?}"
            );
        }
        for holders in self.in_flight.values() {
            assert!(!holders.is_empty() && holders.len() <= MAX_HOLDERS);
            assert!(
                holders.iter().all(|p| !self.is_banned(p)),
                "a banned peer holds a chunk"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u16) -> PeerKey {
        SocketAddr::from(([127, 0, 0, 1], n))
    }

    #[test]
    fn fast_peers_take_more_and_endgame_duplicates() {
        let mut s = Scheduler::new(3, &[]);
        let (a, b) = (peer(1), peer(2));
        assert_eq!(s.next_for(a), Some(ChunkIndex(0)));
        assert_eq!(s.next_for(b), Some(ChunkIndex(1)));
        assert_eq!(s.next_for(a), Some(ChunkIndex(2)));
        // Nothing missing: b may double up on a chunk a holds, but never on its own.
        assert_eq!(s.next_for(b), Some(ChunkIndex(0)));
        assert_eq!(s.next_for(b), Some(ChunkIndex(2)));
        assert_eq!(s.next_for(b), None);
        s.check_invariants();
        assert_eq!(s.completed(b, ChunkIndex(0), 10), Completion::Accepted);
        assert_eq!(s.completed(a, ChunkIndex(0), 10), Completion::Duplicate);
        s.check_invariants();
        assert_eq!(s.stats()[&b].chunks, 1);
        assert_eq!(s.stats()[&a].chunks, 0);
    }

    #[test]
    fn a_lost_peer_gives_its_chunks_back() {
        let mut s = Scheduler::new(4, &[true, false, false, false]);
        let (a, b) = (peer(1), peer(2));
        assert_eq!(s.next_for(a), Some(ChunkIndex(1)));
        assert_eq!(s.next_for(a), Some(ChunkIndex(2)));
        s.peer_gone(a);
        s.check_invariants();
        assert_eq!(s.next_for(b), Some(ChunkIndex(1)));
        assert_eq!(s.next_for(b), Some(ChunkIndex(2)));
        assert_eq!(s.next_for(b), Some(ChunkIndex(3)));
        for i in 1..4 {
            s.completed(b, ChunkIndex(i), 1);
        }
        assert!(s.is_complete());
        s.check_invariants();
    }

    #[test]
    fn liars_are_struck_then_banned() {
        let mut s = Scheduler::new(2, &[]);
        let (liar, honest) = (peer(1), peer(2));
        assert_eq!(s.next_for(liar), Some(ChunkIndex(0)));
        assert!(!s.hash_failed(liar, ChunkIndex(0)));
        s.check_invariants();
        assert_eq!(s.next_for(liar), Some(ChunkIndex(0)));
        assert_eq!(s.next_for(liar), Some(ChunkIndex(1)));
        assert!(s.hash_failed(liar, ChunkIndex(0)));
        s.check_invariants();
        assert_eq!(s.next_for(liar), None, "banned");
        assert_eq!(s.next_for(honest), Some(ChunkIndex(0)));
        assert_eq!(s.next_for(honest), Some(ChunkIndex(1)));
        assert!(s.stats()[&liar].banned);
    }

    #[test]
    fn random_operations_keep_the_invariants() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let n = rng.u32(0..20);
            let have: Vec<bool> = (0..n).map(|_| rng.bool()).collect();
            let mut s = Scheduler::new(n, &have);
            for _ in 0..200 {
                let p = peer(rng.u16(1..5));
                let i = ChunkIndex(rng.u32(0..n.max(1)));
                match rng.u8(0..5) {
                    0 | 1 => {
                        s.next_for(p);
                    }
                    2 if i.0 < n => {
                        s.completed(p, i, 1);
                    }
                    3 if i.0 < n => {
                        s.hash_failed(p, i);
                    }
                    _ => s.peer_gone(p),
                }
                s.check_invariants();
            }
        }
    }
}
