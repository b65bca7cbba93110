//! UDP datagrams between peers and the tracker.
//!
//! Every datagram is [`MAGIC`] followed by a postcard-encoded [`Request`] or [`Response`]. Every
//! request carries a [`TransactionId`] that the reply echoes, and every request except `Connect`
//! carries the [`ConnectionId`] the tracker handed out for the sender's address: proof that the
//! address really receives, so a forged source cannot turn the tracker into an amplifier.
//! Requests are idempotent, so a client may simply resend when a reply does not come.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{ConnectionId, FileId, IdPrefix, TransactionId};

/// Prefix of every tracker datagram: protocol name and version.
pub const MAGIC: [u8; 4] = *b"SHT1";
/// No datagram in either direction is larger, so nothing fragments on a LAN.
pub const MAX_DATAGRAM: usize = 1200;
/// Longest file name the tracker stores, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Padding in a connect request, so that the reply is never larger than the request.
pub const CONNECT_PADDING: usize = 24;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub txn: TransactionId,
    pub conn: ConnectionId,
    pub body: RequestBody,
}

/// Who a peer is to the tracker: the datagram's source IP (or the advertised one) and the TCP port
/// it serves on. Several seeders on one machine differ by port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub port: u16,
    /// An explicit address override (`--advertise`) for NAT and multi-homed hosts.
    pub advertise: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub id: FileId,
    pub size: u64,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    All,
    /// Case-insensitive substring of a name.
    NameContains(String),
    /// Exactly this name.
    NameIs(String),
    IdPrefix(IdPrefix),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Asks for a connection id. The padding makes the request as large as the reply.
    Connect {
        padding: [u8; CONNECT_PADDING],
    },
    /// Registers files for this peer (adding to those it has). Long lists go in several requests.
    Announce {
        peer: PeerInfo,
        files: Vec<FileEntry>,
    },
    /// Refreshes all of this peer's files at once. `files` is how many the peer believes it has
    /// registered; a tracker that knows a different number answers `Unknown`.
    Heartbeat {
        peer: PeerInfo,
        files: u32,
    },
    /// Removes this peer, or only the listed files of it.
    Unregister {
        peer: PeerInfo,
        files: Option<Vec<FileId>>,
    },
    GetPeers {
        file: FileId,
    },
    /// Lists files, one page at a time; `cursor` comes from the previous page's `next`.
    List {
        filter: Filter,
        cursor: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub txn: TransactionId,
    pub body: ResponseBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub id: FileId,
    pub size: u64,
    pub seeders: u32,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    Connected {
        conn: ConnectionId,
    },
    /// Done; heartbeat at least every `interval_secs`.
    Ack {
        interval_secs: u32,
    },
    /// The tracker does not know this peer (it restarted, or dropped it): announce again.
    Unknown,
    Peers {
        interval_secs: u32,
        peers: Vec<SocketAddr>,
    },
    Files {
        entries: Vec<ListEntry>,
        next: Option<u32>,
    },
    Error {
        code: ErrorCode,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The connection id is missing, forged or expired: connect again.
    BadConnection,
    /// A cap was reached (files per peer, peers per file, total files).
    Full,
    /// The name is empty or longer than [`MAX_NAME_LEN`].
    BadName,
    /// Too many requests from this address.
    RateLimited,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorCode::BadConnection => "connection id rejected",
            ErrorCode::Full => "the tracker is full",
            ErrorCode::BadName => "file name rejected by the tracker",
            ErrorCode::RateLimited => "rate limited by the tracker",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is over the maximum")]
    TooLong(usize),
    #[error("datagram does not start with the shoal tracker magic")]
    BadMagic,
    #[error("malformed datagram")]
    Malformed,
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_extend(msg, MAGIC.to_vec()).expect("encoding into a Vec cannot fail")
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let rest = bytes
        .strip_prefix(&MAGIC[..])
        .ok_or(DecodeError::BadMagic)?;
    match postcard::take_from_bytes(rest) {
        Ok((msg, [])) => Ok(msg),
        _ => Err(DecodeError::Malformed),
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        decode(bytes)
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        decode(bytes)
    }
}

/// Encoded size of a list entry, so a tracker can fill a page without going over [`MAX_DATAGRAM`].
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_reply_is_not_larger_than_request() {
        let req = Request {
            txn: TransactionId(u32::MAX),
            conn: ConnectionId(0),
            body: RequestBody::Connect {
                padding: [0; CONNECT_PADDING],
            },
        };
        let resp = Response {
            txn: TransactionId(u32::MAX),
            body: ResponseBody::Connected {
                conn: ConnectionId(u64::MAX),
            },
        };
        assert!(resp.encode().len() <= req.encode().len());
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = Response {
            txn: TransactionId(1),
            body: ResponseBody::Unknown,
        }
        .encode();
        bytes.push(0);
        assert_eq!(Response::decode(&bytes), Err(DecodeError::Malformed));
        assert_eq!(Response::decode(b"nope"), Err(DecodeError::BadMagic));
    }
}
