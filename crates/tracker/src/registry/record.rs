//! One file as the tracker knows it: its size, the peers that share it, and the names they give
//! it. Names are labels, not identity: each distinct name is stored once, with how many peers use
//! it, and the file is shown under the most used one.

use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct FileRecord {
    pub size: u64,
    /// The peers sharing this file and the name each gives it, sorted by address.
    peers: Vec<(SocketAddr, Arc<str>)>,
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
    /// The display name before, if it changed.
    pub old_display: Option<Arc<str>>,
}

impl FileRecord {
    pub fn new(size: u64) -> FileRecord {
        FileRecord {
            size,
            peers: Vec::with_capacity(1),
            names: Vec::with_capacity(1),
            display: Arc::from(""),
        }
    }

    pub fn display(&self) -> &Arc<str> {
        &self.display
    }

    pub fn seeders(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn has(&self, peer: &SocketAddr) -> bool {
        self.peers.binary_search_by(|(a, _)| a.cmp(peer)).is_ok()
    }

    /// The `i`-th peer in address order.
    pub fn peer_at(&self, i: usize) -> &SocketAddr {
        &self.peers[i].0
    }

    pub fn peer_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.iter().map(|(a, _)| *a)
    }

    /// The distinct names peers give this file.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(|(n, _)| &**n)
    }

    /// Registers `peer` with `name`, or renames it.
    pub fn set(&mut self, peer: SocketAddr, name: &str) -> Change {
        let added = match self.peers.binary_search_by(|(a, _)| a.cmp(&peer)) {
            Ok(i) if &*self.peers[i].1 == name => {
                return Change {
                    added: false,
                    old_display: None,
                }
            }
            Ok(i) => {
                let old = self.peers[i].1.clone();
                self.release(&old);
                self.peers[i].1 = self.intern(name);
                false
            }
            Err(i) => {
                let name = self.intern(name);
                self.peers.insert(i, (peer, name));
                true
            }
        };
        Change {
            added,
            old_display: self.redisplay(),
        }
    }

    /// Unregisters `peer`; returns the old display name if it changed, `None` if it did not (or
    /// the peer was not there).
    pub fn remove(&mut self, peer: &SocketAddr) -> Option<Arc<str>> {
        let i = self.peers.binary_search_by(|(a, _)| a.cmp(peer)).ok()?;
        let (_, name) = self.peers.remove(i);
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
        for (_, n) in &self.peers {
            assert!(self.names.iter().any(|(m, _)| Arc::ptr_eq(m, n)));
        }
        if !self.peers.is_empty() {
            assert!(self.names.iter().any(|(m, _)| **m == *self.display));
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

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn majority_name_wins_and_ties_go_to_the_smallest() {
        let mut r = FileRecord::new(1);
        assert!(r.set(a(1), "b").added);
        assert_eq!(&**r.display(), "b");
        let c = r.set(a(2), "a");
        assert!(c.added);
        assert_eq!(c.old_display.as_deref(), Some("b"));
        assert_eq!(&**r.display(), "a");
        r.set(a(3), "b");
        assert_eq!(&**r.display(), "b");
        // Renaming is not adding.
        assert!(!r.set(a(3), "a").added);
        assert_eq!(&**r.display(), "a");
        assert_eq!(
            r.set(a(3), "a"),
            Change {
                added: false,
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
            r.set(a(p), &format!("name {p}"));
        }
        for p in 1..1000 {
            r.remove(&a(p));
        }
        assert!(r.peers.capacity() <= 3, "{}", r.peers.capacity());
        assert!(r.names.capacity() <= 3, "{}", r.names.capacity());
        r.check();
    }
}
