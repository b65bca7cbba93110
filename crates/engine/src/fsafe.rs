//! File-system checks that keep anything unverified or unintended from standing under a final
//! name: how a `.part` is named, which `.part` a download may write through, the final rename that
//! never replaces what it should not, and a destination that already holds the very file.
//!
//! Blocking, like the rest of the store: callers run it off the async runtime's workers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};

use rustix::fs::{OFlags, RenameFlags, CWD};
use rustix::io::Errno;
use shoal_proto::names::PART_PREFIX;
use shoal_proto::{ChunkIndex, FileId, Manifest};

use crate::store::{hash_chunks, StoreError};

/// Why a file was not written, renamed or replaced.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path} is a symbolic link; refusing to write through it")]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file; refusing to write through it")]
    NotRegular { path: PathBuf },
    #[error("{path} has {links} names (hard links); refusing to write through it, since that would change the other names too")]
    HardLinked { path: PathBuf, links: u64 },
    #[error("{path} belongs to another user (uid {uid}); refusing to write through it")]
    NotOwned { path: PathBuf, uid: u32 },
    #[error("{dest} appeared during the download; it was left alone, the verified download is kept in {part}; use --force to replace it")]
    DestinationAppeared { dest: PathBuf, part: PathBuf },
    #[error("{part} was moved or replaced during the download, so it is not the file that was written and verified; nothing was renamed to {dest}")]
    PartReplaced { part: PathBuf, dest: PathBuf },
    #[error("{part} was replaced just as it was renamed, so {dest} is not the file that was written and verified")]
    SwappedAtRename { part: PathBuf, dest: PathBuf },
    #[error("{dest} is a directory; a download never replaces one, not even with --force")]
    DestinationIsDir { dest: PathBuf },
}

/// What stands at a download's destination before it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Nothing, or `--force` was given and what is there is a file it may replace.
    Free,
    /// A file of the listed size: it may be the very file, which only the manifest can tell.
    MaybeTheFile,
    /// Something else, to be left alone.
    Taken,
}

/// Looks at `dest` before any peer is asked for anything, so that what cannot be replaced is
/// refused at once: a directory (with or without `--force`, that is `replace`: a download never
/// replaces a folder), and without `--force` anything else unless it may be the file itself (a
/// regular file of `listed_size` bytes, the size the tracker lists).
pub fn destination(
    dest: &Path,
    replace: bool,
    listed_size: u64,
) -> Result<Destination, StoreError> {
    let meta = match std::fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Destination::Free),
        Err(e) => return Err(StoreError::io(dest, e)),
    };
    Ok(match (replace, meta.file_type()) {
        (_, t) if t.is_dir() => {
            return Err(FsError::DestinationIsDir {
                dest: dest.to_path_buf(),
            }
            .into())
        }
        (true, _) => Destination::Free,
        (false, t) if t.is_file() && meta.len() == listed_size => Destination::MaybeTheFile,
        (false, _) => Destination::Taken,
    })
}

/// Where the download of `id` into `dest` writes: `.shoal-<16 hex digits of the id>-<name>.part`
/// beside it. The id keeps two files of one name apart; the prefix is one that
/// `safe_file_name` never gives a final name, so no `.part` is ever another download's final name.
/// The same download (same id, same name) finds the same `.part` again, which is what resumes it.
pub fn part_path(dest: &Path, id: &FileId) -> PathBuf {
    let mut name = std::ffi::OsString::from(format!("{PART_PREFIX}{}-", &id.to_hex()[..16]));
    name.push(dest.file_name().unwrap_or_default());
    name.push(".part");
    dest.with_file_name(name)
}

/// Opens `path` for reading and writing (created if missing) without following a symbolic link,
/// and refuses (before any byte of it is changed) anything but a regular file with one name,
/// owned by this user: a hard link would send our writes into another name's file, and a file of
/// another user is not ours to change.
pub fn open_part(path: &Path) -> Result<File, StoreError> {
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        // O_NONBLOCK: a FIFO planted under the name must not hang the open.
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
            return Err(FsError::Symlink {
                path: path.to_path_buf(),
            }
            .into())
        }
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| StoreError::io(path, e))?;
    let path_buf = path.to_path_buf();
    if !meta.file_type().is_file() {
        return Err(FsError::NotRegular { path: path_buf }.into());
    }
    if meta.nlink() > 1 {
        return Err(FsError::HardLinked {
            path: path_buf,
            links: meta.nlink(),
        }
        .into());
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(FsError::NotOwned {
            path: path_buf,
            uid: meta.uid(),
        }
        .into());
    }
    // Back to blocking I/O: O_NONBLOCK means nothing to a regular file today, but it should not
    // stay set by accident.
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| StoreError::io(path, e.into()))?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| StoreError::io(path, e.into()))?;
    Ok(file)
}

/// Whether `path` names the very file open as `file` (not a symbolic link to it, not a copy).
pub fn names_file(path: &Path, file: &File) -> io::Result<bool> {
    let (at_path, open) = (std::fs::symlink_metadata(path)?, file.metadata()?);
    Ok(at_path.dev() == open.dev() && at_path.ino() == open.ino())
}

/// Moves the verified `.part` (open as `file`) to `dest`: only if `part` still names that file, and
/// over an existing `dest` only with `replace`. Without `replace` the check that `dest` is free is
/// part of the rename itself (`RENAME_NOREPLACE`), so a file that appears at any moment is never
/// replaced. A `.part` swapped in the microseconds between the check and the rename cannot be
/// kept from moving (that would need a rename by descriptor, which Linux does not have), but it is
/// caught just after, so the download fails instead of vouching for (and seeding) that file.
pub fn rename_part(file: &File, part: &Path, dest: &Path, replace: bool) -> Result<(), StoreError> {
    rename_checked(file, part, dest, replace)?;
    match names_file(dest, file) {
        Ok(true) => Ok(()),
        _ => Err(FsError::SwappedAtRename {
            part: part.to_path_buf(),
            dest: dest.to_path_buf(),
        }
        .into()),
    }
}

fn rename_checked(file: &File, part: &Path, dest: &Path, replace: bool) -> Result<(), StoreError> {
    let replaced = || FsError::PartReplaced {
        part: part.to_path_buf(),
        dest: dest.to_path_buf(),
    };
    match names_file(part, file) {
        Ok(true) => {}
        Ok(false) => return Err(replaced().into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(replaced().into()),
        Err(e) => return Err(StoreError::io(part, e)),
    }
    if replace {
        if std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
            return Err(FsError::DestinationIsDir {
                dest: dest.to_path_buf(),
            }
            .into());
        }
        return std::fs::rename(part, dest).map_err(|e| StoreError::io(dest, e));
    }
    match rename_noreplace(part, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(FsError::DestinationAppeared {
            dest: dest.to_path_buf(),
            part: part.to_path_buf(),
        }
        .into()),
        Err(e) => Err(StoreError::io(dest, e)),
    }
}

/// Renames `from` to `to` unless `to` exists, in one step (an existing `to` is an
/// [`io::ErrorKind::AlreadyExists`] error). A file system without `RENAME_NOREPLACE` gets the
/// same guarantee from a hard link (which fails if `to` exists) and an unlink.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `dest` already is the file `manifest` describes: a regular file (not followed through a
/// symbolic link) of its size whose every chunk matches. `progress` grows by the bytes checked;
/// setting `stop` ends the check early.
pub fn already_complete(
    dest: &Path,
    manifest: &Manifest,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> Result<bool, StoreError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(dest)
    {
        Ok(f) => f,
        // A symbolic link, a special file we may not open, or nothing there at all: not ours.
        Err(_) => return Ok(false),
    };
    let meta = file.metadata().map_err(|e| StoreError::io(dest, e))?;
    if !meta.file_type().is_file() || meta.len() != manifest.size() {
        return Ok(false);
    }
    let hashes = hash_chunks(
        &file,
        manifest.size(),
        manifest.chunk_size(),
        progress,
        stop,
    )
    .map_err(|e| StoreError::io(dest, e))?;
    Ok(hashes
        .iter()
        .enumerate()
        .all(|(i, h)| manifest.hash(ChunkIndex(i as u32)) == Some(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_per_id_and_never_a_final_name() {
        let dest = Path::new("/out/f.bin");
        let (a, b) = (FileId([0xab; 32]), FileId([0xcd; 32]));
        assert_eq!(
            part_path(dest, &a),
            Path::new("/out/.shoal-abababababababab-f.bin.part")
        );
        assert_ne!(part_path(dest, &a), part_path(dest, &b));
        let part = part_path(dest, &a);
        let part = part.file_name().unwrap().to_str().unwrap();
        let as_final = shoal_proto::names::safe_file_name(part, &a);
        assert_ne!(as_final, part, "a final name is never a .part name");
        let longest = "x".repeat(shoal_proto::names::MAX_LOCAL_NAME);
        let long = part_path(&Path::new("/out").join(longest), &a);
        assert!(long.file_name().unwrap().len() <= 255);
    }

    #[test]
    fn rename_noreplace_leaves_an_existing_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&from, b"new").unwrap();
        std::fs::write(&to, b"theirs").unwrap();
        let e = rename_noreplace(&from, &to).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&to).unwrap(), b"theirs");
        assert_eq!(std::fs::read(&from).unwrap(), b"new");
        std::fs::remove_file(&to).unwrap();
        rename_noreplace(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"new");
        assert!(!from.exists());
    }

    #[test]
    fn only_a_plain_file_of_ours_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();

        let link = dir.path().join("hard.part");
        std::fs::hard_link(&victim, &link).unwrap();
        assert!(matches!(
            open_part(&link),
            Err(StoreError::Unsafe(FsError::HardLinked { links: 2, .. }))
        ));
        let sym = dir.path().join("sym.part");
        std::os::unix::fs::symlink(&victim, &sym).unwrap();
        assert!(matches!(
            open_part(&sym),
            Err(StoreError::Unsafe(FsError::Symlink { .. }))
        ));
        let dangling = dir.path().join("dangling.part");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            open_part(&dangling),
            Err(StoreError::Unsafe(FsError::Symlink { .. }))
        ));
        assert!(!dir.path().join("nowhere").exists());
        let fifo = dir.path().join("fifo.part");
        rustix::fs::mkfifoat(CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        assert!(matches!(
            open_part(&fifo),
            Err(StoreError::Unsafe(FsError::NotRegular { .. }))
        ));
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");

        let fresh = dir.path().join("fresh.part");
        let file = open_part(&fresh).unwrap();
        assert!(names_file(&fresh, &file).unwrap());
        assert!(!names_file(&victim, &file).unwrap());
    }

    #[test]
    fn a_part_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs.part");
        std::fs::write(&theirs, b"theirs").unwrap();
        let nobody = rustix::process::Uid::from_raw(65534);
        if rustix::process::geteuid().is_root() {
            rustix::fs::chown(&theirs, Some(nobody), None).unwrap();
        } else {
            // Only root can give a file away; the check itself is the same for any user.
            eprintln!("skipped: needs root to make a file owned by another user");
            return;
        }
        assert!(matches!(
            open_part(&theirs),
            Err(StoreError::Unsafe(FsError::NotOwned { uid: 65534, .. }))
        ));
        assert_eq!(std::fs::read(&theirs).unwrap(), b"theirs");
    }

    #[test]
    fn only_the_written_part_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let (part, dest) = (dir.path().join("x.part"), dir.path().join("x"));
        let file = open_part(&part).unwrap();
        // Moved away and replaced by another file of the same name.
        std::fs::rename(&part, dir.path().join("moved")).unwrap();
        std::fs::write(&part, b"impostor").unwrap();
        assert!(matches!(
            rename_part(&file, &part, &dest, false),
            Err(StoreError::Unsafe(FsError::PartReplaced { .. }))
        ));
        assert!(!dest.exists());
        // Gone altogether.
        std::fs::remove_file(&part).unwrap();
        assert!(matches!(
            rename_part(&file, &part, &dest, true),
            Err(StoreError::Unsafe(FsError::PartReplaced { .. }))
        ));

        let file = open_part(&part).unwrap();
        std::fs::write(&dest, b"appeared").unwrap();
        assert!(matches!(
            rename_part(&file, &part, &dest, false),
            Err(StoreError::Unsafe(FsError::DestinationAppeared { .. }))
        ));
        assert_eq!(std::fs::read(&dest).unwrap(), b"appeared");
        rename_part(&file, &part, &dest, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"");
        assert!(!part.exists());
    }

    #[test]
    fn the_destination_is_judged_before_downloading() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        assert_eq!(destination(&dest, false, 5).unwrap(), Destination::Free);
        std::fs::write(&dest, b"12345").unwrap();
        assert_eq!(
            destination(&dest, false, 5).unwrap(),
            Destination::MaybeTheFile
        );
        assert_eq!(destination(&dest, false, 6).unwrap(), Destination::Taken);
        assert_eq!(destination(&dest, true, 6).unwrap(), Destination::Free);
        std::fs::remove_file(&dest).unwrap();
        std::fs::create_dir(&dest).unwrap();
        for replace in [false, true] {
            assert!(matches!(
                destination(&dest, replace, 5),
                Err(StoreError::Unsafe(FsError::DestinationIsDir { .. }))
            ));
        }
        std::fs::remove_dir(&dest).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &dest).unwrap();
        assert_eq!(destination(&dest, false, 0).unwrap(), Destination::Taken);
    }

    #[test]
    fn a_complete_destination_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let manifest = Manifest::of_bytes(&data, 16 * 1024).unwrap();
        let progress = AtomicU64::new(0);
        assert!(
            !already_complete(&dest, &manifest, &progress, &crate::store::hash::NEVER_STOP)
                .unwrap()
        );
        std::fs::write(&dest, &data).unwrap();
        assert!(
            already_complete(&dest, &manifest, &progress, &crate::store::hash::NEVER_STOP).unwrap()
        );
        let mut other = data.clone();
        other[39_999] ^= 1;
        std::fs::write(&dest, &other).unwrap();
        assert!(
            !already_complete(&dest, &manifest, &progress, &crate::store::hash::NEVER_STOP)
                .unwrap()
        );
        std::fs::write(&dest, &data[1..]).unwrap();
        assert!(
            !already_complete(&dest, &manifest, &progress, &crate::store::hash::NEVER_STOP)
                .unwrap()
        );
        // A symbolic link to the right bytes is not the file itself.
        let real = dir.path().join("real");
        std::fs::write(&real, &data).unwrap();
        std::fs::remove_file(&dest).unwrap();
        std::os::unix::fs::symlink(&real, &dest).unwrap();
        assert!(
            !already_complete(&dest, &manifest, &progress, &crate::store::hash::NEVER_STOP)
                .unwrap()
        );
    }
}
