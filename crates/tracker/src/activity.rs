//! What the tracker did: counters since start, and the same counters per second over the last
//! minute (a ring of sixty), for the status page and `/metrics`.

use serde::Serialize;

/// Seconds of history kept.
pub const HISTORY: usize = 60;

/// Event counts, either since start or within one second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Datagrams received, and their bytes.
    pub datagrams: u64,
    pub bytes_in: u64,
    /// Replies sent, and their bytes.
    pub replies: u64,
    pub bytes_out: u64,
    /// New (peer, file) registrations.
    pub registrations: u64,
    pub heartbeats: u64,
    /// Peer lists and file listings served.
    pub queries: u64,
    /// Peers that unregistered.
    pub departures: u64,
    /// Peers dropped for silence.
    pub expirations: u64,
    /// Datagrams dropped because they did not decode.
    pub malformed: u64,
    /// Datagrams dropped because their source sent too many. (The first one over the limit is
    /// answered with an error instead, and counts as a reply.)
    pub rate_limited: u64,
    /// Requests refused because their connection id was missing, forged or expired.
    pub bad_connection: u64,
    /// Registrations or peers dropped to make room for a less represented source.
    pub evictions: u64,
    /// Requests refused because another source registered the peer they name.
    pub not_owner: u64,
    /// Datagrams of another protocol version (answered with our magic, so the sender can say so).
    pub other_version: u64,
    /// Replies not sent because they would have been larger than the request of an unverified
    /// source (amplification) or than a datagram.
    pub suppressed: u64,
    /// Sealed datagrams (of a private swarm) that did not open under the swarm's key: an
    /// outsider's or a forgery.
    pub forged: u64,
    /// Sealed datagrams whose time was outside the window: a replay, or a clock that is off.
    pub stale: u64,
    /// Sealed datagrams seen before within the window: a replay.
    pub replayed: u64,
}

impl Tally {
    /// Datagrams that got no answer: malformed, rate limited, whose answer was suppressed, or
    /// (in a private swarm) forged, stale or replayed.
    pub fn dropped(&self) -> u64 {
        self.malformed
            + self.rate_limited
            + self.suppressed
            + self.forged
            + self.stale
            + self.replayed
    }
}

/// The last [`HISTORY`] seconds, one [`Tally`] each, indexed by second modulo the length.
#[derive(Clone, Debug)]
pub struct Activity {
    ring: [(u64, Tally); HISTORY],
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            // Second u64::MAX never comes, so every slot starts out stale.
            ring: [(u64::MAX, Tally::default()); HISTORY],
        }
    }
}

impl Activity {
    /// The tally of second `sec` (counted from the registry's start), cleared if it held an
    /// older second.
    pub fn at(&mut self, sec: u64) -> &mut Tally {
        let slot = &mut self.ring[(sec % HISTORY as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, Tally::default());
        }
        &mut slot.1
    }

    /// The [`HISTORY`] seconds up to and including `now_sec`, oldest first; seconds with nothing
    /// recorded are zero.
    pub fn last_minute(&self, now_sec: u64) -> Vec<Tally> {
        (0..HISTORY as u64)
            .rev()
            .map(|back| {
                let Some(sec) = now_sec.checked_sub(back) else {
                    return Tally::default();
                };
                match self.ring[(sec % HISTORY as u64) as usize] {
                    (s, t) if s == sec => t,
                    _ => Tally::default(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_minute() {
        let mut a = Activity::default();
        a.at(0).queries += 1;
        a.at(5).queries += 2;
        a.at(5).queries += 1;
        let m = a.last_minute(5);
        assert_eq!(m.len(), HISTORY);
        assert_eq!(m[HISTORY - 1].queries, 3);
        assert_eq!(m[HISTORY - 6].queries, 1);
        // Sixty seconds on, second 5's slot is reused and second 0 has fallen out.
        a.at(65).queries += 7;
        let m = a.last_minute(65);
        assert_eq!(m[HISTORY - 1].queries, 7);
        assert_eq!(m.iter().map(|t| t.queries).sum::<u64>(), 7);
        // Seconds never written are zero, even long after.
        assert!(a.last_minute(10_000).iter().all(|t| t.queries == 0));
    }
}
