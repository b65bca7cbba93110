//! Per-source rate limiting in fixed memory: a table of token buckets keyed by source IP.
//!
//! The table never grows: each IP may live in one of two slots chosen by a keyed hash (so a
//! sender cannot aim at someone else's slots), and a newcomer takes the slot of the two that has
//! the most tokens, that is the quietest source. Forgetting a quiet source costs nothing (it
//! would have a full bucket again anyway); a busy one is forgotten only when both of its slots'
//! other tenants are busy too. A flood of spoofed addresses therefore churns through quiet slots
//! and leaves busy, limited sources limited. Spoofed sources get no reply larger than what they
//! sent anyway (see the registry); this is about CPU and fairness between real sources.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// Bytes per slot of the table.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// The number of slots for a requested table size: a power of two, at least 2.
pub fn table_len(requested: usize) -> usize {
    requested.clamp(2, 1 << 24).next_power_of_two()
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    ip: IpAddr,
    /// Whether we told this source it is limited since it last got through.
    warned: bool,
    tokens: f32,
    /// Milliseconds since the limiter's epoch when `tokens` was last brought up to date.
    at_ms: u64,
}

const EMPTY: Slot = Slot {
    ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    warned: false,
    tokens: f32::INFINITY,
    at_ms: 0,
};

/// What to do with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit. `first` is true for the first refusal since the source last got through:
    /// worth one short error reply so an honest client can say why; later ones are dropped.
    Deny {
        first: bool,
    },
}

pub struct RateLimiter {
    /// Tokens added per millisecond.
    per_ms: f32,
    burst: f32,
    slots: Vec<Slot>,
    secret: RandomState,
    epoch: Instant,
}

impl RateLimiter {
    /// `rate` requests per second on average, `burst` at once; `rate == 0` allows everything and
    /// allocates nothing.
    pub fn new(rate: u32, burst: u32, table: usize, now: Instant) -> RateLimiter {
        let slots = if rate == 0 {
            Vec::new()
        } else {
            vec![EMPTY; table_len(table)]
        };
        RateLimiter {
            per_ms: rate as f32 / 1000.0,
            burst: burst.max(1) as f32,
            slots,
            secret: RandomState::new(),
            epoch: now,
        }
    }

    /// Takes one token for a datagram from `ip`.
    pub fn check(&mut self, now: Instant, ip: IpAddr) -> Verdict {
        let Some(slot) = self.slot(now, ip) else {
            return Verdict::Allow;
        };
        if slot.tokens >= 1.0 {
            slot.tokens -= 1.0;
            slot.warned = false;
            Verdict::Allow
        } else {
            let first = !slot.warned;
            slot.warned = true;
            Verdict::Deny { first }
        }
    }

    /// Takes `cost` more tokens from `ip` for work beyond a plain request (a scan of every file);
    /// the bucket may go into debt down to minus one burst.
    pub fn charge(&mut self, now: Instant, ip: IpAddr, cost: f32) {
        let floor = -self.burst;
        if let Some(slot) = self.slot(now, ip) {
            slot.tokens = (slot.tokens - cost).max(floor);
        }
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.slots.iter().filter(|s| s.tokens.is_finite()).count()
    }

    /// The slot for `ip`, refilled up to `now`; `None` when limiting is off.
    fn slot(&mut self, now: Instant, ip: IpAddr) -> Option<&mut Slot> {
        if self.slots.is_empty() {
            return None;
        }
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let h = self.secret.hash_one(ip);
        let mask = self.slots.len() - 1;
        let a = h as usize & mask;
        // Two different slots, so that a newcomer always has a choice.
        let b = match (h >> 32) as usize & mask {
            b if b == a => a ^ 1,
            b => b,
        };
        // Bring both candidates up to date, so "most tokens" compares like with like.
        for i in [a, b] {
            let s = &mut self.slots[i];
            if s.tokens.is_finite() {
                let gained = now_ms.saturating_sub(s.at_ms) as f32 * self.per_ms;
                s.tokens = (s.tokens + gained).min(self.burst);
                s.at_ms = now_ms.max(s.at_ms);
            }
        }
        let i = if self.slots[a].tokens.is_finite() && self.slots[a].ip == ip {
            a
        } else if self.slots[b].tokens.is_finite() && self.slots[b].ip == ip {
            b
        } else {
            // An empty slot has infinite tokens, so it is taken first.
            let i = if self.slots[b].tokens > self.slots[a].tokens {
                b
            } else {
                a
            };
            self.slots[i] = Slot {
                ip,
                warned: false,
                tokens: self.burst,
                at_ms: now_ms,
            };
            i
        };
        Some(&mut self.slots[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 5, 64, t0);
        for _ in 0..5 {
            assert_eq!(rl.check(t0, ip(1)), Verdict::Allow);
        }
        assert_eq!(rl.check(t0, ip(1)), Verdict::Deny { first: true });
        assert_eq!(rl.check(t0, ip(1)), Verdict::Deny { first: false });
        // Another source is not affected.
        assert_eq!(rl.check(t0, ip(2)), Verdict::Allow);
        // 10 per second: one more token after 100 ms.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(rl.check(t1, ip(1)), Verdict::Allow);
        assert_eq!(rl.check(t1, ip(1)), Verdict::Deny { first: true });
        // A long pause refills up to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        let allowed = (0..100)
            .filter(|_| rl.check(t2, ip(1)) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn charges_go_into_debt() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 5, 64, t0);
        rl.charge(t0, ip(1), 100.0);
        assert_eq!(rl.check(t0, ip(1)), Verdict::Deny { first: true });
        // Debt is capped at one burst: 5 + 1 tokens' worth of waiting, at 10 per second.
        let t1 = t0 + Duration::from_millis(600);
        assert_eq!(rl.check(t1, ip(1)), Verdict::Allow);
    }

    #[test]
    fn off_means_off() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(0, 0, 1 << 20, t0);
        assert!(rl.slots.is_empty());
        assert!((0..10_000).all(|_| rl.check(t0, ip(1)) == Verdict::Allow));
    }

    #[test]
    fn table_is_fixed_and_busy_sources_stay_limited() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 5, 16, t0);
        let busy = ip(0);
        while rl.check(t0, busy) == Verdict::Allow {}
        // A flood of one-off sources never grows the table...
        for n in 1..10_000 {
            rl.check(t0, ip(n));
        }
        assert_eq!(rl.slots.len(), 16);
        assert!(rl.tracked() <= 16);
        // ...and the busy source is still limited unless both its slots were taken by others
        // that are as busy as it is, which one-off sources are not.
        assert!(matches!(rl.check(t0, busy), Verdict::Deny { .. }));
    }
}
