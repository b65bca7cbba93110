//! Tree manifests: every hostile tree a peer could send is refused at decode, every valid tree
//! round-trips, chunks map to the right file, and no byte string makes the decoder panic.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde::Serialize;
use shoal_proto::manifest::{hash_chunk, Manifest, MAX_CHUNKS, MIN_CHUNK_SIZE};
use shoal_proto::relpath::RelPath;
use shoal_proto::tree::{
    AnyManifest, Entry, EntryKind, TreeError, TreeManifest, MAX_ENTRIES, TREE_MAGIC,
};
use shoal_proto::ChunkIndex;

const CS: u32 = MIN_CHUNK_SIZE;

/// The wire layout with unchecked paths: what a hostile peer can put on the wire.
#[derive(Serialize)]
enum RawKind {
    File {
        size: u64,
        executable: bool,
        hashes: Vec<[u8; 32]>,
    },
    EmptyDir,
}

fn raw(entries: Vec<(&str, RawKind)>) -> Vec<u8> {
    let entries: Vec<(String, RawKind)> = entries
        .into_iter()
        .map(|(p, k)| (p.to_string(), k))
        .collect();
    [TREE_MAGIC, &postcard::to_allocvec(&(CS, entries)).unwrap()].concat()
}

fn file(size: u64) -> RawKind {
    RawKind::File {
        size,
        executable: false,
        hashes: vec![[1; 32]; size.div_ceil(CS.into()) as usize],
    }
}

fn entry(path: &str, data: &[u8]) -> Entry {
    Entry {
        path: RelPath::new(path.into()).unwrap(),
        kind: EntryKind::File {
            size: data.len() as u64,
            executable: false,
            hashes: data.chunks(CS as usize).map(hash_chunk).collect(),
        },
    }
}

#[test]
fn hostile_trees_are_refused_each_with_a_sentence() {
    let deep = vec!["d"; 10_000].join("/");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", raw(vec![("a/../../b", file(1))])),
        ("absolute", raw(vec![("/etc/passwd", file(1))])),
        ("backslash", raw(vec![("a\\..\\b", file(1))])),
        ("drive", raw(vec![("C:/x", file(1))])),
        ("nul", raw(vec![("a\0b", file(1))])),
        ("control", raw(vec![("a\u{1b}[2Jb", file(1))])),
        ("bidi", raw(vec![("x\u{202E}gpj.exe", file(1))])),
        ("dot", raw(vec![("./a", file(1))])),
        ("empty component", raw(vec![("a//b", file(1))])),
        ("empty path", raw(vec![("", file(1))])),
        ("deep", raw(vec![(&deep, file(1))])),
        ("same", raw(vec![("a", file(1)), ("a", file(1))])),
        ("case", raw(vec![("A", file(1)), ("a", file(1))])),
        ("unsorted", raw(vec![("b", file(1)), ("a", file(1))])),
        (
            "file and folder",
            raw(vec![("a", file(1)), ("a/b", file(1))]),
        ),
        (
            "file and folder, case",
            raw(vec![("A", file(1)), ("a/b", file(1))]),
        ),
        (
            "empty folder with content",
            raw(vec![("a", RawKind::EmptyDir), ("a/b", file(1))]),
        ),
        (
            "file and empty folder",
            raw(vec![("a", file(1)), ("a", RawKind::EmptyDir)]),
        ),
        (
            "hash count",
            raw(vec![(
                "a",
                RawKind::File {
                    size: 3 * u64::from(CS),
                    executable: true,
                    hashes: vec![[0; 32]],
                },
            )]),
        ),
    ];
    for (what, bytes) in cases {
        let err = TreeManifest::decode(&bytes).expect_err(what);
        let sentence = err.to_string();
        assert!(
            !sentence.contains('\n') && !sentence.contains('\u{1b}') && !sentence.contains('\0'),
            "{what}: {sentence:?}"
        );
        assert!(AnyManifest::decode(&bytes).is_err(), "{what}");
    }
}

#[test]
fn too_many_entries_or_chunks_are_refused() {
    let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("{i:08}")).collect();
    let many: Vec<(&str, RawKind)> = names
        .iter()
        .map(|n| (n.as_str(), RawKind::EmptyDir))
        .collect();
    assert_eq!(
        TreeManifest::decode(&raw(many)),
        Err(TreeError::TooManyEntries)
    );
    // The count is read before any entry is built: a huge one is refused as such, whatever
    // follows it, so a peer cannot make us allocate millions of entries first.
    let mut huge = [TREE_MAGIC, &postcard::to_allocvec(&CS).unwrap()].concat();
    huge.extend(postcard::to_allocvec(&(MAX_ENTRIES as u64 * 8)).unwrap());
    huge.extend([1, b'a', 1].repeat(1000));
    assert_eq!(TreeManifest::decode(&huge), Err(TreeError::TooManyEntries));
    let half = u64::from(MAX_CHUNKS / 2 + 1) * u64::from(CS);
    let big = raw(vec![("a", file(half)), ("b", file(half))]);
    assert!(TreeManifest::decode(&big).is_err());
}

#[test]
fn chunks_start_afresh_in_every_file() {
    let a: Vec<u8> = (0..CS + 10).map(|i| i as u8).collect();
    let b = vec![9u8; 5];
    let tree = TreeManifest::new(
        CS,
        vec![
            entry("a", &a),
            Entry {
                path: RelPath::new("empty".into()).unwrap(),
                kind: EntryKind::EmptyDir,
            },
            entry("z/b", &b),
            entry("z/nothing", b""),
        ],
    )
    .unwrap();
    assert_eq!(tree.num_chunks(), 3);
    assert_eq!(tree.size(), a.len() as u64 + 5);
    assert_eq!(tree.file_count(), 3);
    let spans: Vec<_> = (0..4).map(|i| tree.locate(ChunkIndex(i))).collect();
    assert_eq!(
        spans[0].map(|s| (s.entry, s.offset, s.len)),
        Some((0, 0, CS))
    );
    assert_eq!(
        spans[1].map(|s| (s.entry, s.offset, s.len)),
        Some((0, u64::from(CS), 10))
    );
    assert_eq!(
        spans[2].map(|s| (s.entry, s.offset, s.len)),
        Some((2, 0, 5))
    );
    assert_eq!(spans[3], None);
    let any = AnyManifest::Tree(tree.clone());
    assert!(any.matches(ChunkIndex(2), 5, &hash_chunk(&b)));
    assert!(!any.matches(ChunkIndex(1), 10, &hash_chunk(&b)));
    let bytes = tree.encode();
    assert_eq!(AnyManifest::decode_verified(&bytes, &any.id()), Some(any));
    // Trailing bytes or an over-long varint would give the same tree another id.
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(TreeManifest::decode(&longer), Err(TreeError::Encoding));
}

#[test]
fn a_single_file_keeps_its_manifest_and_id() {
    let m = Manifest::of_bytes(b"hello", CS).unwrap();
    let any = AnyManifest::decode(&m.encode()).unwrap();
    assert_eq!(any, AnyManifest::File(m.clone()));
    assert_eq!(any.id(), m.id());
    // The magic read as a file manifest is refused, so no bytes are both.
    assert!(Manifest::decode(&raw(vec![("a", file(1))])).is_err());
}

/// A path component: ordinary names, with dots and spaces but nothing a rule refuses.
fn component() -> impl Strategy<Value = String> + Clone {
    "[a-z0-9][a-z0-9 ._-]{0,7}".prop_filter("not dots", |c| c != "." && c != "..")
}

/// Valid trees: distinct lower-case paths (so no two differ only in case) where no path is
/// inside another.
fn tree() -> impl Strategy<Value = TreeManifest> {
    btree_map(
        vec(component(), 1..4),
        (0u64..40_000, any::<bool>(), any::<bool>()),
        0..20,
    )
    .prop_map(|m| {
        let mut paths: Vec<(String, (u64, bool, bool))> =
            m.into_iter().map(|(c, v)| (c.join("/"), v)).collect();
        paths.sort();
        let mut kept: Vec<(String, (u64, bool, bool))> = Vec::new();
        for (p, v) in paths {
            let clash = kept
                .iter()
                .any(|(k, _)| p.starts_with(&format!("{k}/")) || k.starts_with(&format!("{p}/")));
            if !clash {
                kept.push((p, v));
            }
        }
        let entries = kept
            .into_iter()
            .map(|(p, (size, exec, dir))| Entry {
                path: RelPath::new(p).unwrap(),
                kind: if dir {
                    EntryKind::EmptyDir
                } else {
                    EntryKind::File {
                        size,
                        executable: exec,
                        hashes: vec![[7; 32]; size.div_ceil(CS.into()) as usize],
                    }
                },
            })
            .collect();
        TreeManifest::new(CS, entries).expect("a valid tree")
    })
}

/// Paths that break a rule, each built around an ordinary name.
fn hostile_path() -> impl Strategy<Value = String> {
    let c = component();
    prop_oneof![
        c.clone().prop_map(|c| format!("/{c}")),
        c.clone().prop_map(|c| format!("{c}/../{c}")),
        c.clone().prop_map(|c| format!("../{c}")),
        c.clone().prop_map(|c| format!("{c}/./x")),
        c.clone().prop_map(|c| format!("{c}//x")),
        c.clone().prop_map(|c| format!("{c}/")),
        c.clone().prop_map(|c| format!("{c}\\x")),
        c.clone().prop_map(|c| format!("Z:{c}")),
        (c.clone(), 0u32..32).prop_map(|(c, x)| format!("{c}{}", char::from_u32(x).unwrap())),
        (c.clone(), 0x202Au32..0x202F)
            .prop_map(|(c, x)| format!("{}{c}", char::from_u32(x).unwrap())),
        (c, 65usize..200).prop_map(|(c, n)| vec![c; n].join("/")),
    ]
}

proptest! {
    #[test]
    fn every_valid_tree_round_trips(t in tree()) {
        let bytes = t.encode();
        prop_assert_eq!(&TreeManifest::decode(&bytes).unwrap(), &t);
        let total: u64 = (0..t.num_chunks())
            .map(|i| u64::from(t.locate(ChunkIndex(i)).unwrap().len))
            .sum();
        prop_assert_eq!(total, t.size());
    }

    #[test]
    fn every_hostile_path_is_refused(p in hostile_path(), before in component()) {
        let bytes = raw(vec![(&before, file(1)), (&p, file(2))]);
        prop_assert!(TreeManifest::decode(&bytes).is_err());
        let bytes = raw(vec![(&p, RawKind::EmptyDir)]);
        prop_assert!(TreeManifest::decode(&bytes).is_err());
    }

    #[test]
    fn damaged_trees_never_panic(t in tree(), at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = t.encode();
        let at = at % bytes.len();
        bytes[at] = byte;
        let _ = AnyManifest::decode(&bytes);
        let _ = AnyManifest::decode(&bytes[..at]);
    }
}
