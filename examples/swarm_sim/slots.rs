//! One simulated host's upload slots, as `shoal_engine::uploads` gives them out (its constants,
//! its rules), without the async parts: at most `SLOTS` connections are sent chunks at a time,
//! up to `WAITING` more wait in order, and a request beyond that is refused as busy. A connection
//! keeps its slot while it has requests queued; after `TENURE` chunks in a row it lets a waiting
//! one go first, and its next request is refused unless a slot is free.
//!
//! Not modelled: `SLOT_HOLD` (with the defaults a chunk takes 84 ms, far from 2 s; at about 2
//! Mbit/s or less, or with large chunks, the engine would give a slot up during a send) and
//! `PER_SOURCE` (every simulated connection comes from its own host).

use std::collections::{HashSet, VecDeque};

use shoal_engine::uploads::{SLOTS, TENURE, WAITING};

/// What a connection's next request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// It holds a slot: its requests are sent in turn with the other holders'.
    Go,
    /// It waits for a slot, its requests queued behind this one.
    Wait,
    /// Refused as busy: the request is answered `Reject { reason: Busy }`.
    Busy,
}

#[derive(Default)]
pub struct Slots {
    /// Links that hold a slot, with the chunks each was sent since it took it.
    holders: Vec<(u32, u32)>,
    /// Links waiting for a slot, first come first served (tokio's semaphore is fair).
    waiting: VecDeque<u32>,
    /// Links that gave their slot to a waiting one after their tenure and have not asked since.
    yielded: HashSet<u32>,
}

impl Slots {
    pub fn holds(&self, link: u32) -> bool {
        self.holders.iter().any(|h| h.0 == link)
    }

    pub fn waits(&self, link: u32) -> bool {
        self.waiting.contains(&link)
    }

    /// `Turn::begin` for the next request on `link`, which neither holds a slot nor waits.
    pub fn begin(&mut self, link: u32) -> Begin {
        debug_assert!(!self.holds(link) && !self.waits(link));
        let yielded = self.yielded.remove(&link);
        if self.holders.len() < SLOTS {
            self.holders.push((link, 0));
            Begin::Go
        } else if yielded || self.waiting.len() >= WAITING {
            Begin::Busy
        } else {
            self.waiting.push_back(link);
            Begin::Wait
        }
    }

    /// `Turn::end`: a chunk went out on `link` (or was declined); `more`: it has further
    /// requests queued. Returns the waiting link that took the slot given up, if one did.
    pub fn end(&mut self, link: u32, more: bool) -> Option<u32> {
        let at = self.holders.iter().position(|h| h.0 == link)?;
        self.holders[at].1 += 1;
        let others = !self.waiting.is_empty();
        if more && (self.holders[at].1 < TENURE || !others) {
            return None;
        }
        if more {
            self.yielded.insert(link);
        }
        self.give_up(at)
    }

    /// `link` has nothing left to send (`--cancel` emptied its queue; the engine ignores Cancel):
    /// it leaves the line, or gives its slot to the first link waiting (returned).
    pub fn leave(&mut self, link: u32) -> Option<u32> {
        self.waiting.retain(|w| *w != link);
        let at = self.holders.iter().position(|h| h.0 == link)?;
        self.give_up(at)
    }

    /// The holder at `at` gives its slot up, to the first link waiting (returned) if any.
    fn give_up(&mut self, at: usize) -> Option<u32> {
        self.holders.swap_remove(at);
        let next = self.waiting.pop_front()?;
        self.holders.push((next, 0));
        Some(next)
    }

    pub fn check_invariants(&self) {
        assert!(self.holders.len() <= SLOTS, "more holders than slots");
        assert!(self.waiting.len() <= WAITING, "more waiting than places");
        assert!(
            self.waiting.is_empty() || self.holders.len() == SLOTS,
            "a link waits while a slot is free"
        );
        for w in &self.waiting {
            assert!(!self.holds(*w), "link {w} both holds a slot and waits");
        }
    }
}
