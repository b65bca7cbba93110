//! Relative paths inside a shared folder, as a tree manifest carries them.
//!
//! Every path in a tree manifest comes from the network and is joined onto the leecher's output
//! folder, so it must name a place inside that folder on every file system we write to: no
//! absolute paths, no `.`/`..`, no backslashes or drive letters (which Windows-style file systems
//! read as separators or roots), no control characters or bidirectional overrides (which make a
//! listing lie), and bounded in length and depth. [`RelPath::new`] is the only way to make one.

use serde::{Deserialize, Serialize};

use crate::names::unprintable;

/// Longest relative path, in bytes: far below Linux's 4,096-byte `PATH_MAX`, leaving room for the
/// output folder and the temporary folder's name in front.
pub const MAX_PATH_LEN: usize = 2048;
/// Longest single component, in bytes (the common file-system limit).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Most components in one path.
pub const MAX_DEPTH: usize = 64;

/// Why a path from a manifest is refused; each reads after "the path ... ".
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum PathError {
    #[error("is empty")]
    Empty,
    #[error("is absolute")]
    Absolute,
    #[error("is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("is more than {MAX_DEPTH} folders deep")]
    TooDeep,
    #[error("has an empty component (a doubled or trailing /)")]
    EmptyComponent,
    #[error("has a component longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong,
    #[error("has a . or .. component")]
    Dots,
    #[error("holds a backslash")]
    Backslash,
    #[error("holds a control character, a bidirectional control or an invisible character")]
    Unprintable,
    #[error("starts with a drive letter")]
    DriveLetter,
}

/// A checked relative path: components joined by `/`, each safe to create inside a folder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RelPath(String);

impl RelPath {
    /// Checks `path` against every rule of this module.
    pub fn new(path: String) -> Result<RelPath, PathError> {
        check(&path)?;
        Ok(RelPath(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Every folder this path is inside, outermost first (`a/b/c` gives `a` and `a/b`).
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(move |(at, _)| &self.0[..at])
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.chars().any(unprintable) {
        return Err(PathError::Unprintable);
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(PathError::DriveLetter);
    }
    let mut depth = 0;
    for c in path.split('/') {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        if c.is_empty() {
            return Err(PathError::EmptyComponent);
        }
        if c == "." || c == ".." {
            return Err(PathError::Dots);
        }
        if c.len() > MAX_COMPONENT_LEN {
            return Err(PathError::ComponentTooLong);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused_with_their_reason() {
        let deep = vec!["a"; MAX_DEPTH + 1].join("/");
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("..", PathError::Dots),
            ("a/../../b", PathError::Dots),
            ("./a", PathError::Dots),
            ("a/.", PathError::Dots),
            ("a//b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("a\\..\\b", PathError::Backslash),
            ("C:/Windows", PathError::DriveLetter),
            ("c:evil", PathError::DriveLetter),
            ("a\0b", PathError::Unprintable),
            ("a\nb", PathError::Unprintable),
            ("evil\u{202E}txt.exe", PathError::Unprintable),
            (&deep, PathError::TooDeep),
        ];
        for (p, why) in cases {
            assert_eq!(RelPath::new(p.to_string()), Err(why.clone()), "{p:?}");
        }
        assert_eq!(
            RelPath::new("x".repeat(256)),
            Err(PathError::ComponentTooLong)
        );
        assert_eq!(
            RelPath::new(vec!["y".repeat(200); 11].join("/")),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "a",
            "raw/IMG 0001.CR2",
            "...",
            "a.b/c..d",
            "12:30 photo.jpg",
            "日本/写真.jpg",
        ] {
            let r = RelPath::new(p.to_string()).unwrap();
            assert_eq!(r.as_str(), p);
        }
        let r = RelPath::new("a/b/c".into()).unwrap();
        assert_eq!(r.ancestors().collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(r.components().count(), 3);
    }
}
