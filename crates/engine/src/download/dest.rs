//! What stands at a download's destination: looked at before the manifest is asked for (so that
//! what cannot be replaced is refused at once), and again once the verified manifest says whether
//! the download is a file or a folder (the tracker's name only suggests it).

use std::path::Path;

use shoal_proto::AnyManifest;

use super::{DownloadError, DownloadOptions};
use crate::fsafe::{self, Destination};

/// Before the manifest: whether `dest` may already be the download (only the manifest can tell).
/// `folder`: the tracker lists a folder (a name ending in `/`).
pub(super) fn before_manifest(
    dest: &Path,
    folder: bool,
    force: bool,
    listed: u64,
) -> Result<bool, DownloadError> {
    if folder {
        // Anything but a folder is replaced only with --force; a folder may already be the tree.
        return match std::fs::symlink_metadata(dest) {
            Ok(m) if !m.is_dir() && !force => Err(DownloadError::Exists(dest.to_path_buf())),
            _ => Ok(false),
        };
    }
    match fsafe::destination(dest, force, listed)? {
        Destination::Taken => Err(DownloadError::Exists(dest.to_path_buf())),
        d => Ok(d == Destination::MaybeTheFile),
    }
}

/// Once the manifest is verified: whether `dest` may already be the download, the kind now known.
pub(super) fn after_manifest(
    dest: &Path,
    folder: bool,
    opts: &DownloadOptions,
    manifest: &AnyManifest,
    maybe_had: bool,
) -> Result<bool, DownloadError> {
    let exists = || DownloadError::Exists(dest.to_path_buf());
    match (manifest, folder) {
        (AnyManifest::File(m), true) => match fsafe::destination(dest, opts.force, m.size())? {
            Destination::Taken => Err(exists()),
            d => Ok(d == Destination::MaybeTheFile),
        },
        (AnyManifest::File(_), false) => Ok(maybe_had),
        (AnyManifest::Tree(_), _) => match std::fs::symlink_metadata(dest) {
            Err(_) => Ok(false),
            Ok(_) if opts.force => Ok(false),
            // Part of a folder is never "already had": the folder there may hold more.
            Ok(m) if m.is_dir() && opts.only.is_none() => Ok(true),
            Ok(_) => Err(exists()),
        },
    }
}
