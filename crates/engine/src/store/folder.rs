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
