//! Framed peer connections over TCP: a reader that splits and decodes frames with a hard size
//! limit, and a writer that sends a chunk straight from its buffer.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use shoal_proto::peer::{
    self, Frame, FrameError, Header, RejectReason, HEADER_ROOM, PROTOCOL_V1, PROTOCOL_VERSION,
};
use shoal_proto::{AnyManifest, ChunkIndex, FileId};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};

use crate::pool::{BufferPool, PooledBuf};
use crate::rate::RateLimit;
use crate::transport::{self, ReadHalf, WriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer closed the connection in the middle of a frame")]
    Truncated,
    #[error("the peer sent nothing for {0:?}")]
    Timeout(Duration),
    #[error("the peer sent only {bytes} bytes in {window:?}")]
    TooSlow { bytes: usize, window: Duration },
    #[error("the peer refused: {0}")]
    Rejected(RejectReason),
    #[error("peer {addr} speaks protocol {theirs}, this leecher speaks {PROTOCOL_VERSION}")]
    Version { addr: SocketAddr, theirs: u16 },
    #[error("the peer sent a bitfield that does not fit the file")]
    BadBitfield,
    #[error("unexpected {0:?} frame")]
    Unexpected(Header),
    #[error("the peer's manifest does not match the file id")]
    BadManifest,
    /// The manifest matches the id but breaks a rule (a hostile path in a tree): the id itself
    /// stands for something that must not be written, whoever serves it.
    #[error("the manifest this id stands for is refused: {0}")]
    Refused(shoal_proto::TreeError),
    #[error("{0}")]
    Serve(#[from] crate::store::ServeError),
    #[error("the peer is not of this private swarm, or closed the connection during the handshake (is P2P_SECRET the same on every machine?): {0}")]
    Handshake(#[from] shoal_secret::noise::HandshakeError),
}

/// Splits the byte stream into frames no longer than the current maximum (checked on the length
/// prefix, before the body is buffered) and decodes each one.
pub struct PeerCodec {
    inner: LengthDelimitedCodec,
}

impl PeerCodec {
    pub fn new(max_frame: usize) -> PeerCodec {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(peer::LENGTH_PREFIX)
            .max_frame_length(max_frame)
            .new_codec();
        PeerCodec { inner }
    }

    pub fn set_max_frame(&mut self, max: usize) {
        self.inner.set_max_frame_length(max);
    }
}

impl Decoder for PeerCodec {
    type Item = Frame;
    type Error = ConnError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ConnError> {
        match self.inner.decode(src)? {
            Some(body) => Ok(Some(peer::decode_frame(body.freeze())?)),
            None => Ok(None),
        }
    }
}

pub type FrameReader = FramedRead<ReadHalf, PeerCodec>;

/// Reads the next frame within `limit`.
pub async fn next_frame(reader: &mut FrameReader, limit: Duration) -> Result<Frame, ConnError> {
    match tokio::time::timeout(limit, reader.next()).await {
        Err(_) => Err(ConnError::Timeout(limit)),
        Ok(None) => Err(ConnError::Closed),
        Ok(Some(frame)) => frame,
    }
}

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

/// Bytes a chunk server's socket may hold not yet sent before a write waits (`TCP_NOTSENT_LOWAT`
/// on accepted connections). Without it the kernel takes a whole chunk, and several more, into
/// the socket's buffer at once, so a chunk's send ended long before its bytes left: its upload
/// slot (`uploads.rs`) went to the next client while every connection with buffered data still
/// shared the uplink, and a chunk took 0.4 s (up to 1.5 s) from "sent" to its arrival at N = 32
/// instead of the 0.17 s of four slots. With it a send ends when the chunk is nearly on the wire.
/// The loopback download is unchanged (1.30 GB/s both ways; PERFORMANCE.md, round 6).
pub const NOTSENT_LOWAT: u32 = 32 * 1024;

/// Socket options for every peer connection: small control frames must not wait for Nagle. The
/// congestion control is the system's: CUBIC did better than BBR at N = 32 in the bench and
/// worse at N = 8 and 16 (see PERFORMANCE.md).
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// Sets [`NOTSENT_LOWAT`] on a server's socket, best effort: where the system lacks the option, a
/// server serves as before, its slots less exact.
fn limit_unsent(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

/// Splits a connected stream into a frame reader (accepting frames up to `max_frame`) and writer,
/// over plain TCP.
pub fn split(stream: TcpStream, max_frame: usize) -> (FrameReader, FrameWriter) {
    tune(&stream);
    let (r, w) = stream.into_split();
    framed(ReadHalf::Plain(r), WriteHalf::Plain(w), max_frame)
}

/// [`split`] for an accepted connection: over Noise in a private swarm, once the client has
/// proved in the handshake that it holds the swarm's secret.
pub async fn accept(
    stream: TcpStream,
    max_frame: usize,
) -> Result<(FrameReader, FrameWriter), ConnError> {
    tune(&stream);
    limit_unsent(&stream);
    let (r, w) = transport::open(stream, false).await?;
    Ok(framed(r, w, max_frame))
}

fn framed(r: ReadHalf, w: WriteHalf, max_frame: usize) -> (FrameReader, FrameWriter) {
    (
        FramedRead::with_capacity(r, PeerCodec::new(max_frame), 64 * 1024),
        FrameWriter::new(w),
    )
}

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
    fn new(inner: ReadHalf, max_frame: usize) -> FrameSource {
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
            let room = self.read_size(self.staged.capacity() - self.staged.len());
            let n = dog
                .read(
                    (&mut self.inner)
                        .take(room as u64)
                        .read_buf(&mut self.staged),
                )
                .await?;
            if n == 0 {
                return Err(if self.staged.is_empty() {
                    ConnError::Closed
                } else {
                    ConnError::Truncated
                });
            }
            self.pay(n, &mut dog).await;
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
                    let room = self.read_size(len - self.staged.len());
                    let n = dog
                        .read(
                            (&mut self.inner)
                                .take(room as u64)
                                .read_buf(&mut self.staged),
                        )
                        .await?;
                    if n == 0 {
                        return Err(ConnError::Truncated);
                    }
                    self.pay(n, &mut dog).await;
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

/// Largest frame a peer may send once the manifest is known: a chunk, or a Bitfield.
pub fn max_frame_for(manifest: &AnyManifest) -> usize {
    peer::max_frame_for_chunk_size(manifest.chunk_size())
        .max(HEADER_ROOM + manifest.num_chunks().div_ceil(8) as usize)
}

/// The client side of a peer connection, after a successful hello and exchange of Bitfields.
pub struct PeerConn {
    pub addr: SocketAddr,
    pub reader: FrameSource,
    pub writer: FrameWriter,
    /// The peer had every chunk when it welcomed us.
    pub complete: bool,
    /// The peer's Bitfield payload (decoded once the manifest is known).
    pub bitfield: Bytes,
    /// Chunks the peer announced while we waited for the manifest.
    pub early_haves: Vec<ChunkIndex>,
}

impl PeerConn {
    /// Connects, says hello for `file`, waits for the welcome and trades Bitfields (`ours`: the
    /// payload of ours), all within `limit`.
    pub async fn connect(
        addr: SocketAddr,
        file: FileId,
        limit: Duration,
        ours: &[u8],
    ) -> Result<PeerConn, ConnError> {
        PeerConn::connect_bounded(addr, file, limit, ours, peer::MAX_FRAME_LEN).await
    }

    /// [`PeerConn::connect`], refusing any frame longer than `max_frame` until the manifest is
    /// known (the manifest fetch bounds it by the file's listed size).
    pub async fn connect_bounded(
        addr: SocketAddr,
        file: FileId,
        limit: Duration,
        ours: &[u8],
        max_frame: usize,
    ) -> Result<PeerConn, ConnError> {
        let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnError::Timeout(limit))??;
        tune(&stream);
        let (r, w) = tokio::time::timeout(limit, transport::open(stream, true))
            .await
            .map_err(|_| ConnError::Timeout(limit))??;
        // Until the manifest is known, the largest frame is a manifest.
        let mut conn = PeerConn {
            addr,
            reader: FrameSource::new(r, max_frame.min(peer::MAX_FRAME_LEN)),
            writer: FrameWriter::new(w),
            complete: false,
            bitfield: Bytes::new(),
            early_haves: Vec::new(),
        };
        conn.writer
            .send(&Header::Hello {
                version: PROTOCOL_VERSION,
                file,
            })
            .await?;
        match conn.reader.next(limit, None).await?.0 {
            Header::Welcome { complete, .. } => conn.complete = complete,
            Header::Reject {
                index: None,
                reason: RejectReason::VersionMismatch,
            } => {
                // Only protocol 1 answers with the bare mismatch.
                return Err(ConnError::Version {
                    addr,
                    theirs: PROTOCOL_V1,
                });
            }
            Header::Reject {
                index: None,
                reason: RejectReason::WrongVersion { ours },
            } => return Err(ConnError::Version { addr, theirs: ours }),
            Header::Reject { reason, .. } => return Err(ConnError::Rejected(reason)),
            other => return Err(ConnError::Unexpected(other)),
        }
        conn.writer.send_payload(&Header::Bitfield, ours).await?;
        match conn.reader.next(limit, None).await? {
            (Header::Bitfield, Payload::Bytes(bits)) => conn.bitfield = bits,
            (other, _) => return Err(ConnError::Unexpected(other)),
        }
        Ok(conn)
    }

    /// The peer's Bitfield as a have-set of the file `manifest` describes.
    pub fn peer_has(&self, manifest: &AnyManifest) -> Result<Vec<bool>, ConnError> {
        peer::decode_bitfield(&self.bitfield, manifest.num_chunks()).ok_or(ConnError::BadBitfield)
    }

    /// Fetches the manifest and checks it against `file`: a peer cannot make us trust anything else.
    pub async fn manifest(
        &mut self,
        file: &FileId,
        limit: Duration,
    ) -> Result<AnyManifest, ConnError> {
        self.writer.send(&Header::GetManifest).await?;
        loop {
            match self.reader.next(limit, None).await? {
                (Header::Manifest, Payload::Bytes(bytes)) => {
                    if shoal_proto::manifest::id_of_encoding(&bytes) != *file {
                        return Err(ConnError::BadManifest);
                    }
                    let manifest = AnyManifest::decode(&bytes).map_err(ConnError::Refused)?;
                    // From now on no honest frame is larger than one chunk (or a Bitfield).
                    self.reader.set_max_frame(max_frame_for(&manifest));
                    return Ok(manifest);
                }
                // A peer that is downloading too gains chunks meanwhile.
                (Header::Have { index }, _) => self.early_haves.push(index),
                (Header::Bitfield, Payload::Bytes(bits)) => {
                    self.bitfield = bits;
                    self.early_haves.clear();
                }
                (Header::Cancel { .. }, _) => {}
                (Header::Reject { reason, .. }, _) => return Err(ConnError::Rejected(reason)),
                (other, _) => return Err(ConnError::Unexpected(other)),
            }
        }
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    /// A server's socket holds at most `NOTSENT_LOWAT` bytes not yet sent, so that a chunk's
    /// send (and its upload slot) lasts until the chunk is nearly on the wire.
    #[tokio::test]
    async fn a_server_socket_limits_its_unsent_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&server);
        limit_unsent(&server);
        assert_eq!(sock.tcp_notsent_lowat().unwrap(), NOTSENT_LOWAT);
    }
}
