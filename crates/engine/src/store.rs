//! Files on disk: hashing a file into its manifest, the files a peer shares ([`Library`]), and the
//! `.part` file a download writes into ([`PartFile`]).
//!
//! Everything here is blocking I/O; callers run it on `spawn_blocking` or on threads of its own,
//! never on the async runtime's workers.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use shoal_proto::manifest::{chunk_count, hash_chunk, ChunkHash};
use shoal_proto::sha256;
use shoal_proto::tracker::FileEntry;
use shoal_proto::{ChunkIndex, FileId, Manifest, ManifestError};
use tokio::sync::Notify;

use crate::pool::ALIGN;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    #[error("{path} is a directory, not a file")]
    IsDir { path: PathBuf },
    #[error("{path}: permission denied")]
    Denied { path: PathBuf },
    // The cause is part of the message, so it is deliberately not the error's `source()` (a field
    // named `source` would be): `{:#}` would print it twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: {error}")]
    Manifest { path: PathBuf, error: ManifestError },
    #[error("{path} changed while it was being hashed; try again once nothing writes to it")]
    ChangedWhileHashing { path: PathBuf },
    #[error("not enough space on the disk for {path}")]
    DiskFull { path: PathBuf },
    #[error("another leecher is already writing {path}")]
    Locked { path: PathBuf },
}

impl StoreError {
    pub fn io(path: &Path, source: io::Error) -> StoreError {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => StoreError::Missing { path },
            io::ErrorKind::PermissionDenied => StoreError::Denied { path },
            io::ErrorKind::IsADirectory => StoreError::IsDir { path },
            io::ErrorKind::StorageFull => StoreError::DiskFull { path },
            _ if source.raw_os_error() == Some(libc::ENOSPC) => StoreError::DiskFull { path },
            _ => StoreError::Io {
                path,
                error: source,
            },
        }
    }
}

/// How much of each chunk [`hash_chunks`] reads at a time: two such pieces stay in a core's L2
/// cache between the read and the hash, and a hashing thread needs 128 KiB instead of two chunks
/// (no speed difference measurable here; a smaller peak RSS for the seeder).
const HASH_PIECE: usize = 64 * 1024;

/// Hashes every chunk of `file` on all cores. `progress` grows by the bytes hashed so far.
pub fn hash_chunks(
    file: &File,
    size: u64,
    chunk_size: u32,
    progress: &AtomicU64,
) -> io::Result<Vec<ChunkHash>> {
    let n = chunk_count(size, chunk_size)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n.div_ceil(2).max(1) as usize);
    let hashes: Vec<Mutex<Vec<(u32, ChunkHash)>>> =
        (0..threads).map(|_| Mutex::new(Vec::new())).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let out = &hashes[t];
                s.spawn(move || -> io::Result<()> {
                    let chunk = chunk_size as usize;
                    let piece = chunk.min(HASH_PIECE);
                    // Chunk sizes are powers of two of at least 16 KiB (`chunk_count` checked).
                    debug_assert_eq!((chunk % piece, piece % 64), (0, 0));
                    let mut pieces = vec![0u8; 2 * piece];
                    let mut whole = Vec::new();
                    let mut mine = Vec::new();
                    // Chunks go in pairs (hashing two at once is faster, see
                    // `shoal_proto::sha256`), and pairs are interleaved so the threads read the
                    // file front to back together.
                    for pair in (t as u32..n.div_ceil(2)).step_by(threads) {
                        let first = 2 * pair;
                        let offset = u64::from(first) * u64::from(chunk_size);
                        let len = (size - offset).min(2 * u64::from(chunk_size)) as usize;
                        if len == 2 * chunk {
                            // Two whole chunks, read side by side in pieces small enough to stay
                            // in the CPU's cache between the read and the hash.
                            let (pa, pb) = pieces.split_at_mut(piece);
                            let mut hasher = sha256::PairHasher::new();
                            for at in (0..chunk).step_by(piece) {
                                let at = offset + at as u64;
                                file.read_exact_at(pa, at)?;
                                file.read_exact_at(pb, at + u64::from(chunk_size))?;
                                hasher.update(pa, pb);
                            }
                            let (a, b) = hasher.finish(&[], &[]);
                            mine.push((first, a));
                            mine.push((first + 1, b));
                        } else {
                            // The end of the file: one or two chunks, the last one short.
                            whole.resize(len, 0);
                            file.read_exact_at(&mut whole, offset)?;
                            for (i, data) in whole.chunks(chunk).enumerate() {
                                mine.push((first + i as u32, hash_chunk(data)));
                            }
                        }
                        progress.fetch_add(len as u64, Ordering::Relaxed);
                    }
                    *out.lock().unwrap() = mine;
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("hashing thread panicked"))
    })?;
    let mut all: Vec<(u32, ChunkHash)> = hashes
        .into_iter()
        .flat_map(|m| m.into_inner().unwrap())
        .collect();
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, h)| h).collect())
}

/// Whether two descriptors are open on the same file.
fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

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
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A complete file this peer shares, with its manifest.
pub struct SharedFile {
    pub id: FileId,
    pub name: String,
    pub manifest: Manifest,
    /// The manifest's canonical encoding, sent as is to every peer that asks.
    pub manifest_bytes: Bytes,
    pub path: PathBuf,
    file: File,
    snapshot: Snapshot,
    withdrawn: AtomicBool,
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
        let hashes =
            hash_chunks(&file, before.len, chunk_size, progress).map_err(|e| match e.kind() {
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
        Ok(SharedFile::from_parts(path, name, manifest, file, before))
    }

    /// A file a download has just verified chunk by chunk: no need to hash it again.
    pub fn verified(
        path: &Path,
        name: String,
        manifest: Manifest,
    ) -> Result<SharedFile, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let snapshot = Snapshot::of(&file).map_err(|e| StoreError::io(path, e))?;
        Ok(SharedFile::from_parts(path, name, manifest, file, snapshot))
    }

    fn from_parts(
        path: &Path,
        name: String,
        manifest: Manifest,
        file: File,
        snapshot: Snapshot,
    ) -> SharedFile {
        let manifest_bytes = Bytes::from(manifest.encode());
        SharedFile {
            id: shoal_proto::manifest::id_of_encoding(&manifest_bytes),
            name,
            manifest,
            manifest_bytes,
            path: path.to_path_buf(),
            file,
            snapshot,
            withdrawn: AtomicBool::new(false),
        }
    }

    pub fn entry(&self) -> FileEntry {
        FileEntry {
            id: self.id,
            size: self.manifest.size(),
            name: self.name.clone(),
            have: shoal_proto::tracker::Have::Complete,
        }
    }

    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::Relaxed)
    }

    /// Fails (and withdraws the file, logging why, the first time) if the file's size or
    /// modification time is no longer what was hashed.
    pub fn check(&self) -> Result<(), ServeError> {
        if self.is_withdrawn() {
            return Err(ServeError::Changed);
        }
        if Snapshot::of(&self.file).ok() != Some(self.snapshot) {
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
        // SAFETY: an advisory syscall on a descriptor we own.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                self.manifest.offset(index) as libc::off_t,
                libc::off_t::from(len),
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Reads one chunk (blocking). If the file's size or modification time is no longer what was
    /// hashed, the file is withdrawn: from then on every read fails with [`ServeError::Changed`].
    pub fn read_chunk(&self, index: ChunkIndex) -> Result<Bytes, ServeError> {
        self.check()?;
        let len = self.manifest.chunk_len(index) as usize;
        if len == 0 {
            return Err(ServeError::NoSuchChunk);
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

/// The files a peer shares, by id. Several names for the same bytes are one entry.
#[derive(Default)]
pub struct Library {
    files: RwLock<HashMap<FileId, Arc<SharedFile>>>,
    changed: Notify,
}

impl Library {
    pub fn new() -> Arc<Library> {
        Arc::new(Library::default())
    }

    pub fn add(&self, file: SharedFile) -> Arc<SharedFile> {
        let file = Arc::new(file);
        self.files
            .write()
            .unwrap()
            .entry(file.id)
            .or_insert_with(|| file.clone());
        self.changed.notify_waiters();
        file
    }

    pub fn get(&self, id: &FileId) -> Option<Arc<SharedFile>> {
        self.files
            .read()
            .unwrap()
            .get(id)
            .filter(|f| !f.is_withdrawn())
            .cloned()
    }

    /// What should be registered with the tracker now: every file not withdrawn.
    pub fn entries(&self) -> Vec<FileEntry> {
        let mut v: Vec<FileEntry> = self
            .files
            .read()
            .unwrap()
            .values()
            .filter(|f| !f.is_withdrawn())
            .map(|f| f.entry())
            .collect();
        v.sort_by_key(|e| e.id);
        v
    }

    /// Tells the announcer to look again (a file was added or withdrawn).
    pub fn touch(&self) {
        self.changed.notify_waiters();
    }

    /// Resolves at the next [`Library::add`] or [`Library::touch`] after this call (not after the
    /// first poll, so a change while the caller is busy is not lost).
    pub fn changed(&self) -> impl std::future::Future<Output = ()> + '_ {
        let mut notified = Box::pin(self.changed.notified());
        notified.as_mut().enable();
        notified
    }
}

/// The file a download writes into: `<name>.part` beside the destination, locked so two leechers
/// cannot write it at once, renamed to `<name>` only once every chunk is verified and synced.
pub struct PartFile {
    file: File,
    /// The same file opened with `O_DIRECT`, if the file system takes it (see [`Self::write_at`]).
    direct: Option<File>,
    /// Cleared when a direct write is refused: from then on, the page cache.
    direct_ok: AtomicBool,
    /// Chunks written with `O_DIRECT` so far.
    direct_writes: AtomicU64,
    part: PathBuf,
    dest: PathBuf,
}

impl PartFile {
    pub fn part_path(dest: &Path) -> PathBuf {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(".part");
        dest.with_file_name(name)
    }

    /// Opens (or creates) the `.part` for `dest`, sized for `size` bytes. Space is reserved up
    /// front where the file system allows, so a full disk is reported before the download starts.
    pub fn open(dest: &Path, size: u64) -> Result<PartFile, StoreError> {
        let part = PartFile::part_path(dest);
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // A `.part` planted as a symlink must not send our writes elsewhere.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&part)
            .map_err(|e| StoreError::io(&part, e))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Locked { path: part });
        }
        let len = file.metadata().map_err(|e| StoreError::io(&part, e))?.len();
        if len != size {
            file.set_len(size).map_err(|e| StoreError::io(&part, e))?;
        }
        if size > 0 {
            // SAFETY: as above. Allocation failure other than ENOSPC (no support) is ignored.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
            if rc == libc::ENOSPC {
                // Leave the `.part` as it was, not a file-sized hole.
                let _ = file.set_len(len);
                return Err(StoreError::DiskFull { path: part });
            }
        }
        // Not every file system takes O_DIRECT (tmpfs before Linux 6.6 refuses it): then every
        // write goes through the page cache. Opened by name, so it must turn out to be the very
        // file locked above (not one that replaced it in between).
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECT)
            .open(&part)
            .ok()
            .filter(|d| same_file(d, &file));
        Ok(PartFile {
            file,
            direct_ok: AtomicBool::new(direct.is_some()),
            direct_writes: AtomicU64::new(0),
            direct,
            part,
            dest: dest.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.part
    }

    /// Which chunks already on disk match the manifest (a resumed download). `progress` grows by
    /// the bytes checked.
    pub fn verify_existing(
        &self,
        manifest: &Manifest,
        progress: &AtomicU64,
    ) -> Result<Vec<bool>, StoreError> {
        let hashes = hash_chunks(&self.file, manifest.size(), manifest.chunk_size(), progress)
            .map_err(|e| StoreError::io(&self.part, e))?;
        Ok(hashes
            .iter()
            .enumerate()
            .map(|(i, h)| manifest.hash(ChunkIndex(i as u32)) == Some(h))
            .collect())
    }

    /// Writes verified chunk data at its offset (blocking).
    ///
    /// Whole, aligned blocks (every chunk but a short last one, from the pool's aligned buffers)
    /// go straight to the disk with `O_DIRECT`: no copy into the page cache, and no page-cache
    /// memory to find for a file larger than the cache would like. That memory is not free: on this
    /// project's VM every other download's writes ran at a fifth of the speed while the kernel
    /// found pages for them, and the copy alone was ~15 % of the leecher's CPU. If the file system
    /// refuses a direct write, it and all later ones go through the page cache instead, and
    /// writeback is started at once so that the final sync has little left to wait for.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let aligned = |n: usize| n & (ALIGN - 1) == 0;
        let mut written = 0;
        if aligned(offset as usize) && aligned(data.len()) && aligned(data.as_ptr() as usize) {
            let direct = self
                .direct
                .as_ref()
                .filter(|_| self.direct_ok.load(Ordering::Relaxed));
            if let Some(direct) = direct {
                match direct.write_at(data, offset) {
                    Ok(n) if n == data.len() => {
                        self.direct_writes.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    // A short direct write: the rest goes through the page cache below.
                    Ok(n) => written = n,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        tracing::debug!("direct writes refused ({e}); using the page cache");
                        self.direct_ok.store(false, Ordering::Relaxed);
                    }
                    Err(e) => return Err(StoreError::io(&self.part, e)),
                }
            }
        }
        let (offset, data) = (offset + written as u64, &data[written..]);
        self.file
            .write_all_at(data, offset)
            .map_err(|e| StoreError::io(&self.part, e))?;
        // SAFETY: a plain syscall on a descriptor we own. Failure only loses the head start.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset as libc::off64_t,
                data.len() as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        Ok(())
    }

    /// How many writes went straight to the disk (`O_DIRECT`), and whether the file system offered
    /// that at all.
    pub fn direct_writes(&self) -> (u64, bool) {
        (
            self.direct_writes.load(Ordering::Relaxed),
            self.direct.is_some(),
        )
    }

    /// Syncs the data, renames `.part` to the final name and syncs the folder, so the final name
    /// only ever points at complete, durable data.
    pub fn finish(self) -> Result<PathBuf, StoreError> {
        self.file
            .sync_all()
            .map_err(|e| StoreError::io(&self.part, e))?;
        std::fs::rename(&self.part, &self.dest).map_err(|e| StoreError::io(&self.dest, e))?;
        if let Some(dir) = self.dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.dest)
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

    #[test]
    fn every_way_a_file_ends_hashes_right() {
        // Chunks are hashed in pairs, read in pieces: an even or odd number of chunks, a short or
        // whole last chunk, chunks smaller and larger than a piece.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        const K: usize = 16 * 1024;
        for (chunk, size) in [
            (K, 0),
            (K, 1),
            (K, K),
            (K, 2 * K),
            (K, 4 * K),
            (K, 7 * K + 5),
            (K, 8 * K - 1),
            (16 * K, 5 * 16 * K + 3),
            (16 * K, 6 * 16 * K),
        ] {
            let data: Vec<u8> = (0..size as u32).map(|i| (i * 13 % 241) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let progress = AtomicU64::new(0);
            let file = File::open(&path).unwrap();
            let hashes = hash_chunks(&file, size as u64, chunk as u32, &progress).unwrap();
            let expected = Manifest::of_bytes(&data, chunk as u32).unwrap();
            let expected: Vec<ChunkHash> = (0..expected.num_chunks())
                .map(|i| *expected.hash(ChunkIndex(i)).unwrap())
                .collect();
            assert_eq!(hashes, expected, "{size} bytes in {chunk}-byte chunks");
            assert_eq!(progress.load(Ordering::Relaxed), size as u64);
        }
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

    #[test]
    fn part_file_is_locked_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let part = PartFile::open(&dest, 10).unwrap();
        assert!(matches!(
            PartFile::open(&dest, 10),
            Err(StoreError::Locked { .. })
        ));
        part.write_at(0, b"0123456789").unwrap();
        assert!(!dest.exists());
        part.finish().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"0123456789");
        assert!(!PartFile::part_path(&dest).exists());
    }

    #[test]
    fn direct_and_page_cache_writes_land_alike() {
        // Aligned chunks from aligned buffers take the O_DIRECT path (where the file system has
        // it), a short tail and a misaligned buffer the page cache; the file has every byte.
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        const CHUNK: usize = 16 * 1024;
        let size = 3 * CHUNK + 1000;
        let data: Vec<u8> = (0..size as u32).map(|i| (i * 7 % 253) as u8).collect();
        let part = PartFile::open(&dest, size as u64).unwrap();
        let mut aligned = vec![0u8; CHUNK + ALIGN];
        let start = aligned.as_ptr().align_offset(ALIGN);
        let aligned = &mut aligned[start..start + CHUNK];
        for i in [2, 0] {
            aligned.copy_from_slice(&data[i * CHUNK..(i + 1) * CHUNK]);
            part.write_at((i * CHUNK) as u64, aligned).unwrap();
        }
        let misaligned = data[CHUNK - 1..2 * CHUNK].to_vec();
        part.write_at(CHUNK as u64, &misaligned[1..]).unwrap();
        part.write_at((3 * CHUNK) as u64, &data[3 * CHUNK..])
            .unwrap();
        // Read back through the page cache before the rename, as a resumed download would.
        let hashes = part
            .verify_existing(
                &Manifest::of_bytes(&data, CHUNK as u32).unwrap(),
                &AtomicU64::new(0),
            )
            .unwrap();
        assert_eq!(hashes, vec![true; 4]);
        match part.direct_writes() {
            (n, true) => assert_eq!(n, 2, "the two aligned chunks go straight to the disk"),
            (_, false) => eprintln!("note: this file system refuses O_DIRECT; page cache only"),
        }
        part.finish().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }
}
