//! Fetching the manifest: ask the tracker for peers, and ask those peers (in random order, several
//! at once) until one hands over a manifest that matches the file's id, all within `--timeout`.
//!
//! What a peer can do to us here is bounded three ways:
//! - **Size.** A manifest frame longer than [`manifest_frame_bound`] of the listed size is refused
//!   on its length prefix, before anything is allocated for it.
//! - **Time per attempt.** An attempt (connect, hello, manifest) is cut after
//!   [`ATTEMPT_WINDOWS`] stall timeouts, however steadily the peer trickles.
//! - **Head-of-line.** An attempt that has run for one stall timeout is *slow*: it no longer
//!   holds one of the [`MANIFEST_FANOUT`] places, so another peer is asked beside it (up to
//!   [`MAX_IN_FLIGHT`] attempts in all, which bounds memory to that many frames).
//!
//! And the whole phase, tracker queries included, ends at `--timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use shoal_proto::manifest::{MAX_CHUNKS, MAX_ENCODED_LEN, MIN_CHUNK_SIZE};
use shoal_proto::names::safe_file_name;
use shoal_proto::peer::{FrameError, HEADER_ROOM};
use shoal_proto::tracker::ListEntry;
use shoal_proto::{AnyManifest, FileId};

use super::book::PeerBook;
use super::{DownloadError, DownloadOptions};
use crate::conn::{ConnError, PeerConn};
use crate::tracker_client::{TrackerClient, TrackerError};

/// Peers asked for the manifest at once, not counting slow attempts.
const MANIFEST_FANOUT: usize = 8;
/// Attempts at once, slow ones included: each may hold one bounded frame in memory.
const MAX_IN_FLIGHT: usize = 12;
/// An attempt is cut after this many stall timeouts: enough for the largest manifest (16 MiB)
/// at about 420 KB/s with the default 10 s.
const ATTEMPT_WINDOWS: u32 = 4;
/// Bytes a manifest's encoding may need besides its hashes: varints for the size (up to 10),
/// the chunk size (up to 5) and the number of hashes (up to 5).
const MANIFEST_OVERHEAD: usize = 20;
/// Below this, a bound is not worth enforcing: it is what a frame head is staged in anyway.
const FLOOR: usize = 64 * 1024;

/// The longest manifest frame accepted for a file the tracker lists at `listed` bytes.
///
/// The rule: the manifest of a file of size S lists at most ceil(S / 16 KiB) hashes (the
/// smallest valid chunk size gives the most chunks), so its frame is at most 32 bytes per such
/// chunk plus a small overhead; the bound is that, never above the largest valid manifest, never
/// below [`FLOOR`]. The id says nothing about the size until the manifest is verified (it can
/// stand for any manifest up to `MAX_ENCODED_LEN`), so the tracker's label is the only figure
/// there is. A verified manifest whose size differs from the label is still accepted when it fits:
/// every manifest of a size up to the label does (at any chunk size), and so does a larger one
/// with larger chunks (up to 32 times the label at the default chunk size, and any file of up to
/// 2,048 chunks whatever the label). A label too small for the truth makes every peer's manifest
/// refused, and the download fails saying so: no more than a lying tracker could do by listing
/// no peers.
pub fn manifest_frame_bound(listed: u64) -> usize {
    let chunks = listed
        .div_ceil(u64::from(MIN_CHUNK_SIZE))
        .min(u64::from(MAX_CHUNKS)) as usize;
    let manifest = (chunks * 32 + MANIFEST_OVERHEAD).min(MAX_ENCODED_LEN);
    (manifest + HEADER_ROOM).max(FLOOR)
}

/// Asks the tracker for peers, and peers for the manifest, until one hands over a manifest that
/// matches the id, or `opts.timeout` has passed.
pub(super) async fn fetch_manifest(
    client: &TrackerClient,
    entry: &ListEntry,
    opts: &DownloadOptions,
    book: &mut PeerBook,
) -> Result<(AnyManifest, PeerConn), DownloadError> {
    let deadline = tokio::time::Instant::now() + opts.timeout;
    // A folder's manifest carries its paths, and its chunk count is not bounded by its size
    // (every file starts a chunk, and empty files count too): only the frame bound holds.
    let max_frame = match entry.name.ends_with('/') {
        true => MAX_ENCODED_LEN + HEADER_ROOM,
        false => manifest_frame_bound(entry.size),
    };
    let attempt_limit = opts.stall_timeout * ATTEMPT_WINDOWS;
    let mut attempts = FuturesUnordered::new();
    // When each attempt in flight started.
    let mut in_flight: HashMap<SocketAddr, Instant> = HashMap::new();
    let mut query = Some(Box::pin(client.peers(entry.id)));
    let mut query_wait = Duration::from_millis(250);
    let mut next_query = deadline;
    let mut tracker_error: Option<TrackerError> = None;
    let mut too_large = 0u32;
    loop {
        let now = Instant::now();
        let fresh = in_flight
            .values()
            .filter(|t| now.duration_since(**t) < opts.stall_timeout)
            .count();
        let room = MANIFEST_FANOUT
            .saturating_sub(fresh)
            .min(MAX_IN_FLIGHT - in_flight.len());
        let mut ready = book.ready(now);
        // Random order: whoever the tracker lists first (or sorts first) gets no head start.
        fastrand::shuffle(&mut ready);
        for addr in ready.into_iter().take(room) {
            book.started(addr);
            in_flight.insert(addr, now);
            attempts.push(async move {
                let r = tokio::time::timeout(
                    attempt_limit,
                    get_manifest(addr, entry.id, opts.stall_timeout, max_frame),
                )
                .await
                .unwrap_or(Err(ConnError::Timeout(attempt_limit)));
                (addr, r)
            });
        }
        // Wake when an attempt turns slow, a peer's back-off ends, or the tracker is due.
        let mut wake = deadline;
        for t in in_flight.values() {
            let slow_at = tokio::time::Instant::from_std(*t + opts.stall_timeout);
            if slow_at > tokio::time::Instant::from_std(now) {
                wake = wake.min(slow_at);
            }
        }
        if let Some(t) = book.next_retry(now) {
            wake = wake.min(tokio::time::Instant::from_std(t));
        }
        if query.is_none() {
            wake = wake.min(next_query);
        }
        tokio::select! {
            Some((addr, result)) = attempts.next(), if !attempts.is_empty() => {
                in_flight.remove(&addr);
                match result {
                    Ok(found) => {
                        // The other attempts are dropped (their connections close); those peers
                        // stay ready, and the workers connect to them at once.
                        for (other, _) in in_flight.drain() {
                            book.ended(other, true, Instant::now());
                        }
                        book.ended(addr, true, Instant::now());
                        return Ok(found);
                    }
                    // The manifest is the one the id stands for, and it is refused: no other
                    // peer can offer another one, so give up at once, having written nothing.
                    Err(ConnError::Refused(error)) => {
                        return Err(DownloadError::Refused {
                            name: safe_file_name(entry.name.trim_end_matches('/'), &entry.id),
                            error,
                        });
                    }
                    Err(e) => {
                        if matches!(e, ConnError::Frame(FrameError::TooLong { .. })) {
                            too_large += 1;
                        }
                        tracing::info!(peer = %addr, "no manifest from this peer: {e}");
                        book.ended(addr, false, Instant::now());
                    }
                }
            }
            r = async { query.as_mut().expect("guarded").await }, if query.is_some() => {
                query = None;
                match r {
                    Ok(peers) => book.add(&peers),
                    Err(e) => {
                        tracing::warn!("asking the tracker for peers failed: {e}");
                        tracker_error = Some(e);
                    }
                }
                next_query = tokio::time::Instant::now() + query_wait;
                query_wait = (query_wait * 2).min(Duration::from_secs(5));
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            // Never the raw name: it came from the network and may hold escape sequences.
            let name = safe_file_name(&entry.name, &entry.id);
            if too_large > 0 {
                return Err(DownloadError::ManifestTooLarge {
                    name,
                    listed: entry.size,
                    max: max_frame,
                });
            }
            return Err(match tracker_error {
                Some(e) if book.len() == 0 => e.into(),
                _ => DownloadError::NoPeers {
                    name,
                    waited: opts.timeout,
                    part: None,
                },
            });
        }
        if query.is_none() && tokio::time::Instant::now() >= next_query {
            query = Some(Box::pin(client.peers(entry.id)));
        }
    }
}

async fn get_manifest(
    addr: SocketAddr,
    id: FileId,
    limit: Duration,
    max_frame: usize,
) -> Result<(AnyManifest, PeerConn), ConnError> {
    // We know nothing yet: an empty Bitfield.
    let mut conn = PeerConn::connect_bounded(addr, id, limit, &[], max_frame).await?;
    let manifest = conn.manifest(&id, limit).await?;
    Ok((manifest, conn))
}

/// The manifest of `entry` alone (`leecher --files`): asked of its peers as a download would.
pub async fn manifest_of(
    client: &TrackerClient,
    entry: &ListEntry,
    opts: &DownloadOptions,
) -> Result<AnyManifest, DownloadError> {
    let mut book = PeerBook::new(opts.serving_port);
    fetch_manifest(client, entry, opts, &mut book)
        .await
        .map(|(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::manifest::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE};

    /// A manifest of `size` bytes at `chunk_size`, with made-up hashes (only the length counts).
    fn encoded_len(size: u64, chunk_size: u32) -> usize {
        let n = shoal_proto::manifest::chunk_count(size, chunk_size).unwrap();
        let m = shoal_proto::Manifest::new(size, chunk_size, vec![[7; 32]; n as usize]).unwrap();
        m.encode().len() + HEADER_ROOM
    }

    #[test]
    fn every_manifest_of_the_listed_size_or_less_fits_the_bound() {
        let sizes = [
            0,
            1,
            u64::from(MIN_CHUNK_SIZE) - 1,
            u64::from(MIN_CHUNK_SIZE) * 1000 + 1,
            300 << 20,
            1 << 33,
            u64::from(MAX_CHUNKS) * u64::from(MIN_CHUNK_SIZE),
        ];
        for &s in &sizes {
            for cs in [MIN_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE] {
                if shoal_proto::manifest::chunk_count(s, cs).is_err() {
                    continue;
                }
                for smaller in [s, s / 2, 0] {
                    assert!(
                        encoded_len(smaller, cs) <= manifest_frame_bound(s),
                        "size {smaller} at chunk size {cs} under a label of {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_small_label_refuses_a_huge_manifest_but_not_a_larger_file_with_larger_chunks() {
        // What a trickling peer claims: the largest manifest there is.
        assert!(manifest_frame_bound(1_000) < MAX_ENCODED_LEN);
        assert_eq!(manifest_frame_bound(1_000), FLOOR);
        // 10 MiB listed, the real file 300 MiB at the default chunk size: still accepted.
        assert!(encoded_len(300 << 20, DEFAULT_CHUNK_SIZE) <= manifest_frame_bound(10 << 20));
        // Never more than the largest valid manifest's frame.
        assert!(manifest_frame_bound(u64::MAX) <= MAX_ENCODED_LEN + HEADER_ROOM);
    }
}
