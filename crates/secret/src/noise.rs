//! Peer connections of a private swarm: a Noise handshake (`Noise_NNpsk0`, through `snow`) under
//! the swarm's pre-shared key, then the connection as a byte stream of Noise transport messages,
//! so the peer protocol's frames run over it unchanged.
//!
//! Every Noise message goes on the wire as a 2-byte big-endian length and the message (at most
//! 65,535 bytes, the last 16 the tag), as the Noise specification suggests for TCP. With `psk0`
//! the pre-shared key is mixed in before the first message, so the responder cannot open even
//! the initiator's first message without it: a peer with another secret (or none) is refused
//! after one message, before any byte of the peer protocol. The transport's nonces are Noise's
//! own counters, one per direction, kept by each half of the split stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The cipher suite. AES-GCM on a CPU with AES-NI and carry-less multiply (measured against
/// ChaCha20-Poly1305 in `examples/noise_speed.rs`; PERFORMANCE.md has the figures).
pub const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// The alternative suite, for CPUs without AES instructions and for the measurement.
pub const PATTERN_CHACHA: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Binds the handshake to this use: a Noise peer of something else fails it. Not to the peer
/// protocol's version, which the hello inside still carries, so that a peer of another version
/// gets the version sentence rather than a failed handshake.
const PROLOGUE: &[u8] = b"shoal private swarm, noise stream 1";
/// Largest Noise message, the tag included.
pub const MAX_MESSAGE: usize = 65_535;
const TAG: usize = 16;
/// Most plaintext one message carries.
pub const MAX_PLAIN: usize = MAX_MESSAGE - TAG;
/// Both handshake messages are an ephemeral key and an empty payload's tag.
const HANDSHAKE_MESSAGE: usize = 32 + TAG;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(
        "the peer is not of this private swarm (its handshake does not open under our secret)"
    )]
    Refused,
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
}

/// Both directions' keys after a handshake; shared by the two halves of the stream.
pub type Transport = Arc<StatelessTransportState>;

fn builder<'a>(pattern: &str, psk: &'a [u8; 32]) -> Result<snow::Builder<'a>, snow::Error> {
    let params: snow::params::NoiseParams = pattern.parse()?;
    snow::Builder::new(params).prologue(PROLOGUE)?.psk(0, psk)
}

/// The connecting side's handshake on `stream`: one message out, one back.
pub async fn initiate<S>(
    stream: &mut S,
    psk: &[u8; 32],
    pattern: &str,
) -> Result<Transport, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = builder(pattern, psk)?.build_initiator()?;
    let mut msg = [0u8; 2 + HANDSHAKE_MESSAGE];
    let n = hs.write_message(&[], &mut msg[2..])?;
    msg[..2].copy_from_slice(&(n as u16).to_be_bytes());
    stream.write_all(&msg[..2 + n]).await?;
    stream.flush().await?;
    let reply = read_handshake(stream).await?;
    hs.read_message(&reply, &mut [])
        .map_err(|_| HandshakeError::Refused)?;
    Ok(Arc::new(hs.into_stateless_transport_mode()?))
}

/// The accepting side's handshake on `stream`. Anything but a genuine first message of this
/// swarm fails it, and nothing is sent back.
pub async fn respond<S>(
    stream: &mut S,
    psk: &[u8; 32],
    pattern: &str,
) -> Result<Transport, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = builder(pattern, psk)?.build_responder()?;
    let first = read_handshake(stream).await?;
    hs.read_message(&first, &mut [])
        .map_err(|_| HandshakeError::Refused)?;
    let mut msg = [0u8; 2 + HANDSHAKE_MESSAGE];
    let n = hs.write_message(&[], &mut msg[2..])?;
    msg[..2].copy_from_slice(&(n as u16).to_be_bytes());
    stream.write_all(&msg[..2 + n]).await?;
    stream.flush().await?;
    Ok(Arc::new(hs.into_stateless_transport_mode()?))
}

/// One handshake message: refused unless its length is a handshake message's, so a plain peer's
/// frame (or noise) is never read further.
async fn read_handshake<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<[u8; HANDSHAKE_MESSAGE], HandshakeError> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    if u16::from_be_bytes(len) as usize != HANDSHAKE_MESSAGE {
        return Err(HandshakeError::Refused);
    }
    let mut msg = [0u8; HANDSHAKE_MESSAGE];
    stream.read_exact(&mut msg).await?;
    Ok(msg)
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("noise: {what}"))
}

/// The reading half: Noise messages in, plaintext out. Holds one message's ciphertext and, when
/// the caller reads less than a message at a time, its plaintext: about 128 KiB.
pub struct NoiseReader<R> {
    inner: R,
    transport: Transport,
    nonce: u64,
    /// Ciphertext read from `inner`, `[start, end)` not yet used.
    wire: Box<[u8]>,
    start: usize,
    end: usize,
    /// Plaintext of a message the caller had no room for, `[pos, len)` not yet read.
    plain: Vec<u8>,
    pos: usize,
}

impl<R: AsyncRead + Unpin> NoiseReader<R> {
    pub fn new(inner: R, transport: Transport) -> NoiseReader<R> {
        NoiseReader {
            inner,
            transport,
            nonce: 0,
            wire: vec![0u8; 2 + MAX_MESSAGE].into_boxed_slice(),
            start: 0,
            end: 0,
            plain: Vec::new(),
            pos: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next whole message in `wire`, as its range, if one is there.
    fn whole_message(&self) -> io::Result<Option<(usize, usize)>> {
        let have = self.end - self.start;
        if have < 2 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.wire[self.start], self.wire[self.start + 1]]) as usize;
        if len < TAG {
            return Err(broken("a message shorter than its tag"));
        }
        Ok((have >= 2 + len).then_some((self.start + 2, self.start + 2 + len)))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for NoiseReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.pos < me.plain.len() {
                let n = out.remaining().min(me.plain.len() - me.pos);
                out.put_slice(&me.plain[me.pos..me.pos + n]);
                me.pos += n;
                return Poll::Ready(Ok(()));
            }
            if let Some((from, to)) = me.whole_message()? {
                let size = to - from - TAG;
                let nonce = me.nonce;
                me.nonce += 1;
                me.start = to;
                if size == 0 {
                    // Our writer never sends one; whoever did must still hold the key, or this
                    // would let anyone on the path swap a real message for a skipped empty one.
                    me.transport
                        .read_message(nonce, &me.wire[from..to], &mut [])
                        .map_err(|_| broken("a message that does not open (tampered?)"))?;
                    continue;
                }
                let message = &me.wire[from..to];
                if out.remaining() >= size {
                    // Straight into the caller's buffer: no second copy for large reads.
                    let dst = out.initialize_unfilled_to(size);
                    me.transport
                        .read_message(nonce, message, dst)
                        .map_err(|_| broken("a message that does not open (tampered?)"))?;
                    out.advance(size);
                    return Poll::Ready(Ok(()));
                }
                me.plain.resize(size, 0);
                me.pos = 0;
                me.transport
                    .read_message(nonce, message, &mut me.plain)
                    .map_err(|_| broken("a message that does not open (tampered?)"))?;
                continue;
            }
            // Need more bytes: make room at the end for the rest of the longest message.
            if me.start == me.end {
                (me.start, me.end) = (0, 0);
            } else if me.wire.len() - me.start < 2 + MAX_MESSAGE {
                me.wire.copy_within(me.start..me.end, 0);
                (me.start, me.end) = (0, me.end - me.start);
            }
            let mut buf = ReadBuf::new(&mut me.wire[me.end..]);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(if me.start == me.end {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                });
            }
            me.end += n;
        }
    }
}

/// The writing half: plaintext in, Noise messages out. Like a TLS stream, what a write accepted
/// may still sit in its buffer (one message, at most 64 KiB): flush it.
pub struct NoiseWriter<W> {
    inner: W,
    transport: Transport,
    nonce: u64,
    wire: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<W: AsyncWrite + Unpin> NoiseWriter<W> {
    pub fn new(inner: W, transport: Transport) -> NoiseWriter<W> {
        NoiseWriter {
            inner,
            transport,
            nonce: 0,
            wire: vec![0u8; 2 + MAX_MESSAGE].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writes out the sealed message waiting in `wire`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.start < self.end {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wire[self.start..self.end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.start += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for NoiseWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_PLAIN);
        let m = me
            .transport
            .write_message(me.nonce, &data[..n], &mut me.wire[2..])
            .map_err(|e| io::Error::other(format!("noise: {e}")))?;
        me.nonce += 1;
        me.wire[..2].copy_from_slice(&(m as u16).to_be_bytes());
        (me.start, me.end) = (0, 2 + m);
        // Start sending at once; what the socket does not take now goes on the next write or
        // flush.
        if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
