//! Any datagram decodes to a request or an error, never a panic; a decoded request re-encodes
//! canonically (never longer than what came in) and decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::tracker::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::decode(data) {
        let again = req.encode();
        assert!(again.len() <= data.len());
        assert_eq!(Request::decode(&again), Ok(req));
    }
});
