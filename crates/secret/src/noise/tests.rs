//! The Noise stream against wrong keys, tampering, truncation and plain peers.

use super::*;
use tokio::io::{duplex, split};

const PSK: [u8; 32] = [7; 32];

async fn pair(
    a: [u8; 32],
    b: [u8; 32],
) -> (
    Result<Transport, HandshakeError>,
    Result<Transport, HandshakeError>,
) {
    let (mut x, mut y) = duplex(1 << 16);
    let (i, r) = tokio::join!(initiate(&mut x, &a, PATTERN), async {
        let r = respond(&mut y, &b, PATTERN).await;
        // A refused responder closes the connection, as the server does.
        drop(y);
        r
    });
    (i, r)
}

#[tokio::test]
async fn bytes_cross_both_ways_in_pieces_of_any_size() {
    let (mut x, mut y) = duplex(1 << 20);
    let (i, r) = tokio::join!(
        initiate(&mut x, &PSK, PATTERN),
        respond(&mut y, &PSK, PATTERN)
    );
    let (i, r) = (i.unwrap(), r.unwrap());
    let (xr, xw) = split(x);
    let (yr, yw) = split(y);
    let (mut xr, mut xw) = (NoiseReader::new(xr, i.clone()), NoiseWriter::new(xw, i));
    let (mut yr, mut yw) = (NoiseReader::new(yr, r.clone()), NoiseWriter::new(yw, r));
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let send = async {
        xw.write_all(&data).await.unwrap();
        xw.flush().await.unwrap();
        xw.shutdown().await.unwrap();
    };
    let recv = async {
        // Small reads and large ones: both paths of the reader.
        let mut got = vec![0u8; 10];
        yr.read_exact(&mut got).await.unwrap();
        let mut rest = Vec::new();
        yr.read_to_end(&mut rest).await.unwrap();
        got.extend(rest);
        got
    };
    let (_, got) = tokio::join!(send, recv);
    assert_eq!(got, data);
    yw.write_all(b"back").await.unwrap();
    yw.flush().await.unwrap();
    let mut back = [0u8; 4];
    xr.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"back");
}

#[tokio::test]
async fn another_key_fails_the_handshake_on_both_sides() {
    let (i, r) = pair(PSK, [8; 32]).await;
    assert!(matches!(r, Err(HandshakeError::Refused)), "{r:?}");
    assert!(i.is_err());
}

#[tokio::test]
async fn a_plain_peer_is_refused_after_its_first_bytes() {
    let (mut x, mut y) = duplex(1 << 16);
    // A plain hello frame: a 4-byte length, then the header.
    x.write_all(&[0, 0, 0, 37, 1, 2, 3]).await.unwrap();
    let r = respond(&mut y, &PSK, PATTERN).await;
    assert!(matches!(r, Err(HandshakeError::Refused)), "{r:?}");
}

/// The sealed bytes of `plain`, sent from initiator to responder, and the responder's keys.
async fn sealed(plain: &[u8]) -> (Vec<u8>, Transport) {
    let (i, r) = pair(PSK, PSK).await;
    let mut w = NoiseWriter::new(Vec::new(), i.unwrap());
    w.write_all(plain).await.unwrap();
    w.flush().await.unwrap();
    (w.inner, r.unwrap())
}

#[tokio::test]
async fn a_tampered_byte_is_an_error_never_plaintext() {
    let plain = vec![0x5a; 100_000];
    let (wire, keys) = sealed(&plain).await;
    assert!(!wire.windows(64).any(|w| w == &plain[..64]));
    for i in [0, 1, 2, 40, 65_536, 65_537, 65_540, wire.len() - 1] {
        let mut bad = wire.clone();
        bad[i] ^= 1;
        let mut r = NoiseReader::new(&bad[..], keys.clone());
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await;
        assert!(e.is_err(), "byte {i} changed and still read");
        // Nothing of a message that failed was handed out; earlier whole messages may have been.
        assert_eq!(out.len() % MAX_PLAIN, 0, "byte {i}");
    }
    let mut r = NoiseReader::new(&wire[..], keys);
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, plain);
}

#[tokio::test]
async fn a_truncated_stream_is_an_error_and_a_replayed_message_too() {
    let (wire, keys) = sealed(&[1u8; 70_000]).await;
    for n in [1, 2, 100, MAX_MESSAGE + 1, wire.len() - 1] {
        let mut r = NoiseReader::new(&wire[..n], keys.clone());
        let e = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{n}");
    }
    // The first message twice: the second is under the wrong nonce.
    let first = 2 + MAX_MESSAGE;
    let mut twice = wire[..first].to_vec();
    twice.extend_from_slice(&wire[..first]);
    let mut r = NoiseReader::new(&twice[..], keys.clone());
    let mut out = Vec::new();
    assert!(r.read_to_end(&mut out).await.is_err());
    assert_eq!(out.len(), MAX_PLAIN);
    // A length below a tag's.
    let mut r = NoiseReader::new(&[0u8, 5, 1, 2, 3, 4, 5][..], keys);
    assert!(r.read_to_end(&mut Vec::new()).await.is_err());
}

/// An empty message (a tag only) that does not open is an error: skipping it unchecked would let
/// anyone on the path swap a real message for one, silently dropping what it carried.
#[tokio::test]
async fn a_forged_empty_message_is_an_error() {
    let (wire, keys) = sealed(&[3u8; 100]).await;
    let mut forged = vec![0u8, TAG as u8];
    forged.extend_from_slice(&[0u8; TAG]);
    forged.extend_from_slice(&wire);
    let mut r = NoiseReader::new(&forged[..], keys);
    let mut out = Vec::new();
    assert!(r.read_to_end(&mut out).await.is_err());
    assert!(out.is_empty());
}
