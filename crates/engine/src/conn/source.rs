//! The client side's reading half: frames, with chunk payloads read straight into pooled buffers
//! and a watchdog on every frame's progress.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shoal_proto::peer::{self, Header};

use super::ConnError;
use crate::pool::{BufferPool, PooledBuf};
use crate::rate::RateLimit;
use crate::transport::ReadHalf;

/// What followed a frame's header.
pub enum Payload {
    None,
    /// A chunk, read straight into a pooled buffer.
    Chunk(PooledBuf),
    /// Anything else that carries bytes (a manifest, a bitfield).
    Bytes(Bytes),
}

/// The client side's reader: decodes each frame's head from a small staging buffer, then reads a
/// chunk's payload straight from the socket into a buffer of the download's [`BufferPool`], so a
/// chunk is copied once (kernel to its final buffer) and memory is bounded by the pool.
pub struct FrameSource {
    inner: ReadHalf,
    staged: BytesMut,
    max_frame: usize,
    /// `--max-download-rate`: every byte read is charged here, in reads no larger than a slice.
    limit: Option<Arc<RateLimit>>,
}

/// Staging buffer for heads and small frames; payloads larger than what is staged bypass it.
const STAGING: usize = 64 * 1024;

impl FrameSource {
    pub(super) fn new(inner: ReadHalf, max_frame: usize) -> FrameSource {
        FrameSource {
            inner,
            staged: BytesMut::with_capacity(STAGING),
            max_frame,
            limit: None,
        }
    }

    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }

    pub fn set_limit(&mut self, limit: Option<Arc<RateLimit>>) {
        self.limit = limit;
    }

    /// The most one read may take: a slice of the bucket, or `want`.
    fn read_size(&self, want: usize) -> usize {
        self.limit.as_ref().map_or(want, |l| want.min(l.slice()))
    }

    /// Pays for `n` bytes just read; the wait is ours, not the peer's, so the watchdog skips it.
    async fn pay(&self, n: usize, dog: &mut Watchdog) {
        if let Some(limit) = &self.limit {
            let start = tokio::time::Instant::now();
            limit.take(n).await;
            dog.exclude(start.elapsed());
        }
    }

    /// Reads up to `want` bytes (no more than a slice of the rate limit) into the staging
    /// buffer, under the watchdog, and pays for them; 0 at the end of the stream.
    async fn stage(&mut self, want: usize, dog: &mut Watchdog) -> Result<usize, ConnError> {
        use tokio::io::AsyncReadExt;
        let room = self.read_size(want);
        let n = dog
            .read(
                (&mut self.inner)
                    .take(room as u64)
                    .read_buf(&mut self.staged),
            )
            .await?;
        if n > 0 {
            self.pay(n, dog).await;
        }
        Ok(n)
    }

    /// The next frame. A chunk's payload goes into a buffer taken from `pool` (waiting for one
    /// does not count against the peer). Fails when the peer stalls: sends less than
    /// [`MIN_PROGRESS`] bytes in some window of `stall` before the frame is complete. So a slow
    /// peer that keeps sending is never cut off mid-chunk, but a silent or trickling one is.
    pub async fn next(
        &mut self,
        stall: Duration,
        pool: Option<&Arc<BufferPool>>,
    ) -> Result<(Header, Payload), ConnError> {
        use tokio::io::AsyncReadExt;
        let mut dog = Watchdog::new(stall);
        let head = loop {
            if let Some(head) = peer::decode_head(&self.staged, self.max_frame)? {
                break head;
            }
            self.staged
                .reserve(STAGING.saturating_sub(self.staged.len()).max(1));
            let room = self.staged.capacity() - self.staged.len();
            if self.stage(room, &mut dog).await? == 0 {
                return Err(if self.staged.is_empty() {
                    ConnError::Closed
                } else {
                    ConnError::Truncated
                });
            }
        };
        let _ = self.staged.split_to(head.head_len);
        let len = head.payload_len;
        let payload = match (&head.header, pool) {
            (_, _) if !head.header.carries_payload() => Payload::None,
            (Header::Chunk { .. }, Some(pool)) => {
                let mut buf = pool.take(len).await;
                dog.restart();
                let mut filled = len.min(self.staged.len());
                buf[..filled].copy_from_slice(&self.staged.split_to(filled));
                while filled < len {
                    let to = filled + self.read_size(len - filled);
                    let n = dog.read(self.inner.read(&mut buf[filled..to])).await?;
                    if n == 0 {
                        return Err(ConnError::Truncated);
                    }
                    filled += n;
                    self.pay(n, &mut dog).await;
                }
                Payload::Chunk(buf)
            }
            _ => {
                while self.staged.len() < len {
                    self.staged.reserve(len - self.staged.len());
                    if self.stage(len - self.staged.len(), &mut dog).await? == 0 {
                        return Err(ConnError::Truncated);
                    }
                }
                Payload::Bytes(self.staged.split_to(len).freeze())
            }
        };
        Ok((head.header, payload))
    }
}

/// Bytes a peer must deliver in every stall window while it owes us a frame.
pub const MIN_PROGRESS: usize = 16 * 1024;

/// Watches the progress of one frame: see [`FrameSource::next`].
struct Watchdog {
    window: Duration,
    start: tokio::time::Instant,
    bytes: usize,
}

impl Watchdog {
    fn new(window: Duration) -> Watchdog {
        Watchdog {
            window,
            start: tokio::time::Instant::now(),
            bytes: 0,
        }
    }

    fn restart(&mut self) {
        self.start = tokio::time::Instant::now();
        self.bytes = 0;
    }

    /// Time spent waiting on our own rate limit is not the peer's: the window moves on by it.
    fn exclude(&mut self, waited: std::time::Duration) {
        self.start += waited;
    }

    /// Awaits one read, failing if a window ends with too little progress.
    async fn read(
        &mut self,
        read: impl std::future::Future<Output = io::Result<usize>>,
    ) -> Result<usize, ConnError> {
        tokio::pin!(read);
        loop {
            match tokio::time::timeout_at(self.start + self.window, &mut read).await {
                Ok(n) => {
                    let n = n?;
                    self.bytes += n;
                    return Ok(n);
                }
                Err(_) if self.bytes >= MIN_PROGRESS => self.restart(),
                Err(_) if self.bytes == 0 => return Err(ConnError::Timeout(self.window)),
                Err(_) => {
                    return Err(ConnError::TooSlow {
                        bytes: self.bytes,
                        window: self.window,
                    })
                }
            }
        }
    }
}
