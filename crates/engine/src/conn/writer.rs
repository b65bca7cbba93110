//! The writing half of a peer connection.

use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::BytesMut;
use shoal_proto::peer::{self, Header};
use tokio::io::{AsyncWriteExt, Interest};

use crate::rate::RateLimit;
use crate::transport::WriteHalf;

/// Writes frames. Control frames are queued and flushed together; a payload goes out in the same
/// vectored write as its header, never copied.
pub struct FrameWriter {
    inner: WriteHalf,
    queued: BytesMut,
    /// `--max-upload-rate`: payloads (chunks, manifests) are charged here before they go.
    limit: Option<Arc<RateLimit>>,
}

impl FrameWriter {
    pub fn new(inner: WriteHalf) -> FrameWriter {
        FrameWriter {
            inner,
            queued: BytesMut::with_capacity(256),
            limit: None,
        }
    }

    pub fn set_limit(&mut self, limit: Option<Arc<RateLimit>>) {
        self.limit = limit;
    }

    /// Queues a frame without payload; [`FrameWriter::flush`] sends it.
    pub fn queue(&mut self, header: &Header) {
        peer::encode_head(header, 0, &mut self.queued);
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.queued.is_empty() {
            self.inner.write_all(&self.queued).await?;
            self.queued.clear();
            // A Noise stream holds what it sealed until flushed (plain TCP: nothing to do).
            self.inner.flush().await?;
        }
        Ok(())
    }

    pub async fn send(&mut self, header: &Header) -> io::Result<()> {
        self.queue(header);
        self.flush().await
    }

    /// Sends queued frames, then `header` and `payload`, in as few writes as the kernel allows.
    pub async fn send_payload(&mut self, header: &Header, payload: &[u8]) -> io::Result<()> {
        if let Some(limit) = &self.limit {
            // Paid before it goes, all at once: the bucket's debt keeps the average.
            limit.take(payload.len()).await;
        }
        peer::encode_head(header, payload.len(), &mut self.queued);
        let (mut head, mut body) = (&self.queued[..], payload);
        while !head.is_empty() || !body.is_empty() {
            let n = self
                .inner
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        self.queued.clear();
        self.inner.flush().await
    }

    /// Sends queued frames, then `header` and `len` bytes of `file` from `offset`, straight from
    /// the page cache to the socket (`sendfile`): no copy through user space, no buffer. The head
    /// goes with `MSG_MORE` so the kernel packs it with the data. Under an upload limit the data
    /// still goes by `sendfile`, in slices the bucket allows.
    pub async fn send_file(
        &mut self,
        header: &Header,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<()> {
        use rustix::net::SendFlags;
        peer::encode_head(header, len, &mut self.queued);
        let Some(stream) = self.inner.plain_tcp() else {
            return self.send_file_sealed(file, offset, len).await;
        };
        let mut head = &self.queued[..];
        while !head.is_empty() {
            stream.writable().await?;
            let sent = stream.try_io(Interest::WRITABLE, || {
                let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
                Ok(rustix::net::send(stream, head, flags)?)
            });
            match sent {
                Ok(n) => head = &head[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        self.queued.clear();
        let mut off = offset;
        let end = offset + len as u64;
        // How far this slice may go: all of it without a limit.
        let mut allowed = if self.limit.is_some() { off } else { end };
        while off < end {
            if off == allowed {
                let limit = self
                    .limit
                    .as_ref()
                    .expect("only a limit stops short of the end");
                let step = (limit.slice() as u64).min(end - off);
                limit.take(step as usize).await;
                allowed += step;
            }
            stream.writable().await?;
            let sent = stream.try_io(Interest::WRITABLE, || {
                let count = (allowed - off) as usize;
                Ok(rustix::fs::sendfile(stream, file, Some(&mut off), count)?)
            });
            match sent {
                // The file shrank under us: the frame cannot be completed.
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while being sent",
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`FrameWriter::send_file`] over a stream that must see the bytes (Noise): the queued
    /// frames and the head, then the file's bytes read into one Noise message's worth of buffer
    /// at a time, so memory per connection stays at that.
    async fn send_file_sealed(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some(limit) = &self.limit {
            limit.take(len).await;
        }
        let piece = shoal_secret::noise::MAX_PLAIN;
        let mut buf = std::mem::take(&mut self.queued);
        let (mut at, end) = (offset, offset + len as u64);
        while at < end || !buf.is_empty() {
            let room = (piece.saturating_sub(buf.len()) as u64).min(end - at) as usize;
            let start = buf.len();
            buf.resize(start + room, 0);
            // From the page cache, where `prefetch` asked for it, as `sendfile` would read it.
            let mut filled = start;
            while filled < start + room {
                match file.read_at(&mut buf[filled..start + room], at)? {
                    0 => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the file shrank while being sent",
                        ))
                    }
                    n => {
                        filled += n;
                        at += n as u64;
                    }
                }
            }
            self.inner.write_all(&buf).await?;
            buf.clear();
        }
        self.queued = buf;
        self.inner.flush().await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }

    /// Writes bytes as they are, frame or not: for tests that play a broken peer.
    #[cfg(test)]
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes).await?;
        self.inner.flush().await
    }
}
