//! Fetching the manifest: ask the tracker for peers until one hands over a manifest that matches
//! the file's id.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use shoal_proto::names::safe_file_name;
use shoal_proto::tracker::ListEntry;
use shoal_proto::{FileId, Manifest};

use super::book::PeerBook;
use super::{DownloadError, DownloadOptions};
use crate::conn::{ConnError, PeerConn};
use crate::tracker_client::TrackerClient;

/// Asks the tracker for peers until one hands over a manifest that matches the id.
pub(super) async fn fetch_manifest(
    client: &TrackerClient,
    entry: &ListEntry,
    opts: &DownloadOptions,
    book: &mut PeerBook,
) -> Result<(Manifest, PeerConn), DownloadError> {
    let start = Instant::now();
    let mut query_wait = Duration::from_millis(250);
    loop {
        match client.peers(entry.id).await {
            Ok(peers) => book.add(&peers),
            Err(e) if start.elapsed() < opts.timeout => {
                tracing::warn!("asking the tracker for peers failed: {e}")
            }
            Err(e) => return Err(e.into()),
        }
        // Ask several peers at once: a silent one must not delay the start by a stall timeout.
        let mut attempts: FuturesUnordered<_> =
            book.ready(Instant::now())
                .into_iter()
                .take(MANIFEST_FANOUT)
                .map(|addr| async move {
                    (addr, get_manifest(addr, entry.id, opts.stall_timeout).await)
                })
                .collect();
        while let Some((addr, result)) = attempts.next().await {
            match result {
                // The other attempts are dropped (their connections close); those peers stay
                // ready, and the workers connect to them at once.
                Ok(found) => return Ok(found),
                Err(e) => {
                    tracing::info!(peer = %addr, "no manifest from this peer: {e}");
                    book.ended(addr, false, Instant::now());
                }
            }
        }
        if start.elapsed() >= opts.timeout {
            return Err(DownloadError::NoPeers {
                // Never the raw name: it came from the network and may hold escape sequences.
                name: safe_file_name(&entry.name, &entry.id),
                waited: opts.timeout,
                part: None,
            });
        }
        tokio::time::sleep(query_wait.min(opts.timeout.saturating_sub(start.elapsed()))).await;
        query_wait = (query_wait * 2).min(Duration::from_secs(5));
    }
}

/// Peers asked for the manifest at once.
const MANIFEST_FANOUT: usize = 8;

async fn get_manifest(
    addr: SocketAddr,
    id: FileId,
    limit: Duration,
) -> Result<(Manifest, PeerConn), ConnError> {
    // We know nothing yet: an empty Bitfield.
    let mut conn = PeerConn::connect(addr, id, limit, &[]).await?;
    let manifest = conn.manifest(&id, limit).await?;
    Ok((manifest, conn))
}
