//! Who gets a connection slot on a chunk server: a cap in total and per source address, an idle
//! clock that only real work (a request, a manifest) winds, and the rule for who gives way when
//! the table is full.
//!
//! The rule, so that a few addresses cannot keep an honest peer out:
//! - a source (an IP address; IPv4-mapped IPv6 counts as the IPv4 address) holds at most
//!   `per_source` connections; a further one is closed at once;
//! - when the table holds `total` connections, a newcomer from source S may evict one connection
//!   of the most represented source M, but only if S would still have fewer connections than M
//!   had (count(S) + 1 < count(M)); this always evens the table out, so evictions cannot chase
//!   each other round in circles. The connection evicted is M's one that has gone longest
//!   without work. Otherwise the newcomer is closed at once.
//!
//! Nobody waits in a queue: the server accepts every connection straight away and either admits
//! or closes it, so a flood cannot put an honest peer behind it in the kernel's backlog.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Why a connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} already has as many connections as one source may")]
    SourceFull(IpAddr),
    #[error("every connection slot is taken by sources no more represented than {0}")]
    TableFull(IpAddr),
}

/// The table of admitted connections, shared by the accept loop and every [`Slot`].
pub struct Admission {
    total: usize,
    per_source: usize,
    idle: Duration,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

struct Entry {
    source: IpAddr,
    last_work: Instant,
    evict: CancellationToken,
}

impl Admission {
    /// `idle`: how long an admitted connection may go without work before it must end.
    pub fn new(total: usize, per_source: usize, idle: Duration) -> Arc<Admission> {
        Arc::new(Admission {
            total,
            per_source,
            idle,
            table: Mutex::default(),
        })
    }

    /// Admits a connection from `source` (evicting another if the rule above allows), or says why not.
    pub fn admit(self: &Arc<Self>, source: IpAddr, now: Instant) -> Result<Slot, Refused> {
        let source = source.to_canonical();
        let mut t = self.table.lock().expect("admission table lock");
        let have = t.per_source.get(&source).copied().unwrap_or(0);
        if have >= self.per_source {
            return Err(Refused::SourceFull(source));
        }
        if t.conns.len() >= self.total {
            let victim = t
                .most_represented()
                .filter(|&(_, most)| have + 1 < most)
                .and_then(|(m, _)| t.longest_idle_of(m))
                .ok_or(Refused::TableFull(source))?;
            if let Some(e) = t.remove(victim) {
                tracing::debug!(evicted = %e.source, by = %source, "connection table full");
                e.evict.cancel();
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let evict = CancellationToken::new();
        t.conns.insert(
            id,
            Entry {
                source,
                last_work: now,
                evict: evict.clone(),
            },
        );
        *t.per_source.entry(source).or_default() += 1;
        Ok(Slot {
            admission: self.clone(),
            id,
            evict,
        })
    }

    /// Connections admitted now, in total and from `source`.
    pub fn count(&self, source: IpAddr) -> (usize, usize) {
        let t = self.table.lock().expect("admission table lock");
        let from = t.per_source.get(&source.to_canonical()).copied();
        (t.conns.len(), from.unwrap_or(0))
    }
}

impl Table {
    /// The source with the most connections, and how many (ties: any of them).
    fn most_represented(&self) -> Option<(IpAddr, usize)> {
        self.per_source
            .iter()
            .max_by_key(|&(_, n)| *n)
            .map(|(ip, n)| (*ip, *n))
    }

    fn longest_idle_of(&self, source: IpAddr) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, e)| e.source == source)
            .min_by_key(|(id, e)| (e.last_work, **id))
            .map(|(id, _)| *id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&e.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&e.source);
            }
        }
        Some(e)
    }
}

/// One admitted connection; dropping it gives the slot back.
pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    evict: CancellationToken,
}

impl Slot {
    /// The connection did work (asked for a chunk or the manifest, or got its answer): its idle
    /// clock starts again. Frames that carry no work (Have, Bitfield, Cancel) must not call this.
    pub fn worked(&self) {
        self.worked_at(Instant::now());
    }

    pub fn worked_at(&self, now: Instant) {
        let mut t = self.admission.table.lock().expect("admission table lock");
        if let Some(e) = t.conns.get_mut(&self.id) {
            e.last_work = e.last_work.max(now);
        }
    }

    /// When the connection must end unless it does work before.
    pub fn idle_deadline(&self) -> tokio::time::Instant {
        let t = self.admission.table.lock().expect("admission table lock");
        let last = t.conns.get(&self.id).map(|e| e.last_work);
        // An evicted slot is past its deadline.
        let at = last.map_or_else(Instant::now, |l| l + self.admission.idle);
        tokio::time::Instant::from_std(at)
    }

    /// How long the connection may go without work.
    pub fn idle(&self) -> Duration {
        self.admission.idle
    }

    /// Fires when a newcomer evicted this connection.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evict
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.admission.table.lock().expect("admission table lock");
        t.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    const IDLE: Duration = Duration::from_secs(20);

    #[test]
    fn per_source_cap_holds_and_slots_come_back() {
        let a = Admission::new(100, 3, IDLE);
        let now = Instant::now();
        let slots: Vec<Slot> = (0..3).map(|_| a.admit(ip(2), now).unwrap()).collect();
        assert_eq!(a.admit(ip(2), now).err(), Some(Refused::SourceFull(ip(2))));
        // Mapped IPv6 is the same source.
        let mapped = "::ffff:127.0.0.2".parse::<IpAddr>().unwrap();
        assert!(a.admit(mapped, now).is_err());
        assert!(a.admit(ip(3), now).is_ok(), "another source is unaffected");
        drop(slots);
        assert_eq!(a.count(ip(2)), (0, 0));
        assert!(a.admit(ip(2), now).is_ok());
    }

    #[test]
    fn a_full_table_evicts_the_longest_idle_of_the_most_represented_source() {
        let a = Admission::new(6, 4, IDLE);
        let t0 = Instant::now();
        let mut big: Vec<Slot> = (0..4).map(|_| a.admit(ip(2), t0).unwrap()).collect();
        let small: Vec<Slot> = (0..2).map(|_| a.admit(ip(3), t0).unwrap()).collect();
        // Every connection of ip(2) but the third did work later.
        for (i, s) in big.iter().enumerate() {
            if i != 2 {
                s.worked_at(t0 + Duration::from_secs(1));
            }
        }
        let newcomer = a.admit(ip(4), t0).expect("0 + 1 < 4: evicts");
        assert!(big[2].evicted().is_cancelled());
        assert_eq!(big.iter().filter(|s| s.evicted().is_cancelled()).count(), 1);
        assert_eq!(a.count(ip(2)), (6, 3));
        // The evicted slot's drop does not free a second place.
        big.remove(2);
        assert_eq!(a.count(ip(2)), (6, 3));
        // ip(3) has 2, ip(2) has 3: 2 + 1 < 3 is false, so no eviction.
        assert_eq!(a.admit(ip(3), t0).err(), Some(Refused::TableFull(ip(3))));
        // A fresh source still may: 0 + 1 < 3.
        let _second = a.admit(ip(5), t0).unwrap();
        assert_eq!(a.count(ip(2)), (6, 2));
        drop((newcomer, small));
    }

    #[test]
    fn equal_sources_do_not_evict_each_other() {
        let a = Admission::new(4, 8, IDLE);
        let now = Instant::now();
        let _s: Vec<Slot> = (1..=4).map(|i| a.admit(ip(i), now).unwrap()).collect();
        assert_eq!(a.admit(ip(9), now).err(), Some(Refused::TableFull(ip(9))));
    }

    #[test]
    fn only_work_moves_the_idle_deadline() {
        let a = Admission::new(4, 4, IDLE);
        let t0 = Instant::now();
        let s = a.admit(ip(2), t0).unwrap();
        assert_eq!(s.idle_deadline().into_std(), t0 + IDLE);
        s.worked_at(t0 + Duration::from_secs(5));
        assert_eq!(
            s.idle_deadline().into_std(),
            t0 + Duration::from_secs(5) + IDLE
        );
        // An earlier instant (a clock read before a later one) never moves it back.
        s.worked_at(t0);
        assert_eq!(
            s.idle_deadline().into_std(),
            t0 + Duration::from_secs(5) + IDLE
        );
    }
}
