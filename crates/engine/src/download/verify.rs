//! Verification: a few threads hash received chunks, write the good ones into the `.part` file
//! and tell the scheduler; and the size of the pool of chunk buffers that feeds them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_proto::manifest::ChunkHash;
use shoal_proto::sha256;
use shoal_proto::ChunkIndex;

use super::Shared;
use crate::pool::PooledBuf;
use crate::scheduler::{Completion, PeerKey};

/// Chunk buffers for a download: one per connection being read into, and four per core for chunks
/// waiting for, or in, verification and writing (two verifier threads per core, each holding up to
/// two chunks). For large chunks that many would be a lot of memory (42 × 16 MiB), so the pool is
/// also held to [`POOL_BYTES`], but never below what keeps every verifier busy plus a chunk
/// being read.
pub(super) fn pool_size(max_peers: usize, cores: usize, chunk_size: u32) -> usize {
    let busy = 4 * cores + 2;
    (max_peers + busy).min((POOL_BYTES / chunk_size as usize).max(busy))
}

/// What the chunk buffers of one download may take, unless the chunks are so large that a few of
/// them are more (see [`pool_size`]).
const POOL_BYTES: usize = 64 << 20;

/// A received chunk on its way to the disk.
pub(super) struct Job {
    pub(super) shared: Arc<Shared>,
    pub(super) addr: PeerKey,
    pub(super) index: ChunkIndex,
    pub(super) data: PooledBuf,
    /// The peer had every chunk when it sent this one.
    pub(super) from_seeder: bool,
    /// Keeps the download waiting until this job is done.
    pub(super) _token: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// A few threads per core hash and write received chunks, off the async runtime. A fixed set
/// rather than `spawn_blocking` per chunk: concurrency follows the cores (many more writers would
/// only contend for the file's lock), and no thread pool grows over a long download. A thread that finds
/// a second chunk waiting takes both and hashes them together, which is nearly twice as fast (see
/// `shoal_proto::sha256`). The threads end when the download's [`Shared`] (which holds the sender)
/// is dropped.
pub(super) fn spawn_verifiers(n: usize) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("verify-{i}"))
            .spawn(move || loop {
                let (first, second) = {
                    let rx = rx.lock().unwrap();
                    let Ok(first) = rx.recv() else { return };
                    (first, rx.try_recv().ok())
                };
                match second {
                    Some(second) => {
                        let (a, b) = sha256::digest_pair(&first.data, &second.data);
                        verify_and_store(first, &a);
                        verify_and_store(second, &b);
                    }
                    None => {
                        let hash = sha256::digest(&first.data);
                        verify_and_store(first, &hash);
                    }
                }
            });
        spawned.expect("starting a verifier thread");
    }
    tx
}

/// Runs on a verifier thread once the chunk is hashed: check, write, record. A bad chunk strikes
/// its sender.
fn verify_and_store(job: Job, hash: &ChunkHash) {
    let Job {
        shared,
        addr,
        index,
        data,
        ..
    } = &job;
    if !shared.manifest.matches(*index, data.len(), hash) {
        shared
            .progress
            .hash_failures
            .fetch_add(1, Ordering::Relaxed);
        let banned = shared.sched.lock().unwrap().hash_failed(*addr, *index);
        tracing::warn!(peer = %addr, chunk = %index, banned, "chunk failed its hash; discarded");
        shared.notify();
        return;
    }
    if shared.sched.lock().unwrap().is_done(*index) {
        shared.sched.lock().unwrap().completed(*addr, *index, 0);
        return;
    }
    if let Err(e) = shared.part.write_chunk(&shared.manifest, *index, data) {
        shared.fatal.lock().unwrap().get_or_insert(e);
        shared.cancel.cancel();
        shared.notify();
        return;
    }
    // Written: from now on it may be served, and announced to every peer.
    shared.store.add_verified(*index);
    tracing::debug!(chunk = %index, peer = %addr, "chunk verified");
    let (completion, wake_all) = {
        let mut sched = shared.sched.lock().unwrap();
        let completion = sched.completed(*addr, *index, data.len() as u32);
        (completion, sched.is_complete() || sched.in_endgame())
    };
    if completion == Completion::Accepted {
        let from = if job.from_seeder {
            &shared.from_seeders
        } else {
            &shared.from_leechers
        };
        from.fetch_add(1, Ordering::Relaxed);
        shared
            .progress
            .done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        *shared.last_activity.lock().unwrap() = Instant::now();
    }
    // Before the endgame a chunk done takes work away and gives none: only the Haves owed to
    // complete peers need a worker to wake. In the endgame (this chunk may have started it: its
    // peer left and nobody else has it), an idle worker may copy a late chunk, or learn when one
    // will be late; and at the end every worker leaves.
    if wake_all {
        shared.notify();
    } else {
        shared.verified.send_replace(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_bounded_for_large_chunks() {
        const M: u32 = 1 << 20;
        // The default: every connection and every verifier has a buffer (21 MiB on 2 cores).
        assert_eq!(pool_size(32, 2, M / 2), 42);
        // Large chunks: held to 64 MiB, but never starving the verifiers.
        assert_eq!(pool_size(32, 2, 4 * M), 16);
        assert_eq!(pool_size(32, 2, 16 * M), 10);
        assert_eq!(pool_size(32, 8, 16 * M), 34);
        // Small chunks, few peers: as many as can be used.
        assert_eq!(pool_size(1, 2, 16 * 1024), 11);
    }
}
