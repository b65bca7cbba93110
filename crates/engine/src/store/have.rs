//! The chunks a peer can vouch for: a set of chunk indices that only ever grows, read and
//! written from any thread without a lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shoal_proto::ChunkIndex;

/// One bit per chunk. A bit is set only after the chunk's data is verified and written, with
/// `Release`, and read with `Acquire`: whoever sees the bit can read the data.
pub struct HaveSet {
    words: Vec<AtomicU64>,
    len: u32,
    count: AtomicU32,
}

impl HaveSet {
    pub fn new(has: &[bool]) -> HaveSet {
        let words = (0..has.len().div_ceil(64))
            .map(|w| {
                let bits = has[w * 64..has.len().min(w * 64 + 64)]
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (b, h)| acc | (u64::from(*h) << b));
                AtomicU64::new(bits)
            })
            .collect();
        HaveSet {
            words,
            len: has.len() as u32,
            count: AtomicU32::new(has.iter().filter(|h| **h).count() as u32),
        }
    }

    pub fn full(len: u32) -> HaveSet {
        HaveSet::new(&vec![true; len as usize])
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn has(&self, index: ChunkIndex) -> bool {
        index.0 < self.len && self.word(index.0 as usize / 64) & (1 << (index.0 % 64)) != 0
    }

    /// Adds a chunk; whether it is new.
    pub fn insert(&self, index: ChunkIndex) -> bool {
        assert!(index.0 < self.len, "chunk {index} out of range");
        let bit = 1 << (index.0 % 64);
        let before = self.words[index.0 as usize / 64].fetch_or(bit, Ordering::Release);
        let new = before & bit == 0;
        if new {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Word `w` of the set: chunks `64 w ..= 64 w + 63`, chunk `64 w + b` at bit `b`.
    pub fn word(&self, w: usize) -> u64 {
        self.words[w].load(Ordering::Acquire)
    }

    pub fn words(&self) -> usize {
        self.words.len()
    }

    pub fn to_vec(&self) -> Vec<bool> {
        (0..self.len).map(|i| self.has(ChunkIndex(i))).collect()
    }
}

/// Remembers which chunks of a [`HaveSet`] were already announced to someone, so that only the
/// new ones are announced next time.
pub struct Announced {
    words: Vec<u64>,
}

impl Announced {
    pub fn new(has: &HaveSet) -> Announced {
        Announced {
            words: vec![0; has.words()],
        }
    }

    /// Marks every chunk of `has` announced, returning those that were not yet.
    pub fn catch_up(&mut self, has: &HaveSet) -> Vec<ChunkIndex> {
        let mut new = Vec::new();
        for (w, told) in self.words.iter_mut().enumerate() {
            let mut fresh = has.word(w) & !*told;
            *told |= fresh;
            while fresh != 0 {
                let b = fresh.trailing_zeros();
                new.push(ChunkIndex(w as u32 * 64 + b));
                fresh &= fresh - 1;
            }
        }
        new
    }

    /// Marks one chunk announced (a reveal told it on its own).
    pub fn mark(&mut self, index: ChunkIndex) {
        if let Some(w) = self.words.get_mut(index.0 as usize / 64) {
            *w |= 1 << (index.0 % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_have_set_grows_and_announces_each_chunk_once() {
        let mut has = vec![false; 130];
        has[3] = true;
        has[129] = true;
        let set = HaveSet::new(&has);
        assert_eq!(set.count(), 2);
        assert!(set.has(ChunkIndex(129)) && !set.has(ChunkIndex(130)));
        let mut told = Announced::new(&set);
        assert_eq!(told.catch_up(&set), vec![ChunkIndex(3), ChunkIndex(129)]);
        assert!(set.insert(ChunkIndex(64)));
        assert!(!set.insert(ChunkIndex(64)));
        assert_eq!(told.catch_up(&set), vec![ChunkIndex(64)]);
        assert_eq!(told.catch_up(&set), vec![]);
        assert_eq!(set.count(), 3);
        assert!(!set.is_full());
        assert!(HaveSet::full(130).is_full());
        assert_eq!(set.to_vec().iter().filter(|h| **h).count(), 3);
    }
}
