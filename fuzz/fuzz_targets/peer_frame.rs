//! A byte stream from a peer is split into frames and decoded, as a connection does, until it
//! runs out or meets an error: never a panic, and every decoded frame survives a round trip.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_proto::manifest::MIN_CHUNK_SIZE;
use shoal_proto::peer::{
    decode_bitfield, decode_frame, decode_head, encode_bitfield, encode_frame,
    max_frame_for_chunk_size, split_frame, Header,
};

fuzz_target!(|data: &[u8]| {
    // The smallest limit a connection uses: inputs are a few KiB, so a larger one would only make
    // split_frame reserve megabytes for a frame that never arrives, and slow the fuzzer down.
    let max = max_frame_for_chunk_size(MIN_CHUNK_SIZE);
    // The streaming reader's decoder sees the same bytes.
    let _ = decode_head(data, max);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(body)) = split_frame(&mut buf, max) {
        let Ok(frame) = decode_frame(body) else {
            continue;
        };
        if frame.header == Header::Bitfield {
            // A Bitfield from the network, for files of a few sizes: refused or read back.
            for n in [0, 1, 9, 64, 1000] {
                if let Some(has) = decode_bitfield(&frame.payload, n) {
                    assert_eq!(decode_bitfield(&encode_bitfield(&has), n), Some(has));
                }
            }
        }
        let mut out = BytesMut::new();
        encode_frame(&frame, &mut out);
        let body = split_frame(&mut out, max).unwrap().unwrap();
        assert!(out.is_empty());
        assert_eq!(decode_frame(body), Ok(frame));
    }
});
