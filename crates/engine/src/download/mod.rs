//! The leecher's download: find peers, fetch and check the manifest, then let one worker per peer
//! pull chunks from the shared [`Scheduler`], verify them off the runtime threads and write them
//! into the `.part` file (or, for a folder, into their files in the `.part` folder); rename it only
//! when every chunk is verified and synced.
//!
//! The parts: [`manifest`] (finding a peer with the manifest), [`supervise`] (opening and
//! replacing peer connections) with its [`book`] of peers, [`worker`] (one per peer connection,
//! its requests in flight paced by [`pace`]), [`verify`] (hashing and writing chunks off the
//! runtime), [`part`] (where they are written), [`dest`] (what stands at the destination) and
//! [`select`] (`--only`).
//!
//! See `SCHEDULER.md` for what happens to a chunk when a peer dies, stalls or lies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::names::safe_file_name;
use shoal_proto::tracker::ListEntry;
use shoal_proto::{AnyManifest, ChunkIndex, FileId};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::fsafe;
use crate::pool::BufferPool;
use crate::rate::RateLimit;
use crate::scheduler::{PeerStats, Scheduler};
use crate::store::{Library, SharedFile, StoreError};
use crate::tracker_client::{TrackerClient, TrackerError};

mod book;
mod dest;
mod manifest;
// Public for the swarm simulation, which paces its simulated workers with it.
pub mod pace;
mod part;
pub mod select;
mod supervise;
mod verify;
mod worker;

use book::PeerBook;
use manifest::fetch_manifest;
pub use manifest::{manifest_frame_bound, manifest_of};
use part::Part;
pub use select::PathFilter;
use supervise::{run_workers, RunEnd};
use verify::{pool_size, spawn_verifiers, Job};

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
    /// `--max-download-rate`: one bucket for every peer connection of the download.
    pub download_rate: Option<Arc<RateLimit>>,
    /// The port this peer serves on while it downloads, as registered with the tracker: the
    /// tracker lists us among the file's peers, and we must not connect to ourselves.
    pub serving_port: Option<u16>,
    /// `--only`: of a folder, fetch only the entries whose relative paths match.
    pub only: Option<PathFilter>,
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
            download_rate: None,
            serving_port: None,
            only: None,
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
    /// Bytes of an existing `.part` (or of the destination, to tell whether it already is the
    /// file) checked so far.
    pub checked: AtomicU64,
    /// Whether data already on disk is being checked now (`checked` of `total`).
    pub checking: AtomicBool,
    /// Set to end that check early (Ctrl-C).
    pub stop_checking: AtomicBool,
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
    pub manifest: AnyManifest,
    pub elapsed: Duration,
    /// From the first chunk request to the last chunk written.
    pub data_phase: Duration,
    /// Chunks already on disk and verified when the download started.
    pub resumed_chunks: u32,
    /// Chunks fetched from peers in this run.
    pub fetched_chunks: u32,
    pub hash_failures: u32,
    /// Chunks fetched in this run from peers that had every chunk when they served us ...
    pub from_seeders: u32,
    /// ... and from peers that were downloading too.
    pub from_leechers: u32,
    /// Chunks this peer served to others while it downloaded.
    pub uploaded: u64,
    /// Who delivered what, most first.
    pub peers: Vec<(SocketAddr, PeerStats)>,
    /// The destination already was this very file (every chunk verified): nothing was fetched.
    pub already_had: bool,
    /// Of a folder, the files fetched (all, or those `--only` chose); `None` for a single file.
    pub files: Option<usize>,
    /// Bytes of what was fetched (of a folder with `--only`, less than the manifest's size).
    pub bytes: u64,
}

impl Summary {
    fn already_had(
        id: FileId,
        name: String,
        path: PathBuf,
        manifest: AnyManifest,
        elapsed: Duration,
    ) -> Summary {
        let (files, bytes) = (manifest.tree().map(|t| t.file_count()), manifest.size());
        Summary {
            id,
            name,
            path,
            resumed_chunks: manifest.num_chunks(),
            manifest,
            elapsed,
            data_phase: Duration::ZERO,
            fetched_chunks: 0,
            hash_failures: 0,
            from_seeders: 0,
            from_leechers: 0,
            uploaded: 0,
            peers: Vec::new(),
            already_had: true,
            files,
            bytes,
        }
    }

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
    /// Peers offered a manifest frame longer than the tracker's listed size allows: the label
    /// is wrong (see [`manifest::manifest_frame_bound`]).
    #[error("the peers offer a manifest for {name} longer than its listed size of {listed} bytes allows ({max} bytes at most); the tracker's size for it is wrong")]
    ManifestTooLarge {
        name: String,
        listed: u64,
        max: usize,
    },
    /// The verified manifest breaks a rule (a path that would land outside the destination, two
    /// names one file system would take for one, ...): nothing was written.
    #[error("{name}: {error}; nothing was written")]
    Refused {
        name: String,
        error: shoal_proto::TreeError,
    },
    #[error("--only chooses files inside a folder, and {0} is a file")]
    OnlyForFolders(String),
    #[error("{0} already exists, and --force with --only would replace all of it with only the chosen files; move it away first")]
    OnlyWithForce(PathBuf),
    #[error("--only matches nothing in {0}; `leecher --files` lists what is inside")]
    NothingChosen(String),
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
    manifest: AnyManifest,
    part: Part,
    /// The chunks verified and written so far, served to others if the download is shared.
    store: Arc<SharedFile>,
    from_seeders: AtomicU32,
    from_leechers: AtomicU32,
    sched: Mutex<Scheduler>,
    /// Bumped whenever the scheduler changes in a way that may give an idle worker work (or end
    /// the download), so nobody polls.
    changed: watch::Sender<()>,
    /// Bumped when a chunk is verified before the endgame: no idle worker can have more to ask
    /// for then, so only the workers of complete peers listen (they tell theirs with a `Have`).
    /// In the endgame and at the end, `changed` is bumped instead.
    verified: watch::Sender<()>,
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
    /// The scheduler's clock starts here ([`Shared::clock`]).
    epoch: Instant,
    opts: DownloadOptions,
    cancel: CancellationToken,
}

impl Shared {
    fn notify(&self) {
        self.changed.send_replace(());
    }

    /// The scheduler's time now (see `Scheduler::set_clock`).
    fn clock(&self) -> std::time::Duration {
        self.epoch.elapsed()
    }
}

/// Downloads `entry` (as resolved through the tracker) into `opts.out_dir`. With `share`, the
/// file is added to that library as soon as its manifest is verified, so that its verified chunks
/// are served while the download goes on; it stays there, complete, when the download succeeds,
/// and is removed if it fails.
pub async fn download(
    client: Arc<TrackerClient>,
    entry: ListEntry,
    opts: DownloadOptions,
    share: Option<Arc<Library>>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Summary, DownloadError> {
    let start = Instant::now();
    // A folder is registered under its name and a `/` (see `shoal_proto::tree`): what stands at
    // the destination is checked for a folder, and its manifest may be long.
    let folder = entry.name.ends_with('/');
    let name = safe_file_name(entry.name.trim_end_matches('/'), &entry.id);
    let dest = opts.out_dir.join(&name);
    // `--force` replaces the whole destination, and `--only` fetches part of a tree: together
    // they would put the part in place of the whole.
    if opts.only.is_some() && opts.force && std::fs::symlink_metadata(&dest).is_ok() {
        return Err(DownloadError::OnlyWithForce(dest));
    }
    let maybe_had = dest::before_manifest(&dest, folder, opts.force, entry.size)?;
    let span = tracing::info_span!("download", file = %entry.id.short());
    let mut book = PeerBook::new(opts.serving_port);
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
    let maybe_had = dest::after_manifest(&dest, folder, &opts, &manifest, maybe_had)?;
    let select::Choice {
        wanted,
        unwanted,
        total,
        files,
    } = select::choose(&manifest, opts.only.as_ref(), &name)?;
    let skipped = unwanted.iter().filter(|u| **u).count() as u32;
    progress.total.store(total, Ordering::Relaxed);
    if maybe_had {
        let (d, m, p) = (dest.clone(), manifest.clone(), progress.clone());
        progress.checking.store(true, Ordering::Relaxed);
        let check = tokio::task::spawn_blocking(move || match &m {
            AnyManifest::File(m) => fsafe::already_complete(&d, m, &p.checked, &p.stop_checking),
            AnyManifest::Tree(t) => {
                crate::store::tree_check::already_complete(&d, t, &p.checked, &p.stop_checking)
            }
        });
        let had = tokio::select! {
            _ = cancel.cancelled() => {
                progress.stop_checking.store(true, Ordering::Relaxed);
                return Err(DownloadError::Cancelled { part: None });
            }
            r = check => r.expect("checking the destination panicked")?,
        };
        progress.checking.store(false, Ordering::Relaxed);
        if !had {
            return Err(DownloadError::Exists(dest));
        }
        return Ok(Summary::already_had(
            entry.id,
            name,
            dest,
            manifest,
            start.elapsed(),
        ));
    }

    // Part of a folder has a `.part` folder of its own per choice of globs.
    let part_path = match (&manifest, &opts.only) {
        (AnyManifest::Tree(_), Some(only)) => fsafe::part_path(
            &dest.with_file_name(format!("{name}+only-{}", only.tag())),
            &entry.id,
        ),
        _ => fsafe::part_path(&dest, &entry.id),
    };
    // Opening (space is reserved, a folder's files are created) and re-checking a resumed
    // `.part` can take long: Ctrl-C must not wait for them. The blocking work then finishes on
    // its own and lets go of the file.
    let interrupted = || DownloadError::Cancelled {
        part: Some(part_path.clone()),
    };
    let open = {
        let (dest, m, id, w) = (dest.clone(), manifest.clone(), entry.id, wanted.clone());
        let part = part_path.clone();
        tokio::task::spawn_blocking(move || Part::open(&part, &dest, &id, &m, &w))
    };
    let (part, existed) = tokio::select! {
        _ = cancel.cancelled() => return Err(interrupted()),
        r = open => r.expect("opening the part file panicked")?,
    };
    // Resume: whatever is already on disk and matches the manifest is not fetched again.
    let (part, have) = if existed {
        let (m, p, w) = (manifest.clone(), progress.clone(), wanted.clone());
        progress.checked.store(0, Ordering::Relaxed);
        progress.checking.store(true, Ordering::Relaxed);
        let check = tokio::task::spawn_blocking(move || {
            part.verify_existing(&m, &w, &p.checked, &p.stop_checking)
                .map(|h| (part, h))
        });
        let checked = tokio::select! {
            _ = cancel.cancelled() => {
                // The hashing threads stop within a piece; nothing waits for the rest.
                progress.stop_checking.store(true, Ordering::Relaxed);
                return Err(interrupted());
            }
            r = check => r.expect("verification panicked")?,
        };
        progress.checking.store(false, Ordering::Relaxed);
        checked
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

    let reader = part.reader().map_err(|e| StoreError::io(part.path(), e))?;
    let store = Arc::new(SharedFile::in_progress(
        &dest,
        crate::store::folder::share_name(&name, &manifest),
        manifest.clone(),
        reader,
        &have,
    ));
    let sharing = share.map(|library| Sharing::start(library, store.clone()));

    let sched_have: Vec<bool> = have.iter().zip(&unwanted).map(|(h, u)| *h || *u).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk_size = manifest.chunk_size();
    let shared = Arc::new(Shared {
        id: entry.id,
        sched: Mutex::new(Scheduler::new(
            manifest.num_chunks(),
            &sched_have,
            fastrand::u64(..),
        )),
        manifest,
        part,
        store: store.clone(),
        from_seeders: AtomicU32::new(0),
        from_leechers: AtomicU32::new(0),
        changed: watch::channel(()).0,
        verified: watch::channel(()).0,
        progress: progress.clone(),
        pool: BufferPool::new(pool_size(opts.max_peers, cores, chunk_size)),
        verifying: TaskTracker::new(),
        // Two per core: a thread waiting for its direct write to reach the disk leaves its core to
        // another one's hashing (measured: 2 per core gave ~20 % more than 1, 3 no more than 2).
        verifiers: spawn_verifiers(2 * cores),
        fatal: Mutex::new(None),
        last_activity: Mutex::new(Instant::now()),
        epoch: Instant::now(),
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
    let path = tokio::task::spawn_blocking(move || shared.part.finish(shared.opts.force))
        .await
        .expect("finishing panicked")?;
    // Part of a folder stays a partial share: it vouches only for the chunks it fetched.
    if store.is_full() {
        store.now_complete().map_err(|e| StoreError::io(&path, e))?;
    }
    if let Some(sharing) = sharing {
        sharing.keep();
    }
    let is_tree = shared.manifest.tree().is_some();
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
        fetched_chunks: sched.done_count() - resumed_chunks - skipped,
        hash_failures: progress.hash_failures.load(Ordering::Relaxed),
        from_seeders: shared.from_seeders.into_inner(),
        from_leechers: shared.from_leechers.into_inner(),
        uploaded: store.uploaded(),
        peers,
        already_had: false,
        files: is_tree.then_some(files),
        bytes: total,
    })
}

/// A download in a library: removed again unless the download finishes.
struct Sharing {
    library: Arc<Library>,
    store: Option<Arc<SharedFile>>,
}

impl Sharing {
    fn start(library: Arc<Library>, store: Arc<SharedFile>) -> Sharing {
        library.share(store.clone());
        Sharing {
            library,
            store: Some(store),
        }
    }

    /// The download finished: the file stays, complete (the announcer registers it so).
    fn keep(mut self) {
        self.store = None;
        self.library.touch();
    }
}

impl Drop for Sharing {
    fn drop(&mut self) {
        if let Some(store) = &self.store {
            self.library.remove(store);
        }
    }
}
