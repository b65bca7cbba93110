//! Hashing a folder into one share: walk it, hash every file on all cores, and build its tree
//! manifest.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use shoal_proto::tree::{Entry, EntryKind, TreeManifest};
use shoal_proto::AnyManifest;

use super::tree::{hash_tree, open_root, walk, HashTreeError, ToHash};
use super::{SharedFile, StoreError};

/// A hashed folder, and a note for everything in it that is not shared (symbolic links, special
/// files, names a manifest cannot carry).
pub struct HashedFolder {
    pub shared: SharedFile,
    pub notes: Vec<String>,
}

/// Hashes the folder at `path` into a share named after it. `progress` grows by the bytes hashed.
/// A file that changes while it is hashed fails the whole folder (as it does a single file).
pub fn hash_folder(
    path: &Path,
    chunk_size: u32,
    progress: &AtomicU64,
) -> Result<HashedFolder, StoreError> {
    let root = open_root(path).map_err(|e| StoreError::io(path, e))?;
    let walked = walk(path).map_err(|e| StoreError::io(path, e))?;
    let files: Vec<ToHash<'_>> = walked
        .entries
        .iter()
        .filter_map(|w| {
            w.file.map(|(size, _)| ToHash {
                path: &w.path,
                size,
            })
        })
        .collect();
    let hashed = hash_tree(
        &root,
        &files,
        chunk_size,
        progress,
        &super::hash::NEVER_STOP,
    )
    .map_err(|e| match e {
        HashTreeError::Changed(p) => StoreError::ChangedWhileHashing { path: path.join(p) },
        HashTreeError::Io(p, e) => StoreError::io(&path.join(p), e),
    })?;
    let mut hashed = hashed.into_iter();
    let mut entries = Vec::with_capacity(walked.entries.len());
    let mut snapshots = Vec::with_capacity(walked.entries.len());
    for w in walked.entries {
        let kind = match w.file {
            Some((size, executable)) => {
                let (hashes, snapshot) = hashed.next().expect("one result per file");
                snapshots.push(Some(snapshot));
                EntryKind::File {
                    size,
                    executable,
                    hashes,
                }
            }
            None => {
                snapshots.push(None);
                EntryKind::EmptyDir
            }
        };
        entries.push(Entry { path: w.path, kind });
    }
    let bad = |error: shoal_proto::TreeError| StoreError::Tree {
        path: path.to_path_buf(),
        error,
    };
    let tree = TreeManifest::new(chunk_size, entries).map_err(bad)?;
    tree.encode_checked().map_err(bad)?;
    let name = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "folder".into());
    let name = format!("{name}/");
    Ok(HashedFolder {
        shared: SharedFile::folder(path, name, tree.into(), root, snapshots),
        notes: walked.notes,
    })
}

/// The name a share is registered under: a folder's ends in `/`, which tells a leecher, before it
/// has the manifest, that a folder may stand at the destination and that the manifest may be long.
pub fn share_name(name: &str, manifest: &AnyManifest) -> String {
    match manifest {
        AnyManifest::File(_) => name.to_string(),
        AnyManifest::Tree(_) => format!("{}/", name.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PartTree, ServeError};
    use shoal_proto::{ChunkIndex, FileId};

    const K: usize = 16 * 1024;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("a/b/one"), vec![1u8; 2 * K + 3]).unwrap();
        std::fs::write(root.join("a/two"), vec![2u8; 10]).unwrap();
        std::fs::write(root.join("zero"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("a/link")).unwrap();
        dir
    }

    /// Chunks map to their files; a file changed after hashing withdraws the whole share.
    #[test]
    fn a_folder_serves_each_chunk_from_its_file_until_one_changes() {
        let dir = folder();
        let root = dir.path().join("share");
        let hashed = hash_folder(&root, K as u32, &AtomicU64::new(0)).unwrap();
        assert_eq!(hashed.notes.len(), 1, "{:?}", hashed.notes);
        assert!(hashed.notes[0].contains("symbolic link"));
        let shared = hashed.shared;
        assert_eq!(shared.name, "share/");
        let tree = shared.manifest.tree().unwrap();
        let paths: Vec<&str> = tree.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a/b/one", "a/two", "empty", "zero"]);
        assert_eq!(tree.num_chunks(), 4);
        assert_eq!(&shared.read_chunk(ChunkIndex(2)).unwrap()[..], &[1u8; 3]);
        assert_eq!(&shared.read_chunk(ChunkIndex(3)).unwrap()[..], &[2u8; 10]);
        std::fs::write(root.join("a/two"), vec![9u8; 11]).unwrap();
        assert!(matches!(
            shared.read_chunk(ChunkIndex(3)),
            Err(ServeError::Changed)
        ));
        assert!(shared.is_withdrawn());
    }

    /// A FIFO planted in place of a shared file neither hangs the seeder nor is served: the share
    /// is withdrawn as for a changed file.
    #[test]
    fn a_fifo_in_place_of_a_shared_file_is_refused() {
        let dir = folder();
        let root = dir.path().join("share");
        let shared = hash_folder(&root, K as u32, &AtomicU64::new(0))
            .unwrap()
            .shared;
        std::fs::remove_file(root.join("a/two")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("a/two"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            shared.read_chunk(ChunkIndex(3)),
            Err(ServeError::Changed)
        ));
        assert!(shared.is_withdrawn());
        assert!(shared.source(ChunkIndex(3)).is_err());
    }

    /// While it is filled, a download's folder is closed to other users; in place, it has the
    /// mode any new folder gets (the umask's).
    #[test]
    fn a_part_folder_is_private_until_it_is_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let dir = folder();
        let hashed = hash_folder(&dir.path().join("share"), K as u32, &AtomicU64::new(0)).unwrap();
        let tree = hashed.shared.manifest.tree().unwrap();
        let dest = dir.path().join("out");
        let part = crate::fsafe::part_path(&dest, &FileId([4; 32]));
        let all = vec![true; tree.entries().len()];
        let (part_tree, existed) = PartTree::open(&part, &dest, tree, &all).unwrap();
        assert!(!existed);
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&part), 0o700);
        for i in 0..tree.num_chunks() {
            let data = hashed.shared.read_chunk(ChunkIndex(i)).unwrap();
            part_tree.write_chunk(tree, ChunkIndex(i), &data).unwrap();
        }
        part_tree.finish(false).unwrap();
        let usual = dir.path().join("usual");
        std::fs::create_dir(&usual).unwrap();
        assert_eq!(mode(&dest), mode(&usual));
    }

    /// A symbolic link planted in a download's `.part` folder is never written through.
    #[test]
    fn a_part_folder_never_writes_through_a_planted_link() {
        let dir = folder();
        let hashed = hash_folder(&dir.path().join("share"), K as u32, &AtomicU64::new(0)).unwrap();
        let AnyManifest::Tree(tree) = &hashed.shared.manifest else {
            panic!("a tree")
        };
        let dest = dir.path().join("out");
        let id = FileId([3; 32]);
        let part = crate::fsafe::part_path(&dest, &id);
        std::fs::create_dir_all(part.join("a")).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, part.join("a/two")).unwrap();
        let all = vec![true; tree.entries().len()];
        let err = PartTree::open(&part, &dest, tree, &all)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        // Without the link, the whole tree is created, written and renamed into place.
        std::fs::remove_file(part.join("a/two")).unwrap();
        let (part_tree, existed) = PartTree::open(&part, &dest, tree, &all).unwrap();
        assert!(existed);
        for i in 0..tree.num_chunks() {
            let data = hashed.shared.read_chunk(ChunkIndex(i)).unwrap();
            part_tree.write_chunk(tree, ChunkIndex(i), &data).unwrap();
        }
        part_tree.finish(false).unwrap();
        // A finished download is snapshotted by path, a hashed folder by descriptor: the same.
        let root = crate::store::tree::open_root(&dest).unwrap();
        let by_path = crate::store::shared::Snapshot::at(&root, "a/two").unwrap();
        let file = std::fs::File::open(dest.join("a/two")).unwrap();
        assert_eq!(by_path, crate::store::shared::Snapshot::of(&file).unwrap());
        assert_eq!(std::fs::read(dest.join("a/two")).unwrap(), vec![2u8; 10]);
        assert!(dest.join("empty").is_dir() && dest.join("zero").is_file());
        assert!(!part.exists());
    }
}
