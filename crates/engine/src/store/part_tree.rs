//! The temporary folder a folder's download writes into: every file of the tree created beneath
//! it (never through a symbolic link, never outside), verified chunks written into their files,
//! then one sync and one rename of the whole folder into place.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{FlockOperation, Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;
use shoal_proto::tree::{EntryKind, TreeManifest};
use shoal_proto::ChunkIndex;

use super::tree::{file_mode, open_beneath, open_root, OpenFiles};
use super::tree_check::{hash_files, wanted_bytes};
use super::StoreError;
use crate::fsafe::{names_file, FsError};
use crate::pool::ALIGN;

/// Chunks smaller than this go through the page cache even when aligned: a direct write waits for
/// the disk, and a folder of small files would wait once per file where the page cache and one
/// final `syncfs` wait once for all.
const DIRECT_MIN: usize = 64 * 1024;

/// Files at least this large are created, with their space reserved, when the download starts;
/// smaller ones at their first chunk.
const PREALLOCATE_MIN: u64 = 1 << 20;

/// A folder download's `.part` folder (named by [`crate::fsafe::part_path`], with the `--only`
/// globs' tag in the name if there are some), locked so two
/// leechers cannot write it at once, renamed to the final name only once every chunk is verified
/// and synced.
pub struct PartTree {
    files: OpenFiles,
    /// The same files opened with `O_DIRECT`, for whole aligned chunks (see
    /// [`super::PartFile::write_at`] for why); `None` once the file system refused one.
    direct: OpenFiles,
    direct_ok: AtomicBool,
    part: PathBuf,
    dest: PathBuf,
}

impl PartTree {
    /// Opens (or creates) the `.part` folder `part` for `dest` and every `wanted` folder and file of
    /// `tree` in it (by entry), each file at its size and with its executable bit. Whether the
    /// folder was there already (a download to resume) comes back too.
    pub fn open(
        part: &Path,
        dest: &Path,
        tree: &TreeManifest,
        wanted: &[bool],
    ) -> Result<(PartTree, bool), StoreError> {
        let part = part.to_path_buf();
        // Only we may enter it while it is being filled; it gets the umask's mode at the end.
        let existed = match std::fs::DirBuilder::new().mode(0o700).create(&part) {
            Ok(()) => false,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => true,
            Err(e) => return Err(StoreError::io(&part, e)),
        };
        let root = match open_root(&part) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(FsError::Symlink { path: part }.into())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(FsError::NotRegular { path: part }.into())
            }
            Err(e) => return Err(StoreError::io(&part, e)),
        };
        let meta = root.metadata().map_err(|e| StoreError::io(&part, e))?;
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(FsError::NotOwned {
                path: part,
                uid: meta.uid(),
            }
            .into());
        }
        if rustix::fs::flock(&root, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(StoreError::Locked { path: part });
        }
        let bytes = wanted_bytes(tree, wanted);
        check_space(&root, &part, bytes)?;
        // A new download creates its folders now and each file at its first chunk (one open per
        // file, not two); a resumed one checks everything there now, before a byte is read.
        create_all(&root, &part, tree, wanted, existed)?;
        let direct_root = root.try_clone().map_err(|e| StoreError::io(&part, e))?;
        Ok((
            PartTree {
                files: OpenFiles::with_access(root, OFlags::RDWR | OFlags::CREATE),
                direct: OpenFiles::with_access(
                    direct_root,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::DIRECT,
                ),
                direct_ok: AtomicBool::new(true),
                part,
                dest: dest.to_path_buf(),
            },
            existed,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.part
    }

    /// Another descriptor of the folder, for reading the chunks already verified (serving them
    /// while the download goes on); it stays valid across [`Self::finish`]'s rename.
    pub fn reader(&self) -> io::Result<OpenFiles> {
        Ok(OpenFiles::new(self.files.root().try_clone()?))
    }

    /// Writes a verified chunk into its file (blocking): a whole aligned chunk straight to the
    /// disk (`O_DIRECT`) where the file system takes it, anything else through the page cache with
    /// its writeback started at once, so that the final sync has little left to wait for.
    pub fn write_chunk(
        &self,
        tree: &TreeManifest,
        index: ChunkIndex,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let span = tree.locate(index).expect("a verified chunk is in the tree");
        let e = &tree.entries()[span.entry as usize];
        let path = &e.path;
        let mode = match e.kind {
            EntryKind::File { executable, .. } => file_mode(executable),
            EntryKind::EmptyDir => 0,
        };
        let shown = || self.part.join(path.as_str());
        let aligned = |n: usize| n & (ALIGN - 1) == 0;
        if self.direct_ok.load(Ordering::Relaxed)
            && data.len() >= DIRECT_MIN
            && aligned(span.offset as usize)
            && aligned(data.len())
            && aligned(data.as_ptr() as usize)
        {
            match self
                .direct
                .get_or_create(span.entry, path, mode)
                .and_then(|f| f.write_all_at(data, span.offset))
            {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!("direct writes refused ({e}); using the page cache");
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(StoreError::io(&shown(), e)),
            }
        }
        let file = self
            .files
            .get_or_create(span.entry, path, mode)
            .map_err(|e| StoreError::io(&shown(), e))?;
        file.write_all_at(data, span.offset)
            .map_err(|e| StoreError::io(&shown(), e))?;
        if data.len() < DIRECT_MIN {
            // A small file's writeback waits for the one final `syncfs` with all the others: a
            // system call per file to start it early costs more than it saves.
            return Ok(());
        }
        super::part::start_writeback(&file, span.offset, data.len());
        Ok(())
    }

    /// Which chunks already in the folder match the tree (a resumed download). `progress` grows
    /// by the bytes checked; setting `stop` ends the check early.
    pub fn verify_existing(
        &self,
        tree: &TreeManifest,
        wanted: &[bool],
        progress: &AtomicU64,
        stop: &AtomicBool,
    ) -> Result<Vec<bool>, StoreError> {
        let mut have = Vec::with_capacity(tree.num_chunks() as usize);
        let found = hash_files(self.files.root(), &self.part, tree, wanted, progress, stop)?;
        let mut found = found.into_iter().peekable();
        for (i, e) in tree.entries().iter().enumerate() {
            let EntryKind::File { hashes: want, .. } = &e.kind else {
                continue;
            };
            match found.next_if(|(j, _)| *j == i) {
                Some((_, hashes)) => have.extend(want.iter().zip(&hashes).map(|(w, h)| w == h)),
                None => have.extend(std::iter::repeat_n(false, want.len())),
            }
        }
        Ok(have)
    }

    /// Syncs the folder's file system once (not one sync per file: ten thousand small files
    /// would wait for ten thousand flushes), then moves the folder to `dest`: over nothing unless
    /// `replace`, and then by exchanging the two and removing the old tree only after the new one
    /// is in place.
    pub fn finish(self, replace: bool) -> Result<PathBuf, StoreError> {
        let root = self.files.root();
        rustix::fs::syncfs(root).map_err(|e| StoreError::io(&self.part, e.into()))?;
        let replaced = || FsError::PartReplaced {
            part: self.part.clone(),
            dest: self.dest.clone(),
        };
        if !names_file(&self.part, root).unwrap_or(false) {
            return Err(replaced().into());
        }
        rustix::fs::fchmod(root, Mode::from_raw_mode(0o777 & !umask()))
            .map_err(|e| StoreError::io(&self.part, e.into()))?;
        let exists = std::fs::symlink_metadata(&self.dest).is_ok();
        if replace && exists {
            tracing::info!("replacing {}", self.dest.display());
        }
        let flags = if replace && exists {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::NOREPLACE
        };
        match rustix::fs::renameat_with(CWD, &self.part, CWD, &self.dest, flags) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(FsError::DestinationAppeared {
                    dest: self.dest.clone(),
                    part: self.part.clone(),
                }
                .into())
            }
            Err(e) => return Err(StoreError::io(&self.dest, e.into())),
        }
        if !names_file(&self.dest, root).unwrap_or(false) {
            return Err(FsError::SwappedAtRename {
                part: self.part.clone(),
                dest: self.dest.clone(),
            }
            .into());
        }
        if replace && exists {
            // The old tree now stands under the `.part` name.
            let old =
                std::fs::symlink_metadata(&self.part).map_err(|e| StoreError::io(&self.part, e))?;
            let removed = if old.is_dir() {
                super::remove::remove_tree(&self.part, old.dev())
            } else {
                std::fs::remove_file(&self.part)
            };
            removed.map_err(|e| StoreError::io(&self.part, e))?;
        }
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

/// The process's umask, read without changing it (setting it to read it would race with other
/// threads creating files); 0o022 where `/proc` does not say.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        })
        .unwrap_or(0o022)
        & 0o777
}

/// Refuses a tree larger than the free space of the file system it is to be written to.
fn check_space(root: &File, part: &Path, size: u64) -> Result<(), StoreError> {
    let Ok(st) = rustix::fs::fstatvfs(root) else {
        return Ok(());
    };
    if st.f_bavail.saturating_mul(st.f_frsize) < size {
        return Err(StoreError::DiskFull {
            path: part.to_path_buf(),
        });
    }
    Ok(())
}

/// Creates every folder of `tree` beneath `root`, its empty files and its files of at least
/// [`PREALLOCATE_MIN`] bytes; with `files_too` every file, at its size (what exists already is kept: a resumed download). Anything that is not what we would have created
/// (a symbolic link, a special file, a file with other names) is refused before it is written.
fn create_all(
    root: &File,
    part: &Path,
    tree: &TreeManifest,
    wanted: &[bool],
    files_too: bool,
) -> Result<(), StoreError> {
    let mut made: HashSet<&str> = HashSet::new();
    let mkdir = |path: &str| -> Result<(), StoreError> {
        let shown = part.join(path);
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, path),
        };
        let at = match parent {
            Some(p) => open_beneath(root, p, OFlags::DIRECTORY | OFlags::PATH, 0),
            None => root.try_clone(),
        }
        .map_err(|e| StoreError::io(&shown, e))?;
        match rustix::fs::mkdirat(&at, name, Mode::from_raw_mode(0o777)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(StoreError::io(&shown, e.into())),
        }
        // What is there must be a real folder, reached without a symbolic link, and ours.
        let dir = open_beneath(root, path, OFlags::DIRECTORY | OFlags::PATH, 0).map_err(|_| {
            StoreError::from(FsError::NotRegular {
                path: shown.clone(),
            })
        })?;
        owned(&dir, &shown)
    };
    for (e, _) in tree.entries().iter().zip(wanted).filter(|(_, w)| **w) {
        for a in e.path.ancestors() {
            if made.insert(a) {
                mkdir(a)?;
            }
        }
        let shown = part.join(e.path.as_str());
        let EntryKind::File {
            size, executable, ..
        } = e.kind
        else {
            mkdir(e.path.as_str())?;
            continue;
        };
        // Empty files get no chunk, so no first write creates them; large files get their space
        // now (as a single file's `.part` does), so that direct writes do not allocate as they go
        // and a full disk is reported before the download starts.
        if !files_too && size > 0 && size < PREALLOCATE_MIN {
            continue;
        }
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NONBLOCK;
        let file = match open_beneath(root, e.path.as_str(), flags, file_mode(executable)) {
            Ok(f) => f,
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                return Err(FsError::Symlink { path: shown }.into())
            }
            Err(err) => return Err(StoreError::io(&shown, err)),
        };
        let meta = file.metadata().map_err(|err| StoreError::io(&shown, err))?;
        if !meta.is_file() {
            return Err(FsError::NotRegular { path: shown }.into());
        }
        owned(&file, &shown)?;
        if meta.nlink() > 1 {
            return Err(FsError::HardLinked {
                path: shown,
                links: meta.nlink(),
            }
            .into());
        }
        if meta.len() != size {
            file.set_len(size)
                .map_err(|err| StoreError::io(&shown, err))?;
        }
        if size >= PREALLOCATE_MIN {
            let mode = rustix::fs::FallocateFlags::empty();
            // A file system without it (or any other failure) only loses the head start.
            if let Err(Errno::NOSPC) = rustix::fs::fallocate(&file, mode, 0, size) {
                return Err(StoreError::DiskFull { path: shown });
            }
        }
    }
    Ok(())
}

/// Refuses a file or folder in the `.part` folder that another user owns (planted there, it is
/// not ours to fill), as `fsafe::open_part` does for a `.part` file.
fn owned(f: &File, shown: &Path) -> Result<(), StoreError> {
    let uid = f.metadata().map_err(|e| StoreError::io(shown, e))?.uid();
    if uid != rustix::process::geteuid().as_raw() {
        return Err(FsError::NotOwned {
            path: shown.to_path_buf(),
            uid,
        }
        .into());
    }
    Ok(())
}
