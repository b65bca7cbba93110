//! One worker per peer connection: keeps requests in flight and hands each chunk that arrives to
//! a verifier.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::{Duration, Instant};

use shoal_proto::peer::{self, Header, RejectReason};
use shoal_proto::ChunkIndex;

use super::pace::{Pace, BUSY_WAIT, BUSY_WAIT_MOST};
use super::verify::Job;
use super::Shared;
use crate::conn::{max_frame_for, ConnError, Payload, PeerConn};
use crate::store::Announced;

/// How long a worker with nothing to ask waits for its peer's next Have. The server drops a
/// client that asks nothing for two minutes; the supervisor then connects again.
const IDLE_WAIT: Duration = Duration::from_secs(180);
/// A `WantMore` that brought no Have is sent again after this long, while the window still has
/// room (the server may have had nothing for us then, and have something now).
const WANT_MORE_AGAIN: Duration = Duration::from_secs(2);

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
    /// A seeder declines a client a chunk once at most (`reveal/first_pass.rs`): a peer that
    /// shows a chunk and declines it again and again would keep this worker asking in a loop.
    #[error("declined chunk {0} a second time")]
    DeclinedTwice(ChunkIndex),
}

async fn pull(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    conn: Option<PeerConn>,
) -> Result<(), PullError> {
    let limit = shared.opts.stall_timeout;
    // What this peer was told we have: our Bitfield, then a Have for each chunk verified since.
    let mut told = Announced::new(shared.store.have());
    let mut conn = match conn {
        // It was asked for the manifest with an empty Bitfield: it learns our chunks as Haves.
        Some(c) => c,
        None => {
            let n = shared.manifest.num_chunks() as usize;
            let mut ours = vec![false; n];
            for i in told.catch_up(shared.store.have()) {
                ours[i.0 as usize] = true;
            }
            let ours = peer::encode_bitfield(&ours);
            tokio::select! {
                _ = shared.cancel.cancelled() => return Ok(()),
                c = PeerConn::connect(addr, shared.id, limit, &ours) => c?,
            }
        }
    };
    conn.reader.set_max_frame(max_frame_for(&shared.manifest));
    conn.reader.set_limit(shared.opts.download_rate.clone());
    {
        let has = conn.peer_has(&shared.manifest)?;
        let mut sched = shared.sched.lock().unwrap();
        if conn.complete {
            sched.peer_reveals(addr);
        }
        sched.peer_bitfield(addr, &has);
        for &i in &conn.early_haves {
            sched.peer_have(addr, i);
        }
    }
    shared.notify();
    let mut changed = shared.changed.subscribe();
    let mut verified = shared.verified.subscribe();
    let mut outstanding: VecDeque<ChunkIndex> = VecDeque::new();
    let (most, unit) = super::part::pace_unit(&shared.manifest, shared.opts.window);
    let mut pace = Pace::new(most, unit);
    // When we asked this peer to show us more, if not since its last Have (`Header::WantMore`).
    let mut asked_more: Option<Instant> = None;
    // Until when the peer is not asked for anything, after it said it was busy; and how long
    // the next wait is.
    let mut busy_until: Option<Instant> = None;
    let mut busy_wait = BUSY_WAIT;
    // Chunks this peer declined as `Elsewhere` on this connection.
    let mut declined: HashSet<ChunkIndex> = HashSet::new();
    loop {
        if busy_until.is_some_and(|t| t <= Instant::now()) {
            busy_until = None;
        }
        changed.borrow_and_update();
        verified.borrow_and_update();
        // Only a complete peer's reveal policy reads them: a download in progress announces
        // what it has on the connection where it is the client, and every Have is a packet on
        // both sides (31 per chunk per connection kind in a swarm of 32).
        for index in told.catch_up(shared.store.have()) {
            if conn.complete {
                conn.writer.queue(&Header::Have { index });
            }
        }
        let (stuck, late, endgame_began) = {
            let mut sched = shared.sched.lock().unwrap();
            sched.set_clock(shared.clock());
            if sched.is_banned(&addr) {
                return Err(PullError::Banned);
            }
            if sched.is_complete() {
                return Ok(());
            }
            let before = sched.in_endgame();
            while busy_until.is_none() && outstanding.len() < pace.window() {
                match sched.next_for(addr) {
                    Some(i) => {
                        tracing::debug!(chunk = %i, "requested");
                        conn.writer.queue(&Header::Request { index: i });
                        pace.requested(outstanding.is_empty(), Instant::now());
                        outstanding.push_back(i);
                    }
                    None => break,
                }
            }
            // A complete peer shows us only some of its chunks (its reveal policy): when what
            // it showed does not fill our window (the rest is done or asked of other peers),
            // ask it to show more, once per Have from it. In its first pass it shows only
            // chunks nobody asked it for yet (or, asked again after finding none, any chunk it
            // never sent, or one it declined us).
            let room = busy_until.is_none() && outstanding.len() < pace.window();
            // In endgame, a chunk in flight elsewhere that is not late yet may be by then.
            let late = if room { sched.next_late() } else { None };
            let again = asked_more.is_some_and(|t| t.elapsed() >= WANT_MORE_AGAIN);
            (
                room && conn.complete && (asked_more.is_none() || again),
                late,
                // This worker took the last missing chunk: the others may now copy late ones.
                !before && sched.in_endgame(),
            )
        };
        if endgame_began {
            shared.notify();
        }
        if stuck {
            tracing::debug!("asking for more");
            conn.writer.queue(&Header::WantMore);
            asked_more = Some(Instant::now());
        }
        conn.writer.flush().await?;
        let frame = if outstanding.is_empty() {
            // Nothing to ask this peer for now: wait for its Haves (or for the download to move
            // on), for as long as it keeps the connection open. Only small frames can come
            // while nothing is requested, so dropping a half-read one here loses nothing: the
            // reader keeps what it has read.
            tokio::select! {
                _ = shared.cancel.cancelled() => return Ok(()),
                _ = changed.changed() => continue,
                // Our news, owed to a complete peer as a Have.
                _ = verified.changed(), if conn.complete => continue,
                _ = tokio::time::sleep_until((shared.epoch + late.unwrap_or_default()).into()), if late.is_some() => continue,
                _ = tokio::time::sleep_until((asked_more.unwrap_or(shared.epoch) + WANT_MORE_AGAIN).into()), if asked_more.is_some() && conn.complete => continue,
                _ = tokio::time::sleep_until(busy_until.unwrap_or(shared.epoch).into()), if busy_until.is_some() => continue,
                f = conn.reader.next(IDLE_WAIT, None) => f?,
            }
        } else {
            tokio::select! {
                _ = shared.cancel.cancelled() => return Ok(()),
                f = conn.reader.next(limit, Some(&shared.pool)) => f?,
            }
        };
        match frame {
            // Only this worker can ask for it: no need to wake the others (with 31 peers that
            // each announce every chunk, that would be 31 wake-ups per Have).
            (Header::Have { index }, _) => {
                asked_more = None;
                shared.sched.lock().unwrap().peer_have(addr, index)
            }
            (Header::Bitfield, Payload::Bytes(bits)) => {
                let has = peer::decode_bitfield(&bits, shared.manifest.num_chunks())
                    .ok_or(ConnError::BadBitfield)?;
                shared.sched.lock().unwrap().peer_bitfield(addr, &has);
                // Chunks asked of it that it no longer claims go back to the others.
                shared.notify();
            }
            (Header::Cancel { .. }, _) => {}
            (Header::Chunk { index }, Payload::Chunk(data)) => {
                if outstanding.front() != Some(&index) {
                    return Err(PullError::OutOfOrder {
                        got: index,
                        expected: outstanding.front().copied(),
                    });
                }
                outstanding.pop_front();
                busy_wait = BUSY_WAIT;
                pace.arrived(data.len(), !outstanding.is_empty(), Instant::now());
                let expected = shared.manifest.chunk_len(index);
                if data.len() != expected as usize {
                    shared.sched.lock().unwrap().hash_failed(addr, index);
                    return Err(PullError::WrongLength {
                        index,
                        got: data.len(),
                        expected,
                    });
                }
                let from_seeder = {
                    let mut sched = shared.sched.lock().unwrap();
                    sched.set_clock(shared.clock());
                    sched.arrived(index);
                    if sched.is_done(index) {
                        // Endgame: someone else's copy already won.
                        tracing::debug!(chunk = %index, "arrived too late");
                        sched.release(addr, index);
                        continue;
                    }
                    // A seeder: it had every chunk when it served us.
                    conn.complete || sched.peer_is_complete(addr)
                };
                let job = Job {
                    shared: shared.clone(),
                    addr,
                    index,
                    data,
                    from_seeder,
                    _token: shared.verifying.token(),
                };
                // The verifier threads live as long as `shared`, so the channel is open.
                let _ = shared.verifiers.send(job);
            }
            // Its upload slots are taken: the chunk goes back to the other peers, and this one
            // is left alone for a while.
            (
                Header::Reject {
                    index: Some(index),
                    reason: RejectReason::Busy,
                },
                _,
            ) if outstanding.front() == Some(&index) => {
                tracing::debug!(chunk = %index, "refused: busy");
                outstanding.pop_front();
                pace.refused(!outstanding.is_empty());
                // The requests pipelined behind it are refused with it: one pause for them all.
                if busy_until.is_none() {
                    busy_until = Some(Instant::now() + busy_wait);
                    busy_wait = (busy_wait * 2).min(BUSY_WAIT_MOST);
                }
                shared.sched.lock().unwrap().release(addr, index);
                shared.notify();
            }
            // A seeder in its first pass sent this chunk to another peer already: that one (or
            // a peer it passes it on to) is asked instead, and this one for its other chunks.
            (
                Header::Reject {
                    index: Some(index),
                    reason: RejectReason::Elsewhere,
                },
                _,
            ) if outstanding.front() == Some(&index) => {
                tracing::debug!(chunk = %index, "declined: elsewhere");
                if !declined.insert(index) {
                    return Err(PullError::DeclinedTwice(index));
                }
                outstanding.pop_front();
                pace.refused(!outstanding.is_empty());
                let mut sched = shared.sched.lock().unwrap();
                sched.release(addr, index);
                sched.peer_lacks(addr, index);
                drop(sched);
                shared.notify();
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
