//! One worker per peer connection: keeps requests in flight and hands each chunk that arrives to
//! a verifier.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use shoal_proto::peer::{max_frame_for_chunk_size, Header};
use shoal_proto::ChunkIndex;

use super::verify::Job;
use super::Shared;
use crate::conn::{ConnError, Payload, PeerConn};

/// One peer connection: keeps up to `window` requests in flight and hands each chunk that arrives
/// to a verifier. Returns whether it ended cleanly (nothing left to do).
pub(super) async fn worker(shared: Arc<Shared>, addr: SocketAddr, conn: Option<PeerConn>) -> bool {
    let result = pull(&shared, addr, conn).await;
    shared.sched.lock().unwrap().peer_gone(addr);
    shared.notify();
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::info!("peer dropped: {e}");
            false
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("sent chunk {got} while {} was due", expected.map_or("no chunk".into(), |i| format!("chunk {i}")))]
    OutOfOrder {
        got: ChunkIndex,
        expected: Option<ChunkIndex>,
    },
    #[error("sent {got} bytes for chunk {index}, which has {expected}")]
    WrongLength {
        index: ChunkIndex,
        got: usize,
        expected: u32,
    },
    #[error("banned for sending data that failed its hash")]
    Banned,
}

async fn pull(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    conn: Option<PeerConn>,
) -> Result<(), PullError> {
    let limit = shared.opts.stall_timeout;
    let mut conn = match conn {
        Some(c) => c,
        None => tokio::select! {
            _ = shared.cancel.cancelled() => return Ok(()),
            c = PeerConn::connect(addr, shared.id, limit) => c?,
        },
    };
    conn.reader
        .set_max_frame(max_frame_for_chunk_size(shared.manifest.chunk_size()));
    conn.reader.set_limit(shared.opts.download_rate.clone());
    // Protocol 1 peers are all complete seeders: tell the scheduler so.
    let everything = vec![true; shared.manifest.num_chunks() as usize];
    shared
        .sched
        .lock()
        .unwrap()
        .peer_bitfield(addr, &everything);
    let mut changed = shared.changed.subscribe();
    let mut outstanding: VecDeque<ChunkIndex> = VecDeque::new();
    loop {
        changed.borrow_and_update();
        {
            let mut sched = shared.sched.lock().unwrap();
            if sched.is_banned(&addr) {
                return Err(PullError::Banned);
            }
            if sched.is_complete() {
                return Ok(());
            }
            while outstanding.len() < shared.opts.window {
                match sched.next_for(addr) {
                    Some(i) => {
                        conn.writer.queue(&Header::Request { index: i });
                        outstanding.push_back(i);
                    }
                    None => break,
                }
            }
        }
        conn.writer.flush().await?;
        if outstanding.is_empty() {
            tokio::select! {
                _ = shared.cancel.cancelled() => return Ok(()),
                _ = changed.changed() => continue,
            }
        }
        let frame = tokio::select! {
            _ = shared.cancel.cancelled() => return Ok(()),
            f = conn.reader.next(limit, Some(&shared.pool)) => f?,
        };
        match frame {
            (Header::Chunk { index }, Payload::Chunk(data)) => {
                if outstanding.front() != Some(&index) {
                    return Err(PullError::OutOfOrder {
                        got: index,
                        expected: outstanding.front().copied(),
                    });
                }
                outstanding.pop_front();
                let expected = shared.manifest.chunk_len(index);
                if data.len() != expected as usize {
                    shared.sched.lock().unwrap().hash_failed(addr, index);
                    return Err(PullError::WrongLength {
                        index,
                        got: data.len(),
                        expected,
                    });
                }
                if shared.sched.lock().unwrap().is_done(index) {
                    // Endgame: someone else's copy already won.
                    shared.sched.lock().unwrap().release(addr, index);
                    continue;
                }
                let job = Job {
                    shared: shared.clone(),
                    addr,
                    index,
                    data,
                    _token: shared.verifying.token(),
                };
                // The verifier threads live as long as `shared`, so the channel is open.
                let _ = shared.verifiers.send(job);
            }
            (
                Header::Reject {
                    index: Some(index),
                    reason,
                },
                _,
            ) if outstanding.front() == Some(&index) => {
                return Err(ConnError::Rejected(reason).into());
            }
            (other, _) => return Err(ConnError::Unexpected(other).into()),
        }
    }
}
