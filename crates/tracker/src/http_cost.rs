//! What one row of the status page costs at most: the bytes of its JSON plus the bytes it holds
//! on the heap before it is encoded. Rows are added to an answer while the sum stays within the
//! answer's budget, which bounds both the answer and its transient copy.

use std::mem::size_of;

use crate::http::{DownloadView, DownloaderView, FileView, PeerView};

/// Allocator bookkeeping per allocation, as `Limits` counts it.
const MALLOC: usize = 16;
/// Room for a number in JSON, with its key and punctuation (`"bytes":18446744073709551615,`).
const NUMBER: usize = 48;

pub trait Cost {
    /// An upper bound on the row's JSON bytes plus its heap bytes.
    fn cost(&self) -> usize;
}

/// A string in JSON (quotes and escapes, with its key) and on the heap.
fn text(s: &str) -> usize {
    let json: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            // `\u001f`: the longest escape.
            0..=0x1f => 6,
            _ => 1,
        })
        .sum();
    json + 16 + s.len() + MALLOC
}

/// A list in JSON (brackets, key) and its own allocation.
fn list<T>(items: &[T], each: impl Fn(&T) -> usize) -> usize {
    let items: usize = items.iter().map(|i| each(i) + 1 + size_of::<T>()).sum();
    items + 16 + MALLOC
}

impl Cost for DownloaderView {
    fn cost(&self) -> usize {
        4 + text(&self.addr) + NUMBER
    }
}

impl Cost for DownloadView {
    fn cost(&self) -> usize {
        4 + text(&self.id) + text(&self.name) + 2 * NUMBER
    }
}

impl Cost for FileView {
    fn cost(&self) -> usize {
        size_of::<FileView>()
            + 4
            + text(&self.id)
            + text(&self.name)
            + 4 * NUMBER
            + list(&self.downloaders, Cost::cost)
            + list(&self.aliases, |a| text(a))
    }
}

impl Cost for PeerView {
    fn cost(&self) -> usize {
        size_of::<PeerView>()
            + 4
            + text(&self.addr)
            + 3 * NUMBER
            + list(&self.names, |n| text(n))
            + list(&self.downloading, Cost::cost)
    }
}
