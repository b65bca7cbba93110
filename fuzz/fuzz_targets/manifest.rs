//! Any bytes decode to a manifest or an error, never a panic; only a manifest's canonical
//! encoding decodes, so the bytes that verify against an id are exactly the manifest's encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::manifest::id_of_encoding;
use shoal_proto::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data);
        assert_eq!(Manifest::decode_verified(data, &m.id()), Some(m));
    } else {
        assert_eq!(Manifest::decode_verified(data, &id_of_encoding(data)), None);
    }
});
