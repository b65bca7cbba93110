//! Sealed tracker datagrams: XChaCha20-Poly1305 under the swarm's datagram key, a random 192-bit
//! nonce per datagram, the sender's clock inside, and a replay window at the receiver.
//!
//! ```text
//! MAGIC (4) | nonce (24) | AEAD( unix time in ms (8, LE) | the plain datagram ) | tag (16)
//! ```
//!
//! The associated data is [`MAGIC`] and the direction, so a request cannot be played back as a
//! reply. A datagram that fails to open, whose time is more than [`WINDOW`] from the receiver's
//! clock, or that repeats one seen within the window, is dropped (see [`ReplayWindow`]). Sealing
//! adds the same [`OVERHEAD`] to a request and to its reply, so a tracker whose plain reply is
//! no larger than the plain request still never replies with more bytes than it was sent.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

/// How every sealed datagram starts ("shoal private", format 1): not the plain protocol's
/// `SHT` name, so an open tracker drops it as malformed instead of answering.
pub const MAGIC: [u8; 4] = *b"SHP1";
const NONCE: usize = 24;
const TIME: usize = 8;
const TAG: usize = 16;
/// Bytes sealing adds to a datagram.
pub const OVERHEAD: usize = MAGIC.len() + NONCE + TIME + TAG;
/// The largest plain datagram of the tracker protocol (`shoal_proto::tracker::MAX_DATAGRAM`,
/// kept equal by a test in the tracker): anything longer than this plus [`OVERHEAD`] is refused
/// before it is copied or authenticated, so a flood of forged 64 KiB datagrams costs little.
pub const MAX_PLAIN: usize = 1200;
/// The longest sealed datagram opened.
pub const MAX_SEALED: usize = MAX_PLAIN + OVERHEAD;
/// Largest difference between a datagram's time and the receiver's clock. A sender whose clock
/// is behind may be refused sooner under load: see [`REMEMBERED`].
pub const WINDOW: Duration = Duration::from_secs(60);
/// Datagrams the replay window remembers at most (16 bytes each in a B-tree: 6.5 MiB when full,
/// counted in `tests/window_memory.rs`). Under
/// a load that fills it before [`WINDOW`] passes, the oldest are forgotten and everything as old
/// as they are is refused from then on, so a replay is never accepted; only datagrams delayed
/// (or from a clock behind) by more than the span the table holds are dropped, and retried. So
/// the real tolerance for a clock behind is min([`WINDOW`], the time the last `REMEMBERED`
/// datagrams took): about 1.7 s at 150,000 datagrams a second.
pub const REMEMBERED: usize = 1 << 18;

/// Which way a datagram goes: part of what is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Reply,
}

impl Direction {
    fn aad(self) -> [u8; 5] {
        let d = match self {
            Direction::Request => b'Q',
            Direction::Reply => b'R',
        };
        [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], d]
    }
}

/// Why a datagram was dropped (counted, never answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed datagram")]
    NotSealed,
    #[error("longer than any sealed datagram")]
    TooLong,
    #[error("does not open under this swarm's key")]
    Forged,
    #[error("its time is outside the window")]
    Stale,
    #[error("a replay")]
    Replayed,
}

#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed: {0}")]
pub struct SealError(getrandom::Error);

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn unix_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

/// Seals and opens datagrams under one key, with one replay window for all it opens.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    seen: Mutex<ReplayWindow>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
            seen: Mutex::new(ReplayWindow::new(REMEMBERED)),
        }
    }

    /// Appends the sealed form of `plain` to `out` (cleared first).
    pub fn seal_into(
        &self,
        dir: Direction,
        plain: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(SealError)?;
        out.clear();
        out.reserve(plain.len() + OVERHEAD);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(&now_ms.to_le_bytes());
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &dir.aad(), &mut out[start..])
            .expect("a datagram is far below XChaCha20-Poly1305's length limit");
        out.extend_from_slice(&tag);
        Ok(())
    }

    pub fn seal(&self, dir: Direction, plain: &[u8], now_ms: u64) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        self.seal_into(dir, plain, now_ms, &mut out)?;
        Ok(out)
    }

    /// The plain datagram inside `sealed`, into `out` (cleared first), if it opens, is fresh and
    /// has not been seen before.
    pub fn open_into(
        &self,
        dir: Direction,
        sealed: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        out.clear();
        if sealed.len() < OVERHEAD || sealed[..MAGIC.len()] != MAGIC {
            return Err(OpenError::NotSealed);
        }
        if sealed.len() > MAX_SEALED {
            return Err(OpenError::TooLong);
        }
        let (head, rest) = sealed.split_at(MAGIC.len() + NONCE);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let nonce = &head[MAGIC.len()..];
        out.extend_from_slice(body);
        self.cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &dir.aad(),
                out,
                Tag::from_slice(tag),
            )
            .map_err(|_| {
                out.clear();
                OpenError::Forged
            })?;
        let time = u64::from_le_bytes(out[..TIME].try_into().expect("eight bytes"));
        let id = u64::from_le_bytes(nonce[..8].try_into().expect("eight bytes"));
        let fresh = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(time, id, now_ms);
        if let Err(e) = fresh {
            out.clear();
            return Err(e);
        }
        out.drain(..TIME);
        Ok(())
    }

    pub fn open(&self, dir: Direction, sealed: &[u8], now_ms: u64) -> Result<Vec<u8>, OpenError> {
        let mut out = Vec::new();
        self.open_into(dir, sealed, now_ms, &mut out)?;
        Ok(out)
    }
}

/// The datagrams accepted within the window, by (time, first 64 bits of the nonce): a replay
/// repeats both. Anything at or below `floor` is refused; every entry forgotten raises the
/// floor to its time, so forgetting never lets a replay in.
pub struct ReplayWindow {
    seen: BTreeSet<(u64, u64)>,
    floor: u64,
    cap: usize,
}

impl ReplayWindow {
    pub fn new(cap: usize) -> ReplayWindow {
        ReplayWindow {
            seen: BTreeSet::new(),
            floor: 0,
            cap: cap.max(1),
        }
    }

    /// Accepts a datagram sent at `time` with nonce `id`, if fresh and new, and remembers it.
    pub fn admit(&mut self, time: u64, id: u64, now: u64) -> Result<(), OpenError> {
        let window = WINDOW.as_millis() as u64;
        if time.abs_diff(now) > window {
            return Err(OpenError::Stale);
        }
        while let Some(&(t, _)) = self.seen.first() {
            if t.saturating_add(window) >= now {
                break;
            }
            self.seen.pop_first();
            self.floor = self.floor.max(t);
        }
        if time <= self.floor {
            return Err(OpenError::Stale);
        }
        if !self.seen.insert((time, id)) {
            return Err(OpenError::Replayed);
        }
        if self.seen.len() > self.cap {
            if let Some((t, _)) = self.seen.pop_first() {
                self.floor = self.floor.max(t);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn sealer(k: u8) -> Sealer {
        Sealer::new(&[k; 32])
    }

    #[test]
    fn a_datagram_opens_once_under_its_key_and_direction() {
        let (a, b) = (sealer(1), sealer(1));
        let sealed = a.seal(Direction::Request, b"SHT2 hello", NOW).unwrap();
        assert_eq!(sealed.len(), 10 + OVERHEAD);
        assert!(
            !sealed.windows(5).any(|w| w == b"hello"),
            "plaintext on the wire"
        );
        assert_eq!(
            b.open(Direction::Reply, &sealed, NOW),
            Err(OpenError::Forged)
        );
        assert_eq!(
            b.open(Direction::Request, &sealed, NOW).unwrap(),
            b"SHT2 hello"
        );
        assert_eq!(
            b.open(Direction::Request, &sealed, NOW + 5),
            Err(OpenError::Replayed)
        );
        assert_eq!(
            sealer(2).open(Direction::Request, &sealed, NOW),
            Err(OpenError::Forged)
        );
    }

    #[test]
    fn tampered_truncated_and_plain_datagrams_are_dropped() {
        let a = sealer(1);
        let sealed = a.seal(Direction::Request, &[7u8; 100], NOW).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(a.open(Direction::Request, &bad, NOW).is_err(), "byte {i}");
        }
        for n in 0..sealed.len() {
            assert!(
                a.open(Direction::Request, &sealed[..n], NOW).is_err(),
                "{n}"
            );
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(
            a.open(Direction::Request, &longer, NOW),
            Err(OpenError::Forged)
        );
        assert_eq!(
            a.open(Direction::Request, b"SHT2\0\0\0\0", NOW),
            Err(OpenError::NotSealed)
        );
        // One byte over the largest datagram is refused before it is opened, even if genuine.
        let big = a
            .seal(Direction::Request, &[1u8; MAX_PLAIN + 1], NOW)
            .unwrap();
        assert_eq!(
            a.open(Direction::Request, &big, NOW),
            Err(OpenError::TooLong)
        );
        let most = a.seal(Direction::Request, &[1u8; MAX_PLAIN], NOW).unwrap();
        assert_eq!(
            a.open(Direction::Request, &most, NOW).unwrap().len(),
            MAX_PLAIN
        );
    }

    #[test]
    fn old_and_future_times_are_refused() {
        let a = sealer(1);
        let w = WINDOW.as_millis() as u64;
        for t in [NOW - w - 1, NOW + w + 1, 0] {
            let sealed = a.seal(Direction::Reply, b"x", t).unwrap();
            assert_eq!(
                a.open(Direction::Reply, &sealed, NOW),
                Err(OpenError::Stale)
            );
        }
        let edge = a.seal(Direction::Reply, b"x", NOW - w).unwrap();
        assert!(a.open(Direction::Reply, &edge, NOW).is_ok());
    }

    #[test]
    fn a_full_window_forgets_the_oldest_and_refuses_anything_as_old() {
        let mut w = ReplayWindow::new(3);
        for i in 1..=3 {
            w.admit(NOW + i, i, NOW).unwrap();
        }
        // Full: the next pushes out time NOW + 1, which becomes the floor.
        w.admit(NOW + 10, 10, NOW).unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w.admit(NOW + 1, 1, NOW), Err(OpenError::Stale));
        assert_eq!(w.admit(NOW + 1, 99, NOW), Err(OpenError::Stale));
        assert_eq!(w.admit(NOW + 2, 2, NOW), Err(OpenError::Replayed));
        w.admit(NOW + 2, 3, NOW).unwrap();
    }

    #[test]
    fn entries_past_the_window_are_forgotten_but_stay_refused() {
        let mut w = ReplayWindow::new(100);
        w.admit(NOW, 1, NOW).unwrap();
        let later = NOW + WINDOW.as_millis() as u64 + 1;
        w.admit(later, 2, later).unwrap();
        assert_eq!(w.len(), 1);
        // Even with the clock set back, the forgotten one does not come back.
        assert_eq!(w.admit(NOW, 1, NOW), Err(OpenError::Stale));
    }
}
