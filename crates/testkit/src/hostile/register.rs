//! Registering with the real tracker as a hostile peer would, and asking it whom it lists.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_engine::tracker_client::{RetryPolicy, TrackerClient, TrackerError};
use shoal_proto::tracker::{FileEntry, PeerInfo, RequestBody, ResponseBody};
use shoal_proto::FileId;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::PATIENCE;

/// Registers `files` for a peer serving on `port`, one request per file; returns the client and
/// the heartbeat interval the tracker asked for.
pub(super) async fn register(
    tracker: &str,
    port: u16,
    files: &[FileEntry],
) -> Result<(TrackerClient, Duration), TrackerError> {
    let client = TrackerClient::connect(tracker, RetryPolicy::default()).await?;
    let mut interval = Duration::from_secs(1);
    for f in files {
        interval = announce_with(&client, port, f.clone()).await?;
    }
    Ok((client, interval))
}

pub(super) async fn announce_with(
    client: &TrackerClient,
    port: u16,
    file: FileEntry,
) -> Result<Duration, TrackerError> {
    let peer = PeerInfo {
        port,
        advertise: None,
    };
    match client
        .request(RequestBody::Announce {
            peer,
            files: vec![file],
        })
        .await?
    {
        ResponseBody::Ack { interval_secs } => Ok(Duration::from_secs(interval_secs.max(1).into())),
        _ => Err(TrackerError::Protocol),
    }
}

pub(super) async fn keep_registered(
    client: TrackerClient,
    port: u16,
    files: Vec<FileEntry>,
    mut interval: Duration,
    cancel: CancellationToken,
) {
    let peer = PeerInfo {
        port,
        advertise: None,
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let beat = client.request(RequestBody::Heartbeat {
            peer: peer.clone(),
            files: files.len() as u32,
            progress: Vec::new(),
        });
        match beat.await {
            Ok(ResponseBody::Ack { interval_secs }) => {
                interval = Duration::from_secs(interval_secs.max(1).into())
            }
            Ok(ResponseBody::Unknown) => {
                for f in &files {
                    let _ = announce_with(&client, port, f.clone()).await;
                }
            }
            _ => {}
        }
    }
}

/// Asks the tracker at `tracker` to register one file for a peer serving on `port`: what a
/// hostile seeder would send. Returns the refusal, if any.
pub fn announce(tracker: &str, port: u16, file: FileEntry) -> Result<(), TrackerError> {
    runtime().block_on(async {
        let client = TrackerClient::connect(tracker, RetryPolicy::default()).await?;
        announce_with(&client, port, file).await.map(|_| ())
    })
}

/// The peers the tracker at `tracker` lists for `id` now.
pub fn tracker_peers(tracker: &str, id: FileId) -> Result<Vec<SocketAddr>, TrackerError> {
    runtime().block_on(async {
        let client = TrackerClient::connect(tracker, RetryPolicy::default()).await?;
        client.peers(id).await
    })
}

/// Asks the tracker every 50 ms until it lists exactly `want` (in any order) for `id`; returns
/// how long that took. Panics after [`PATIENCE`].
pub fn wait_tracker_peers(tracker: &str, id: FileId, want: &[SocketAddr]) -> Duration {
    let start = Instant::now();
    let mut want = want.to_vec();
    want.sort();
    loop {
        let mut got = tracker_peers(tracker, id).unwrap_or_default();
        got.sort();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the tracker lists {got:?} for {}, not {want:?}",
            id.short()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
