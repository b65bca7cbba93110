//! The chunk server's answers, over real sockets on loopback.

use super::*;
use crate::conn::{Payload, PeerConn};
use crate::pool::BufferPool;
use shoal_proto::Manifest;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(super) const LIMIT: Duration = Duration::from_secs(10);

/// A download in progress that has verified chunk 0 of three, served by a running server.
pub(super) async fn partial_server() -> (Arc<SharedFile>, Vec<u8>, SocketAddr, CancellationToken) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.part");
    let data: Vec<u8> = (0..3 * 16 * 1024u32).map(|i| (i % 249) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let manifest = Manifest::of_bytes(&data, 16 * 1024).unwrap();
    let file = Arc::new(SharedFile::in_progress(
        &dir.path().join("f"),
        "f".into(),
        manifest,
        std::fs::File::open(&path).unwrap(),
        &[true, false, false],
    ));
    let library = Library::new();
    library.share(file.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(serve(listener, library, None, cancel.clone()));
    (file, data, addr, cancel)
}

/// Reads the next frame, which must be a Have for chunk `index`.
pub(super) async fn expect_have(conn: &mut PeerConn, pool: &Arc<BufferPool>, index: u32) {
    match conn.reader.next(LIMIT, Some(pool)).await.unwrap().0 {
        Header::Have { index: got } if got == ChunkIndex(index) => {}
        other => panic!("expected Have for chunk {index}, got {other:?}"),
    }
}

/// Reads the next frame, which must be chunk `index` of the 16 KiB-chunked `data`.
pub(super) async fn expect_chunk(
    conn: &mut PeerConn,
    pool: &Arc<BufferPool>,
    index: u32,
    data: &[u8],
) {
    match conn.reader.next(LIMIT, Some(pool)).await.unwrap() {
        (Header::Chunk { index: got }, Payload::Chunk(buf)) if got == ChunkIndex(index) => {
            let at = index as usize * 16 * 1024;
            assert!(buf[..] == data[at..at + 16 * 1024]);
        }
        (other, _) => panic!("expected chunk {index}, got {other:?}"),
    }
}

/// A download in progress serves only what it verified: the rest is refused as `NotHave`
/// (whatever the `.part` holds there), and a chunk verified later is announced with `Have`
/// and then served.
#[tokio::test]
async fn a_partial_file_serves_only_verified_chunks_and_announces_new_ones() {
    let (file, data, addr, cancel) = partial_server().await;
    let mut conn = PeerConn::connect(addr, file.id, LIMIT, &[]).await.unwrap();
    assert!(!conn.complete);
    assert_eq!(
        conn.peer_has(&file.manifest).unwrap(),
        vec![true, false, false]
    );
    conn.manifest(&file.id, LIMIT).await.unwrap();
    let pool = BufferPool::new(2);
    conn.writer
        .send(&Header::Request {
            index: ChunkIndex(1),
        })
        .await
        .unwrap();
    match conn.reader.next(LIMIT, Some(&pool)).await.unwrap().0 {
        Header::Reject {
            index: Some(ChunkIndex(1)),
            reason: RejectReason::NotHave,
        } => {}
        other => panic!("expected NotHave for chunk 1, got {other:?}"),
    }
    file.add_verified(ChunkIndex(1));
    expect_have(&mut conn, &pool, 1).await;
    conn.writer
        .send(&Header::Request {
            index: ChunkIndex(1),
        })
        .await
        .unwrap();
    expect_chunk(&mut conn, &pool, 1, &data).await;
    assert_eq!(file.uploaded(), 1);
    cancel.cancel();
}

/// A protocol 1 peer gets the one refusal it can read, and a leecher that meets a protocol 1
/// server says so in one sentence.
#[tokio::test]
async fn protocol_1_peers_are_told_and_named() {
    let (file, _, addr, cancel) = partial_server().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut hello = bytes::BytesMut::new();
    peer::encode_head(
        &Header::Hello {
            version: 1,
            file: file.id,
        },
        0,
        &mut hello,
    );
    stream.write_all(&hello).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    // Protocol 1's encoding of `Reject { index: None, reason: VersionMismatch }`.
    assert_eq!(reply, [0, 0, 0, 3, 6, 0, 1]);
    cancel.cancel();

    // A protocol 1 server: refuses our hello the only way it knows.
    let old = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = old.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = old.accept().await.unwrap();
        let mut hello = [0u8; 64];
        let _ = s.read(&mut hello).await.unwrap();
        s.write_all(&reply).await.unwrap();
    });
    let err = PeerConn::connect(old_addr, file.id, LIMIT, &[])
        .await
        .err()
        .expect("a protocol 1 server refuses us");
    assert_eq!(
        err.to_string(),
        format!("peer {old_addr} speaks protocol 1, this leecher speaks {PROTOCOL_VERSION}")
    );
}

/// A client that pipelines requests and then ends its side (cleanly, or with a malformed
/// frame) still gets every chunk it asked for before.
#[tokio::test]
async fn queued_requests_are_answered_after_the_client_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.bin");
    let data: Vec<u8> = (0..10 * 16 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let library = Library::new();
    let file = library.add(SharedFile::hash(&path, 16 * 1024, &AtomicU64::new(0)).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve(listener, library.clone(), None, cancel.clone()));
    let pool = BufferPool::new(2);

    for malformed in [false, true] {
        let mut conn = PeerConn::connect(addr, file.id, Duration::from_secs(10), &[])
            .await
            .unwrap();
        conn.manifest(&file.id, Duration::from_secs(10))
            .await
            .unwrap();
        for index in 0..6 {
            conn.writer.queue(&Header::Request {
                index: ChunkIndex(index),
            });
        }
        if malformed {
            // A length prefix far over what a client may send.
            conn.writer.flush().await.unwrap();
            conn.writer
                .write_raw(&[0xff, 0xff, 0xff, 0x7f])
                .await
                .unwrap();
        } else {
            conn.writer.flush().await.unwrap();
            conn.writer.shutdown().await.unwrap();
        }
        for index in 0..6u32 {
            // A complete file reveals more chunks (Have) as it serves: skip those.
            let next = loop {
                match conn.reader.next(Duration::from_secs(10), Some(&pool)).await {
                    Ok((Header::Have { .. }, _)) => continue,
                    other => break other,
                }
            };
            match next {
                Ok((Header::Chunk { index: got }, Payload::Chunk(buf))) => {
                    assert_eq!(got, ChunkIndex(index));
                    let at = index as usize * 16 * 1024;
                    assert!(buf[..] == data[at..at + 16 * 1024], "chunk {index} intact");
                }
                other => panic!(
                    "chunk {index} (malformed end: {malformed}): {:?}",
                    other.map(|(h, _)| h)
                ),
            }
        }
        loop {
            match conn.reader.next(Duration::from_secs(10), Some(&pool)).await {
                Ok((Header::Have { .. }, _)) => continue,
                Ok((other, _)) => panic!("nothing but Haves after the answers: {other:?}"),
                Err(_) => break,
            }
        }
    }
    cancel.cancel();
    server.await.unwrap();
}

/// A server on 127.0.0.1 with `admission` and `uploads`, sharing a file of ten 16 KiB
/// chunks.
async fn admitting_server(
    admission: Arc<Admission>,
    uploads: Arc<Uploads>,
) -> (
    SocketAddr,
    Arc<SharedFile>,
    CancellationToken,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.bin");
    std::fs::write(&path, vec![7u8; 10 * 16 * 1024]).unwrap();
    let library = Library::new();
    let file = library.add(SharedFile::hash(&path, 16 * 1024, &AtomicU64::new(0)).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(serve_admitting(
        listener,
        library,
        None,
        cancel.clone(),
        admission,
        uploads,
    ));
    (addr, file, cancel, dir)
}

/// The answer to a request; the reveal policy may show more chunks (Haves) before it.
async fn answer(conn: &mut PeerConn, pool: &Arc<BufferPool>) -> (Header, Payload) {
    loop {
        match conn.reader.next(LIMIT, Some(pool)).await.unwrap() {
            (Header::Have { .. }, _) => continue,
            other => return other,
        }
    }
}

/// In a seeder's first pass (some chunk never sent, two clients lacking chunks), a request
/// for a chunk it sent already is declined as `Elsewhere`, and the connection stays open
/// for a chunk never sent.
#[tokio::test]
async fn a_seeder_declines_a_chunk_it_sent_already_in_its_first_pass() {
    let (addr, file, cancel, _dir) = admitting_server(
        Admission::new(16, 8, Duration::from_secs(60)),
        Uploads::new(SLOTS, WAITING, PER_SOURCE),
    )
    .await;
    let pool = BufferPool::new(2);
    let mut a = PeerConn::connect(addr, file.id, LIMIT, &[]).await.unwrap();
    let mut b = PeerConn::connect(addr, file.id, LIMIT, &[]).await.unwrap();
    let ask = |i| Header::Request {
        index: ChunkIndex(i),
    };
    a.writer.send(&ask(3)).await.unwrap();
    let (header, _) = answer(&mut a, &pool).await;
    assert_eq!(
        header,
        Header::Chunk {
            index: ChunkIndex(3)
        }
    );
    b.writer.send(&ask(3)).await.unwrap();
    assert_eq!(answer(&mut b, &pool).await.0, elsewhere(ChunkIndex(3)));
    b.writer.send(&ask(4)).await.unwrap();
    let (header, _) = answer(&mut b, &pool).await;
    assert_eq!(
        header,
        Header::Chunk {
            index: ChunkIndex(4)
        }
    );
    cancel.cancel();
}

/// While every upload slot is taken and nobody may wait, a request is refused as busy (the
/// connection stays open); once a slot is free, the same request is served.
#[tokio::test]
async fn a_request_is_refused_as_busy_while_the_slots_are_taken() {
    let uploads = Uploads::new(1, 0, 1);
    let (addr, file, cancel, _dir) = admitting_server(
        Admission::new(16, 8, Duration::from_secs(60)),
        uploads.clone(),
    )
    .await;
    let mut other = uploads.turn(std::net::Ipv4Addr::new(10, 0, 0, 1).into());
    assert!(other.begin().await, "another client holds the only slot");
    let mut conn = PeerConn::connect(addr, file.id, LIMIT, &[]).await.unwrap();
    let pool = BufferPool::new(2);
    let ask = Header::Request {
        index: ChunkIndex(3),
    };
    conn.writer.send(&ask).await.unwrap();
    match answer(&mut conn, &pool).await.0 {
        Header::Reject {
            index: Some(ChunkIndex(3)),
            reason: RejectReason::Busy,
        } => {}
        other => panic!("expected Busy for chunk 3, got {other:?}"),
    }
    other.end(false);
    conn.writer.send(&ask).await.unwrap();
    match answer(&mut conn, &pool).await {
        (Header::Chunk { index }, Payload::Chunk(buf)) => {
            assert_eq!(index, ChunkIndex(3));
            assert!(buf.iter().all(|&b| b == 7));
        }
        (other, _) => panic!("expected chunk 3, got {other:?}"),
    }
    cancel.cancel();
}

/// Frames that carry no work (Have) do not keep a connection open, however often they come;
/// requests do, well past the idle deadline.
#[tokio::test]
async fn only_work_keeps_a_connection_open() {
    let idle_limit = Duration::from_millis(500);
    let (addr, file, cancel, _dir) = admitting_server(
        Admission::new(16, 8, idle_limit),
        Uploads::new(SLOTS, WAITING, PER_SOURCE),
    )
    .await;
    let patience = Duration::from_secs(10);
    let mut idle = PeerConn::connect(addr, file.id, patience, &[])
        .await
        .unwrap();
    let mut busy = PeerConn::connect(addr, file.id, patience, &[])
        .await
        .unwrap();
    let pool = BufferPool::new(2);
    let have_only = async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = idle.writer.send(&Header::Have { index: ChunkIndex(0) }).await;
                }
                // What the server reveals (Have) is not an end; anything else is.
                r = idle.reader.next(patience, None) => match r {
                    Ok((Header::Have { .. }, _)) => {}
                    r => return r.map(|(h, _)| h),
                },
            }
        }
    };
    let mut served = 0;
    let asking = async {
        loop {
            let index = ChunkIndex(served % 10);
            busy.writer.send(&Header::Request { index }).await.unwrap();
            loop {
                match busy.reader.next(patience, Some(&pool)).await {
                    Ok((Header::Chunk { .. }, _)) => break,
                    Ok((Header::Have { .. }, _)) => {}
                    other => panic!("chunk {index}: {:?}", other.map(|(h, _)| h)),
                }
            }
            served += 1;
            tokio::task::yield_now().await;
        }
    };
    let ended = tokio::time::timeout(patience, async {
        tokio::select! {
            r = have_only => r,
            _ = asking => unreachable!("asks forever"),
        }
    })
    .await
    .expect("a connection that sent only Have was never closed");
    assert!(matches!(ended, Err(ConnError::Closed)), "{ended:?}");
    // The connection that kept asking outlived the idle one, and is still served.
    busy.writer
        .send(&Header::Request {
            index: ChunkIndex(0),
        })
        .await
        .unwrap();
    let next = loop {
        match busy.reader.next(patience, Some(&pool)).await {
            Ok((Header::Have { .. }, _)) => {}
            other => break other,
        }
    };
    assert!(matches!(next, Ok((Header::Chunk { .. }, _))));
    assert!(served > 0);
    cancel.cancel();
}

/// The connection over a source's cap is told "busy" and closed at once; another source is
/// served meanwhile.
#[tokio::test]
async fn a_source_over_its_cap_is_refused_and_others_are_not() {
    let (addr, file, cancel, _dir) = admitting_server(
        Admission::new(16, 2, Duration::from_secs(60)),
        Uploads::new(SLOTS, WAITING, PER_SOURCE),
    )
    .await;
    let patience = Duration::from_secs(10);
    let from = |last: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from(([127, 0, 0, last], 0)))
            .unwrap();
        conn::split(socket.connect(addr).await.unwrap(), 1 << 16)
    };
    let mut kept = Vec::new();
    for _ in 0..2 {
        let (mut r, mut w) = from(2).await;
        w.send(&Header::Hello {
            version: PROTOCOL_VERSION,
            file: file.id,
        })
        .await
        .unwrap();
        let welcome = next_frame(&mut r, patience).await.unwrap().header;
        assert!(matches!(welcome, Header::Welcome { .. }), "{welcome:?}");
        kept.push((r, w));
    }
    let (mut r, _w) = from(2).await;
    let refused = next_frame(&mut r, patience).await.unwrap().header;
    assert_eq!(
        refused,
        Header::Reject {
            index: None,
            reason: RejectReason::Busy
        }
    );
    assert!(matches!(
        next_frame(&mut r, patience).await,
        Err(ConnError::Closed)
    ));
    PeerConn::connect(addr, file.id, patience, &[])
        .await
        .expect("another source is served");
    cancel.cancel();
}
