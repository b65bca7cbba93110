//! Newtypes for the values that travel on the wire, so an id, a chunk index and a transaction id
//! cannot be swapped by mistake.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a file: the SHA-256 of its manifest's canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId(pub [u8; 32]);

impl FileId {
    /// Parses a full 64-character hex id.
    pub fn from_hex(s: &str) -> Option<FileId> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(FileId(out))
    }

    /// The 64 lowercase hex characters users see.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }

    /// The first eight hex characters, for log lines and fallback file names.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.short())
    }
}

/// A unique prefix of an id that a user typed: at least [`IdPrefix::MIN_LEN`] hex characters, as
/// with git. Stored lowercase.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct IdPrefix(String);

impl IdPrefix {
    pub const MIN_LEN: usize = 8;

    /// `None` unless `s` is 8 to 64 hex characters.
    pub fn parse(s: &str) -> Option<IdPrefix> {
        let ok =
            (Self::MIN_LEN..=64).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_hexdigit());
        ok.then(|| IdPrefix(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, id: &FileId) -> bool {
        // Decoded prefixes from the network are not re-validated by serde, so compare bytewise
        // and let anything malformed simply match nothing.
        id.to_hex().as_bytes().starts_with(self.0.as_bytes())
    }
}

/// The position of a chunk in a file, counted from zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct ChunkIndex(pub u32);

impl fmt::Display for ChunkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Chosen by the client for each tracker request and echoed in the reply.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct TransactionId(pub u32);

/// Proof that a source address can receive datagrams (BEP 15 style): the tracker hands it out in
/// reply to a connect request and checks it on every other request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ConnectionId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = FileId([0xab; 32]);
        assert_eq!(FileId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(FileId::from_hex(&id.to_hex().to_uppercase()), Some(id));
        assert_eq!(FileId::from_hex("zz"), None);
        assert_eq!(FileId::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn prefixes() {
        let id = FileId([0x3f; 32]);
        assert!(IdPrefix::parse("3F3F3F3F").unwrap().matches(&id));
        assert!(!IdPrefix::parse("3f3f3f30").unwrap().matches(&id));
        assert_eq!(IdPrefix::parse("3f3f3f3"), None, "too short");
        assert_eq!(IdPrefix::parse("3f3f3f3x"), None, "not hex");
        assert_eq!(IdPrefix::parse(&"a".repeat(65)), None, "too long");
    }
}
