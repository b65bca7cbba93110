//! The [`Announcer`]: keeps a peer's files registered with the tracker.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::tracker::{
    encoded_len, Advertise, FileEntry, Have, PeerInfo, Progress, RequestBody, ResponseBody,
    MAX_DATAGRAM,
};
use shoal_proto::FileId;
use tokio_util::sync::CancellationToken;

use crate::store::Library;

use super::*;

/// Keeps a peer's files registered: announces what the [`Library`] holds (complete files and
/// downloads in progress), heartbeats at the interval the tracker asks for with the progress of
/// downloads, announces a download again when it completes, announces again at once when the
/// tracker has forgotten us (it restarted), follows additions and withdrawals, and unregisters on
/// cancellation.
pub struct Announcer {
    pub client: Arc<TrackerClient>,
    pub library: Arc<Library>,
    pub peer: PeerInfo,
    /// Kept up to date with what the tracker has registered, for whoever waits on it.
    pub registration: tokio::sync::watch::Sender<Registration>,
}

/// What the tracker has accepted, as the [`Announcer`] last learned it: the seeder prints a file's
/// id only once it is here, and gives up if the first registration fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// The files the tracker holds for us, complete or in progress.
    pub files: BTreeSet<FileId>,
    /// Why the last attempt to register failed; `None` once one succeeds.
    pub failure: Option<String>,
}

/// Used until the tracker tells us its interval.
const FIRST_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed exchange, try again this soon (the tracker may be restarting).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the tracker has been told about each registered file: complete, or how many bytes.
pub(super) type Registered = BTreeMap<FileId, Have>;

impl Announcer {
    pub async fn run(self, cancel: CancellationToken) {
        let mut registered = Registered::new();
        let mut interval = FIRST_INTERVAL;
        let mut next_heartbeat = tokio::time::Instant::now() + interval;
        loop {
            let changed = self.library.changed();
            let synced = self.sync(&mut registered).await;
            self.registration.send_if_modified(|r| {
                let now = Registration {
                    files: registered.keys().copied().collect(),
                    failure: synced.as_ref().err().map(|e| e.to_string()),
                };
                std::mem::replace(r, now.clone()) != now
            });
            match synced {
                Ok(Some(i)) => {
                    interval = i;
                    next_heartbeat = tokio::time::Instant::now() + interval;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("could not register with the tracker: {e}");
                    // A refusal (full, bad name) will not change in a second; silence might.
                    let wait = if matches!(e, TrackerError::Refused(_)) {
                        interval
                    } else {
                        RETRY_AFTER
                    };
                    next_heartbeat = tokio::time::Instant::now() + wait;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = changed => continue,
                _ = tokio::time::sleep_until(next_heartbeat) => {}
            }
            let progress = progress_report(&self.library.entries(), &registered);
            let peer = self.peer.clone();
            match self
                .client
                .request(RequestBody::Heartbeat {
                    peer,
                    files: registered.len() as u32,
                    progress: progress.clone(),
                })
                .await
            {
                Ok(ResponseBody::Ack { interval_secs }) => {
                    interval = Duration::from_secs(interval_secs.max(1).into());
                    for p in progress {
                        registered.insert(p.id, Have::Partial { bytes: p.bytes });
                    }
                }
                Ok(ResponseBody::Unknown) => {
                    tracing::info!("the tracker forgot us (it restarted?); registering again");
                    registered.clear();
                }
                Ok(_) => tracing::warn!("unexpected heartbeat reply from the tracker"),
                Err(e) => tracing::warn!("heartbeat failed: {e}"),
            }
            next_heartbeat = tokio::time::Instant::now()
                + if registered.is_empty() {
                    RETRY_AFTER
                } else {
                    interval
                };
        }
        // One quick try: the tracker drops us after its timeout anyway.
        let unregister = self.client.request(RequestBody::Unregister {
            peer: self.peer.clone(),
            files: None,
        });
        match tokio::time::timeout(Duration::from_secs(2), unregister).await {
            Ok(Ok(_)) => tracing::info!("unregistered from the tracker"),
            Ok(Err(e)) => tracing::warn!("could not unregister from the tracker: {e}"),
            Err(_) => {
                tracing::warn!("the tracker did not confirm; it drops us after its peer timeout")
            }
        }
    }

    /// Brings the tracker in line with the library; returns the tracker's interval if it said one.
    async fn sync(&self, registered: &mut Registered) -> Result<Option<Duration>, TrackerError> {
        let live = self.library.entries();
        let live_ids: BTreeSet<FileId> = live.iter().map(|e| e.id).collect();
        let gone: Vec<FileId> = registered
            .keys()
            .filter(|id| !live_ids.contains(id))
            .copied()
            .collect();
        let mut interval = None;
        for page in pages(&gone, encoded_len) {
            self.client
                .request(RequestBody::Unregister {
                    peer: self.peer.clone(),
                    files: Some(page.to_vec()),
                })
                .await?;
            for id in page {
                registered.remove(id);
                tracing::info!(file = %id.short(), "withdrawn from the tracker");
            }
        }
        let new = to_announce(live, registered);
        let mut peer = self.peer.clone();
        if let (Some(adv), false) = (&mut peer.advertise, new.is_empty()) {
            // Proved afresh for each round of announcements: a proof is good for a minute or two.
            adv.proof = self.client.prove(adv.ip).await;
        }
        for page in pages(&new, encoded_len) {
            match self
                .client
                .request(RequestBody::Announce {
                    peer: peer.clone(),
                    files: page.to_vec(),
                })
                .await?
            {
                ResponseBody::Ack { interval_secs } => {
                    interval = Some(Duration::from_secs(interval_secs.max(1).into()))
                }
                _ => return Err(TrackerError::Protocol),
            }
            registered.extend(page.iter().map(|e| (e.id, e.have)));
        }
        if !new.is_empty() {
            let complete = new.iter().filter(|e| e.have.is_complete()).count();
            tracing::info!(
                complete,
                partial = new.len() - complete,
                tracker = %self.client.addr(),
                "registered with the tracker"
            );
        }
        Ok(interval)
    }
}

/// The entries the tracker must be told about: those it does not know, and those whose
/// completeness changed (a download that finished registers again, as complete). Progress alone
/// goes in heartbeats.
pub(super) fn to_announce(live: Vec<FileEntry>, registered: &Registered) -> Vec<FileEntry> {
    live.into_iter()
        .filter(|e| {
            registered
                .get(&e.id)
                .is_none_or(|h| h.is_complete() != e.have.is_complete())
        })
        .collect()
}

/// The progress of registered downloads that moved since the tracker last heard it, as much as
/// fits in a heartbeat (about 26 downloads): those the tracker believes furthest behind first.
pub(super) fn progress_report(live: &[FileEntry], registered: &Registered) -> Vec<Progress> {
    // Room for the magic, ids, peer info and the list's length; each entry is at most 32 + 10.
    const ROOM: usize = (MAX_DATAGRAM - 64) / (32 + 10);
    let mut moved: Vec<(u64, Progress)> = live
        .iter()
        .filter_map(|e| match (e.have, registered.get(&e.id)?) {
            (Have::Partial { bytes }, Have::Partial { bytes: told }) if bytes != *told => {
                Some((*told, Progress { id: e.id, bytes }))
            }
            _ => None,
        })
        .collect();
    moved.sort_by_key(|(told, p)| (*told, p.id));
    moved.truncate(ROOM);
    moved.into_iter().map(|(_, p)| p).collect()
}

/// Splits items into runs whose encodings fit in one request datagram.
pub(super) fn pages<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    // Room for the magic, transaction, connection id, peer info and the list's length.
    const BUDGET: usize = MAX_DATAGRAM - 64;
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && used + n > BUDGET {
            out.push(&items[start..i]);
            (start, used) = (i, 0);
        }
        used += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The peer info to register: our serving port, and an address override if one was given.
pub fn peer_info(port: u16, advertise: Option<IpAddr>) -> PeerInfo {
    PeerInfo {
        port,
        advertise: advertise.map(|ip| Advertise { ip, proof: None }),
    }
}
