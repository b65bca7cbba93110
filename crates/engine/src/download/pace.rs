//! How many requests a worker keeps in flight at its peer: enough to keep the peer's delivery
//! to us busy, no more. A request waits its turn at the peer behind every other one it holds,
//! so on a slow or shared uplink a full window is seconds of queue, for chunks other peers could
//! deliver sooner.

use std::time::{Duration, Instant};

/// The most time's worth of delivery, at the measured rate, kept requested from one peer. A
/// quarter of a second rather than half: in the bench's swarms a request then waits less behind
/// this client's others, and N = 8 and 16 finished 0.1–0.7 s sooner (PERFORMANCE.md, round 9).
/// On a LAN a round trip is far shorter than that; a slow, distant peer may get one request at a
/// time, and wait a round trip between chunks.
pub const QUEUE_TIME: Duration = Duration::from_millis(250);
/// The window before the first chunk has come: a new peer's rate is unknown.
const FIRST_WINDOW: usize = 2;
/// Weight of the newest sample in the rate estimate.
const WEIGHT: f64 = 0.3;
/// A peer that refused a request as busy (its upload slots are taken) is asked again after this
/// long at first, then twice as long each time it refuses again, up to [`BUSY_WAIT_MOST`].
pub const BUSY_WAIT: Duration = Duration::from_millis(50);
pub const BUSY_WAIT_MOST: Duration = Duration::from_millis(400);

/// The measured delivery rate of one peer connection, and the window it allows.
pub struct Pace {
    /// `--window`: never more.
    most: usize,
    chunk: f64,
    /// Bytes per second, once a chunk has come.
    rate: Option<f64>,
    /// Since when the peer has owed us a chunk: the last arrival, or the request sent when
    /// nothing was outstanding.
    busy_since: Option<Instant>,
}

impl Pace {
    /// For chunks of `chunk_size` bytes, at most `most` requests in flight.
    pub fn new(most: usize, chunk_size: u32) -> Pace {
        Pace {
            most: most.max(1),
            chunk: f64::from(chunk_size.max(1)),
            rate: None,
            busy_since: None,
        }
    }

    /// Requests to keep in flight: the chunks the peer delivers in [`QUEUE_TIME`] at its
    /// measured rate, at least one, at most the window.
    pub fn window(&self) -> usize {
        match self.rate {
            None => FIRST_WINDOW.min(self.most),
            Some(rate) => {
                let n = (rate * QUEUE_TIME.as_secs_f64() / self.chunk).ceil();
                (n as usize).clamp(1, self.most)
            }
        }
    }

    /// A request went out; `idle` if nothing else was outstanding.
    pub fn requested(&mut self, idle: bool, now: Instant) {
        if idle || self.busy_since.is_none() {
            self.busy_since = Some(now);
        }
    }

    /// A request was refused (the peer was busy); `more` if requests are still outstanding. The
    /// time until the next request is not the peer's delivery time.
    pub fn refused(&mut self, more: bool) {
        if !more {
            self.busy_since = None;
        }
    }

    /// A chunk of `len` bytes came; `more` if requests are still outstanding.
    pub fn arrived(&mut self, len: usize, more: bool, now: Instant) {
        if let Some(since) = self.busy_since {
            let secs = now.duration_since(since).as_secs_f64().max(1e-6);
            let sample = len as f64 / secs;
            self.rate = Some(match self.rate {
                None => sample,
                Some(r) => r + WEIGHT * (sample - r),
            });
        }
        self.busy_since = more.then_some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u32 = 256 * 1024;

    /// Feeds `n` chunks arriving `gap` apart, with requests always outstanding.
    fn steady(pace: &mut Pace, n: usize, gap: Duration) {
        let mut t = Instant::now();
        pace.requested(true, t);
        for _ in 0..n {
            t += gap;
            pace.arrived(CHUNK as usize, true, t);
        }
    }

    #[test]
    fn a_fast_peer_gets_the_whole_window() {
        let mut pace = Pace::new(6, CHUNK);
        assert_eq!(pace.window(), 2, "unknown rate");
        // 256 KiB per millisecond: 250 MiB/s.
        steady(&mut pace, 10, Duration::from_millis(1));
        assert_eq!(pace.window(), 6);
    }

    #[test]
    fn a_slow_or_shared_peer_gets_one_request_at_a_time() {
        let mut pace = Pace::new(6, CHUNK);
        // One chunk every 0.6 s (a 50 Mbit/s uplink shared by 15 connections).
        steady(&mut pace, 10, Duration::from_millis(600));
        assert_eq!(pace.window(), 1);
        // It speeds up (the others finished): the window follows.
        steady(&mut pace, 20, Duration::from_millis(40));
        assert_eq!(pace.window(), 6);
    }

    #[test]
    fn time_spent_idle_is_not_counted_against_the_peer() {
        let mut pace = Pace::new(6, CHUNK);
        let t = Instant::now();
        pace.requested(true, t);
        pace.arrived(CHUNK as usize, false, t + Duration::from_millis(1));
        // Nothing asked for ten seconds, then a request answered at once.
        let later = t + Duration::from_secs(10);
        pace.requested(true, later);
        pace.arrived(CHUNK as usize, false, later + Duration::from_millis(1));
        assert_eq!(pace.window(), 6);
    }
}
