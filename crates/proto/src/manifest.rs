//! How a file is cut into chunks, its manifest, and its [`FileId`].
//!
//! The manifest lists the file's size, its chunk size and the SHA-256 of every chunk. Its canonical
//! encoding is postcard; the file's id is the SHA-256 of those bytes. Trust flows only from the id:
//! a leecher hashes the manifest bytes a peer sent and compares them with the id before it decodes
//! them, then checks every chunk against the manifest.

use serde::{Deserialize, Serialize};

use crate::{ChunkIndex, FileId};

pub const MIN_CHUNK_SIZE: u32 = 16 * 1024;
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
pub const DEFAULT_CHUNK_SIZE: u32 = 512 * 1024;
/// The most chunks a manifest may list, so that an encoded manifest (32 bytes a chunk) always fits
/// in one peer frame. At the default chunk size this is a 256 GiB file.
pub const MAX_CHUNKS: u32 = 1 << 19;
/// An upper bound on the encoded size of any valid manifest.
pub const MAX_ENCODED_LEN: usize = MAX_CHUNKS as usize * 32 + 32;

/// The SHA-256 of one chunk.
pub type ChunkHash = [u8; 32];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("chunk size {0} is not a power of two between 16 KiB and 16 MiB")]
    BadChunkSize(u32),
    #[error("a {size}-byte file needs {needed} chunks of {chunk_size} bytes, more than the {max} a manifest may list; choose a larger chunk size", max = MAX_CHUNKS)]
    TooManyChunks {
        size: u64,
        chunk_size: u32,
        needed: u64,
    },
    #[error("the manifest lists {listed} chunk hashes but a {size}-byte file has {expected}")]
    WrongChunkCount {
        size: u64,
        listed: usize,
        expected: u64,
    },
    #[error("the manifest is not validly encoded")]
    Encoding,
}

/// Checks a chunk size and returns how many chunks a file of `size` bytes has.
pub fn chunk_count(size: u64, chunk_size: u32) -> Result<u32, ManifestError> {
    if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(ManifestError::BadChunkSize(chunk_size));
    }
    let needed = size.div_ceil(u64::from(chunk_size));
    if needed > u64::from(MAX_CHUNKS) {
        return Err(ManifestError::TooManyChunks {
            size,
            chunk_size,
            needed,
        });
    }
    Ok(needed as u32)
}

/// SHA-256 of a chunk's bytes.
pub fn hash_chunk(data: &[u8]) -> ChunkHash {
    crate::sha256::digest(data)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    size: u64,
    chunk_size: u32,
    hashes: Vec<ChunkHash>,
}

impl Manifest {
    /// Builds a manifest, checking that the hashes fit the size and chunk size.
    pub fn new(
        size: u64,
        chunk_size: u32,
        hashes: Vec<ChunkHash>,
    ) -> Result<Manifest, ManifestError> {
        let expected = chunk_count(size, chunk_size)?;
        if hashes.len() != expected as usize {
            return Err(ManifestError::WrongChunkCount {
                size,
                listed: hashes.len(),
                expected: expected.into(),
            });
        }
        Ok(Manifest {
            size,
            chunk_size,
            hashes,
        })
    }

    /// The manifest of an in-memory byte string (tests and small tools).
    pub fn of_bytes(data: &[u8], chunk_size: u32) -> Result<Manifest, ManifestError> {
        chunk_count(data.len() as u64, chunk_size)?;
        let hashes = data.chunks(chunk_size as usize).map(hash_chunk).collect();
        Manifest::new(data.len() as u64, chunk_size, hashes)
    }

    /// The canonical encoding; the id is its hash.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding a manifest into a Vec cannot fail")
    }

    /// Decodes and validates a manifest. Callers that fetched it from a peer check the bytes
    /// against the id first ([`Manifest::decode_verified`]).
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(ManifestError::Encoding);
        }
        let m: Manifest = postcard::from_bytes(bytes).map_err(|_| ManifestError::Encoding)?;
        let m = Manifest::new(m.size, m.chunk_size, m.hashes)?;
        // postcard also accepts over-long varints and ignores trailing bytes; only the canonical
        // encoding may stand for a manifest, or one file would have many ids.
        if m.encode() != bytes {
            return Err(ManifestError::Encoding);
        }
        Ok(m)
    }

    /// Decodes manifest bytes only if they hash to `id`.
    pub fn decode_verified(bytes: &[u8], id: &FileId) -> Option<Manifest> {
        (id_of_encoding(bytes) == *id)
            .then(|| Manifest::decode(bytes).ok())
            .flatten()
    }

    pub fn id(&self) -> FileId {
        id_of_encoding(&self.encode())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn num_chunks(&self) -> u32 {
        self.hashes.len() as u32
    }

    pub fn hash(&self, index: ChunkIndex) -> Option<&ChunkHash> {
        self.hashes.get(index.0 as usize)
    }

    /// Byte offset of a chunk in the file.
    pub fn offset(&self, index: ChunkIndex) -> u64 {
        u64::from(index.0) * u64::from(self.chunk_size)
    }

    /// Length of a chunk: the chunk size, except for a short last chunk. Zero past the end.
    pub fn chunk_len(&self, index: ChunkIndex) -> u32 {
        let start = self.offset(index);
        if start >= self.size {
            return 0;
        }
        (self.size - start).min(u64::from(self.chunk_size)) as u32
    }

    /// Whether a chunk of `len` bytes whose SHA-256 is `hash` is chunk `index` of this file. The
    /// caller hashes (see [`crate::sha256::digest_pair`] for two chunks at once).
    pub fn matches(&self, index: ChunkIndex, len: usize, hash: &ChunkHash) -> bool {
        self.hash(index) == Some(hash) && len == self.chunk_len(index) as usize
    }
}

/// The id that manifest bytes stand for.
pub fn id_of_encoding(bytes: &[u8]) -> FileId {
    FileId(crate::sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_edges() {
        let cs = MIN_CHUNK_SIZE;
        for (size, chunks) in [
            (0u64, 0u32),
            (1, 1),
            (cs as u64, 1),
            (cs as u64 + 1, 2),
            (3 * cs as u64 - 7, 3),
        ] {
            let data = vec![7u8; size as usize];
            let m = Manifest::of_bytes(&data, cs).unwrap();
            assert_eq!(m.num_chunks(), chunks, "size {size}");
            let total: u64 = (0..chunks)
                .map(|i| u64::from(m.chunk_len(ChunkIndex(i))))
                .sum();
            assert_eq!(total, size);
            for i in 0..chunks {
                let idx = ChunkIndex(i);
                let start = m.offset(idx) as usize;
                let chunk = &data[start..start + m.chunk_len(idx) as usize];
                let short = &chunk[..chunk.len() - 1];
                assert!(m.matches(idx, chunk.len(), &hash_chunk(chunk)));
                assert!(!m.matches(idx, short.len(), &hash_chunk(short)));
                assert!(!m.matches(idx, chunk.len(), &hash_chunk(short)));
            }
            assert!(!m.matches(ChunkIndex(chunks), 0, &hash_chunk(b"")));
        }
    }

    #[test]
    fn id_depends_on_every_field() {
        let a = Manifest::of_bytes(b"hello", MIN_CHUNK_SIZE).unwrap();
        let b = Manifest::of_bytes(b"hellp", MIN_CHUNK_SIZE).unwrap();
        let c = Manifest::of_bytes(b"hello", MIN_CHUNK_SIZE * 2).unwrap();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(
            Manifest::decode_verified(&a.encode(), &a.id()),
            Some(a.clone())
        );
        assert_eq!(Manifest::decode_verified(&a.encode(), &b.id()), None);
    }

    #[test]
    fn bad_chunk_sizes() {
        for cs in [
            0,
            1,
            MIN_CHUNK_SIZE / 2,
            MIN_CHUNK_SIZE + 1,
            MAX_CHUNK_SIZE * 2,
        ] {
            assert_eq!(chunk_count(10, cs), Err(ManifestError::BadChunkSize(cs)));
        }
        assert!(matches!(
            chunk_count(u64::MAX, MIN_CHUNK_SIZE),
            Err(ManifestError::TooManyChunks { .. })
        ));
    }

    #[test]
    fn decode_rejects_inconsistent_manifests() {
        let bad = Manifest {
            size: 100,
            chunk_size: MIN_CHUNK_SIZE,
            hashes: vec![],
        };
        assert!(matches!(
            Manifest::decode(&bad.encode()),
            Err(ManifestError::WrongChunkCount { .. })
        ));
    }
}
