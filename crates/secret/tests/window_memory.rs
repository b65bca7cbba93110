//! The replay window's memory at its cap, counted by the allocator: the figure the README gives
//! for a private tracker's extra memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_secret::datagram::{ReplayWindow, REMEMBERED};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Under a steady stream of datagrams that keeps the window full (the oldest forgotten as new
/// ones come), the window never holds more than 9 MiB.
#[test]
fn a_full_replay_window_stays_under_9_mib() {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut w = ReplayWindow::new(REMEMBERED);
    let now = 1_800_000_000_000u64;
    // Three windows' worth, times a little out of order, as from many clients.
    for i in 0..3 * REMEMBERED as u64 {
        let t = now + i / 64 + (i * 7919) % 5;
        let _ = w.admit(t, i.wrapping_mul(0x9e37_79b9_7f4a_7c15), now + i / 64);
    }
    assert_eq!(w.len(), REMEMBERED);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    eprintln!(
        "replay window at its cap of {REMEMBERED}: peak {peak} bytes ({:.1} MiB, {:.1} bytes each)",
        peak as f64 / (1 << 20) as f64,
        peak as f64 / REMEMBERED as f64
    );
    assert!(peak < 9 << 20, "{peak} bytes");
}
