//! A file this peer shares, complete or still being downloaded: its manifest, the chunks it can
//! vouch for ([`HaveSet`]), and, once complete, the check that withdraws it when it changes on
//! disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use shoal_proto::manifest::chunk_count;
use shoal_proto::tracker::FileEntry;
use shoal_proto::{ChunkIndex, FileId, Manifest};
use tokio::sync::watch;

use super::{hash_chunks, HaveSet, StoreError};
use crate::reveal::Reveal;

/// What we remember of a file's metadata to notice that it changed under us.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Snapshot {
    len: u64,
    modified: Option<SystemTime>,
}

impl Snapshot {
    fn of(file: &File) -> io::Result<Snapshot> {
        let meta = file.metadata()?;
        Ok(Snapshot {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the file changed on disk since it was hashed")]
    Changed,
    #[error("no such chunk")]
    NoSuchChunk,
    #[error("chunk {0} is not verified here yet")]
    NotHave(ChunkIndex),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A file this peer shares, with its manifest: either complete (hashed, or downloaded and
/// finished), or a download in progress whose `.part` is being written, of which only verified
/// and written chunks are in [`SharedFile::has`]. The same value goes from the second kind to the
/// first when the download finishes ([`SharedFile::now_complete`]), so connections serving it
/// carry on.
pub struct SharedFile {
    pub id: FileId,
    pub name: String,
    pub manifest: Manifest,
    /// The manifest's canonical encoding, sent as is to every peer that asks.
    pub manifest_bytes: Bytes,
    /// Where the complete file is (for a download in progress: where it will be).
    pub path: PathBuf,
    /// Open for reading; for a download, the `.part` (renaming it keeps the descriptor valid).
    file: File,
    have: HaveSet,
    /// Bytes of the chunks in `have`.
    have_bytes: AtomicU64,
    /// Bumped after every chunk added, so that connections serving the file announce it.
    news: watch::Sender<()>,
    /// What the complete file looked like when it was hashed or finished. A download in progress
    /// has none: its size and time change with every write, and only its have-set says what
    /// may be served.
    snapshot: OnceLock<Snapshot>,
    withdrawn: AtomicBool,
    /// Chunks sent to other peers.
    uploaded: AtomicU64,
    /// The super-seeding policy shared by the connections serving the complete file.
    reveal: OnceLock<Mutex<Reveal>>,
}

impl SharedFile {
    /// Opens and hashes a file. `progress` grows by the bytes hashed.
    pub fn hash(
        path: &Path,
        chunk_size: u32,
        progress: &AtomicU64,
    ) -> Result<SharedFile, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let before = Snapshot::of(&file).map_err(|e| StoreError::io(path, e))?;
        if file
            .metadata()
            .map_err(|e| StoreError::io(path, e))?
            .is_dir()
        {
            return Err(StoreError::IsDir {
                path: path.to_path_buf(),
            });
        }
        chunk_count(before.len, chunk_size).map_err(|error| StoreError::Manifest {
            path: path.to_path_buf(),
            error,
        })?;
        let hashes = hash_chunks(
            &file,
            before.len,
            chunk_size,
            progress,
            &super::hash::NEVER_STOP,
        )
        .map_err(|e| match e.kind() {
            // The file shrank under us.
            std::io::ErrorKind::UnexpectedEof => StoreError::ChangedWhileHashing {
                path: path.to_path_buf(),
            },
            _ => StoreError::io(path, e),
        })?;
        if Snapshot::of(&file).map_err(|e| StoreError::io(path, e))? != before {
            return Err(StoreError::ChangedWhileHashing {
                path: path.to_path_buf(),
            });
        }
        let manifest = Manifest::new(before.len, chunk_size, hashes).map_err(|error| {
            StoreError::Manifest {
                path: path.to_path_buf(),
                error,
            }
        })?;
        let name = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        Ok(SharedFile::from_parts(
            path,
            name,
            manifest,
            file,
            Some(before),
            None,
        ))
    }

    /// A file a download has just verified chunk by chunk: no need to hash it again.
    pub fn verified(
        path: &Path,
        name: String,
        manifest: Manifest,
    ) -> Result<SharedFile, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let snapshot = Snapshot::of(&file).map_err(|e| StoreError::io(path, e))?;
        Ok(SharedFile::from_parts(
            path,
            name,
            manifest,
            file,
            Some(snapshot),
            None,
        ))
    }

    /// A download in progress: `file` reads its `.part`, `have` says which chunks in it are
    /// verified (those found on disk when resuming). `dest` is where the file will be.
    pub fn in_progress(
        dest: &Path,
        name: String,
        manifest: Manifest,
        file: File,
        have: &[bool],
    ) -> SharedFile {
        SharedFile::from_parts(dest, name, manifest, file, None, Some(have))
    }

    fn from_parts(
        path: &Path,
        name: String,
        manifest: Manifest,
        file: File,
        snapshot: Option<Snapshot>,
        have: Option<&[bool]>,
    ) -> SharedFile {
        let manifest_bytes = Bytes::from(manifest.encode());
        let have = have.map_or_else(|| HaveSet::full(manifest.num_chunks()), HaveSet::new);
        let have_bytes = (0..manifest.num_chunks())
            .map(ChunkIndex)
            .filter(|i| have.has(*i))
            .map(|i| u64::from(manifest.chunk_len(i)))
            .sum();
        SharedFile {
            id: shoal_proto::manifest::id_of_encoding(&manifest_bytes),
            name,
            manifest,
            manifest_bytes,
            path: path.to_path_buf(),
            file,
            have,
            have_bytes: AtomicU64::new(have_bytes),
            news: watch::channel(()).0,
            snapshot: snapshot.map_or_else(OnceLock::new, OnceLock::from),
            withdrawn: AtomicBool::new(false),
            uploaded: AtomicU64::new(0),
            reveal: OnceLock::new(),
        }
    }

    /// Whether this peer can vouch for the chunk (verified, and written where it is read from).
    pub fn has(&self, index: ChunkIndex) -> bool {
        self.have.has(index)
    }

    pub fn have(&self) -> &HaveSet {
        &self.have
    }

    /// Every chunk is verified (the download may still be renaming its file).
    pub fn is_full(&self) -> bool {
        self.have.is_full()
    }

    /// Bytes verified so far.
    pub fn have_bytes(&self) -> u64 {
        self.have_bytes.load(Ordering::Relaxed)
    }

    /// Records a chunk the download has verified and written, and tells every connection serving
    /// the file. Call it only after the write: from now on the chunk is served.
    pub fn add_verified(&self, index: ChunkIndex) {
        if self.have.insert(index) {
            self.have_bytes
                .fetch_add(u64::from(self.manifest.chunk_len(index)), Ordering::Relaxed);
            self.news.send_replace(());
        }
    }

    /// Changes whenever a chunk is added.
    pub fn news(&self) -> watch::Receiver<()> {
        self.news.subscribe()
    }

    /// The download finished: the file is in place, complete and synced. From now on it is
    /// checked for changes as any complete file.
    pub fn now_complete(&self) -> io::Result<()> {
        assert!(self.is_full(), "only a complete download is complete");
        let _ = self.snapshot.set(Snapshot::of(&self.file)?);
        Ok(())
    }

    /// The reveal policy of a file that has every chunk; `None` while it lacks some (then it
    /// advertises all it has).
    pub fn reveal(&self) -> Option<&Mutex<Reveal>> {
        self.is_full().then(|| {
            self.reveal.get_or_init(|| {
                Mutex::new(Reveal::new(self.manifest.num_chunks(), fastrand::u64(..)))
            })
        })
    }

    /// Counts a chunk sent to another peer.
    pub fn count_upload(&self) {
        self.uploaded.fetch_add(1, Ordering::Relaxed);
    }

    /// Chunks sent to other peers so far.
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    pub fn entry(&self) -> FileEntry {
        FileEntry {
            id: self.id,
            size: self.manifest.size(),
            name: self.name.clone(),
            have: match self.partial_bytes() {
                None => shoal_proto::tracker::Have::Complete,
                Some(bytes) => shoal_proto::tracker::Have::Partial { bytes },
            },
        }
    }

    /// `None` for a complete file; for a download in progress, the bytes verified so far.
    pub fn partial_bytes(&self) -> Option<u64> {
        match self.snapshot.get() {
            Some(_) => None,
            None => Some(self.have_bytes()),
        }
    }

    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::Relaxed)
    }

    /// Fails (and withdraws the file, logging why, the first time) if the file's size or
    /// modification time is no longer what was hashed. A download in progress passes (its
    /// have-set, not its metadata, says what may be served).
    pub fn check(&self) -> Result<(), ServeError> {
        if self.is_withdrawn() {
            return Err(ServeError::Changed);
        }
        let Some(snapshot) = self.snapshot.get() else {
            return Ok(());
        };
        if Snapshot::of(&self.file).ok() != Some(*snapshot) {
            if !self.withdrawn.swap(true, Ordering::Relaxed) {
                tracing::warn!(file = %self.id.short(), path = %self.path.display(), "the file changed on disk since it was hashed; no longer serving it");
            }
            return Err(ServeError::Changed);
        }
        Ok(())
    }

    /// The open file, for sending chunks straight from the page cache.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Asks the kernel to start reading a chunk into the page cache (never blocks for long), so
    /// that `sendfile` finds it there instead of blocking a runtime thread on the disk.
    pub fn prefetch(&self, index: ChunkIndex) {
        let len = self.manifest.chunk_len(index);
        if len == 0 {
            // Not a chunk of this file (a length of 0 would mean "to the end").
            return;
        }
        // Advice only: a failure costs the head start, nothing else.
        let _ = rustix::fs::fadvise(
            &self.file,
            self.manifest.offset(index),
            std::num::NonZeroU64::new(u64::from(len)),
            rustix::fs::Advice::WillNeed,
        );
    }

    /// Reads one chunk (blocking). If the file's size or modification time is no longer what was
    /// hashed, the file is withdrawn: from then on every read fails with [`ServeError::Changed`].
    /// A chunk not verified here is never read.
    pub fn read_chunk(&self, index: ChunkIndex) -> Result<Bytes, ServeError> {
        self.check()?;
        let len = self.manifest.chunk_len(index) as usize;
        if len == 0 {
            return Err(ServeError::NoSuchChunk);
        }
        if !self.has(index) {
            return Err(ServeError::NotHave(index));
        }
        let mut buf = BytesMut::zeroed(len);
        let read = self
            .file
            .read_exact_at(&mut buf, self.manifest.offset(index));
        // Checked after the read too, so a write that raced with it is caught.
        self.check()?;
        read?;
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_matches_the_in_memory_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, &data).unwrap();
        let progress = AtomicU64::new(0);
        let shared = SharedFile::hash(&path, 16 * 1024, &progress).unwrap();
        assert_eq!(
            shared.manifest,
            Manifest::of_bytes(&data, 16 * 1024).unwrap()
        );
        assert_eq!(progress.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(
            &shared.read_chunk(ChunkIndex(6)).unwrap()[..],
            &data[6 * 16384..]
        );
        assert!(matches!(
            shared.read_chunk(ChunkIndex(7)),
            Err(ServeError::NoSuchChunk)
        ));
    }

    /// A download in progress serves only the chunks it verified, is not withdrawn while its
    /// `.part` changes under the writes, and is checked like any complete file once finished.
    #[test]
    fn a_download_in_progress_serves_only_verified_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 239) as u8).collect();
        std::fs::write(&path, vec![0u8; data.len()]).unwrap();
        let manifest = Manifest::of_bytes(&data, 16 * 1024).unwrap();
        let file = SharedFile::in_progress(
            &dir.path().join("f"),
            "f".into(),
            manifest,
            File::open(&path).unwrap(),
            &[false, false, false],
        );
        let news = file.news();
        assert!(matches!(
            file.read_chunk(ChunkIndex(1)),
            Err(ServeError::NotHave(ChunkIndex(1)))
        ));
        assert_eq!(file.partial_bytes(), Some(0));
        // The download writes chunk 1, then records it: the write changed size and time.
        std::fs::write(&path, &data).unwrap();
        file.add_verified(ChunkIndex(1));
        assert!(news.has_changed().unwrap());
        assert_eq!(
            &file.read_chunk(ChunkIndex(1)).unwrap()[..],
            &data[16384..32768]
        );
        assert!(matches!(
            file.read_chunk(ChunkIndex(0)),
            Err(ServeError::NotHave(_))
        ));
        assert_eq!(file.partial_bytes(), Some(16384));
        // What the announcer registers: a partial peer, with its progress.
        assert_eq!(
            file.entry().have,
            shoal_proto::tracker::Have::Partial { bytes: 16384 }
        );
        assert!(file.reveal().is_none(), "no reveal policy while incomplete");
        file.add_verified(ChunkIndex(0));
        file.add_verified(ChunkIndex(2));
        assert!(file.is_full() && file.reveal().is_some());
        file.now_complete().unwrap();
        assert_eq!(file.partial_bytes(), None);
        assert_eq!(file.entry().have, shoal_proto::tracker::Have::Complete);
        std::fs::write(&path, vec![1u8; 50_000]).unwrap();
        assert!(matches!(
            file.read_chunk(ChunkIndex(0)),
            Err(ServeError::Changed)
        ));
    }

    #[test]
    fn a_changed_file_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, vec![1u8; 40_000]).unwrap();
        let shared = SharedFile::hash(&path, 16 * 1024, &AtomicU64::new(0)).unwrap();
        std::fs::write(&path, vec![2u8; 50_000]).unwrap();
        assert!(matches!(
            shared.read_chunk(ChunkIndex(0)),
            Err(ServeError::Changed)
        ));
        assert!(shared.is_withdrawn());
    }
}
