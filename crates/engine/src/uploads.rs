//! Upload slots: how many clients a chunk server sends chunks to at once, and who gets a turn.
//!
//! A server that answered every client at once would share its uplink among all of them, so each
//! chunk would take as many chunk-times to arrive as there are clients, and nobody could pass it
//! on before then. In a swarm that started together, every client asks the few peers that hold
//! the newest chunks; their uplinks are shared thirty ways while the uplinks of peers that hold
//! nothing new sit idle. With slots, a server sends to at most [`SLOTS`] clients at a time and
//! refuses the others' requests at once (`Reject { reason: Busy }`), so they ask another holder,
//! and every chunk reaches its first few holders in a few chunk-times (BitTorrent's unchoking,
//! without the tit-for-tat: every peer here is on the same side).
//!
//! A connection holds its slot while it has requests queued, so a client alone on a fast link
//! keeps its pipeline full. Once it has been sent [`TENURE`] chunks in a row, a waiting client
//! goes first, so that every client gets a turn; and a chunk that takes longer than
//! [`SLOT_HOLD`] to send (a client that reads slowly, or not at all) gives up its slot meanwhile,
//! so a few such clients cannot hold the others up for longer than that. One source address
//! holds at most [`PER_SOURCE`] of the places (sending or waiting), so a host with many
//! connections cannot take them all; and a client that let another go first after its tenure
//! does not take a waiting place at once: it is refused, and asks again later like the others.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Clients sent chunks at once, per process.
pub const SLOTS: usize = 4;
/// Clients that wait for a slot, at most; a further one is refused as busy.
pub const WAITING: usize = 4;
/// Chunks a client is sent in a row before it lets a waiting client go first.
pub const TENURE: u32 = 4;
/// A chunk still being sent after this long gives its slot up (see [`Turn::hold`]): a slow
/// reader, or a slow link (with `--max-upload-rate` or large chunks every chunk may take that
/// long, and the slots then limit nothing: every client is sent to at once, as before slots).
pub const SLOT_HOLD: Duration = Duration::from_secs(2);
/// Places (sending or waiting) one source address may hold at most: half of them. On loopback
/// every client is one source, so a local swarm's server sends to this many at a time.
pub const PER_SOURCE: usize = (SLOTS + WAITING) / 2;

/// The slots of one process, shared by every connection it serves.
pub struct Uploads {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    wait_most: usize,
    per_source: usize,
    /// Places held per source address.
    places: Mutex<HashMap<IpAddr, usize>>,
}

impl Uploads {
    /// `slots`: clients sent chunks at once (at least one); `waiting`: clients that may wait;
    /// `per_source`: places one source address may hold (at least one).
    pub fn new(slots: usize, waiting: usize, per_source: usize) -> Arc<Uploads> {
        Arc::new(Uploads {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: AtomicUsize::new(0),
            wait_most: waiting,
            per_source: per_source.max(1),
            places: Mutex::default(),
        })
    }

    /// One connection's handle, for a client at `source`; its slot (if any) is given back when
    /// it is dropped.
    pub fn turn(self: &Arc<Self>, source: IpAddr) -> Turn {
        Turn {
            uploads: self.clone(),
            source: source.to_canonical(),
            permit: None,
            served: 0,
            yielded: false,
        }
    }

    /// A place for `source`, if it holds fewer than its share.
    fn place(self: &Arc<Self>, source: IpAddr) -> Option<Place> {
        let mut places = self.places.lock().expect("upload places lock");
        let held = places.entry(source).or_default();
        if *held >= self.per_source {
            return None;
        }
        *held += 1;
        Some(Place {
            uploads: self.clone(),
            source,
        })
    }
}

/// One of a source's places, given back when dropped.
struct Place {
    uploads: Arc<Uploads>,
    source: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut places = self.uploads.places.lock().expect("upload places lock");
        if let Some(held) = places.get_mut(&self.source) {
            *held -= 1;
            if *held == 0 {
                places.remove(&self.source);
            }
        }
    }
}

/// Counts a connection among the waiting while it waits (and not once it gave up).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection's claim on its process's [`Uploads`].
pub struct Turn {
    uploads: Arc<Uploads>,
    source: IpAddr,
    permit: Option<(OwnedSemaphorePermit, Place)>,
    /// Chunks sent since it took its slot.
    served: u32,
    /// It gave its slot to a waiting client after its tenure, and has not asked since.
    yielded: bool,
}

impl Turn {
    /// Waits for this connection's turn to send a chunk: at once if it holds a slot or one is
    /// free, after the clients ahead of it if fewer than [`WAITING`] wait; `false` (busy) if
    /// more do, if its source holds its share of places already, or if it has just let a
    /// waiting client go first.
    pub async fn begin(&mut self) -> bool {
        if self.permit.is_some() {
            return true;
        }
        let yielded = std::mem::take(&mut self.yielded);
        let up = &self.uploads;
        let Some(place) = up.place(self.source) else {
            return false;
        };
        if let Ok(p) = up.slots.clone().try_acquire_owned() {
            self.permit = Some((p, place));
            return true;
        }
        if yielded {
            return false;
        }
        if up.waiting.fetch_add(1, Ordering::Relaxed) >= up.wait_most {
            up.waiting.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let _waiting = Waiting(&up.waiting);
        // The semaphore is never closed.
        self.permit = up
            .slots
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(|p| (p, place));
        self.permit.is_some()
    }

    /// Runs `work` (sending a chunk, flushing), giving the slot up if it is still going after
    /// [`SLOT_HOLD`]: the next chunk then waits its turn again. No timer without a slot.
    pub async fn hold<T>(&mut self, work: impl Future<Output = T>) -> T {
        if self.permit.is_none() {
            return work.await;
        }
        tokio::pin!(work);
        tokio::select! {
            done = &mut work => done,
            _ = tokio::time::sleep(SLOT_HOLD) => {
                self.step_aside();
                work.await
            }
        }
    }

    fn step_aside(&mut self) {
        self.permit = None;
        self.served = 0;
    }

    /// A chunk went out (or was refused for another reason); `more`: the client has further
    /// requests queued. Without them, or after [`TENURE`] chunks in a row while others wait,
    /// the slot is given back. Nothing without a slot.
    pub fn end(&mut self, more: bool) {
        if self.permit.is_none() {
            return;
        }
        self.served += 1;
        let others = self.uploads.waiting.load(Ordering::Relaxed) > 0;
        if !more || (self.served >= TENURE && others) {
            self.yielded = more;
            self.permit = None;
            self.served = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::net::Ipv4Addr;

    const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    #[tokio::test]
    async fn a_client_alone_keeps_its_slot() {
        let uploads = Uploads::new(1, 0, 8);
        let mut a = uploads.turn(HOST);
        for _ in 0..100 {
            assert!(a.begin().await);
            a.end(true);
        }
        assert_eq!(uploads.slots.available_permits(), 0);
        drop(a);
        assert_eq!(uploads.slots.available_permits(), 1, "given back on drop");
    }

    #[tokio::test]
    async fn clients_wait_in_turn_and_the_rest_are_busy() {
        let uploads = Uploads::new(1, 1, 8);
        let (mut a, mut b, mut c) = (uploads.turn(HOST), uploads.turn(HOST), uploads.turn(HOST));
        assert!(a.begin().await);
        let mut b_waits = Box::pin(b.begin());
        assert!(b_waits.as_mut().now_or_never().is_none(), "b waits for a");
        assert!(!c.begin().await, "one may wait, c is the second");
        // a's queue ran dry: its slot goes to b.
        a.end(false);
        assert!(b_waits.await);
        assert!(c.begin().now_or_never().is_none(), "c waits for b now");
    }

    #[tokio::test]
    async fn a_client_that_had_its_tenure_lets_a_waiting_one_go_first() {
        let uploads = Uploads::new(1, 1, 8);
        let (mut a, mut b) = (uploads.turn(HOST), uploads.turn(HOST));
        assert!(a.begin().await);
        for _ in 0..TENURE - 1 {
            a.end(true);
            assert!(a.begin().now_or_never() == Some(true));
        }
        let mut b_waits = Box::pin(b.begin());
        assert!(b_waits.as_mut().now_or_never().is_none());
        a.end(true);
        assert!(b_waits.await, "a had {TENURE} chunks in a row");
        assert_eq!(
            a.begin().now_or_never(),
            Some(false),
            "refused at once: others asking after their pause get the waiting place"
        );
        assert!(
            a.begin().now_or_never().is_none(),
            "asked again, a waits behind b"
        );
    }

    #[tokio::test]
    async fn one_source_holds_its_share_of_places_at_most() {
        let uploads = Uploads::new(3, 2, 2);
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let (mut a, mut b, mut c) = (uploads.turn(HOST), uploads.turn(HOST), uploads.turn(HOST));
        assert!(a.begin().await);
        assert!(b.begin().await);
        assert!(
            !c.begin().await,
            "a slot is free, but HOST holds its two places"
        );
        let mut d = uploads.turn(other);
        assert!(d.begin().await, "another source is sent to");
        // A place given back is HOST's again.
        a.end(false);
        assert!(c.begin().await);
    }

    #[tokio::test]
    async fn a_slow_chunk_steps_aside() {
        let uploads = Uploads::new(1, 1, 8);
        let (mut a, mut b) = (uploads.turn(HOST), uploads.turn(HOST));
        assert!(a.begin().await);
        let mut b_waits = Box::pin(b.begin());
        assert!(b_waits.as_mut().now_or_never().is_none());
        a.step_aside();
        assert!(
            b_waits.await,
            "a's slot went to b while a's chunk is still going"
        );
        a.end(true);
        assert!(
            a.begin().now_or_never().is_none(),
            "a waits for its next chunk"
        );
    }
}
