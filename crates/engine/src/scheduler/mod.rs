//! Which chunk is where during a download, and which peer has what: sans-IO bookkeeping, the
//! invariants of which are written down in `SCHEDULER.md` beside this file.
//!
//! Workers (one per peer connection) tell it what their peer has ([`Scheduler::peer_bitfield`],
//! [`Scheduler::peer_have`]), ask [`Scheduler::next_for`] for work, and report what became of it:
//! [`Scheduler::completed`], [`Scheduler::hash_failed`], [`Scheduler::release`],
//! [`Scheduler::peer_gone`]. Nothing here does I/O or reads a clock; randomness comes from a seed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use shoal_proto::ChunkIndex;

/// A peer is identified by its address, so strikes survive reconnections.
pub type PeerKey = SocketAddr;

/// Hash failures after which a peer is banned for the rest of the download.
pub const MAX_STRIKES: u32 = 2;
/// In endgame, how many peers may be asked for the same chunk at once.
pub const MAX_HOLDERS: usize = 3;
/// Until this many chunks are done, picks are random rather than rarest first: a chunk every peer
/// has is fetched fast, and a leecher with something to trade is worth more to the swarm.
pub const RANDOM_FIRST: u32 = 4;

/// In endgame, a chunk is asked of one more peer only once it has been on its way for this many
/// times the typical delivery (request to arrival, a moving average): a second copy costs some
/// peer's uplink a whole chunk, so it is worth it only for a chunk that is late.
pub const ENDGAME_PATIENCE: u32 = 2;
/// Weight of the newest delivery time in the moving average.
const DELIVERY_WEIGHT: f64 = 0.2;
/// A delivery counts in the average as at most this many times the average, so that one slow
/// peer cannot make every chunk wait long before it is late.
const DELIVERY_CLIP: f64 = 4.0;
/// The endgame's patience never exceeds this (the default `--stall-timeout`).
const MAX_PATIENCE: Duration = Duration::from_secs(10);

/// `slot` of a chunk that is not missing.
const NOT_MISSING: u32 = u32::MAX;

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

/// What one peer told us it has.
#[derive(Default)]
struct HaveSet {
    bits: Vec<bool>,
    /// The same chunks as a list, so that a peer with few chunks is searched in few steps.
    list: Vec<u32>,
}

impl HaveSet {
    fn has(&self, i: u32) -> bool {
        self.bits.get(i as usize).copied().unwrap_or(false)
    }
}

pub struct Scheduler {
    num_chunks: u32,
    done: Vec<bool>,
    done_count: u32,
    /// Per chunk, how many known have-sets contain it.
    avail: Vec<u32>,
    /// Chunks nobody is fetching and not done, by availability: `buckets[a]` holds those exactly
    /// `a` known peers have, so rarest first never scans the chunks that are not rarest.
    buckets: Vec<Vec<u32>>,
    /// Per chunk, its position in its bucket, or [`NOT_MISSING`].
    slot: Vec<u32>,
    missing_count: u32,
    /// Chunks being fetched, with every peer that was asked for them.
    in_flight: BTreeMap<u32, Vec<PeerKey>>,
    peers: HashMap<PeerKey, PeerStats>,
    haves: HashMap<PeerKey, HaveSet>,
    /// Complete peers that show us their chunks a few at a time ([`Scheduler::peer_reveals`]).
    revealing: HashSet<PeerKey>,
    /// The time as the caller last told it ([`Scheduler::set_clock`]); zero if it never did.
    now: Duration,
    /// Per chunk, when it was last asked of a peer.
    asked_at: Vec<Duration>,
    /// Moving average of request-to-arrival times of chunks asked of one peer.
    delivery: Duration,
    /// The earliest time a chunk in flight becomes late enough to be asked of another peer, as
    /// of the last pick that found none.
    next_late: Option<Duration>,
    rng: fastrand::Rng,
}

impl Scheduler {
    /// A scheduler for `num_chunks` chunks, of which those marked in `have` are already verified;
    /// `seed` drives the random tie-breaks (so a test or a simulation can replay a run).
    pub fn new(num_chunks: u32, have: &[bool], seed: u64) -> Scheduler {
        let n = num_chunks as usize;
        let done: Vec<bool> = (0..n)
            .map(|i| have.get(i).copied().unwrap_or(false))
            .collect();
        let done_count = done.iter().filter(|d| **d).count() as u32;
        let mut s = Scheduler {
            num_chunks,
            done,
            done_count,
            avail: vec![0; n],
            buckets: vec![Vec::new()],
            slot: vec![NOT_MISSING; n],
            missing_count: 0,
            in_flight: BTreeMap::new(),
            peers: HashMap::new(),
            haves: HashMap::new(),
            revealing: HashSet::new(),
            now: Duration::ZERO,
            asked_at: vec![Duration::ZERO; n],
            delivery: Duration::ZERO,
            next_late: None,
            rng: fastrand::Rng::with_seed(seed),
        };
        for i in 0..num_chunks {
            if !s.done[i as usize] {
                s.insert_missing(i);
            }
        }
        s
    }

    /// The time now, on any clock that does not go back (the download's age, say): used only to
    /// hold endgame copies back until a chunk is late. A caller that never sets it gets the
    /// endgame at once, as if every delivery were instant.
    pub fn set_clock(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// A chunk asked of `peer` arrived (before its hash is checked): its request-to-arrival time
    /// feeds the typical delivery, if only one peer was asked for it (at most [`DELIVERY_CLIP`]
    /// times the typical delivery so far).
    pub fn arrived(&mut self, index: ChunkIndex) {
        let i = index.0;
        if self.in_flight.get(&i).is_some_and(|h| h.len() == 1) {
            let took = self
                .now
                .saturating_sub(self.asked_at[i as usize])
                .as_secs_f64();
            let avg = self.delivery.as_secs_f64();
            let next = if avg == 0.0 {
                took
            } else {
                avg + DELIVERY_WEIGHT * (took.min(DELIVERY_CLIP * avg) - avg)
            };
            self.delivery = Duration::from_secs_f64(next);
        }
    }

    /// When a chunk in flight becomes late enough for an endgame copy, if the last pick found
    /// none for that reason: a worker with room should ask again then.
    pub fn next_late(&self) -> Option<Duration> {
        self.next_late.filter(|t| *t > self.now)
    }

    pub fn is_complete(&self) -> bool {
        self.done_count == self.num_chunks
    }

    /// Every chunk not done is on its way from some peer, and some are not done yet: idle
    /// workers may now double up on late ones ([`Scheduler::next_for`]).
    pub fn in_endgame(&self) -> bool {
        self.missing_count == 0 && !self.is_complete()
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

    /// Whether `peer` told us it has every chunk.
    pub fn peer_is_complete(&self, peer: PeerKey) -> bool {
        self.haves
            .get(&peer)
            .is_some_and(|h| h.list.len() == self.num_chunks as usize)
    }

    /// `peer` is complete and shows us its chunks a few at a time, in the order it wants them
    /// fetched (super-seeding, `reveal/`): among the rarest it showed, the one it showed first
    /// is taken, not one at random, so that none waits while later ones are fetched (a chunk
    /// left waiting is shown to another client in the end, and sent twice). Forgotten when the
    /// peer is gone.
    pub fn peer_reveals(&mut self, peer: PeerKey) {
        self.revealing.insert(peer);
    }

    /// `peer`'s Bitfield: its have-set becomes `has` (shorter means the rest is false, longer is
    /// cut). Chunks it was asked for and no longer claims go back to whoever is left.
    pub fn peer_bitfield(&mut self, peer: PeerKey, has: &[bool]) {
        if self.is_banned(&peer) {
            return;
        }
        self.forget_haves(peer);
        let mut set = HaveSet {
            bits: vec![false; self.num_chunks as usize],
            list: Vec::new(),
        };
        for (i, _) in has.iter().enumerate().filter(|(_, h)| **h) {
            if i < set.bits.len() {
                set.bits[i] = true;
                set.list.push(i as u32);
            }
        }
        for &i in &set.list {
            self.set_avail(i, self.avail[i as usize] + 1);
        }
        self.haves.insert(peer, set);
        let lost: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(i, h)| h.contains(&peer) && !has.get(**i as usize).copied().unwrap_or(false))
            .map(|(&i, _)| i)
            .collect();
        for i in lost {
            self.drop_holder(peer, i);
        }
    }

    /// `peer`'s Have: it has `index` now. Out-of-range indices are ignored (never fatal).
    pub fn peer_have(&mut self, peer: PeerKey, index: ChunkIndex) {
        let i = index.0;
        if self.is_banned(&peer) || i >= self.num_chunks {
            return;
        }
        let n = self.num_chunks as usize;
        let set = self.haves.entry(peer).or_insert_with(|| HaveSet {
            bits: vec![false; n],
            list: Vec::new(),
        });
        if !set.bits[i as usize] {
            set.bits[i as usize] = true;
            set.list.push(i);
            self.set_avail(i, self.avail[i as usize] + 1);
        }
    }

    /// `peer` no longer claims `index` (a seeder declined it: `Reject { reason: Elsewhere }`),
    /// until it tells us again with a Have.
    pub fn peer_lacks(&mut self, peer: PeerKey, index: ChunkIndex) {
        let i = index.0;
        let Some(set) = self.haves.get_mut(&peer) else {
            return;
        };
        if set.has(i) {
            set.bits[i as usize] = false;
            set.list.retain(|&c| c != i);
            self.set_avail(i, self.avail[i as usize] - 1);
        }
    }

    /// The next chunk `peer` should fetch, always one it has: while fewer than [`RANDOM_FIRST`]
    /// chunks are done, a random missing one; then the rarest missing one (fewest known holders),
    /// ties at random. Once nothing is missing (endgame), a chunk it has that is in flight
    /// elsewhere, late (asked last [`ENDGAME_PATIENCE`] typical deliveries ago or more), and that
    /// fewest peers hold, so that a slow peer cannot hold the download hostage.
    /// `None` when there is nothing for this peer to do now (it may have something after a Have).
    pub fn next_for(&mut self, peer: PeerKey) -> Option<ChunkIndex> {
        self.next_late = None;
        if self.is_banned(&peer) {
            return None;
        }
        self.peers.entry(peer).or_default();
        // Taken out for the duration so that the picks may use the random stream while reading it.
        let set = self.haves.remove(&peer)?;
        let pick = self.pick(peer, &set);
        self.haves.insert(peer, set);
        pick.map(ChunkIndex)
    }

    fn pick(&mut self, peer: PeerKey, set: &HaveSet) -> Option<u32> {
        self.next_late = None;
        if self.missing_count > 0 {
            // A worker whose peer has none of the missing chunks waits for a Have: it does not
            // double up on chunks in flight elsewhere before the endgame.
            let few = set.list.len() <= self.missing_count as usize;
            let pick = if few && self.revealing.contains(&peer) {
                self.first_rarest_pick(set)
            } else if self.done_count < RANDOM_FIRST {
                self.random_pick(set)
            } else {
                self.rarest_pick(set)
            }?;
            self.remove_missing(pick);
            self.in_flight.insert(pick, vec![peer]);
            self.asked_at[pick as usize] = self.now;
            return Some(pick);
        }
        let patience = (self.delivery * ENDGAME_PATIENCE).min(MAX_PATIENCE);
        let mut best: Option<(u32, usize)> = None;
        let mut ties = 0;
        let mut next_late: Option<Duration> = None;
        for (&i, holders) in &self.in_flight {
            if holders.len() >= MAX_HOLDERS || holders.contains(&peer) || !set.has(i) {
                continue;
            }
            let late_at = self.asked_at[i as usize] + patience;
            if late_at > self.now {
                next_late = Some(next_late.map_or(late_at, |t| t.min(late_at)));
                continue;
            }
            match best {
                Some((_, len)) if holders.len() > len => continue,
                Some((_, len)) if holders.len() == len => {
                    ties += 1;
                    if self.rng.u32(0..ties) == 0 {
                        best = Some((i, len));
                    }
                }
                _ => {
                    ties = 1;
                    best = Some((i, holders.len()));
                }
            }
        }
        self.next_late = next_late;
        let (i, _) = best?;
        self.in_flight.get_mut(&i)?.push(peer);
        self.asked_at[i as usize] = self.now;
        Some(i)
    }

    /// A missing chunk `set` has, uniformly at random. Costs one step per chunk the peer has; used
    /// only for the first few chunks.
    fn random_pick(&mut self, set: &HaveSet) -> Option<u32> {
        let rng = &mut self.rng;
        let mut pick = None;
        let missing = set
            .list
            .iter()
            .filter(|&&i| self.slot[i as usize] != NOT_MISSING);
        for (seen, &i) in (1..).zip(missing) {
            if rng.u32(0..seen) == 0 {
                pick = Some(i);
            }
        }
        pick
    }

    /// The rarest missing chunk `set` has, the first told of among ties. One step per chunk the
    /// peer told us of (so only for a peer that told us of no more chunks than are missing).
    fn first_rarest_pick(&self, set: &HaveSet) -> Option<u32> {
        let missing = set
            .list
            .iter()
            .filter(|&&i| self.slot[i as usize] != NOT_MISSING);
        missing.min_by_key(|&&i| self.avail[i as usize]).copied()
    }

    /// The rarest missing chunk `set` has, ties at random. Costs at most
    /// min(chunks the peer has, chunks missing) steps, and usually a few.
    fn rarest_pick(&mut self, set: &HaveSet) -> Option<u32> {
        let rng = &mut self.rng;
        if set.list.len() <= self.missing_count as usize {
            // Few chunks: one pass over them, reservoir sampling among the rarest.
            let mut best: Option<(u32, u32)> = None;
            let mut ties = 0;
            for &i in set
                .list
                .iter()
                .filter(|&&i| self.slot[i as usize] != NOT_MISSING)
            {
                let a = self.avail[i as usize];
                match best {
                    Some((_, b)) if a > b => {}
                    Some((_, b)) if a == b => {
                        ties += 1;
                        if rng.u32(0..ties) == 0 {
                            best = Some((i, a));
                        }
                    }
                    _ => {
                        ties = 1;
                        best = Some((i, a));
                    }
                }
            }
            return best.map(|(i, _)| i);
        }
        // Many chunks: the rarest non-empty bucket first, from a random place in it. A chunk the
        // peer has is counted in its availability, so bucket 0 never holds one.
        for bucket in self.buckets.iter().skip(1).filter(|b| !b.is_empty()) {
            let start = rng.usize(0..bucket.len());
            let (tail, head) = bucket.split_at(start);
            if let Some(&i) = head.iter().chain(tail).find(|&&i| set.has(i)) {
                return Some(i);
            }
        }
        None
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
        self.remove_missing(i);
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

    /// `peer`'s connection ended: everything it was asked for goes back to whoever is left, and
    /// its have-set is forgotten (a new connection sends a new Bitfield).
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
        self.forget_haves(peer);
        self.revealing.remove(&peer);
    }

    fn forget_haves(&mut self, peer: PeerKey) {
        if let Some(set) = self.haves.remove(&peer) {
            for i in set.list {
                self.set_avail(i, self.avail[i as usize] - 1);
            }
        }
    }

    fn drop_holder(&mut self, peer: PeerKey, i: u32) {
        if let Some(holders) = self.in_flight.get_mut(&i) {
            holders.retain(|p| *p != peer);
            if holders.is_empty() {
                self.in_flight.remove(&i);
                if !self.done[i as usize] {
                    self.insert_missing(i);
                }
            }
        }
    }

    fn set_avail(&mut self, i: u32, a: u32) {
        let missing = self.slot[i as usize] != NOT_MISSING;
        if missing {
            self.remove_missing(i);
        }
        self.avail[i as usize] = a;
        if missing {
            self.insert_missing(i);
        }
    }

    fn insert_missing(&mut self, i: u32) {
        let a = self.avail[i as usize] as usize;
        if self.buckets.len() <= a {
            self.buckets.resize_with(a + 1, Vec::new);
        }
        self.slot[i as usize] = self.buckets[a].len() as u32;
        self.buckets[a].push(i);
        self.missing_count += 1;
    }

    /// Takes `i` out of its bucket if it is there.
    fn remove_missing(&mut self, i: u32) {
        let s = self.slot[i as usize];
        if s == NOT_MISSING {
            return;
        }
        let bucket = &mut self.buckets[self.avail[i as usize] as usize];
        bucket.swap_remove(s as usize);
        if let Some(&moved) = bucket.get(s as usize) {
            self.slot[moved as usize] = s;
        }
        self.slot[i as usize] = NOT_MISSING;
        self.missing_count -= 1;
    }

    /// Checks the invariants of `SCHEDULER.md`; for tests and the simulation.
    pub fn check_invariants(&self) {
        let n = self.num_chunks as usize;
        let done = self.done.iter().filter(|d| **d).count() as u32;
        assert_eq!(done, self.done_count);
        for i in 0..self.num_chunks {
            let missing = self.slot[i as usize] != NOT_MISSING;
            let states = [
                self.done[i as usize],
                missing,
                self.in_flight.contains_key(&i),
            ];
            assert_eq!(
                states.iter().filter(|s| **s).count(),
                1,
                "chunk {i} must be in exactly one state: {states:?}"
            );
            if missing {
                let bucket = &self.buckets[self.avail[i as usize] as usize];
                assert_eq!(
                    bucket[self.slot[i as usize] as usize], i,
                    "chunk {i} misfiled"
                );
            }
        }
        let filed: usize = self.buckets.iter().map(Vec::len).sum();
        assert_eq!(
            filed, self.missing_count as usize,
            "a bucket holds a stale chunk"
        );
        let mut counted = vec![0u32; n];
        for (peer, set) in &self.haves {
            assert!(!self.is_banned(peer), "a banned peer's have-set counts");
            assert_eq!(set.bits.len(), n);
            assert_eq!(set.list.len(), set.bits.iter().filter(|b| **b).count());
            for &i in &set.list {
                assert!(set.bits[i as usize], "have-list and bits disagree on {i}");
                counted[i as usize] += 1;
            }
        }
        assert_eq!(
            counted, self.avail,
            "availability is not the sum of the have-sets"
        );
        for (&i, holders) in &self.in_flight {
            assert!(!holders.is_empty() && holders.len() <= MAX_HOLDERS);
            for (k, p) in holders.iter().enumerate() {
                assert!(!self.is_banned(p), "a banned peer holds a chunk");
                assert!(!holders[..k].contains(p), "{p} holds chunk {i} twice");
                assert!(
                    self.haves.get(p).is_some_and(|s| s.has(i)),
                    "{p} was handed chunk {i}, which it does not have"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
