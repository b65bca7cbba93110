//! Connection supervision: start a worker for every peer we may connect to, look for more peers
//! at the tracker, and end the download when it is complete, hopeless or interrupted.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::Instrument;

use super::book::PeerBook;
use super::worker::worker;
use super::Shared;
use crate::conn::PeerConn;
use crate::store::StoreError;
use crate::tracker_client::TrackerClient;

pub(super) enum RunEnd {
    Cancelled,
    NoPeers(Duration),
    Fatal(StoreError),
}

/// The first look-up for more peers after the one that started the download: a swarm started
/// together registers within a fraction of a second, and a leecher that knew only the seeder
/// until its next look-up could trade with nobody (at 1 s, the swarm's first second ran at a
/// third of its uplinks).
const FIRST_QUERY: Duration = Duration::from_millis(250);
/// While look-ups find new peers, the next comes after twice the last wait, up to this; after
/// one that finds none, twice the last wait up to 10 s.
const GROWING_QUERY: Duration = Duration::from_secs(1);

pub(super) async fn run_workers(
    shared: &Arc<Shared>,
    client: &Arc<TrackerClient>,
    book: &mut PeerBook,
    first: PeerConn,
    workers: &mut JoinSet<(SocketAddr, bool)>,
) -> Result<(), RunEnd> {
    let mut changed = shared.changed.subscribe();
    let spawn = |workers: &mut JoinSet<(SocketAddr, bool)>,
                 book: &mut PeerBook,
                 addr: SocketAddr,
                 conn: Option<PeerConn>| {
        book.started(addr);
        shared.progress.peers.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        workers.spawn(
            async move { (addr, worker(shared, addr, conn).await) }
                .instrument(tracing::info_span!("peer", %addr)),
        );
    };
    spawn(&mut *workers, book, first.addr, Some(first));
    let mut next_query = Instant::now() + FIRST_QUERY;
    let mut query = JoinSet::new();
    let mut query_wait = FIRST_QUERY;
    loop {
        changed.borrow_and_update();
        if let Some(e) = shared.fatal.lock().unwrap().take() {
            return Err(RunEnd::Fatal(e));
        }
        if shared.sched.lock().unwrap().is_complete() {
            return Ok(());
        }
        let now = Instant::now();
        let idle = shared.last_activity.lock().unwrap().elapsed();
        if workers.is_empty() && idle >= shared.opts.timeout {
            return Err(RunEnd::NoPeers(idle));
        }
        if query.is_empty() && workers.len() < shared.opts.max_peers && now >= next_query {
            // Look for more peers (new ones joined, or everyone we had is gone) in the
            // background: a tracker that does not answer must not hold up this loop.
            let (client, id) = (client.clone(), shared.id);
            query.spawn(async move { client.peers(id).await });
        }
        {
            let sched = shared.sched.lock().unwrap();
            let ready: Vec<SocketAddr> = book
                .ready(now)
                .into_iter()
                .filter(|a| !sched.is_banned(a))
                .collect();
            drop(sched);
            for addr in ready
                .into_iter()
                .take(shared.opts.max_peers.saturating_sub(workers.len()))
            {
                spawn(&mut *workers, book, addr, None);
            }
        }
        let tick = next_query
            .min(book.next_retry(Instant::now()).unwrap_or(next_query))
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(50));
        tokio::select! {
            _ = shared.cancel.cancelled() => {
                // A failed write cancels the workers too; report it rather than an interruption.
                return Err(shared.fatal.lock().unwrap().take().map_or(RunEnd::Cancelled, RunEnd::Fatal));
            }
            Some(ended) = workers.join_next() => {
                let (addr, ok) = ended.expect("a download worker panicked");
                shared.progress.peers.fetch_sub(1, Ordering::Relaxed);
                book.ended(addr, ok, Instant::now());
                if workers.is_empty() {
                    // Everyone is gone: ask the tracker again soon rather than at the slow pace.
                    next_query = next_query.min(Instant::now() + Duration::from_millis(500));
                }
            }
            Some(found) = query.join_next() => {
                let before = book.len();
                match found {
                    Ok(Ok(peers)) => {
                        book.add(&peers);
                        tracing::debug!(listed = peers.len(), known = book.len(), "tracker's peers");
                    }
                    Ok(Err(e)) => tracing::warn!("asking the tracker for peers failed: {e}"),
                    Err(e) => tracing::warn!("asking the tracker for peers failed: {e}"),
                }
                query_wait = if book.len() > before {
                    (query_wait * 2).min(GROWING_QUERY)
                } else {
                    (query_wait * 2).min(Duration::from_secs(10))
                };
                let pace = if workers.is_empty() { query_wait.min(Duration::from_secs(2)) } else { query_wait };
                next_query = Instant::now() + pace;
            }
            _ = changed.changed() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}
