//! The client side of a peer connection: connect, hello, welcome, Bitfields, and the manifest.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use shoal_proto::peer::{self, Header, RejectReason, PROTOCOL_V1, PROTOCOL_VERSION};
use shoal_proto::{AnyManifest, ChunkIndex, FileId};
use tokio::net::TcpStream;

use super::{max_frame_for, tune, ConnError, FrameSource, FrameWriter, Payload};
use crate::transport;

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
