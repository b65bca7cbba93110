//! The `.part` file a download writes into.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use rustix::fs::OFlags;
use rustix::io::Errno;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use shoal_proto::{ChunkIndex, FileId, Manifest};

use super::{hash_chunks, StoreError};
use crate::pool::ALIGN;

/// Starts writeback of `len` bytes at `offset` (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`),
/// without waiting for it. Failure only loses the head start.
///
/// The engine's one unsafe block: neither rustix nor nix wraps `sync_file_range`.
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: usize) {
    // SAFETY: a plain syscall on a descriptor that `file` keeps open; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Whether two descriptors are open on the same file.
fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The file a download writes into: a `.part` beside the destination (named by
/// [`crate::fsafe::part_path`]), locked so two leechers cannot write it at once, renamed to the
/// final name only once every chunk is verified and synced.
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
    pub fn part_path(dest: &Path, id: &FileId) -> PathBuf {
        crate::fsafe::part_path(dest, id)
    }

    /// Opens (or creates) the `.part` for `dest`, sized for `size` bytes. Space is reserved up
    /// front where the file system allows, so a full disk is reported before the download starts.
    /// Anything but a plain file of ours with one name is refused before a byte of it changes.
    pub fn open(dest: &Path, id: &FileId, size: u64) -> Result<PartFile, StoreError> {
        let part = PartFile::part_path(dest, id);
        use std::os::unix::fs::OpenOptionsExt;
        let file = crate::fsafe::open_part(&part)?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(StoreError::Locked { path: part });
        }
        let len = file.metadata().map_err(|e| StoreError::io(&part, e))?.len();
        if len != size {
            file.set_len(size).map_err(|e| StoreError::io(&part, e))?;
        }
        if size > 0 {
            // Allocation failure other than ENOSPC (no support) is ignored.
            let rc = nix::fcntl::posix_fallocate(&file, 0, size as nix::libc::off_t);
            if rc == Err(nix::errno::Errno::ENOSPC) {
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
            .custom_flags((OFlags::NOFOLLOW | OFlags::DIRECT).bits() as i32)
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

    /// Another descriptor of the file, for reading the chunks already verified (serving them
    /// while the download goes on); it stays valid across [`Self::finish`]'s rename.
    pub fn reader(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Which chunks already on disk match the manifest (a resumed download). `progress` grows by
    /// the bytes checked; setting `stop` ends the check early (see [`hash_chunks`]).
    pub fn verify_existing(
        &self,
        manifest: &Manifest,
        progress: &AtomicU64,
        stop: &AtomicBool,
    ) -> Result<Vec<bool>, StoreError> {
        let hashes = hash_chunks(
            &self.file,
            manifest.size(),
            manifest.chunk_size(),
            progress,
            stop,
        )
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
                    Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
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
        start_writeback(&self.file, offset, data.len());
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
    /// only ever points at complete, durable data. The rename replaces a file that appeared at
    /// the destination only with `replace`, and happens only if the `.part` is still this file
    /// (see [`crate::fsafe::rename_part`]).
    pub fn finish(self, replace: bool) -> Result<PathBuf, StoreError> {
        self.file
            .sync_all()
            .map_err(|e| StoreError::io(&self.part, e))?;
        crate::fsafe::rename_part(&self.file, &self.part, &self.dest, replace)?;
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
    fn part_file_is_locked_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let part = PartFile::open(&dest, &FileId([7; 32]), 10).unwrap();
        assert!(matches!(
            PartFile::open(&dest, &FileId([7; 32]), 10),
            Err(StoreError::Locked { .. })
        ));
        part.write_at(0, b"0123456789").unwrap();
        assert!(!dest.exists());
        part.finish(false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"0123456789");
        assert!(!PartFile::part_path(&dest, &FileId([7; 32])).exists());
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
        let part = PartFile::open(&dest, &FileId([7; 32]), size as u64).unwrap();
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
                &crate::store::hash::NEVER_STOP,
            )
            .unwrap();
        assert_eq!(hashes, vec![true; 4]);
        match part.direct_writes() {
            (n, true) => assert_eq!(n, 2, "the two aligned chunks go straight to the disk"),
            (_, false) => eprintln!("note: this file system refuses O_DIRECT; page cache only"),
        }
        part.finish(false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }
}
