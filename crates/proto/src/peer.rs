//! Framed TCP messages between peers.
//!
//! On the wire a frame is a 4-byte big-endian length followed by that many bytes: a postcard
//! [`Header`], then for [`Header::Chunk`], [`Header::Manifest`] and [`Header::Bitfield`] the raw
//! payload. Keeping bulk data out of postcard lets the sender write a chunk straight from its
//! buffer and the receiver slice it out of the read buffer without a copy.
//!
//! A connection opens with `Hello` (file id and version) answered by `Welcome` or `Reject`. Then
//! the client sends one `Bitfield` of the chunks it has (empty before it knows the manifest), and
//! the server answers with its own. Then the client asks `GetManifest` and `Request`s chunks,
//! several in flight; the server answers each with `Chunk` or `Reject`, in order (a `Reject` as
//! `Busy` only means "not now": ask another peer, or this one later; one as `Elsewhere`, "ask
//! the peers I sent it to"). Either side may send
//! `Have` for every chunk it verifies later, at any time (shoal's client sends them only to a
//! complete server, whose reveal policy reads them); `Have`, `Bitfield` and `Cancel`
//! are never fatal. A peer that says another version's `Hello` gets a `Reject` it can read: the
//! unit `VersionMismatch` of protocol 1 for a protocol 1 peer, `WrongVersion` for newer ones.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::manifest::{MAX_CHUNK_SIZE, MAX_ENCODED_LEN};
use crate::{ChunkIndex, FileId};

/// 5: a complete peer may decline a request as [`RejectReason::Elsewhere`] (a chunk it sent to
/// another peer already), which a version 4 client cannot read.
/// 4: a request may be refused as [`RejectReason::Busy`] (the server's upload slots are taken),
/// which ends a version 3 client's connection. 3: a manifest may be a tree (a folder shared as
/// one thing), which a version 2 peer cannot read.
pub const PROTOCOL_VERSION: u16 = 5;
/// The first version; its peers know [`RejectReason::VersionMismatch`] but not
/// [`RejectReason::WrongVersion`].
pub const PROTOCOL_V1: u16 = 1;
/// Bytes of a frame besides its payload: room for any header, generously.
pub const HEADER_ROOM: usize = 64;
/// The hard maximum frame length (after the length prefix). Checked before any allocation.
pub const MAX_FRAME_LEN: usize = max_payload() + HEADER_ROOM;
/// The length prefix.
pub const LENGTH_PREFIX: usize = 4;

const fn max_payload() -> usize {
    let chunk = MAX_CHUNK_SIZE as usize;
    if MAX_ENCODED_LEN > chunk {
        MAX_ENCODED_LEN
    } else {
        chunk
    }
}

/// Largest frame a peer may send once the chunk size is known: one chunk and its header.
pub fn max_frame_for_chunk_size(chunk_size: u32) -> usize {
    chunk_size as usize + HEADER_ROOM
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header {
    /// First frame from the client: which file it wants and which protocol it speaks.
    Hello {
        version: u16,
        file: FileId,
    },
    /// The server has the file and speaks this version; `complete`: it holds every chunk (it
    /// may still advertise only some of them, see the reveal policy).
    Welcome {
        version: u16,
        complete: bool,
    },
    GetManifest,
    /// Payload: the manifest's canonical encoding.
    Manifest,
    Request {
        index: ChunkIndex,
    },
    /// Payload: the chunk's bytes.
    Chunk {
        index: ChunkIndex,
    },
    /// A refusal: of the hello when `index` is `None`, else of one request.
    Reject {
        index: Option<ChunkIndex>,
        reason: RejectReason,
    },
    /// The sender now has this chunk (verified).
    Have {
        index: ChunkIndex,
    },
    /// Payload: one bit per chunk the sender has, most significant bit first; shorter than the
    /// file means the rest are missing (empty: nothing, or the manifest is not known yet).
    Bitfield,
    /// Reserved: the client no longer wants this chunk.
    Cancel {
        index: ChunkIndex,
    },
    /// From a client to a complete server that advertises only some of its chunks (the reveal
    /// policy): the chunks shown so far do not fill its window of requests (it got them, or
    /// asked another peer for them), so show it more. Without it a client could wait for a Have
    /// that never comes while the server waits for a request.
    WantMore,
}

impl Header {
    /// Whether a payload follows this header in its frame.
    pub fn carries_payload(&self) -> bool {
        matches!(
            self,
            Header::Chunk { .. } | Header::Manifest | Header::Bitfield
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    UnknownFile,
    VersionMismatch,
    NoSuchChunk,
    /// The server can no longer vouch for this data (for instance the file changed on disk).
    Unavailable,
    /// Of a hello: the server has no connection to spare. Of a request: its upload slots are
    /// taken (it sends to a few clients at a time); ask another peer, or this one again later.
    /// Never fatal.
    Busy,
    Protocol,
    /// A request for a chunk the server does not have (yet).
    NotHave,
    /// The hello's version is not ours, which is `ours` (protocol 2 on; protocol 1 peers get
    /// [`RejectReason::VersionMismatch`], the only one they can read).
    WrongVersion {
        ours: u16,
    },
    /// Of a request to a complete peer that sends each chunk once before any twice
    /// (super-seeding): it sent this chunk to another peer that still has it, or is sending it,
    /// so the client fetches it from the swarm, and forgets that this peer has it until a later
    /// `Have` shows it again (shoal declines a client a chunk once at most). Never fatal
    /// (protocol 5 on).
    Elsewhere,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RejectReason::UnknownFile => "the peer does not share this file",
            RejectReason::VersionMismatch => "the peer speaks another protocol version",
            RejectReason::NoSuchChunk => "no such chunk",
            RejectReason::Unavailable => "the peer can no longer serve this data",
            RejectReason::Busy => "the peer is busy",
            RejectReason::Protocol => "protocol violation",
            RejectReason::NotHave => "the peer does not have this chunk",
            RejectReason::Elsewhere => "the peer sent this chunk to another peer already",
            RejectReason::WrongVersion { ours } => {
                return write!(f, "the peer speaks protocol {ours}");
            }
        })
    }
}

/// A have-set as a `Bitfield` payload: one bit per chunk, most significant bit first.
pub fn encode_bitfield(has: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; has.len().div_ceil(8)];
    for (i, _) in has.iter().enumerate().filter(|(_, h)| **h) {
        out[i / 8] |= 0x80 >> (i % 8);
    }
    out
}

/// A `Bitfield` payload as a have-set of `num_chunks`: `None` if it is longer than the file
/// needs or names a chunk past the end.
pub fn decode_bitfield(bytes: &[u8], num_chunks: u32) -> Option<Vec<bool>> {
    let n = num_chunks as usize;
    if bytes.len() > n.div_ceil(8) {
        return None;
    }
    let mut has = vec![false; n];
    for (i, byte) in bytes.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                *has.get_mut(i * 8 + bit)? = true;
            }
        }
    }
    Some(has)
}

/// One decoded frame. `payload` shares the read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(header: Header) -> Frame {
        Frame {
            header,
            payload: Bytes::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("malformed frame header")]
    BadHeader,
    #[error("a {0:?} frame must not carry a payload")]
    UnexpectedPayload(Header),
}

/// Decodes a frame's body (the bytes after the length prefix).
pub fn decode_frame(body: Bytes) -> Result<Frame, FrameError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLong {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let (header, rest) =
        postcard::take_from_bytes::<Header>(&body).map_err(|_| FrameError::BadHeader)?;
    let header_len = body.len() - rest.len();
    if !header.carries_payload() && !rest.is_empty() {
        return Err(FrameError::UnexpectedPayload(header));
    }
    Ok(Frame {
        header,
        payload: body.slice(header_len..),
    })
}

/// Appends the length prefix and header of a frame whose payload is `payload_len` bytes; the
/// caller writes the payload right after. Lets a chunk go out without being copied into `dst`.
pub fn encode_head(header: &Header, payload_len: usize, dst: &mut BytesMut) {
    let mut buf = [0u8; HEADER_ROOM];
    let head = postcard::to_slice(header, &mut buf).expect("every header fits in HEADER_ROOM");
    let len = head.len() + payload_len;
    dst.reserve(LENGTH_PREFIX + head.len());
    dst.put_u32(len as u32);
    dst.put_slice(head);
}

/// Appends a whole frame (prefix, header, payload).
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) {
    encode_head(&frame.header, frame.payload.len(), dst);
    dst.extend_from_slice(&frame.payload);
}

/// The start of a frame: its header, how many bytes the prefix and header took, and how many
/// payload bytes follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub header: Header,
    pub head_len: usize,
    pub payload_len: usize,
}

/// Decodes the length prefix and header at the front of `buf` without needing the payload, for
/// readers that put the payload straight where it belongs (a chunk buffer) instead of buffering
/// the whole frame. `Ok(None)`: more bytes are needed. The length is checked against `max` first.
pub fn decode_head(buf: &[u8], max: usize) -> Result<Option<Head>, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    // Every header fits in HEADER_ROOM; a frame may be shorter than that.
    let room = len.min(HEADER_ROOM);
    let head = &buf[LENGTH_PREFIX..buf.len().min(LENGTH_PREFIX + room)];
    let (header, rest) = match postcard::take_from_bytes::<Header>(head) {
        Ok(x) => x,
        // Cut short: wait for more, unless the header has had all the room it may take.
        Err(postcard::Error::DeserializeUnexpectedEnd) if head.len() < room => return Ok(None),
        Err(_) => return Err(FrameError::BadHeader),
    };
    let header_len = head.len() - rest.len();
    let payload_len = len - header_len;
    if !header.carries_payload() && payload_len != 0 {
        return Err(FrameError::UnexpectedPayload(header));
    }
    Ok(Some(Head {
        header,
        head_len: LENGTH_PREFIX + header_len,
        payload_len,
    }))
}

/// Splits one whole frame body off the front of `buf`: `Ok(None)` when more bytes are needed,
/// an error when the length prefix is over `max` (checked before anything is allocated).
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < LENGTH_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..LENGTH_PREFIX].try_into().unwrap()) as usize;
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    if buf.len() < LENGTH_PREFIX + len {
        buf.reserve(LENGTH_PREFIX + len - buf.len());
        return Ok(None);
    }
    let _ = buf.split_to(LENGTH_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_then_payload_decodes() {
        let mut out = BytesMut::new();
        let frame = Frame {
            header: Header::Chunk {
                index: ChunkIndex(7),
            },
            payload: Bytes::from_static(b"abc"),
        };
        encode_frame(&frame, &mut out);
        let body = split_frame(&mut out, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(decode_frame(body).unwrap(), frame);
        assert!(out.is_empty());
    }

    #[test]
    fn bitfields_round_trip_and_refuse_chunks_past_the_end() {
        let has = [
            true, false, false, true, true, false, false, false, true, true,
        ];
        let bytes = encode_bitfield(&has);
        assert_eq!(bytes, vec![0b1001_1000, 0b1100_0000]);
        assert_eq!(decode_bitfield(&bytes, 10).unwrap(), has);
        // Shorter: the rest are missing.
        assert_eq!(decode_bitfield(&[], 10).unwrap(), vec![false; 10]);
        // A bit for chunk 10 of a 10-chunk file, or a byte too many.
        assert_eq!(decode_bitfield(&[0, 0b0010_0000], 10), None);
        assert_eq!(decode_bitfield(&[0, 0, 0], 10), None);
    }

    #[test]
    fn a_protocol_1_reject_decodes_as_it_did() {
        // Protocol 1's `Reject { index: None, reason: VersionMismatch }`: variant indices of
        // `Header` and `RejectReason` must never move, so that old peers can read our answer.
        let mut out = BytesMut::new();
        encode_head(
            &Header::Reject {
                index: None,
                reason: RejectReason::VersionMismatch,
            },
            0,
            &mut out,
        );
        assert_eq!(&out[..], &[0, 0, 0, 3, 6, 0, 1]);
    }

    #[test]
    fn oversize_prefix_is_refused_before_reading() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            split_frame(&mut buf, 1000),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn payload_on_a_control_frame_is_an_error() {
        let mut out = BytesMut::new();
        encode_head(&Header::GetManifest, 2, &mut out);
        out.extend_from_slice(b"xx");
        let body = split_frame(&mut out, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(
            decode_frame(body),
            Err(FrameError::UnexpectedPayload(Header::GetManifest))
        );
    }

    #[test]
    fn heads_decode_without_their_payload() {
        let mut out = BytesMut::new();
        let frame = Frame {
            header: Header::Chunk {
                index: ChunkIndex(3),
            },
            payload: Bytes::from(vec![9u8; 1000]),
        };
        encode_frame(&frame, &mut out);
        let all = out.freeze();
        for cut in 0..5 {
            assert_eq!(
                decode_head(&all[..cut], MAX_FRAME_LEN),
                Ok(None),
                "cut at {cut}"
            );
        }
        let head = decode_head(&all[..40], MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(head.header, frame.header);
        assert_eq!(head.payload_len, 1000);
        assert_eq!(head.head_len + head.payload_len, all.len());
        assert!(matches!(
            decode_head(&all, 100),
            Err(FrameError::TooLong { .. })
        ));
        // A control frame is shorter than HEADER_ROOM and decodes from exactly its bytes.
        let mut out = BytesMut::new();
        encode_head(&Header::GetManifest, 0, &mut out);
        let head = decode_head(&out, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!((head.head_len, head.payload_len), (out.len(), 0));
    }
}
