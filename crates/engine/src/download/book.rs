//! The peers a download knows of, and when each may be tried (again).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The peers we know of, and when each may be tried (again).
pub(super) struct PeerBook {
    peers: HashMap<SocketAddr, BookEntry>,
    /// The port we serve on: an address of this host with it is ourselves.
    own_port: Option<u16>,
}

struct BookEntry {
    active: bool,
    failures: u32,
    retry_at: Instant,
}

impl PeerBook {
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }

    pub(super) fn new(own_port: Option<u16>) -> PeerBook {
        PeerBook {
            peers: HashMap::new(),
            own_port,
        }
    }

    pub(super) fn add(&mut self, addrs: &[SocketAddr]) {
        for a in addrs {
            if self.peers.contains_key(a) || self.is_us(a) {
                continue;
            }
            self.peers.entry(*a).or_insert(BookEntry {
                active: false,
                failures: 0,
                retry_at: Instant::now(),
            });
        }
    }

    /// Whether `addr` is this peer's own server, as the tracker lists it: our port on an address
    /// of this host (one a socket can be bound to).
    fn is_us(&self, addr: &SocketAddr) -> bool {
        self.own_port == Some(addr.port())
            && std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
    }

    /// Peers not connected now whose back-off has passed.
    pub(super) fn ready(&self, now: Instant) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, e)| !e.active && e.retry_at <= now)
            .map(|(a, _)| *a)
            .collect();
        v.sort();
        v
    }

    /// The next time a peer's back-off ends. Peers ready already are not counted: they were
    /// either started or could not be (banned, or the connection cap), and waking up for them
    /// again would only spin.
    pub(super) fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .filter(|e| !e.active && e.retry_at > now)
            .map(|e| e.retry_at)
            .min()
    }

    pub(super) fn started(&mut self, addr: SocketAddr) {
        if let Some(e) = self.peers.get_mut(&addr) {
            e.active = true;
        } else {
            self.peers.insert(
                addr,
                BookEntry {
                    active: true,
                    failures: 0,
                    retry_at: Instant::now(),
                },
            );
        }
    }

    pub(super) fn ended(&mut self, addr: SocketAddr, ok: bool, now: Instant) {
        let e = self.peers.entry(addr).or_insert(BookEntry {
            active: false,
            failures: 0,
            retry_at: now,
        });
        e.active = false;
        if ok {
            e.failures = 0;
            e.retry_at = now;
        } else {
            e.failures += 1;
            e.retry_at = now + Duration::from_millis(250 * (1u64 << e.failures.min(6)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_listing_us_is_not_a_peer() {
        let mut book = PeerBook::new(Some(7000));
        let us = SocketAddr::from(([127, 0, 0, 1], 7000));
        // Same port on an address of another host (TEST-NET-1), and another port here.
        let elsewhere = SocketAddr::from(([192, 0, 2, 1], 7000));
        let other_port = SocketAddr::from(([127, 0, 0, 1], 7001));
        book.add(&[us, elsewhere, other_port]);
        assert_eq!(book.ready(Instant::now()), vec![other_port, elsewhere]);
        // Without a serving port, every address is a peer.
        let mut book = PeerBook::new(None);
        book.add(&[us]);
        assert_eq!(book.ready(Instant::now()), vec![us]);
    }
}
