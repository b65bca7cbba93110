//! Any datagram decodes to a response or an error, never a panic; a decoded response re-encodes
//! canonically (never longer than what came in) and decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::tracker::Response;

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = Response::decode(data) {
        let again = resp.encode();
        assert!(again.len() <= data.len());
        assert_eq!(Response::decode(&again), Ok(resp));
    }
});
