//! Any bytes decode to a manifest of either kind or an error, never a panic; a decoded tree's
//! paths all pass the path rules, and only its canonical encoding decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::relpath::RelPath;
use shoal_proto::tree::{TreeManifest, TREE_MAGIC};
use shoal_proto::AnyManifest;

fuzz_target!(|data: &[u8]| {
    // Most inputs would fail on the magic alone: put it in front half the time.
    let bytes = if data.first().is_some_and(|b| b & 1 == 0) {
        [TREE_MAGIC, &data[1..]].concat()
    } else {
        data.to_vec()
    };
    if let Ok(t) = TreeManifest::decode(&bytes) {
        assert_eq!(t.encode(), bytes);
        for e in t.entries() {
            assert!(RelPath::new(e.path.as_str().to_string()).is_ok());
        }
        let total: u64 = (0..t.num_chunks())
            .map(|i| u64::from(t.locate(shoal_proto::ChunkIndex(i)).unwrap().len))
            .sum();
        assert_eq!(total, t.size());
    }
    if let Ok(m) = AnyManifest::decode(&bytes) {
        assert_eq!(AnyManifest::decode_verified(&bytes, &m.id()), Some(m));
    }
});
