//! Bandwidth limits (`--max-upload-rate`, `--max-download-rate`): one token bucket shared by every
//! connection of the process, so the limit holds for the sum, however many peers there are.
//!
//! The bucket may go into debt: a caller is charged what it moves and then waits until the debt
//! is paid. So callers never wait on each other in a queue, large and small steps are charged
//! alike, and over any span the bytes moved stay within one burst of `rate × time`.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes per second, never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(u64);

impl Rate {
    pub fn bytes_per_sec(self) -> u64 {
        self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a rate like 500K, 10M or 1G (bytes per second, more than 0)")]
pub struct BadRate(String);

impl FromStr for Rate {
    type Err = BadRate;

    /// A number of bytes per second with an optional suffix K, M or G (powers of 1024, as for
    /// chunk sizes; `KiB`, `/s` and a fraction like `1.5M` are accepted too).
    fn from_str(s: &str) -> Result<Rate, BadRate> {
        let bad = || BadRate(s.to_string());
        let u = s.trim().to_ascii_uppercase();
        let u = u.strip_suffix("/S").unwrap_or(&u);
        let u = u
            .strip_suffix("IB")
            .or_else(|| u.strip_suffix('B'))
            .unwrap_or(u);
        let (num, mult) = match u.char_indices().last() {
            Some((i, 'K')) => (&u[..i], 1u64 << 10),
            Some((i, 'M')) => (&u[..i], 1 << 20),
            Some((i, 'G')) => (&u[..i], 1 << 30),
            _ => (u, 1),
        };
        let n: f64 = num.trim().parse().map_err(|_| bad())?;
        let bytes = n * mult as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
            return Err(bad());
        }
        Ok(Rate(bytes as u64))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", crate::support::human_bytes(self.0))
    }
}

/// A token bucket in bytes, shared (behind an `Arc`) by every connection it limits.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    slice: usize,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Negative: debt that the last caller is waiting out.
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: Rate) -> RateLimit {
        // About 20 steps a second: small enough that the rate is smooth at a glance, large
        // enough that a fast limit is not a storm of timers.
        let slice = (rate.0 / 20).clamp(4 << 10, 256 << 10) as usize;
        RateLimit {
            rate: rate.0 as f64,
            burst: slice as f64,
            slice,
            state: Mutex::new(Bucket {
                tokens: slice as f64,
                last: Instant::now(),
            }),
        }
    }

    /// The most a caller should move in one step (and charge with [`RateLimit::take`]).
    pub fn slice(&self) -> usize {
        self.slice
    }

    /// The most bytes a process limited by this bucket can have moved in `elapsed`: one burst
    /// plus the rate; what tests check a transfer against.
    pub fn most_in(&self, elapsed: Duration) -> f64 {
        self.burst + self.rate * elapsed.as_secs_f64()
    }

    /// Charges `n` bytes and waits until the bucket is out of debt.
    pub async fn take(&self, n: usize) {
        let wait = self.charge(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Charges `n` bytes at `now`; returns how long the caller must wait.
    fn charge(&self, n: usize, now: Instant) -> Duration {
        let mut b = self.state.lock().expect("rate bucket lock");
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = b.last.max(now);
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_suffixes_and_bad_ones_are_refused() {
        let ok = |s: &str| s.parse::<Rate>().unwrap().bytes_per_sec();
        assert_eq!(ok("1000"), 1000);
        assert_eq!(ok("500K"), 500 << 10);
        assert_eq!(ok("10m"), 10 << 20);
        assert_eq!(ok("1G"), 1 << 30);
        assert_eq!(ok("1.5M"), 3 << 19);
        assert_eq!(ok("2MiB/s"), 2 << 20);
        for bad in [
            "", "0", "-5K", "fast", "10X", "0.0001K", "nanK", "infG", "1e300G",
        ] {
            let e = bad.parse::<Rate>().unwrap_err();
            assert!(e.to_string().contains("is not a rate"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_bucket_allows_one_burst_then_the_rate() {
        let limit = RateLimit::new(Rate(100 << 10));
        let slice = limit.slice();
        assert_eq!(slice, 5 << 10);
        let t0 = Instant::now();
        assert_eq!(
            limit.charge(slice, t0),
            Duration::ZERO,
            "the first burst is free"
        );
        // Ten more slices at once: the last caller waits for all of them.
        let mut wait = Duration::ZERO;
        for _ in 0..10 {
            wait = limit.charge(slice, t0);
        }
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later the debt is paid; a second after that a full burst is back, no more.
        assert_eq!(
            limit.charge(0, t0 + Duration::from_millis(500)),
            Duration::ZERO
        );
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(limit.charge(slice, later), Duration::ZERO);
        assert!(limit.charge(1024, later) > Duration::ZERO);
    }

    /// Whatever the pattern of charges, the bytes that were free to go by a time never exceed
    /// one burst plus the rate times the time.
    #[test]
    fn moved_bytes_never_exceed_burst_plus_rate() {
        let limit = RateLimit::new(Rate(1 << 20));
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut now = t0;
        let mut free_at = Vec::new();
        for _ in 0..2000 {
            now += Duration::from_micros(rng.u64(0..20_000));
            let n = rng.usize(1..3 * limit.slice());
            free_at.push((now + limit.charge(n, now), n));
        }
        free_at.sort();
        let mut moved = 0.0;
        for (at, n) in free_at {
            moved += n as f64;
            assert!(moved <= limit.most_in(at - t0) + 1.0, "{moved} by {at:?}");
        }
    }
}
