//! Framed TCP messages between peers.
//!
//! On the wire a frame is a 4-byte big-endian length followed by that many bytes: a postcard
//! [`Header`], then for [`Header::Chunk`], [`Header::Manifest`] and [`Header::Bitfield`] the raw
//! payload. Keeping bulk data out of postcard lets the sender write a chunk straight from its
//! buffer and the receiver slice it out of the read buffer without a copy.
//!
//! A connection opens with `Hello` (file id and version) answered by `Welcome` or `Reject`. Then
//! the client asks `GetManifest` and `Request`s chunks, several in flight; the server answers each
//! with `Chunk` or `Reject`, in order. `Have`, `Bitfield` and `Cancel` are reserved for partial
//! seeding and decode today so that older peers can skip them later.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::manifest::{MAX_CHUNK_SIZE, MAX_ENCODED_LEN};
use crate::{ChunkIndex, FileId};

pub const PROTOCOL_VERSION: u16 = 1;
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
    /// The server has the file and speaks this version.
    Welcome {
        version: u16,
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
    /// Reserved for partial seeding: the sender now has this chunk.
    Have {
        index: ChunkIndex,
    },
    /// Reserved for partial seeding: payload is one bit per chunk, most significant bit first.
    Bitfield,
    /// Reserved: the client no longer wants this chunk.
    Cancel {
        index: ChunkIndex,
    },
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
    Busy,
    Protocol,
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
        })
    }
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
