//! `--only`: the part of a folder a download fetches, chosen by globs on relative paths.

use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use shoal_proto::tree::{EntryKind, TreeManifest};
use shoal_proto::AnyManifest;

use super::DownloadError;

/// Globs on the relative paths inside a folder: `*` and `?` stay within one component, `**`
/// crosses any number (`raw/*.cr2`, `**/*.jpg`). A path is chosen if any glob matches it.
#[derive(Clone)]
pub struct PathFilter {
    set: Arc<GlobSet>,
    /// Names this choice of globs (whatever their order): a download with other globs must not
    /// resume from this one's `.part` folder, which holds files those would not fetch.
    tag: String,
}

impl std::fmt::Debug for PathFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PathFilter({} globs, {})", self.set.len(), self.tag)
    }
}

impl PathFilter {
    pub fn new(globs: &[String]) -> Result<PathFilter, globset::Error> {
        let mut set = GlobSetBuilder::new();
        for g in globs {
            set.add(GlobBuilder::new(g).literal_separator(true).build()?);
        }
        let mut sorted: Vec<&str> = globs.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let digest = shoal_proto::sha256::digest(sorted.join("\0").as_bytes());
        let tag = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(PathFilter {
            set: Arc::new(set.build()?),
            tag,
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    /// Eight hex digits that name this choice of globs.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// What a download fetches: by entry (a single file is one), by chunk what it leaves out, and
/// the bytes and files chosen.
pub(super) struct Choice {
    pub wanted: Vec<bool>,
    pub unwanted: Vec<bool>,
    pub total: u64,
    pub files: usize,
}

/// What the download of `manifest` (named `name`) fetches with `only`; `--only` on a single file,
/// or globs that match nothing, are refused.
pub(super) fn choose(
    manifest: &AnyManifest,
    only: Option<&PathFilter>,
    name: &str,
) -> Result<Choice, DownloadError> {
    let tree = match (manifest, only) {
        (AnyManifest::Tree(t), _) => t,
        (AnyManifest::File(m), None) => {
            return Ok(Choice {
                wanted: vec![true],
                unwanted: vec![false; m.num_chunks() as usize],
                total: m.size(),
                files: 1,
            })
        }
        (AnyManifest::File(_), Some(_)) => {
            return Err(DownloadError::OnlyForFolders(name.to_string()))
        }
    };
    let wanted = wanted(tree, only);
    let (total, files) = chosen(tree, &wanted);
    if files == 0 && only.is_some() {
        return Err(DownloadError::NothingChosen(name.to_string()));
    }
    Ok(Choice {
        // Chunks of entries left out count as done for the scheduler, never for the have-set.
        unwanted: unwanted_chunks(tree, &wanted),
        wanted,
        total,
        files,
    })
}

/// Which entries of `tree` a download fetches: all of them without a filter.
fn wanted(tree: &TreeManifest, filter: Option<&PathFilter>) -> Vec<bool> {
    tree.entries()
        .iter()
        .map(|e| filter.is_none_or(|f| f.matches(e.path.as_str())))
        .collect()
}

/// Chunk by chunk, whether it belongs to an entry not wanted.
fn unwanted_chunks(tree: &TreeManifest, wanted: &[bool]) -> Vec<bool> {
    let mut out = Vec::with_capacity(tree.num_chunks() as usize);
    for (e, w) in tree.entries().iter().zip(wanted) {
        if let EntryKind::File { hashes, .. } = &e.kind {
            out.extend(std::iter::repeat_n(!w, hashes.len()));
        }
    }
    debug_assert_eq!(out.len(), tree.num_chunks() as usize);
    out
}

/// Bytes and files chosen.
fn chosen(tree: &TreeManifest, wanted: &[bool]) -> (u64, usize) {
    let mut bytes = 0;
    let mut files = 0;
    for (e, w) in tree.entries().iter().zip(wanted) {
        if let (EntryKind::File { size, .. }, true) = (&e.kind, w) {
            bytes += size;
            files += 1;
        }
    }
    (bytes, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_components_and_across_with_two_stars() {
        let f = PathFilter::new(&["raw/*.cr2".into(), "**/keep.txt".into()]).unwrap();
        assert!(f.matches("raw/a.cr2"));
        assert!(!f.matches("raw/sub/a.cr2"));
        assert!(!f.matches("jpg/a.jpg"));
        assert!(f.matches("a/b/keep.txt"));
        assert!(f.matches("keep.txt"));
        assert!(PathFilter::new(&["a[".into()]).is_err());
        let again = PathFilter::new(&["**/keep.txt".into(), "raw/*.cr2".into()]).unwrap();
        assert_eq!(f.tag(), again.tag(), "the same globs in another order");
        let other = PathFilter::new(&["raw/*.cr2".into()]).unwrap();
        assert_ne!(f.tag(), other.tag());
    }
}
