//! Where a download writes: the `.part` file of a single file, or the `.part` folder of a tree.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};

use shoal_proto::{AnyManifest, ChunkIndex, FileId};

use crate::store::shared::Data;
use crate::store::{PartFile, PartTree, StoreError};

pub(super) enum Part {
    File(PartFile),
    Tree(PartTree),
}

impl Part {
    /// Opens (or creates) what the download of `manifest` into `dest` writes into (of a folder,
    /// the `wanted` entries, in the folder `part`); whether it was there already (a download to
    /// resume).
    pub(super) fn open(
        part: &Path,
        dest: &Path,
        id: &FileId,
        manifest: &AnyManifest,
        wanted: &[bool],
    ) -> Result<(Part, bool), StoreError> {
        match manifest {
            AnyManifest::File(m) => {
                let part = PartFile::part_path(dest, id);
                let existed = std::fs::metadata(&part).is_ok_and(|m| m.len() > 0);
                Ok((Part::File(PartFile::open(dest, id, m.size())?), existed))
            }
            AnyManifest::Tree(t) => {
                let (part, existed) = PartTree::open(part, dest, t, wanted)?;
                Ok((Part::Tree(part), existed))
            }
        }
    }

    pub(super) fn path(&self) -> &Path {
        match self {
            Part::File(p) => p.path(),
            Part::Tree(p) => p.path(),
        }
    }

    /// What serves the verified chunks while the download goes on.
    pub(super) fn reader(&self) -> std::io::Result<Data> {
        Ok(match self {
            Part::File(p) => p.reader()?.into(),
            Part::Tree(p) => p.reader()?.into(),
        })
    }

    /// Writes a verified chunk where it belongs.
    pub(super) fn write_chunk(
        &self,
        manifest: &AnyManifest,
        index: ChunkIndex,
        data: &[u8],
    ) -> Result<(), StoreError> {
        match (self, manifest) {
            (Part::File(p), AnyManifest::File(m)) => p.write_at(m.offset(index), data),
            (Part::Tree(p), AnyManifest::Tree(t)) => p.write_chunk(t, index, data),
            _ => unreachable!("the part was opened for this manifest"),
        }
    }

    pub(super) fn verify_existing(
        &self,
        manifest: &AnyManifest,
        wanted: &[bool],
        progress: &AtomicU64,
        stop: &AtomicBool,
    ) -> Result<Vec<bool>, StoreError> {
        match (self, manifest) {
            (Part::File(p), AnyManifest::File(m)) => p.verify_existing(m, progress, stop),
            (Part::Tree(p), AnyManifest::Tree(t)) => p.verify_existing(t, wanted, progress, stop),
            _ => unreachable!("the part was opened for this manifest"),
        }
    }

    /// Chunks written straight to the disk, and whether that was offered (single files only).
    pub(super) fn direct_writes(&self) -> (u64, bool) {
        match self {
            Part::File(p) => p.direct_writes(),
            Part::Tree(_) => (0, false),
        }
    }

    pub(super) fn finish(self, replace: bool) -> Result<PathBuf, StoreError> {
        match self {
            Part::File(p) => p.finish(replace),
            Part::Tree(p) => p.finish(replace),
        }
    }
}

/// Most requests in flight per peer, and the chunk length the pace measures in. A folder of small
/// files has chunks far below its chunk size (a 4 KiB file is a 4 KiB chunk): `--window` such
/// chunks would leave the link idle between round trips, so the window grows to keep as many
/// bytes in flight as `--window` whole chunks would (at most [`MOST_SMALL`] requests).
pub(super) fn pace_unit(manifest: &AnyManifest, window: usize) -> (usize, u32) {
    let chunk = manifest.chunk_size();
    let n = u64::from(manifest.num_chunks().max(1));
    let mean = (manifest.size() / n).clamp(1, u64::from(chunk)) as u32;
    let most = (window * (chunk / mean) as usize).clamp(window, MOST_SMALL.max(window));
    (most, mean)
}

/// The most requests in flight at one peer for a folder of small files.
const MOST_SMALL: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::relpath::RelPath;
    use shoal_proto::tree::{Entry, EntryKind, TreeManifest};
    use shoal_proto::Manifest;

    #[test]
    fn small_chunks_get_a_wider_window_of_the_same_bytes() {
        let cs = 512 * 1024;
        let file = Manifest::new(2 * u64::from(cs), cs, vec![[0; 32]; 2]).unwrap();
        assert_eq!(pace_unit(&file.into(), 6), (6, cs));
        let entries = (0..100)
            .map(|i| Entry {
                path: RelPath::new(format!("f{i:03}")).unwrap(),
                kind: EntryKind::File {
                    size: 4096,
                    executable: false,
                    hashes: vec![[0; 32]],
                },
            })
            .collect();
        let tree = TreeManifest::new(cs, entries).unwrap();
        assert_eq!(pace_unit(&tree.into(), 6), (512, 4096));
    }
}
