//! What hostile peers and proxies have done ([`Counts`], waited on through [`Events`]), and the
//! [`Gate`] that decides when they let chunks through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::PATIENCE;

/// What a hostile peer or proxy has done so far.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Connections accepted.
    pub connections: u32,
    /// Chunk requests received (for a proxy: passed on to the seeder).
    pub requests: u32,
    /// Correct chunks sent, and their indices in the order sent (counted just before sending, so
    /// that anything the leecher has received is already counted; likewise `lies`, `garbage`).
    pub served: u32,
    pub served_indices: Vec<u32>,
    /// Chunks sent with wrong bytes of the right length.
    pub lies: u32,
    /// Garbage frames sent.
    pub garbage: u32,
    /// Connections the other side closed (or reset).
    pub closed_by_client: u32,
    /// Connections that ended, for whatever reason.
    pub ended: u32,
    /// Proxy only: connections on which the seeder went away.
    pub upstream_lost: u32,
}

/// [`Counts`] behind a lock, with a condition variable to wait on.
pub struct Events {
    counts: Mutex<Counts>,
    cv: Condvar,
}

impl Events {
    pub(super) fn new() -> Arc<Events> {
        Arc::new(Events {
            counts: Mutex::new(Counts::default()),
            cv: Condvar::new(),
        })
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap());
        self.cv.notify_all();
    }

    /// The counts now.
    pub fn now(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// Waits until `pred` holds (panics after [`PATIENCE`]) and returns the counts then.
    pub fn wait(&self, what: &str, pred: impl Fn(&Counts) -> bool) -> Counts {
        let deadline = Instant::now() + PATIENCE;
        let mut c = self.counts.lock().unwrap();
        loop {
            if pred(&c) {
                return c.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "gave up waiting for {what}; counts: {c:?}");
            c = self.cv.wait_timeout(c, deadline - now).unwrap().0;
        }
    }
}

/// Lets chunk frames through: none, some, or all. Shared by clones.
#[derive(Clone)]
pub struct Gate {
    sem: Arc<Semaphore>,
    opened: Arc<AtomicBool>,
}

impl Gate {
    /// Lets nothing through until told.
    pub fn closed() -> Gate {
        Gate {
            sem: Arc::new(Semaphore::new(0)),
            opened: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Lets everything through.
    pub fn open() -> Gate {
        let g = Gate::closed();
        g.open_all();
        g
    }

    /// Lets `n` more chunks through.
    pub fn allow(&self, n: usize) {
        self.sem.add_permits(n);
    }

    /// Lets everything through from now on.
    pub fn open_all(&self) {
        if !self.opened.swap(true, Ordering::SeqCst) {
            self.sem.add_permits(1 << 40);
        }
    }

    pub(super) async fn pass(&self) {
        self.sem.acquire().await.expect("never closed").forget();
    }
}
