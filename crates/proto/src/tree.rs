//! A folder shared as one thing: its tree manifest, and [`AnyManifest`], what an id stands for.
//!
//! A tree manifest lists every file (relative path, size, executable bit, chunk hashes) and every
//! empty folder, sorted by path. Chunks never straddle files (each file starts a new chunk, as in
//! BitTorrent v2), and chunk indices run over the whole tree, files in manifest order, so one
//! index space serves have-sets, requests and the scheduler; [`TreeManifest::locate`] maps a chunk
//! to its file. The canonical encoding is [`TREE_MAGIC`] then postcard, and the id is its SHA-256,
//! as for a file. The magic can never begin a valid file manifest (read as one, its second byte
//! gives a chunk size of 104), so one set of bytes decodes as one kind only.
//!
//! Everything a peer could use to write outside the destination, or to make us allocate without
//! bound, is refused at decode time, before anything touches the disk: see [`TreeError`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::folded::FoldedSet;
use crate::manifest::{
    chunk_count, id_of_encoding, ChunkHash, Manifest, ManifestError, MAX_CHUNKS, MAX_ENCODED_LEN,
};
use crate::names::printable;
use crate::relpath::{PathError, RelPath};
use crate::{ChunkIndex, FileId};

/// How every encoded tree manifest begins.
pub const TREE_MAGIC: &[u8] = b"shoal-tree";
/// The most entries (files and empty folders) a tree manifest may list.
pub const MAX_ENTRIES: usize = 1 << 20;

/// Why a tree manifest is refused; each is one sentence.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    #[error("the path {path:?} {why}")]
    BadPath { path: String, why: PathError },
    #[error("the entries are not sorted by path, or one is listed twice ({path:?})")]
    NotSorted { path: String },
    #[error("{a:?} and {b:?} differ only in case, so they would be one file on many file systems")]
    SameIgnoringCase { a: String, b: String },
    #[error("{inner:?} is inside {outer:?}, which is listed as a file or an empty folder")]
    InsideNonFolder { outer: String, inner: String },
    #[error("the tree lists more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("the tree has more than {MAX_CHUNKS} chunks in all; choose a larger chunk size")]
    TooManyChunks,
    #[error("the tree manifest's encoding is larger than {MAX_ENCODED_LEN} bytes")]
    TooLarge,
    #[error("{path:?}: {error}")]
    File { path: String, error: ManifestError },
    #[error("the manifest is not validly encoded")]
    Encoding,
}

/// One entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelPath,
    pub kind: EntryKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File {
        size: u64,
        executable: bool,
        hashes: Vec<ChunkHash>,
    },
    /// A folder with nothing in it (others are implied by the paths inside them).
    EmptyDir,
}

/// Where a chunk of a tree lies: in the `file`-th entry, at `offset`, `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub entry: u32,
    pub offset: u64,
    pub len: u32,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    chunk_size: u32,
    entries: Vec<Entry>,
}

/// Cheap to clone: a download hands its tree to several owners (the store, the scheduler, the
/// summary), and the largest tree takes over a hundred MiB, so they share one copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeManifest {
    chunk_size: u32,
    entries: Arc<Vec<Entry>>,
    /// For every file with at least one chunk: its first global chunk and its entry.
    starts: Arc<Vec<(u32, u32)>>,
    num_chunks: u32,
    size: u64,
}

impl TreeManifest {
    /// Builds a tree manifest, checking every rule of [`TreeError`] except the encoded size
    /// (checked by [`Self::encode_checked`] and at decode).
    pub fn new(chunk_size: u32, entries: Vec<Entry>) -> Result<TreeManifest, TreeError> {
        chunk_count(0, chunk_size).map_err(|error| TreeError::File {
            path: String::new(),
            error,
        })?;
        if entries.len() > MAX_ENTRIES {
            return Err(TreeError::TooManyEntries);
        }
        let shown = |p: &RelPath| printable(p.as_str());
        let mut folded = FoldedSet::with_capacity(entries.len());
        let (mut starts, mut next, mut size) = (Vec::new(), 0u64, 0u64);
        for (i, e) in entries.iter().enumerate() {
            // Paths deserialized from the wire did not pass through `RelPath::new`.
            RelPath::new(e.path.as_str().to_string()).map_err(|why| TreeError::BadPath {
                path: shown(&e.path),
                why,
            })?;
            if i > 0 && entries[i - 1].path >= e.path {
                return Err(TreeError::NotSorted {
                    path: shown(&e.path),
                });
            }
            if let Err(earlier) = folded.insert(e.path.as_str()) {
                return Err(TreeError::SameIgnoringCase {
                    a: printable(earlier),
                    b: shown(&e.path),
                });
            }
            if let EntryKind::File {
                size: s, hashes, ..
            } = &e.kind
            {
                let n = chunk_count(*s, chunk_size).map_err(|error| TreeError::File {
                    path: shown(&e.path),
                    error,
                })?;
                if hashes.len() != n as usize {
                    return Err(TreeError::File {
                        path: shown(&e.path),
                        error: ManifestError::WrongChunkCount {
                            size: *s,
                            listed: hashes.len(),
                            expected: n.into(),
                        },
                    });
                }
                if n > 0 {
                    starts.push((next as u32, i as u32));
                }
                next += u64::from(n);
                if next > u64::from(MAX_CHUNKS) {
                    return Err(TreeError::TooManyChunks);
                }
                size = size.checked_add(*s).ok_or(TreeError::TooManyChunks)?;
            }
        }
        // Every entry's folders must be folders: not a file, not an "empty" folder.
        for e in &entries {
            if let Some((outer, _)) = folded.find_ancestor(e.path.as_str()) {
                return Err(TreeError::InsideNonFolder {
                    outer: printable(outer),
                    inner: shown(&e.path),
                });
            }
        }
        Ok(TreeManifest {
            chunk_size,
            entries: Arc::new(entries),
            starts: Arc::new(starts),
            num_chunks: next as u32,
            size,
        })
    }

    /// The canonical encoding; the id is its hash.
    pub fn encode(&self) -> Vec<u8> {
        // The same layout as `Wire` (postcard writes a struct as the tuple of its fields).
        let wire = (self.chunk_size, &*self.entries);
        let body = postcard::to_allocvec(&wire).expect("encoding a tree into a Vec cannot fail");
        [TREE_MAGIC, &body].concat()
    }

    /// The encoding, if it is small enough for a peer to accept it.
    pub fn encode_checked(&self) -> Result<Vec<u8>, TreeError> {
        let bytes = self.encode();
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(TreeError::TooLarge);
        }
        Ok(bytes)
    }

    /// Decodes and checks a tree manifest (with its magic).
    pub fn decode(bytes: &[u8]) -> Result<TreeManifest, TreeError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(TreeError::TooLarge);
        }
        let body = bytes.strip_prefix(TREE_MAGIC).ok_or(TreeError::Encoding)?;
        // postcard builds the whole entry list before `new` can count it, and 16 MiB of 2-byte
        // entries would be millions of them: read the count from the front first.
        let (_chunk_size, rest) =
            postcard::take_from_bytes::<u32>(body).map_err(|_| TreeError::Encoding)?;
        let (count, _) = postcard::take_from_bytes::<u64>(rest).map_err(|_| TreeError::Encoding)?;
        if count > MAX_ENTRIES as u64 {
            return Err(TreeError::TooManyEntries);
        }
        let wire: Wire = postcard::from_bytes(body).map_err(|_| TreeError::Encoding)?;
        let tree = TreeManifest::new(wire.chunk_size, wire.entries)?;
        // Only the canonical encoding may stand for a tree, or one tree would have many ids.
        if tree.encode() != bytes {
            return Err(TreeError::Encoding);
        }
        Ok(tree)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn num_chunks(&self) -> u32 {
        self.num_chunks
    }

    /// Bytes of all files together.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many files (not folders) the tree holds.
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .count()
    }

    /// The first global chunk of every file with chunks, with its entry index.
    pub fn file_starts(&self) -> &[(u32, u32)] {
        &self.starts
    }

    /// Where chunk `index` lies; `None` past the end.
    pub fn locate(&self, index: ChunkIndex) -> Option<Span> {
        if index.0 >= self.num_chunks {
            return None;
        }
        let at = self.starts.partition_point(|(first, _)| *first <= index.0) - 1;
        let (first, entry) = self.starts[at];
        let EntryKind::File { size, .. } = self.entries[entry as usize].kind else {
            unreachable!("only files have chunks");
        };
        let offset = u64::from(index.0 - first) * u64::from(self.chunk_size);
        let len = (size - offset).min(u64::from(self.chunk_size)) as u32;
        Some(Span { entry, offset, len })
    }

    pub fn hash(&self, index: ChunkIndex) -> Option<&ChunkHash> {
        let span = self.locate(index)?;
        match &self.entries[span.entry as usize].kind {
            EntryKind::File { hashes, .. } => {
                hashes.get((span.offset / u64::from(self.chunk_size)) as usize)
            }
            EntryKind::EmptyDir => None,
        }
    }
}

/// What an id stands for: one file, or a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyManifest {
    File(Manifest),
    Tree(TreeManifest),
}

impl From<Manifest> for AnyManifest {
    fn from(m: Manifest) -> AnyManifest {
        AnyManifest::File(m)
    }
}

impl From<TreeManifest> for AnyManifest {
    fn from(t: TreeManifest) -> AnyManifest {
        AnyManifest::Tree(t)
    }
}

impl AnyManifest {
    /// Decodes either kind: bytes that begin with [`TREE_MAGIC`] are a tree, any others a file.
    pub fn decode(bytes: &[u8]) -> Result<AnyManifest, TreeError> {
        if bytes.starts_with(TREE_MAGIC) {
            return TreeManifest::decode(bytes).map(AnyManifest::Tree);
        }
        Manifest::decode(bytes)
            .map(AnyManifest::File)
            .map_err(|error| TreeError::File {
                path: String::new(),
                error,
            })
    }

    /// Decodes manifest bytes only if they hash to `id`.
    pub fn decode_verified(bytes: &[u8], id: &FileId) -> Option<AnyManifest> {
        (id_of_encoding(bytes) == *id)
            .then(|| AnyManifest::decode(bytes).ok())
            .flatten()
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            AnyManifest::File(m) => m.encode(),
            AnyManifest::Tree(t) => t.encode(),
        }
    }

    pub fn id(&self) -> FileId {
        id_of_encoding(&self.encode())
    }

    pub fn tree(&self) -> Option<&TreeManifest> {
        match self {
            AnyManifest::File(_) => None,
            AnyManifest::Tree(t) => Some(t),
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            AnyManifest::File(m) => m.size(),
            AnyManifest::Tree(t) => t.size(),
        }
    }

    pub fn chunk_size(&self) -> u32 {
        match self {
            AnyManifest::File(m) => m.chunk_size(),
            AnyManifest::Tree(t) => t.chunk_size(),
        }
    }

    pub fn num_chunks(&self) -> u32 {
        match self {
            AnyManifest::File(m) => m.num_chunks(),
            AnyManifest::Tree(t) => t.num_chunks(),
        }
    }

    /// Where a chunk lies; a single file is entry 0.
    pub fn locate(&self, index: ChunkIndex) -> Option<Span> {
        match self {
            AnyManifest::File(m) => (index.0 < m.num_chunks()).then(|| Span {
                entry: 0,
                offset: m.offset(index),
                len: m.chunk_len(index),
            }),
            AnyManifest::Tree(t) => t.locate(index),
        }
    }

    /// Length of a chunk; zero past the end.
    pub fn chunk_len(&self, index: ChunkIndex) -> u32 {
        self.locate(index).map_or(0, |s| s.len)
    }

    pub fn hash(&self, index: ChunkIndex) -> Option<&ChunkHash> {
        match self {
            AnyManifest::File(m) => m.hash(index),
            AnyManifest::Tree(t) => t.hash(index),
        }
    }

    /// Whether `len` bytes hashing to `hash` are chunk `index`.
    pub fn matches(&self, index: ChunkIndex, len: usize, hash: &ChunkHash) -> bool {
        self.hash(index) == Some(hash) && len == self.chunk_len(index) as usize
    }
}
