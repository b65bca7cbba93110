//! Removing the tree a `--force` download replaced: never through a symbolic link, never into
//! another file system mounted inside it.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Removes the folder `path` and everything in it, never following a symbolic link and never
/// entering another file system (`dev` is the folder's own): a mount point inside the old tree
/// is left, with what is around it, and the removal fails with a sentence.
pub fn remove_tree(path: &Path, dev: u64) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let at = rustix::fs::open(parent, OFlags::DIRECTORY | OFlags::PATH, Mode::empty())?;
    let name = path.file_name().unwrap_or(path.as_os_str());
    remove_tree_at(&at, name, dev)
}

fn remove_tree_at(at: &impl AsFd, name: &std::ffi::OsStr, dev: u64) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rustix::fs::openat(at, name, flags, Mode::empty())?;
    if rustix::fs::fstat(&dir)?.st_dev != dev {
        return Err(io::Error::other(
            "a folder in the old tree is on another file system (a mount point); it was left",
        ));
    }
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push((std::ffi::OsStr::from_bytes(n).to_owned(), e.file_type()));
        }
    }
    for (n, kind) in names {
        let is_dir = match kind {
            FileType::Directory => true,
            FileType::Unknown => {
                let st = rustix::fs::statat(&dir, &n, AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        if is_dir {
            remove_tree_at(&dir, &n, dev)?;
        } else {
            rustix::fs::unlinkat(&dir, &n, AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(at, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_tree_goes_and_what_its_links_point_to_stays() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"keep").unwrap();
        let old = dir.path().join("old");
        std::fs::create_dir_all(old.join("a/b/c")).unwrap();
        std::fs::write(old.join("a/b/c/f"), b"x").unwrap();
        std::fs::write(old.join("top"), b"y").unwrap();
        std::os::unix::fs::symlink(&outside, old.join("a/link")).unwrap();
        let dev = std::fs::metadata(&old).unwrap().dev();
        remove_tree(&old, dev).unwrap();
        assert!(!old.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
        // Told another device, it enters nothing and removes nothing.
        std::fs::create_dir_all(old.join("a")).unwrap();
        let err = remove_tree(&old, dev.wrapping_add(1)).unwrap_err();
        assert!(err.to_string().contains("another file system"), "{err}");
        assert!(old.join("a").is_dir());
    }
}
