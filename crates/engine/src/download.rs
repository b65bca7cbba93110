//! The leecher's download: find peers, fetch and check the manifest, then let one worker per peer
//! pull chunks from the shared [`Scheduler`], verify them off the runtime threads and write them
//! into the `.part` file; rename it only when every chunk is verified and synced.
//!
//! See `SCHEDULER.md` for what happens to a chunk when a peer dies, stalls or lies.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use shoal_proto::manifest::ChunkHash;
use shoal_proto::names::safe_file_name;
use shoal_proto::peer::{max_frame_for_chunk_size, Header};
use shoal_proto::sha256;
use shoal_proto::tracker::ListEntry;
use shoal_proto::{ChunkIndex, FileId, Manifest};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::conn::{ConnError, Payload, PeerConn};
use crate::pool::{BufferPool, PooledBuf};
use crate::scheduler::{Completion, PeerKey, PeerStats, Scheduler};
use crate::store::{PartFile, StoreError};
use crate::tracker_client::{TrackerClient, TrackerError};

#[derive(Clone, Debug)]
pub struct DownloadOptions {
    pub out_dir: PathBuf,
    /// Replace an existing file at the destination.
    pub force: bool,
    /// Requests in flight per peer connection.
    pub window: usize,
    /// Most peer connections at once.
    pub max_peers: usize,
    /// A peer with requests outstanding that sends nothing for this long loses them.
    pub stall_timeout: Duration,
    /// Give up when no chunk has arrived from anyone for this long.
    pub timeout: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            out_dir: PathBuf::from("."),
            force: false,
            window: 6,
            max_peers: 32,
            stall_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Live figures for a progress display; every field may be read at any time.
#[derive(Default)]
pub struct Progress {
    /// Size of the file, once the manifest is known.
    pub total: AtomicU64,
    /// Bytes verified and written, including those found on disk when resuming.
    pub done: AtomicU64,
    /// Bytes of an existing `.part` checked so far when resuming.
    pub checked: AtomicU64,
    /// Peer connections open now.
    pub peers: AtomicUsize,
    /// Chunks that failed their hash.
    pub hash_failures: AtomicU32,
}

#[derive(Debug)]
pub struct Summary {
    pub id: FileId,
    pub name: String,
    pub path: PathBuf,
    pub manifest: Manifest,
    pub elapsed: Duration,
    /// From the first chunk request to the last chunk written.
    pub data_phase: Duration,
    /// Chunks already on disk and verified when the download started.
    pub resumed_chunks: u32,
    /// Chunks fetched from peers in this run.
    pub fetched_chunks: u32,
    pub hash_failures: u32,
    /// Who delivered what, most first.
    pub peers: Vec<(SocketAddr, PeerStats)>,
}

impl Summary {
    pub fn banned(&self) -> Vec<SocketAddr> {
        self.peers
            .iter()
            .filter(|(_, s)| s.banned)
            .map(|(a, _)| *a)
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0} already exists; use --force to replace it")]
    Exists(PathBuf),
    #[error("no peer could provide {name} for {} s{}", .waited.as_secs(), part_note(.part))]
    NoPeers {
        name: String,
        waited: Duration,
        part: Option<PathBuf>,
    },
    #[error("interrupted{}", part_note(.part))]
    Cancelled { part: Option<PathBuf> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

fn part_note(part: &Option<PathBuf>) -> String {
    match part {
        Some(p) => format!(
            "; the partial download is kept in {} and the same command resumes it",
            p.display()
        ),
        None => String::new(),
    }
}

/// Everything the workers share.
struct Shared {
    id: FileId,
    manifest: Manifest,
    part: PartFile,
    sched: Mutex<Scheduler>,
    /// Bumped whenever the scheduler changes in a way that may give an idle worker work (or end
    /// the download), so nobody polls.
    changed: watch::Sender<()>,
    progress: Arc<Progress>,
    /// Every chunk in memory (being received, verified or written) lives in one of these.
    pool: Arc<BufferPool>,
    /// Chunks waiting for (or in) verification; see [`spawn_verifiers`].
    verifying: TaskTracker,
    verifiers: std::sync::mpsc::Sender<Job>,
    fatal: Mutex<Option<StoreError>>,
    /// When the last chunk was verified and written: only real progress holds off `--timeout`
    /// (a peer that only sends frames we reject must not keep the download alive).
    last_activity: Mutex<Instant>,
    opts: DownloadOptions,
    cancel: CancellationToken,
}

impl Shared {
    fn notify(&self) {
        self.changed.send_replace(());
    }
}

/// Downloads `entry` (as resolved through the tracker) into `opts.out_dir`.
pub async fn download(
    client: Arc<TrackerClient>,
    entry: ListEntry,
    opts: DownloadOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Summary, DownloadError> {
    let start = Instant::now();
    let name = safe_file_name(&entry.name, &entry.id);
    let dest = opts.out_dir.join(&name);
    if !opts.force && dest.symlink_metadata().is_ok() {
        return Err(DownloadError::Exists(dest));
    }
    let span = tracing::info_span!("download", file = %entry.id.short());
    let mut book = PeerBook::default();
    let (manifest, first) = tokio::select! {
        _ = cancel.cancelled() => return Err(DownloadError::Cancelled { part: None }),
        r = fetch_manifest(&client, &entry, &opts, &mut book).instrument(span.clone()) => r?,
    };
    if manifest.size() != entry.size {
        // The manifest is verified against the id; the tracker's figure is only a label.
        tracing::warn!(
            manifest = manifest.size(),
            listed = entry.size,
            "the tracker listed another size than the verified manifest says; using the manifest"
        );
    }
    progress.total.store(manifest.size(), Ordering::Relaxed);

    let part_path = PartFile::part_path(&dest);
    // Opening (space is reserved) and re-checking a resumed `.part` can take long: Ctrl-C must
    // not wait for them. The blocking work then finishes on its own and lets go of the file.
    let interrupted = || DownloadError::Cancelled {
        part: Some(part_path.clone()),
    };
    let open = {
        let (dest, size) = (dest.clone(), manifest.size());
        tokio::task::spawn_blocking(move || {
            let existed = std::fs::metadata(PartFile::part_path(&dest)).is_ok_and(|m| m.len() > 0);
            PartFile::open(&dest, size).map(|p| (p, existed))
        })
    };
    let (part, existed) = tokio::select! {
        _ = cancel.cancelled() => return Err(interrupted()),
        r = open => r.expect("opening the part file panicked")?,
    };
    // Resume: whatever is already on disk and matches the manifest is not fetched again.
    let (part, have) = if existed {
        let (m, p) = (manifest.clone(), progress.clone());
        let check = tokio::task::spawn_blocking(move || {
            part.verify_existing(&m, &p.checked).map(|h| (part, h))
        });
        tokio::select! {
            _ = cancel.cancelled() => return Err(interrupted()),
            r = check => r.expect("verification panicked")?,
        }
    } else {
        (part, vec![false; manifest.num_chunks() as usize])
    };
    let resumed_chunks = have.iter().filter(|h| **h).count() as u32;
    let resumed_bytes: u64 = (0..manifest.num_chunks())
        .filter(|&i| have[i as usize])
        .map(|i| u64::from(manifest.chunk_len(ChunkIndex(i))))
        .sum();
    progress.done.store(resumed_bytes, Ordering::Relaxed);
    if resumed_chunks > 0 {
        tracing::info!(parent: &span, chunks = resumed_chunks, "resuming: chunks already on disk and verified");
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk_size = manifest.chunk_size();
    let shared = Arc::new(Shared {
        id: entry.id,
        sched: Mutex::new(Scheduler::new(
            manifest.num_chunks(),
            &have,
            fastrand::u64(..),
        )),
        manifest,
        part,
        changed: watch::channel(()).0,
        progress: progress.clone(),
        pool: BufferPool::new(pool_size(opts.max_peers, cores, chunk_size)),
        verifying: TaskTracker::new(),
        // Two per core: a thread waiting for its direct write to reach the disk leaves its core to
        // another one's hashing (measured: 2 per core gave ~20 % more than 1, 3 no more than 2).
        verifiers: spawn_verifiers(2 * cores),
        fatal: Mutex::new(None),
        last_activity: Mutex::new(Instant::now()),
        opts: opts.clone(),
        cancel: cancel.child_token(),
    });
    let data_start = Instant::now();
    let mut workers = JoinSet::new();
    let outcome = run_workers(&shared, &client, &mut book, first, &mut workers)
        .instrument(span.clone())
        .await;
    shared.cancel.cancel();
    // Every worker holds `shared`: wait until they are all gone before taking it back (dropping
    // a JoinSet only asks its tasks to stop).
    workers.shutdown().await;
    shared.verifying.close();
    shared.verifying.wait().await;
    let data_phase = data_start.elapsed();
    match outcome {
        Ok(()) => {}
        Err(RunEnd::Cancelled) => {
            return Err(DownloadError::Cancelled {
                part: Some(part_path),
            })
        }
        Err(RunEnd::NoPeers(waited)) => {
            return Err(DownloadError::NoPeers {
                name,
                waited,
                part: Some(part_path),
            })
        }
        Err(RunEnd::Fatal(e)) => return Err(e.into()),
    }
    let shared = Arc::into_inner(shared).expect("every worker and verifier has finished");
    let (direct, offered) = shared.part.direct_writes();
    tracing::debug!(parent: &span, direct, offered, "chunks written straight to the disk (O_DIRECT)");
    let path = tokio::task::spawn_blocking(move || shared.part.finish())
        .await
        .expect("finishing panicked")?;
    let sched = shared.sched.into_inner().unwrap();
    let mut peers: Vec<(SocketAddr, PeerStats)> =
        sched.stats().iter().map(|(a, s)| (*a, s.clone())).collect();
    peers.sort_by(|a, b| b.1.chunks.cmp(&a.1.chunks).then(a.0.cmp(&b.0)));
    Ok(Summary {
        id: entry.id,
        name,
        path,
        manifest: shared.manifest,
        elapsed: start.elapsed(),
        data_phase,
        resumed_chunks,
        fetched_chunks: sched.done_count() - resumed_chunks,
        hash_failures: progress.hash_failures.load(Ordering::Relaxed),
        peers,
    })
}

enum RunEnd {
    Cancelled,
    NoPeers(Duration),
    Fatal(StoreError),
}

/// Asks the tracker for peers until one hands over a manifest that matches the id.
async fn fetch_manifest(
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
    let mut conn = PeerConn::connect(addr, id, limit).await?;
    let manifest = conn.manifest(&id, limit).await?;
    Ok((manifest, conn))
}

async fn run_workers(
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
    let mut next_query = Instant::now() + Duration::from_secs(1);
    let mut query = JoinSet::new();
    let mut query_wait = Duration::from_secs(1);
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
                    Ok(Ok(peers)) => book.add(&peers),
                    Ok(Err(e)) => tracing::warn!("asking the tracker for peers failed: {e}"),
                    Err(e) => tracing::warn!("asking the tracker for peers failed: {e}"),
                }
                query_wait = if book.len() > before {
                    Duration::from_secs(1)
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

/// One peer connection: keeps up to `window` requests in flight and hands each chunk that arrives
/// to a verifier. Returns whether it ended cleanly (nothing left to do).
async fn worker(shared: Arc<Shared>, addr: SocketAddr, conn: Option<PeerConn>) -> bool {
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

/// Chunk buffers for a download: one per connection being read into, and four per core for chunks
/// waiting for, or in, verification and writing (two verifier threads per core, each holding up to
/// two chunks). For large chunks that many would be a lot of memory (42 × 16 MiB), so the pool is
/// also held to [`POOL_BYTES`], but never below what keeps every verifier busy plus a chunk
/// being read.
fn pool_size(max_peers: usize, cores: usize, chunk_size: u32) -> usize {
    let busy = 4 * cores + 2;
    (max_peers + busy).min((POOL_BYTES / chunk_size as usize).max(busy))
}

/// What the chunk buffers of one download may take, unless the chunks are so large that a few of
/// them are more (see [`pool_size`]).
const POOL_BYTES: usize = 64 << 20;

/// A received chunk on its way to the disk.
struct Job {
    shared: Arc<Shared>,
    addr: PeerKey,
    index: ChunkIndex,
    data: PooledBuf,
    /// Keeps the download waiting until this job is done.
    _token: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// A few threads per core hash and write received chunks, off the async runtime. A fixed set
/// rather than `spawn_blocking` per chunk: concurrency follows the cores (many more writers would
/// only contend for the file's lock), and no thread pool grows over a long download. A thread that finds
/// a second chunk waiting takes both and hashes them together, which is nearly twice as fast (see
/// `shoal_proto::sha256`). The threads end when the download's [`Shared`] (which holds the sender)
/// is dropped.
fn spawn_verifiers(n: usize) -> std::sync::mpsc::Sender<Job> {
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
    if let Err(e) = shared.part.write_at(shared.manifest.offset(*index), data) {
        shared.fatal.lock().unwrap().get_or_insert(e);
        shared.cancel.cancel();
        shared.notify();
        return;
    }
    if shared
        .sched
        .lock()
        .unwrap()
        .completed(*addr, *index, data.len() as u32)
        == Completion::Accepted
    {
        shared
            .progress
            .done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        *shared.last_activity.lock().unwrap() = Instant::now();
    }
    shared.notify();
}

/// The peers we know of, and when each may be tried (again).
#[derive(Default)]
struct PeerBook {
    peers: HashMap<SocketAddr, BookEntry>,
}

struct BookEntry {
    active: bool,
    failures: u32,
    retry_at: Instant,
}

impl PeerBook {
    fn len(&self) -> usize {
        self.peers.len()
    }

    fn add(&mut self, addrs: &[SocketAddr]) {
        for a in addrs {
            self.peers.entry(*a).or_insert(BookEntry {
                active: false,
                failures: 0,
                retry_at: Instant::now(),
            });
        }
    }

    /// Peers not connected now whose back-off has passed.
    fn ready(&self, now: Instant) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, e)| !e.active && e.retry_at <= now)
            .map(|(a, _)| *a)
            .collect();
        v.sort();
        v
    }

    /// The next time a peer's back-off ends. Peers ready already are not counted: they were
    /// either started or could not be (banned, or the connection cap), and waking up for them
    /// again would only spin.
    fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .filter(|e| !e.active && e.retry_at > now)
            .map(|e| e.retry_at)
            .min()
    }

    fn started(&mut self, addr: SocketAddr) {
        if let Some(e) = self.peers.get_mut(&addr) {
            e.active = true;
        } else {
            self.peers.insert(
                addr,
                BookEntry {
                    active: true,
                    failures: 0,
                    retry_at: Instant::now(),
                },
            );
        }
    }

    fn ended(&mut self, addr: SocketAddr, ok: bool, now: Instant) {
        let e = self.peers.entry(addr).or_insert(BookEntry {
            active: false,
            failures: 0,
            retry_at: now,
        });
        e.active = false;
        if ok {
            e.failures = 0;
            e.retry_at = now;
        } else {
            e.failures += 1;
            e.retry_at = now + Duration::from_millis(250 * (1u64 << e.failures.min(6)));
        }
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
