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

/// This protocol's version, the last byte of [`MAGIC`] as an ASCII digit.
pub const PROTOCOL_VERSION: u8 = 2;
/// Prefix of every tracker datagram: the protocol's name (`SHT`), then its version as one ASCII
/// digit. The name stays; a datagram with another version byte is answered with the bare magic
/// (4 bytes, never more than the request), from which its sender can tell which version we speak.
pub const MAGIC: [u8; 4] = [b'S', b'H', b'T', b'0' + PROTOCOL_VERSION];
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
    pub advertise: Option<Advertise>,
}

/// An address a peer asks to be handed out at instead of its datagrams' source IP. The tracker
/// takes it only if it is that source IP, or if `proof` shows the peer receives there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertise {
    pub ip: IpAddr,
    pub proof: Option<AddressProof>,
}

/// A connection id the tracker gave to a socket on the advertised IP, and that socket's UDP port:
/// only a host that receives at the IP can have one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressProof {
    pub port: u16,
    pub conn: ConnectionId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub id: FileId,
    pub size: u64,
    pub name: String,
    pub have: Have,
}

/// How much of a file a peer can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Have {
    /// Every chunk, verified.
    Complete,
    /// A download in progress: `bytes` verified so far.
    Partial { bytes: u64 },
}

impl Have {
    pub fn is_complete(self) -> bool {
        self == Have::Complete
    }
}

/// A partial file's progress, reported in heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub id: FileId,
    /// Bytes verified so far.
    pub bytes: u64,
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
    /// registered; a tracker that knows a different number answers `Unknown`. `progress` updates
    /// some of its partial files (as many as fit; a peer with more takes turns across heartbeats).
    Heartbeat {
        peer: PeerInfo,
        files: u32,
        progress: Vec<Progress>,
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
    /// Peers that have the whole file.
    pub seeders: u32,
    /// Peers that are downloading it (and serve what they have verified).
    pub leechers: u32,
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
    /// The peer address named is registered by another source (IP and UDP port), which alone
    /// may refresh, change or remove it.
    NotOwner,
    /// A name contains control characters or bidirectional-text overrides.
    UnprintableName,
    /// The advertised address is neither the sender's nor proved to receive.
    BadAdvertise,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorCode::BadConnection => "connection id rejected",
            ErrorCode::Full => "the tracker is full",
            ErrorCode::BadName => "file name rejected by the tracker",
            ErrorCode::RateLimited => "rate limited by the tracker",
            ErrorCode::NotOwner => {
                "that peer address is registered by another sender (another process or machine)"
            }
            ErrorCode::BadAdvertise => {
                "the advertised address is not this machine's as the tracker sees it, and could not be proved (give an address of this machine, or the one the tracker sees)"
            }
            ErrorCode::UnprintableName => {
                "file name rejected: it contains control characters or bidirectional-text overrides"
            }
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is over the maximum")]
    TooLong(usize),
    #[error("datagram does not start with the shoal tracker magic")]
    BadMagic,
    /// A shoal tracker datagram of another protocol version (the version, or `None` if its
    /// version byte is not a digit).
    #[error("datagram of shoal tracker protocol {}, this one speaks {PROTOCOL_VERSION}", version_text(*.0))]
    OtherVersion(Option<u8>),
    #[error("malformed datagram")]
    Malformed,
}

/// A version for a sentence: its number, or "another version".
pub fn version_text(v: Option<u8>) -> String {
    v.map_or_else(|| "of another version".to_string(), |v| v.to_string())
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_extend(msg, MAGIC.to_vec()).expect("encoding into a Vec cannot fail")
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let Some(rest) = bytes.strip_prefix(&MAGIC[..]) else {
        return Err(match bytes {
            [b'S', b'H', b'T', v, ..] => {
                DecodeError::OtherVersion(v.is_ascii_digit().then(|| v - b'0'))
            }
            _ => DecodeError::BadMagic,
        });
    };
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
    /// Replaces the contents of `out` with [`Response::encode`]'s bytes, reusing its allocation:
    /// for a server that answers many datagrams with one buffer.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match &self.body {
            ResponseBody::Peers {
                interval_secs,
                peers,
            } => Response::encode_peers_into(self.txn, *interval_secs, peers.iter(), out),
            _ => {
                out.clear();
                out.extend_from_slice(&MAGIC);
                *out = postcard::to_extend(self, std::mem::take(out))
                    .expect("encoding into a Vec cannot fail");
            }
        }
    }

    /// Replaces the contents of `out` with the encoding of a peer list, `Response { txn, body:
    /// ResponseBody::Peers { interval_secs, peers } }`, from borrowed addresses: so that a tracker
    /// can answer from its own tables without copying addresses into a list first.
    pub fn encode_peers_into<'a>(
        txn: TransactionId,
        interval_secs: u32,
        peers: impl ExactSizeIterator<Item = &'a SocketAddr>,
        out: &mut Vec<u8>,
    ) {
        // A busy tracker's most frequent reply, where serde's per-byte calls for every address
        // cost more than the rest of the request: everything up to the list goes through
        // postcard (an empty list encodes as its length, one zero byte), then the length and the
        // addresses are written as postcard would (the tests compare the two).
        out.clear();
        out.extend_from_slice(&MAGIC);
        let head = Response {
            txn,
            body: ResponseBody::Peers {
                interval_secs,
                peers: Vec::new(),
            },
        };
        *out = postcard::to_extend(&head, std::mem::take(out))
            .expect("encoding into a Vec cannot fail");
        out.pop();
        let count = peers.len();
        push_varint(out, count as u64);
        // Written into room made beforehand, then cut to what was used.
        let start = out.len();
        out.resize(start + count * MAX_ADDR_LEN, 0);
        let mut used = 0;
        let room = &mut out[start..];
        // `take`: an iterator that yields more than it said cannot write out of bounds.
        for peer in peers.take(count) {
            let slot = (&mut room[used..used + MAX_ADDR_LEN]).try_into();
            used += encode_addr(peer, slot.expect("room was made for every address"));
        }
        out.truncate(start + used);
    }
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        decode(bytes)
    }
}

/// The most bytes one address of a peer list takes: variant, IPv6 octets, a 3-byte port.
const MAX_ADDR_LEN: usize = 1 + 16 + 3;

/// Writes `addr` as serde and postcard do (an enum variant index, then the IP's octets as a tuple
/// and the port as a varint; no flow label or scope), returning the bytes used.
#[inline]
fn encode_addr(addr: &SocketAddr, room: &mut [u8; MAX_ADDR_LEN]) -> usize {
    let at = match addr {
        SocketAddr::V4(a) => {
            room[0] = 0;
            room[1..5].copy_from_slice(&a.ip().octets());
            5
        }
        SocketAddr::V6(a) => {
            room[0] = 1;
            room[1..17].copy_from_slice(&a.ip().octets());
            17
        }
    };
    // The port's varint, 1 to 3 bytes, without branches (ports are all over the place): all
    // three are written, the next address overwrites those not used.
    let port = addr.port();
    let (more1, more2) = (u8::from(port >= 0x80), u8::from(port >= 0x4000));
    room[at] = port as u8 | more1 << 7;
    room[at + 1] = (port >> 7) as u8 & 0x7f | more2 << 7;
    room[at + 2] = (port >> 14) as u8;
    at + 1 + usize::from(more1) + usize::from(more2)
}

/// Postcard's variable-length integer: seven bits a byte, least significant first, the high bit
/// set on all but the last.
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
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
    fn encode_into_gives_the_same_bytes_and_reuses_the_buffer() {
        let v6 = std::net::SocketAddrV6::new([0xfd00, 0, 0, 0, 0, 0, 0, 1].into(), 80, 7, 3);
        let mut replies = vec![
            ResponseBody::Peers {
                interval_secs: 10,
                peers: vec![
                    SocketAddr::from(([127, 0, 0, 1], 7001)),
                    SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 1], 65535)),
                    v6.into(),
                ],
            },
            ResponseBody::Peers {
                interval_secs: u32::MAX,
                peers: Vec::new(),
            },
            ResponseBody::Unknown,
            ResponseBody::Connected {
                conn: ConnectionId(u64::MAX),
            },
        ];
        // Lengths and ports across the varint boundaries (1, 2 and 3 bytes).
        for n in [1, 127, 128, 200] {
            let peers = (0..n)
                .map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], (i * 331) as u16)))
                .collect();
            replies.push(ResponseBody::Peers {
                interval_secs: 300,
                peers,
            });
        }
        // The list of a full datagram's worth of addresses (`encoded_len` counts the same way).
        let many: Vec<SocketAddr> = (0..300u16)
            .map(|p| SocketAddr::from(([1, 2, 3, 4], p.wrapping_mul(221))))
            .collect();
        assert!(encoded_len(&many) > MAX_DATAGRAM);
        replies.push(ResponseBody::Peers {
            interval_secs: 1,
            peers: many,
        });
        let mut out = vec![0xAA; 7];
        for (i, body) in replies.into_iter().enumerate() {
            let r = Response {
                txn: TransactionId((i as u32).wrapping_mul(0x9e37_79b9)),
                body,
            };
            r.encode_into(&mut out);
            assert_eq!(out, r.encode());
        }
    }

    proptest::proptest! {
        #[test]
        fn peer_lists_encode_as_postcard_does(
            txn: u32,
            interval_secs: u32,
            peers in proptest::collection::vec(proptest::prelude::any::<SocketAddr>(), 0..70),
        ) {
            let r = Response {
                txn: TransactionId(txn),
                body: ResponseBody::Peers { interval_secs, peers },
            };
            let mut out = Vec::new();
            r.encode_into(&mut out);
            proptest::prop_assert_eq!(out, r.encode());
        }
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

    #[test]
    fn another_version_is_named_not_malformed() {
        assert_eq!(&MAGIC, b"SHT2");
        assert_eq!(
            Response::decode(b"SHT1\x05\x00"),
            Err(DecodeError::OtherVersion(Some(1)))
        );
        assert_eq!(
            Request::decode(b"SHT9"),
            Err(DecodeError::OtherVersion(Some(9)))
        );
        assert_eq!(
            Request::decode(b"SHTx"),
            Err(DecodeError::OtherVersion(None))
        );
        assert_eq!(Request::decode(b"SHT"), Err(DecodeError::BadMagic));
        // The tracker's answer to another version, the bare magic, is no message of ours.
        assert_eq!(Response::decode(&MAGIC), Err(DecodeError::Malformed));
    }
}
