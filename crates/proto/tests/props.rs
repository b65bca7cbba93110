//! Property tests for the wire formats: every message round-trips, and every decoder maps any byte
//! string (random, of every length, or a damaged valid encoding) to a value or an error, never a
//! panic.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use shoal_proto::manifest::{id_of_encoding, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use shoal_proto::names::{safe_file_name, MAX_LOCAL_NAME};
use shoal_proto::peer::{self, Frame, Header, RejectReason, MAX_FRAME_LEN};
use shoal_proto::tracker::{
    DecodeError, ErrorCode, ListEntry, Request, RequestBody, Response, ResponseBody, MAGIC,
    MAX_DATAGRAM,
};
use shoal_proto::{
    ChunkIndex, ConnectionId, FileId, IdPrefix, Manifest, ManifestError, TransactionId,
};
use shoal_testkit::strategies::{socket_addr, Leaves};

// ---------------------------------------------------------------------------------------------
// Strategies (the tracker's messages are built in shoal_testkit::strategies)
// ---------------------------------------------------------------------------------------------

fn file_id() -> BoxedStrategy<FileId> {
    Leaves::whole().file_id
}

fn name() -> BoxedStrategy<String> {
    Leaves::whole().name
}

fn request_body() -> impl Strategy<Value = RequestBody> {
    Leaves::whole().request_body()
}

fn txn() -> impl Strategy<Value = TransactionId> {
    any::<u32>().prop_map(TransactionId)
}

fn conn() -> impl Strategy<Value = ConnectionId> {
    any::<u64>().prop_map(ConnectionId)
}

fn chunk_index() -> impl Strategy<Value = ChunkIndex> {
    any::<u32>().prop_map(ChunkIndex)
}

fn list_entry() -> impl Strategy<Value = ListEntry> {
    (file_id(), any::<u64>(), any::<u32>(), any::<u32>(), name()).prop_map(
        |(id, size, seeders, leechers, name)| ListEntry {
            id,
            size,
            seeders,
            leechers,
            name,
        },
    )
}

fn request() -> impl Strategy<Value = Request> {
    (txn(), conn(), request_body()).prop_map(|(txn, conn, body)| Request { txn, conn, body })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::BadConnection),
        Just(ErrorCode::Full),
        Just(ErrorCode::BadName),
        Just(ErrorCode::RateLimited),
    ]
}

fn response_body() -> impl Strategy<Value = ResponseBody> {
    prop_oneof![
        conn().prop_map(|conn| ResponseBody::Connected { conn }),
        any::<u32>().prop_map(|interval_secs| ResponseBody::Ack { interval_secs }),
        Just(ResponseBody::Unknown),
        (any::<u32>(), vec(socket_addr(), 0..24)).prop_map(|(interval_secs, peers)| {
            ResponseBody::Peers {
                interval_secs,
                peers,
            }
        }),
        (vec(list_entry(), 0..6), option::of(any::<u32>()))
            .prop_map(|(entries, next)| ResponseBody::Files { entries, next }),
        error_code().prop_map(|code| ResponseBody::Error { code }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    (txn(), response_body()).prop_map(|(txn, body)| Response { txn, body })
}

fn reject_reason() -> impl Strategy<Value = RejectReason> {
    prop_oneof![
        Just(RejectReason::UnknownFile),
        Just(RejectReason::VersionMismatch),
        Just(RejectReason::NoSuchChunk),
        Just(RejectReason::Unavailable),
        Just(RejectReason::Busy),
        Just(RejectReason::Protocol),
        Just(RejectReason::NotHave),
        Just(RejectReason::Elsewhere),
        any::<u16>().prop_map(|ours| RejectReason::WrongVersion { ours }),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        (any::<u16>(), file_id()).prop_map(|(version, file)| Header::Hello { version, file }),
        (any::<u16>(), any::<bool>())
            .prop_map(|(version, complete)| Header::Welcome { version, complete }),
        Just(Header::GetManifest),
        Just(Header::Manifest),
        chunk_index().prop_map(|index| Header::Request { index }),
        chunk_index().prop_map(|index| Header::Chunk { index }),
        (option::of(chunk_index()), reject_reason())
            .prop_map(|(index, reason)| Header::Reject { index, reason }),
        chunk_index().prop_map(|index| Header::Have { index }),
        Just(Header::Bitfield),
        chunk_index().prop_map(|index| Header::Cancel { index }),
        Just(Header::WantMore),
    ]
}

fn carries_payload(header: &Header) -> bool {
    matches!(
        header,
        Header::Chunk { .. } | Header::Manifest | Header::Bitfield
    )
}

/// A frame as a sender builds it: a payload exactly on the headers that carry one. The payload is
/// opaque to the framing, so a cheap pattern stands in for random bytes.
fn frame() -> impl Strategy<Value = Frame> {
    header().prop_flat_map(|header| {
        let max_payload = if carries_payload(&header) { 2048 } else { 0 };
        (0..=max_payload, any::<u8>()).prop_map(move |(len, seed)| {
            let payload: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect();
            Frame {
                header: header.clone(),
                payload: payload.into(),
            }
        })
    })
}

/// A valid manifest: a power-of-two chunk size in range and a size that needs exactly as many
/// chunks as there are hashes. Up to 140 hashes, so the count's varint takes one or two bytes;
/// the hashes are opaque to the encoding, so a cheap pattern stands in for real ones.
fn manifest() -> impl Strategy<Value = Manifest> {
    let min_log = MIN_CHUNK_SIZE.trailing_zeros();
    let max_log = MAX_CHUNK_SIZE.trailing_zeros();
    (min_log..=max_log, 0..140u32, any::<u8>())
        .prop_flat_map(|(log, n, seed)| {
            let chunk_size = 1u32 << log;
            let (n, cs) = (u64::from(n), u64::from(chunk_size));
            let sizes = if n == 0 {
                0..=0
            } else {
                (n - 1) * cs + 1..=n * cs
            };
            (sizes, Just(chunk_size), Just(n), Just(seed))
        })
        .prop_map(|(size, chunk_size, n, seed)| {
            let hashes = (0..n as u32)
                .map(|i| {
                    let mut hash = [seed; 32];
                    hash[..4].copy_from_slice(&i.to_le_bytes());
                    hash
                })
                .collect();
            Manifest::new(size, chunk_size, hashes)
                .expect("the strategy builds consistent manifests")
        })
}

/// Damage done to a valid encoding.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Insert { at: usize, value: u8 },
    Remove { at: usize },
    Truncate { at: usize },
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ];
    vec(one, 1..4)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::FlipBit { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
            Mutation::Set { at, value } if len > 0 => bytes[at % len] = value,
            Mutation::Insert { at, value } => bytes.insert(at % (len + 1), value),
            Mutation::Remove { at } if len > 0 => {
                bytes.remove(at % len);
            }
            Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the never-panic tests
// ---------------------------------------------------------------------------------------------

/// Runs every decoder over `bytes`. Whatever decodes must survive a second trip unchanged: it
/// may have come from a non-canonical encoding, but its own encoding is canonical.
fn decode_everything(bytes: &[u8]) {
    if let Ok(req) = Request::decode(bytes) {
        let again = req.encode();
        assert!(
            again.len() <= bytes.len(),
            "a canonical encoding is never longer"
        );
        assert_eq!(Request::decode(&again), Ok(req));
    }
    if let Ok(resp) = Response::decode(bytes) {
        let again = resp.encode();
        assert!(
            again.len() <= bytes.len(),
            "a canonical encoding is never longer"
        );
        assert_eq!(Response::decode(&again), Ok(resp));
    }
    if let Ok(frame) = peer::decode_frame(Bytes::copy_from_slice(bytes)) {
        assert_eq!(frame_round_trip(&frame), frame);
    }
    // Bytes that hash to the id get past the check and reach `Manifest::decode`, which accepts
    // only the canonical encoding: the manifest it returns has exactly that id.
    if let Some(m) = Manifest::decode_verified(bytes, &id_of_encoding(bytes)) {
        assert_eq!(m.encode(), bytes);
    }
    split_all(bytes, MAX_FRAME_LEN);
    check_safe_name(&safe_file_name(
        &String::from_utf8_lossy(bytes),
        &FileId([0; 32]),
    ));
}

/// Splits and decodes frames off `bytes` until it runs out or meets an error.
fn split_all(bytes: &[u8], max: usize) -> Vec<Result<Frame, peer::FrameError>> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        let before = buf.len();
        match peer::split_frame(&mut buf, max) {
            Ok(Some(body)) => {
                assert!(body.len() <= max);
                assert_eq!(buf.len(), before - peer::LENGTH_PREFIX - body.len());
                frames.push(peer::decode_frame(body));
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame stays in the buffer");
                return frames;
            }
            Err(_) => {
                assert_eq!(buf.len(), before, "a refused frame stays in the buffer");
                return frames;
            }
        }
    }
}

fn encode_frames(frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        peer::encode_frame(f, &mut out);
    }
    out
}

fn frame_round_trip(frame: &Frame) -> Frame {
    let mut out = encode_frames(std::slice::from_ref(frame));
    let body = peer::split_frame(&mut out, MAX_FRAME_LEN)
        .unwrap()
        .expect("a whole frame is there");
    assert!(out.is_empty(), "split_frame takes exactly one frame");
    peer::decode_frame(body).unwrap()
}

fn check_safe_name(out: &str) {
    assert!(!out.is_empty() && out != "." && out != "..", "{out:?}");
    assert!(!out.contains(['/', '\\']), "{out:?}");
    assert!(!out.chars().any(char::is_control), "{out:?}");
    assert!(out.len() <= MAX_LOCAL_NAME, "{} bytes", out.len());
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trips(req in request()) {
        let bytes = req.encode();
        prop_assert!(bytes.starts_with(&MAGIC));
        if bytes.len() <= MAX_DATAGRAM {
            prop_assert_eq!(Request::decode(&bytes), Ok(req));
        } else {
            prop_assert_eq!(Request::decode(&bytes), Err(DecodeError::TooLong(bytes.len())));
        }
    }

    #[test]
    fn response_round_trips(resp in response()) {
        let bytes = resp.encode();
        prop_assert!(bytes.starts_with(&MAGIC));
        if bytes.len() <= MAX_DATAGRAM {
            prop_assert_eq!(Response::decode(&bytes), Ok(resp));
        } else {
            prop_assert_eq!(Response::decode(&bytes), Err(DecodeError::TooLong(bytes.len())));
        }
    }

    /// A strict prefix of a valid datagram never decodes, and neither does one with a byte more.
    #[test]
    fn truncated_or_extended_datagrams_are_refused(req in request(), resp in response(), cut in any::<usize>(), extra in any::<u8>()) {
        let bytes = req.encode();
        prop_assert!(Request::decode(&bytes[..cut % bytes.len()]).is_err());
        let mut longer = bytes;
        longer.push(extra);
        prop_assert!(Request::decode(&longer).is_err());

        let bytes = resp.encode();
        prop_assert!(Response::decode(&bytes[..cut % bytes.len()]).is_err());
        let mut longer = bytes;
        longer.push(extra);
        prop_assert!(Response::decode(&longer).is_err());
    }

    #[test]
    fn frame_round_trips(frame in frame()) {
        prop_assert_eq!(frame_round_trip(&frame), frame.clone());

        // Writing the head and then the payload, as a seeder sends a chunk, gives the same bytes.
        let mut split = BytesMut::new();
        peer::encode_head(&frame.header, frame.payload.len(), &mut split);
        split.extend_from_slice(&frame.payload);
        prop_assert_eq!(split, encode_frames(std::slice::from_ref(&frame)));
    }

    /// Frames written back to back and read in arbitrary pieces come out whole and in order.
    #[test]
    fn frame_streams_split_in_order(frames in vec(frame(), 0..8), cuts in vec(any::<usize>(), 0..8)) {
        let wire = encode_frames(&frames);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();

        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut fed = 0;
        for cut in cuts {
            buf.extend_from_slice(&wire[fed..cut]);
            fed = cut;
            while let Some(body) = peer::split_frame(&mut buf, MAX_FRAME_LEN).unwrap() {
                got.push(peer::decode_frame(body).unwrap());
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    /// A frame longer than the maximum is refused from its prefix alone, before it has arrived.
    #[test]
    fn bitfields_round_trip(has in vec(any::<bool>(), 0..200), extra in 0u32..20) {
        let bytes = peer::encode_bitfield(&has);
        prop_assert_eq!(peer::decode_bitfield(&bytes, has.len() as u32), Some(has.clone()));
        // A longer file: the same chunks, the rest missing.
        let mut longer = has.clone();
        longer.resize(has.len() + extra as usize, false);
        prop_assert_eq!(peer::decode_bitfield(&bytes, longer.len() as u32), Some(longer));
    }

    #[test]
    fn split_frame_refuses_over_max(frame in frame(), max in 0usize..64) {
        let wire = encode_frames(std::slice::from_ref(&frame));
        let len = wire.len() - peer::LENGTH_PREFIX;
        let mut buf = BytesMut::from(&wire[..peer::LENGTH_PREFIX]);
        let got = peer::split_frame(&mut buf, max);
        if len > max {
            prop_assert_eq!(got, Err(peer::FrameError::TooLong { len, max }));
        } else {
            prop_assert_eq!(got, Ok(None));
        }
    }

    #[test]
    fn manifest_round_trips(m in manifest(), other in file_id()) {
        let bytes = m.encode();
        prop_assert_eq!(Manifest::decode(&bytes), Ok(m.clone()));
        prop_assert_eq!(m.id(), id_of_encoding(&bytes));
        prop_assert_eq!(Manifest::decode_verified(&bytes, &m.id()), Some(m.clone()));
        if other != m.id() {
            prop_assert_eq!(Manifest::decode_verified(&bytes, &other), None);
        }
        // The chunks tile the file exactly.
        let total: u64 = (0..m.num_chunks()).map(|i| u64::from(m.chunk_len(ChunkIndex(i)))).sum();
        prop_assert_eq!(total, m.size());
        prop_assert_eq!(m.chunk_len(ChunkIndex(m.num_chunks())), 0);
    }

    /// One manifest has one encoding, hence one id: an over-long varint or a trailing byte, which
    /// postcard alone would accept, is refused.
    #[test]
    fn non_canonical_manifests_are_refused(m in manifest(), extra in any::<u8>()) {
        let bytes = m.encode();
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(Manifest::decode(&longer), Err(ManifestError::Encoding));

        // The size comes first: stretch its varint by one byte without changing its value.
        let mut stretched = bytes;
        let last = stretched.iter().position(|b| b & 0x80 == 0).unwrap();
        stretched[last] |= 0x80;
        stretched.insert(last + 1, 0);
        prop_assert_eq!(Manifest::decode(&stretched), Err(ManifestError::Encoding));
        prop_assert_eq!(Manifest::decode_verified(&stretched, &id_of_encoding(&stretched)), None);
    }

    /// The id pins every byte: a changed encoding is refused by `decode_verified` even when it
    /// still decodes.
    #[test]
    fn damaged_manifests_are_not_verified(m in manifest(), damage in mutations()) {
        let bytes = m.encode();
        let damaged = mutate(bytes.clone(), &damage);
        if damaged != bytes {
            prop_assert_eq!(Manifest::decode_verified(&damaged, &m.id()), None);
        }
    }

    #[test]
    fn id_prefix_matches_its_id(id in file_id(), len in IdPrefix::MIN_LEN..=64, upper in any::<bool>()) {
        let hex = id.to_hex();
        prop_assert_eq!(FileId::from_hex(&hex), Some(id));
        let text = if upper { hex[..len].to_ascii_uppercase() } else { hex[..len].to_string() };
        prop_assert!(IdPrefix::parse(&text).unwrap().matches(&id));
    }
}

// ---------------------------------------------------------------------------------------------
// Never a panic
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1400)) {
        decode_everything(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_magic_never_panic(rest in vec(any::<u8>(), 0..1400)) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&rest);
        decode_everything(&bytes);
    }

    /// Any limit a connection could use. A limit past `MAX_FRAME_LEN` is not tried: split_frame
    /// reserves room for the frame a prefix announces, so it would reserve up to 4 GiB.
    #[test]
    fn split_frame_never_panics(bytes in vec(any::<u8>(), 0..256), max in prop_oneof![0usize..=1024, 0..=MAX_FRAME_LEN]) {
        split_all(&bytes, max);
    }

    /// The streaming reader's head decoder: never a panic on any bytes and limit, and on a whole
    /// valid frame it agrees with split_frame + decode_frame, whatever prefix of it it is given.
    #[test]
    fn decode_head_never_panics_and_agrees(bytes in vec(any::<u8>(), 0..256), max in 0usize..=1024, f in frame(), cut in 0usize..200) {
        let _ = shoal_proto::peer::decode_head(&bytes, max);
        let mut whole = BytesMut::new();
        shoal_proto::peer::encode_frame(&f, &mut whole);
        let partial = &whole[..cut.min(whole.len())];
        match shoal_proto::peer::decode_head(partial, shoal_proto::peer::MAX_FRAME_LEN) {
            Ok(Some(head)) => {
                prop_assert_eq!(&head.header, &f.header);
                prop_assert_eq!(head.head_len + head.payload_len, whole.len());
                prop_assert_eq!(head.payload_len, f.payload.len());
            }
            Ok(None) => prop_assert!(partial.len() < whole.len()),
            Err(e) => prop_assert!(false, "a valid frame's head failed: {e}"),
        }
    }

    /// Frame bodies whose header is valid but whose payload is anything.
    #[test]
    fn arbitrary_payloads_never_panic(header in header(), payload in vec(any::<u8>(), 0..64)) {
        let mut wire = BytesMut::new();
        peer::encode_head(&header, payload.len(), &mut wire);
        wire.extend_from_slice(&payload);
        let frames = split_all(&wire, MAX_FRAME_LEN);
        prop_assert_eq!(frames.len(), 1);
        if payload.is_empty() || carries_payload(&header) {
            prop_assert_eq!(&frames[0], &Ok(Frame { header, payload: payload.into() }));
        } else {
            prop_assert_eq!(&frames[0], &Err(peer::FrameError::UnexpectedPayload(header)));
        }
    }

    #[test]
    fn damaged_requests_never_panic(req in request(), damage in mutations()) {
        decode_everything(&mutate(req.encode(), &damage));
    }

    #[test]
    fn damaged_responses_never_panic(resp in response(), damage in mutations()) {
        decode_everything(&mutate(resp.encode(), &damage));
    }

    #[test]
    fn damaged_frames_never_panic(frames in vec(frame(), 1..4), damage in mutations()) {
        let wire = encode_frames(&frames).to_vec();
        let damaged = mutate(wire, &damage);
        split_all(&damaged, MAX_FRAME_LEN);
        // Also as a lone body, without the length prefix.
        decode_everything(damaged.get(peer::LENGTH_PREFIX..).unwrap_or_default());
    }

    #[test]
    fn damaged_manifests_never_panic(m in manifest(), damage in mutations()) {
        decode_everything(&mutate(m.encode(), &damage));
    }

    #[test]
    fn safe_file_name_is_one_harmless_component(
        name in prop_oneof![
            vec(any::<char>(), 0..300).prop_map(String::from_iter),
            // Hostile names: separators, dots, control characters and whitespace, and long runs
            // of multi-byte characters that must be cut on a character boundary.
            "[./\\\\\\x00-\\x1f\\x7f\\x{85} \\ta-zé]{0,40}",
            (0..4usize, prop::sample::select(vec!["é", "😀", " ", "."]), 0..250usize)
                .prop_map(|(ascii, c, n)| "a".repeat(ascii) + &c.repeat(n)),
        ],
        id in file_id(),
    ) {
        check_safe_name(&safe_file_name(&name, &id));
    }
}

/// aquatic's `test_various_input_lengths`: random bytes of every length up to past the largest
/// datagram, bare and after the magic. Seeded, so that a failure names a length that reproduces.
#[test]
fn every_length_decodes_or_errors() {
    let mut runner = TestRunner::deterministic();
    for len in 0..=1300usize {
        for _ in 0..2 {
            let mut bytes = vec![0; len];
            runner.rng().fill_bytes(&mut bytes);
            decode_everything(&bytes);
            let magic = MAGIC.len().min(len);
            bytes[..magic].copy_from_slice(&MAGIC[..magic]);
            decode_everything(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The strategies reach every variant
// ---------------------------------------------------------------------------------------------

// These matches have no wildcard, so a new variant does not compile until it is named here, and
// the test below then fails until its strategy generates it.

fn request_kind(body: &RequestBody) -> &'static str {
    match body {
        RequestBody::Connect { .. } => "Connect",
        RequestBody::Announce { .. } => "Announce",
        RequestBody::Heartbeat { .. } => "Heartbeat",
        RequestBody::Unregister { .. } => "Unregister",
        RequestBody::GetPeers { .. } => "GetPeers",
        RequestBody::List { .. } => "List",
    }
}
const REQUEST_KINDS: usize = 6;

fn response_kind(body: &ResponseBody) -> &'static str {
    match body {
        ResponseBody::Connected { .. } => "Connected",
        ResponseBody::Ack { .. } => "Ack",
        ResponseBody::Unknown => "Unknown",
        ResponseBody::Peers { .. } => "Peers",
        ResponseBody::Files { .. } => "Files",
        ResponseBody::Error { .. } => "Error",
    }
}
const RESPONSE_KINDS: usize = 6;

fn header_kind(header: &Header) -> &'static str {
    match header {
        Header::Hello { .. } => "Hello",
        Header::Welcome { .. } => "Welcome",
        Header::GetManifest => "GetManifest",
        Header::Manifest => "Manifest",
        Header::Request { .. } => "Request",
        Header::Chunk { .. } => "Chunk",
        Header::Reject { .. } => "Reject",
        Header::Have { .. } => "Have",
        Header::Bitfield => "Bitfield",
        Header::Cancel { .. } => "Cancel",
        Header::WantMore => "WantMore",
    }
}
const HEADER_KINDS: usize = 11;

fn kinds_seen<S: Strategy>(
    strategy: S,
    kind: impl Fn(&S::Value) -> &'static str,
) -> BTreeSet<&'static str> {
    let mut runner = TestRunner::deterministic();
    (0..500)
        .map(|_| kind(&strategy.new_tree(&mut runner).unwrap().current()))
        .collect()
}

#[test]
fn strategies_cover_every_variant() {
    assert_eq!(
        kinds_seen(request_body(), request_kind).len(),
        REQUEST_KINDS
    );
    assert_eq!(
        kinds_seen(response_body(), response_kind).len(),
        RESPONSE_KINDS
    );
    assert_eq!(kinds_seen(header(), header_kind).len(), HEADER_KINDS);
    let with_payload = kinds_seen(frame(), |f| {
        if f.payload.is_empty() {
            "empty"
        } else {
            "payload"
        }
    });
    assert_eq!(with_payload.len(), 2, "some frames carry a payload");
}

// ---------------------------------------------------------------------------------------------
// Two-at-a-time SHA-256
// ---------------------------------------------------------------------------------------------

proptest! {
    /// `digest_pair` gives exactly what the `sha2` crate gives for each message, whatever the
    /// lengths (equal ones take the interleaved SHA-NI path where the CPU has it).
    #[test]
    fn digest_pair_is_sha256_of_each(
        a in vec(any::<u8>(), 0..2048),
        b in vec(any::<u8>(), 0..2048),
        equal in any::<bool>(),
    ) {
        use sha2::{Digest, Sha256};
        let b = if equal { a.iter().zip(b.iter().cycle()).map(|(x, y)| x ^ y).collect() } else { b };
        let (x, y) = shoal_proto::sha256::digest_pair(&a, &b);
        prop_assert_eq!(x, <[u8; 32]>::from(Sha256::digest(&a)));
        prop_assert_eq!(y, <[u8; 32]>::from(Sha256::digest(&b)));
    }
}
