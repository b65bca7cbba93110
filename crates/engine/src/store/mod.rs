//! Files on disk: hashing a file into its manifest ([`hash`]) or a folder into its tree manifest
//! ([`folder`], on [`tree`]: walking a folder and opening files strictly beneath it), the chunks
//! a peer can vouch for ([`have`]), a file or folder this peer shares, complete or being
//! downloaded ([`shared`]), the shares of a peer ([`library`]), the `.part` file or folder a
//! download writes into ([`part`], [`part_tree`]), and what is on disk checked against a tree
//! ([`tree_check`]).
//!
//! Everything here is blocking I/O; callers run it on `spawn_blocking` or on threads of its own,
//! never on the async runtime's workers.

use std::io;
use std::path::{Path, PathBuf};

use shoal_proto::ManifestError;

pub mod folder;
pub mod hash;
pub mod have;
pub mod library;
pub mod part;
pub mod part_tree;
mod remove;
pub mod shared;
pub mod tree;
pub mod tree_check;

pub use hash::hash_chunks;
pub use have::{Announced, HaveSet};
pub use library::Library;
pub use part::PartFile;
pub use part_tree::PartTree;
pub use shared::{ServeError, SharedFile};

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
    #[error("{path}: {error}")]
    Tree {
        path: PathBuf,
        error: shoal_proto::TreeError,
    },
    #[error("{path} changed while it was being hashed; try again once nothing writes to it")]
    ChangedWhileHashing { path: PathBuf },
    #[error("not enough space on the disk for {path}")]
    DiskFull { path: PathBuf },
    #[error("another leecher is already writing {path}")]
    Locked { path: PathBuf },
    #[error(transparent)]
    Unsafe(#[from] crate::fsafe::FsError),
}

impl StoreError {
    pub fn io(path: &Path, source: io::Error) -> StoreError {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => StoreError::Missing { path },
            io::ErrorKind::PermissionDenied => StoreError::Denied { path },
            io::ErrorKind::IsADirectory => StoreError::IsDir { path },
            // std's name for ENOSPC.
            io::ErrorKind::StorageFull => StoreError::DiskFull { path },
            _ => StoreError::Io {
                path,
                error: source,
            },
        }
    }
}
