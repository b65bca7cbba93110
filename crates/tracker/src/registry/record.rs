//! One file as the tracker knows it: the peers that share it (whole or in part), and the names
//! and sizes they give it. Names and sizes are labels, not identity (the id is the manifest's
//! hash, and the manifest, which a leecher verifies, holds the true size): each distinct name or
//! size is kept once with how many peers give it, and the file is shown with the most given, so
//! the first announcer fixes nothing and a peer that gives another size is still registered.

use std::net::SocketAddr;
use std::sync::Arc;

use shoal_proto::tracker::Have;

#[derive(Clone, Debug)]
pub struct FileRecord {
    /// The size most peers give (ties: the smallest).
    pub size: u64,
    /// The peers sharing this file, the name and size each gives it and how much of it each has,
    /// sorted by address.
    peers: Vec<(SocketAddr, Arc<str>, Have, u64)>,
    /// Each distinct size and how many peers give it; never a zero count.
    sizes: Vec<(u64, u32)>,
    /// How many of `peers` have the whole file.
    complete: u32,
    /// Each distinct name and how many peers use it; never a zero count.
    names: Vec<(Arc<str>, u32)>,
    /// The name most peers use (ties: the smallest). Shared with `names`.
    display: Arc<str>,
}

/// What [`FileRecord::set`] changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    /// The peer was not registered for this file before.
    pub added: bool,
    /// The peer went from partial to complete or back.
    pub completeness: bool,
    /// The display name before, if it changed.
    pub old_display: Option<Arc<str>>,
}

impl FileRecord {
    pub fn new(size: u64) -> FileRecord {
        FileRecord {
            size,
            peers: Vec::with_capacity(1),
            sizes: Vec::with_capacity(1),
            complete: 0,
            names: Vec::with_capacity(1),
            display: Arc::from(""),
        }
    }

    pub fn display(&self) -> &Arc<str> {
        &self.display
    }

    /// Peers with the whole file.
    pub fn seeders(&self) -> usize {
        self.complete as usize
    }

    /// Peers with part of it.
    pub fn leechers(&self) -> usize {
        self.peers.len() - self.complete as usize
    }

    /// Peers registered for it, complete or not.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn has(&self, peer: &SocketAddr) -> bool {
        self.find(peer).is_ok()
    }

    fn find(&self, peer: &SocketAddr) -> Result<usize, usize> {
        self.peers.binary_search_by(|(a, ..)| a.cmp(peer))
    }

    /// How much `peer` has, if it is registered.
    pub fn have_of(&self, peer: &SocketAddr) -> Option<Have> {
        self.find(peer).ok().map(|i| self.peers[i].2)
    }

    /// Every peer in address order, with how much it has.
    pub fn peers(&self) -> impl Iterator<Item = (SocketAddr, Have)> + '_ {
        self.peers.iter().map(|(a, _, h, _)| (*a, *h))
    }

    /// Records a partial peer's progress (at most the size it gives). A complete peer, or one
    /// not registered, is left as it is: only an announcement changes completeness.
    pub fn set_progress(&mut self, peer: &SocketAddr, bytes: u64) {
        if let Ok(i) = self.find(peer) {
            let size = self.peers[i].3;
            if let Have::Partial { bytes: b } = &mut self.peers[i].2 {
                *b = bytes.min(size);
            }
        }
    }

    /// The `i`-th peer in address order.
    pub fn peer_at(&self, i: usize) -> &SocketAddr {
        &self.peers[i].0
    }

    pub fn peer_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.iter().map(|(a, ..)| *a)
    }

    /// The distinct names peers give this file.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(|(n, _)| &**n)
    }

    /// Registers `peer` with the `name` and `size` it gives and what it has, or updates them.
    pub fn set(&mut self, peer: SocketAddr, name: &str, size: u64, have: Have) -> Change {
        let have = match have {
            Have::Partial { bytes } => Have::Partial {
                bytes: bytes.min(size),
            },
            h => h,
        };
        let (added, was_complete) = match self.find(&peer) {
            Ok(i) => {
                let was = self.peers[i].2.is_complete();
                self.peers[i].2 = have;
                if self.peers[i].3 != size {
                    let old = self.peers[i].3;
                    count_out(&mut self.sizes, &old);
                    count_in(&mut self.sizes, size);
                    self.peers[i].3 = size;
                }
                if &*self.peers[i].1 != name {
                    let old = self.peers[i].1.clone();
                    self.release(&old);
                    self.peers[i].1 = self.intern(name);
                }
                (false, was)
            }
            Err(i) => {
                let name = self.intern(name);
                count_in(&mut self.sizes, size);
                self.peers.insert(i, (peer, name, have, size));
                (true, false)
            }
        };
        self.resize();
        let completeness = was_complete != have.is_complete();
        if completeness {
            if was_complete {
                self.complete -= 1;
            } else {
                self.complete += 1;
            }
        }
        Change {
            added,
            completeness: completeness && !added,
            old_display: self.redisplay(),
        }
    }

    /// Unregisters `peer`; returns the old display name if it changed, `None` if it did not (or
    /// the peer was not there).
    pub fn remove(&mut self, peer: &SocketAddr) -> Option<Arc<str>> {
        let i = self.find(peer).ok()?;
        let (_, name, have, size) = self.peers.remove(i);
        if have.is_complete() {
            self.complete -= 1;
        }
        count_out(&mut self.sizes, &size);
        self.resize();
        self.release(&name);
        shrink(&mut self.peers);
        self.redisplay()
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some((n, count)) = self.names.iter_mut().find(|(n, _)| &**n == name) {
            *count += 1;
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.names.push((n.clone(), 1));
        n
    }

    fn release(&mut self, name: &Arc<str>) {
        if let Some(i) = self.names.iter().position(|(n, _)| Arc::ptr_eq(n, name)) {
            self.names[i].1 -= 1;
            if self.names[i].1 == 0 {
                self.names.swap_remove(i);
                shrink(&mut self.names);
            }
        }
    }

    /// Recomputes the size shown: the most given, ties to the smallest.
    fn resize(&mut self) {
        if let Some((size, _)) = self
            .sizes
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        {
            self.size = *size;
        }
    }

    /// Recomputes the display name; returns the old one if it changed.
    fn redisplay(&mut self) -> Option<Arc<str>> {
        let best = self
            .names
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .map_or_else(|| Arc::from(""), |(n, _)| n.clone());
        if best == self.display {
            // Same text: keep the older Arc, which the index holds.
            None
        } else {
            Some(std::mem::replace(&mut self.display, best))
        }
    }

    /// Internal consistency, for tests.
    #[cfg(test)]
    pub fn check(&self) {
        assert!(self.peers.windows(2).all(|w| w[0].0 < w[1].0));
        let total: u32 = self.names.iter().map(|(_, c)| c).sum();
        assert_eq!(total as usize, self.peers.len());
        assert!(self.names.iter().all(|(_, c)| *c > 0));
        let complete = self.peers.iter().filter(|p| p.2.is_complete()).count();
        assert_eq!(complete, self.complete as usize);
        let sizes: u32 = self.sizes.iter().map(|(_, c)| c).sum();
        assert_eq!(sizes as usize, self.peers.len());
        assert!(self.sizes.iter().all(|(_, c)| *c > 0));
        for (_, n, h, size) in &self.peers {
            if let Have::Partial { bytes } = h {
                assert!(bytes <= size);
            }
            assert!(self.names.iter().any(|(m, _)| Arc::ptr_eq(m, n)));
        }
        if !self.peers.is_empty() {
            assert!(self.names.iter().any(|(m, _)| **m == *self.display));
        }
    }
}

/// Counts one more peer giving `value`.
fn count_in<T: PartialEq>(counts: &mut Vec<(T, u32)>, value: T) {
    match counts.iter_mut().find(|(v, _)| *v == value) {
        Some((_, n)) => *n += 1,
        None => counts.push((value, 1)),
    }
}

/// Counts one peer fewer giving `value`, dropping it at zero.
fn count_out<T: PartialEq>(counts: &mut Vec<(T, u32)>, value: &T) {
    if let Some(i) = counts.iter().position(|(v, _)| v == value) {
        counts[i].1 -= 1;
        if counts[i].1 == 0 {
            counts.swap_remove(i);
            shrink(counts);
        }
    }
}

/// Gives back room a list no longer needs, so a list that once was long and is now short does not
/// hold on to its peak: capacity stays at most twice the length plus one (growth by doubling
/// keeps to that too), which is what the worst-case memory counts.
pub fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > 2 * v.len() + 1 {
        v.shrink_to(v.len() + v.len() / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Have = Have::Complete;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn majority_name_wins_and_ties_go_to_the_smallest() {
        let mut r = FileRecord::new(1);
        assert!(r.set(a(1), "b", 100, C).added);
        assert_eq!(&**r.display(), "b");
        let c = r.set(a(2), "a", 100, C);
        assert!(c.added);
        assert_eq!(c.old_display.as_deref(), Some("b"));
        assert_eq!(&**r.display(), "a");
        r.set(a(3), "b", 100, C);
        assert_eq!(&**r.display(), "b");
        // Renaming is not adding.
        assert!(!r.set(a(3), "a", 100, C).added);
        assert_eq!(&**r.display(), "a");
        assert_eq!(
            r.set(a(3), "a", 100, C),
            Change {
                added: false,
                completeness: false,
                old_display: None
            }
        );
        r.check();
        assert_eq!(r.remove(&a(2)).as_deref(), None);
        assert_eq!(r.remove(&a(3)).as_deref(), Some("a"));
        assert_eq!(&**r.display(), "b");
        assert_eq!(r.remove(&a(9)), None);
        r.remove(&a(1));
        assert!(r.is_empty());
        assert_eq!(r.names().count(), 0);
        r.check();
    }

    #[test]
    fn lists_shrink_when_they_empty_out() {
        let mut r = FileRecord::new(1);
        for p in 0..1000 {
            r.set(a(p), &format!("name {p}"), 100, C);
        }
        for p in 1..1000 {
            r.remove(&a(p));
        }
        assert!(r.peers.capacity() <= 3, "{}", r.peers.capacity());
        assert!(r.names.capacity() <= 3, "{}", r.names.capacity());
        r.check();
    }

    #[test]
    fn partial_peers_are_counted_apart_and_progress_stays_within_the_size() {
        let mut r = FileRecord::new(100);
        r.set(a(1), "f", 100, Have::Partial { bytes: 10 });
        r.set(a(2), "f", 100, C);
        assert_eq!((r.seeders(), r.leechers(), r.peer_count()), (1, 1, 2));
        r.set_progress(&a(1), 1_000);
        r.set_progress(&a(2), 5);
        let have: Vec<Have> = r.peers().map(|(_, h)| h).collect();
        assert_eq!(have, [Have::Partial { bytes: 100 }, C]);
        // Finishing is a re-announcement, which counts the peer as a seeder from then on.
        let c = r.set(a(1), "f", 100, C);
        assert!(!c.added && c.completeness);
        assert_eq!((r.seeders(), r.leechers()), (2, 0));
        r.remove(&a(2));
        assert_eq!((r.seeders(), r.leechers()), (1, 0));
        r.check();
    }

    #[test]
    fn the_size_most_peers_give_is_shown_and_nobody_is_turned_away() {
        let mut r = FileRecord::new(0);
        assert!(r.set(a(1), "f", 666, C).added);
        assert_eq!(r.size, 666);
        // An honest peer with another size is registered all the same; ties go to the smaller.
        assert!(r.set(a(2), "f", 100, C).added);
        assert_eq!(r.size, 100);
        r.set(a(3), "f", 100, C);
        r.set(a(1), "f", 100, Have::Partial { bytes: 5000 });
        assert_eq!(r.have_of(&a(1)), Some(Have::Partial { bytes: 100 }));
        assert_eq!(r.size, 100);
        r.remove(&a(2));
        r.remove(&a(3));
        assert_eq!(r.size, 100);
        r.check();
    }
}
