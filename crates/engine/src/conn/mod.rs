//! Framed peer connections over TCP: a reader that splits and decodes frames with a hard size
//! limit, and a writer that sends a chunk straight from its buffer.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use shoal_proto::peer::{
    self, Frame, FrameError, Header, RejectReason, HEADER_ROOM, PROTOCOL_VERSION,
};
use shoal_proto::AnyManifest;
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};

use crate::transport::{self, ReadHalf, WriteHalf};

mod peer_conn;
mod source;
mod writer;

pub use peer_conn::PeerConn;
pub use source::{FrameSource, Payload, MIN_PROGRESS};
pub use writer::FrameWriter;

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

/// Largest frame a peer may send once the manifest is known: a chunk, or a Bitfield.
pub fn max_frame_for(manifest: &AnyManifest) -> usize {
    peer::max_frame_for_chunk_size(manifest.chunk_size())
        .max(HEADER_ROOM + manifest.num_chunks().div_ceil(8) as usize)
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
