//! A fixed number of chunk-sized buffers, reused for the whole download.
//!
//! Every chunk a leecher receives is read straight from the socket into one of these, verified and
//! written from it, and the buffer goes back to the pool. Memory is therefore bounded by the pool,
//! whatever the file size and however long the download runs: no allocation per chunk, no heap
//! that creeps up with fragmentation. When the pool is empty, readers wait (back-pressure to TCP).
//!
//! Every buffer starts on a [`ALIGN`]-byte boundary, so that the `.part` file can be written from it
//! with `O_DIRECT` (see [`crate::store::PartFile::write_at`]).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The alignment of every buffer: a page, which covers the logical block size of any disk.
pub const ALIGN: usize = 4096;

pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    slots: Arc<Semaphore>,
}

impl BufferPool {
    /// A pool of at most `count` buffers, allocated on first use.
    pub fn new(count: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            free: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(count)),
        })
    }

    /// A buffer of exactly `len` bytes (contents unspecified), waiting for one to be free.
    pub async fn take(self: &Arc<Self>, len: usize) -> PooledBuf {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let mut buf = self.free.lock().unwrap().pop().unwrap_or_default();
        // The bytes handed out start at the first aligned address inside the vector, which has
        // room for `ALIGN` bytes more than any chunk. A vector never moves while it is not resized,
        // so that start stays aligned for as long as it is used at this length. Reused vectors
        // keep their length, so this zero-fills only the first time (or when a longer chunk
        // follows a short last one).
        if buf.len() < len + ALIGN {
            buf.resize(len + ALIGN, 0);
        }
        let start = buf.as_ptr().align_offset(ALIGN);
        PooledBuf {
            buf,
            start,
            len,
            pool: self.clone(),
            _permit: permit,
        }
    }
}

/// A buffer borrowed from a [`BufferPool`]; goes back when dropped.
pub struct PooledBuf {
    buf: Vec<u8>,
    /// Where the buffer's bytes start in `buf` (aligned), and how many there are.
    start: usize,
    len: usize,
    pool: Arc<BufferPool>,
    // Released after `drop` has put the buffer back, so a waiter always finds one.
    _permit: OwnedSemaphorePermit,
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.pool.free.lock().unwrap().push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_are_reused_and_bounded() {
        let pool = BufferPool::new(2);
        let a = pool.take(10).await;
        let ptr = a.as_ptr() as usize;
        assert_eq!(ptr % ALIGN, 0, "buffers are aligned for O_DIRECT");
        assert_eq!(a.len(), 10);
        let b = pool.take(10).await;
        // A third waits until one comes back.
        let third = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take(4).await.as_ptr() as usize }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        drop(a);
        assert_eq!(
            third.await.unwrap(),
            ptr,
            "the returned buffer is the one handed out next"
        );
        drop(b);
        assert_eq!(pool.free.lock().unwrap().len(), 2);
    }
}
