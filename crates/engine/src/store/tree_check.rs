//! Checking what is on disk against a tree manifest: the files of a resumed download, and a
//! destination that may already be the very folder.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};

use shoal_proto::tree::{EntryKind, TreeManifest};

use super::tree::{hash_tree, open_root, HashTreeError, ToHash};
use super::StoreError;

/// The bytes of the `wanted` files of `tree`.
pub fn wanted_bytes(tree: &TreeManifest, wanted: &[bool]) -> u64 {
    tree.entries()
        .iter()
        .zip(wanted)
        .filter_map(|(e, w)| match (&e.kind, w) {
            (EntryKind::File { size, .. }, true) => Some(*size),
            _ => None,
        })
        .sum()
}

/// Hashes every `wanted` file of `tree` beneath `root`: each file's entry and its chunk hashes.
pub(crate) fn hash_files(
    root: &File,
    shown: &Path,
    tree: &TreeManifest,
    wanted: &[bool],
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> Result<Vec<(usize, Vec<shoal_proto::manifest::ChunkHash>)>, StoreError> {
    let mut which = Vec::new();
    let mut files = Vec::new();
    for (i, e) in tree.entries().iter().enumerate() {
        if !wanted[i] {
            continue;
        }
        if let EntryKind::File { size, .. } = e.kind {
            which.push(i);
            files.push(ToHash {
                path: &e.path,
                size,
            });
        }
    }
    let hashed =
        hash_tree(root, &files, tree.chunk_size(), progress, stop).map_err(|e| match e {
            HashTreeError::Changed(p) => StoreError::ChangedWhileHashing {
                path: shown.join(p),
            },
            HashTreeError::Io(p, e) => StoreError::io(&shown.join(p), e),
        })?;
    Ok(which
        .into_iter()
        .zip(hashed.into_iter().map(|(h, _)| h))
        .collect())
}

/// Whether `dest` already is the folder `tree` describes: a folder (not reached through a
/// symbolic link) holding exactly its entries, every file of its size, executable bit and
/// chunks. `progress` grows by the bytes checked; setting `stop` ends the check early.
pub fn already_complete(
    dest: &Path,
    tree: &TreeManifest,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> Result<bool, StoreError> {
    let Ok(root) = open_root(dest) else {
        return Ok(false);
    };
    let walked = super::tree::walk(dest).map_err(|e| StoreError::io(dest, e))?;
    let same = walked.notes.is_empty()
        && walked.entries.len() == tree.entries().len()
        && walked.entries.iter().zip(tree.entries()).all(|(w, e)| {
            w.path == e.path
                && match (&e.kind, w.file) {
                    (EntryKind::EmptyDir, None) => true,
                    (
                        EntryKind::File {
                            size, executable, ..
                        },
                        Some((s, x)),
                    ) => *size == s && *executable == x,
                    _ => false,
                }
        });
    if !same {
        return Ok(false);
    }
    let all = vec![true; tree.entries().len()];
    let found = hash_files(&root, dest, tree, &all, progress, stop)?;
    Ok(found.into_iter().all(|(i, hashes)| {
        matches!(&tree.entries()[i].kind, EntryKind::File { hashes: want, .. } if *want == hashes)
    }))
}
