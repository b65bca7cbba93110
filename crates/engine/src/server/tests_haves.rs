//! How a chunk server times the `Have`s it sends an idle client (`HAVES_EVERY`), over real
//! sockets on loopback.

use super::tests::{expect_chunk, expect_have, partial_server, LIMIT};
use super::*;
use crate::conn::PeerConn;
use crate::pool::BufferPool;

/// A client of a download in progress that had verified chunk 0 of three, told of chunk 1.
struct Told {
    file: Arc<SharedFile>,
    data: Vec<u8>,
    conn: PeerConn,
    pool: Arc<BufferPool>,
    /// When chunk 1 was verified: no Have about it could leave before then.
    verified: Instant,
    cancel: CancellationToken,
}

/// Connects to a partial server, verifies its chunk 1 and reads the Have for it.
async fn told_of_chunk_1() -> Told {
    let (file, data, addr, cancel) = partial_server().await;
    let mut conn = PeerConn::connect(addr, file.id, LIMIT, &[]).await.unwrap();
    conn.manifest(&file.id, LIMIT).await.unwrap();
    let pool = BufferPool::new(2);
    let verified = Instant::now();
    file.add_verified(ChunkIndex(1));
    expect_have(&mut conn, &pool, 1).await;
    Told {
        file,
        data,
        conn,
        pool,
        verified,
        cancel,
    }
}

/// An idle client's Haves go out at most every `HAVES_EVERY`: the news that comes sooner after
/// the last is held back until then.
#[tokio::test]
async fn an_idle_clients_haves_are_sent_together_at_most_every_haves_every() {
    let Told {
        file,
        mut conn,
        pool,
        verified,
        cancel,
        ..
    } = told_of_chunk_1().await;
    file.add_verified(ChunkIndex(2));
    expect_have(&mut conn, &pool, 2).await;
    assert!(
        verified.elapsed() >= HAVES_EVERY,
        "held back: sent {:?} after chunk 1 was verified",
        verified.elapsed()
    );
    cancel.cancel();
}

/// News held back for an idle client goes out with the next answer, before its chunk.
#[tokio::test]
async fn haves_held_back_go_with_the_next_answer() {
    let Told {
        file,
        data,
        mut conn,
        pool,
        cancel,
        ..
    } = told_of_chunk_1().await;
    // Within HAVES_EVERY of that Have: held back, until this request's answer.
    file.add_verified(ChunkIndex(2));
    conn.writer
        .send(&Header::Request {
            index: ChunkIndex(0),
        })
        .await
        .unwrap();
    // Have 2 first: expect_have fails on the chunk.
    expect_have(&mut conn, &pool, 2).await;
    expect_chunk(&mut conn, &pool, 0, &data).await;
    cancel.cancel();
}
