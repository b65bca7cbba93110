//! The byte stream under the peer protocol: plain TCP in an open swarm, a Noise stream
//! ([`shoal_secret::noise`]) in a private one. The frame codecs above run over either unchanged;
//! only the plain one can send a chunk with `sendfile`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use shoal_secret::noise::{self, HandshakeError, NoiseReader, NoiseWriter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub enum ReadHalf {
    Plain(OwnedReadHalf),
    Noise(NoiseReader<OwnedReadHalf>),
}

pub enum WriteHalf {
    Plain(OwnedWriteHalf),
    Noise(NoiseWriter<OwnedWriteHalf>),
}

impl WriteHalf {
    /// The socket, when bytes written to it go out as they are (so `sendfile` may bypass us).
    pub fn plain_tcp(&self) -> Option<&TcpStream> {
        match self {
            WriteHalf::Plain(w) => Some(w.as_ref()),
            WriteHalf::Noise(_) => None,
        }
    }
}

/// Splits a connected stream, after the Noise handshake in a private swarm (`initiator`: the
/// side that connected). A peer of another swarm, or of none, fails the handshake.
pub async fn open(
    mut stream: TcpStream,
    initiator: bool,
) -> Result<(ReadHalf, WriteHalf), HandshakeError> {
    let Some(keys) = crate::private::keys() else {
        let (r, w) = stream.into_split();
        return Ok((ReadHalf::Plain(r), WriteHalf::Plain(w)));
    };
    let transport = if initiator {
        noise::initiate(&mut stream, &keys.peer_psk, noise::PATTERN).await?
    } else {
        noise::respond(&mut stream, &keys.peer_psk, noise::PATTERN).await?
    };
    let (r, w) = stream.into_split();
    Ok((
        ReadHalf::Noise(NoiseReader::new(r, transport.clone())),
        WriteHalf::Noise(NoiseWriter::new(w, transport)),
    ))
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Noise(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Noise(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Noise(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Plain(w) => w.is_write_vectored(),
            WriteHalf::Noise(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Noise(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Noise(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
