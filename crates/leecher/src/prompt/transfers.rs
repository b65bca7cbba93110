//! The prompt's downloads: each runs in the background (several at once) into the library the
//! prompt shares, reports its progress above the prompt at every quarter and when it ends, and
//! can be stopped by name.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_engine::download::{download, DownloadError, DownloadOptions, Progress};
use shoal_engine::store::Library;
use shoal_engine::support::human_bytes;
use shoal_engine::tracker_client::TrackerClient;
use shoal_proto::tracker::ListEntry;
use shoal_proto::FileId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::console::Console;

/// Why a `get` did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the folder {} does not exist", .0.display())]
    NoFolder(PathBuf),
    #[error("{0} is already downloading")]
    AlreadyDownloading(String),
}

/// A download in progress.
pub struct Transfer {
    pub id: FileId,
    /// The name as it is written on disk.
    pub name: String,
    pub dir: PathBuf,
    pub progress: Arc<Progress>,
    started: Instant,
    cancel: CancellationToken,
}

impl Transfer {
    /// `name [=====>    ] 42% 1.20 MiB/4.00 MiB 1.10 MiB/s 3 peers`, or the check of a partial
    /// file found on disk, or the wait for a manifest.
    pub fn line(&self) -> String {
        let p = &self.progress;
        let (total, done, checked, peers) = (
            p.total.load(Ordering::Relaxed),
            p.done.load(Ordering::Relaxed),
            p.checked.load(Ordering::Relaxed),
            p.peers.load(Ordering::Relaxed),
        );
        if total == 0 {
            return format!("{}: looking for peers", self.name);
        }
        if done == 0 && checked > 0 && checked < total {
            return format!(
                "{}: checking {}/{} already on disk",
                self.name,
                human_bytes(checked),
                human_bytes(total)
            );
        }
        const WIDTH: u64 = 20;
        let filled = (done * WIDTH / total) as usize;
        let bar = format!(
            "{}{}",
            "=".repeat(filled),
            " ".repeat(WIDTH as usize - filled)
        );
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "{} [{bar}] {}% {}/{} {}/s {peers} peers",
            self.name,
            done * 100 / total,
            human_bytes(done),
            human_bytes(total),
            human_bytes(rate as u64)
        )
    }
}

/// Everything a download needs from the prompt's process.
pub struct Transfers {
    client: Arc<TrackerClient>,
    library: Arc<Library>,
    options: DownloadOptions,
    console: Console,
    running: Mutex<Vec<Arc<Transfer>>>,
    tasks: TaskTracker,
}

impl Transfers {
    /// `options` come from the command line; `get`'s DIR replaces their folder.
    pub fn new(
        client: Arc<TrackerClient>,
        library: Arc<Library>,
        options: DownloadOptions,
        console: Console,
    ) -> Arc<Transfers> {
        Arc::new(Transfers {
            client,
            library,
            options,
            console,
            running: Mutex::new(Vec::new()),
            tasks: TaskTracker::new(),
        })
    }

    pub fn running(&self) -> Vec<Arc<Transfer>> {
        self.running.lock().unwrap().clone()
    }

    /// Starts downloading `entry` into `dir` (default: `--out`); returns at once.
    pub fn start(
        self: &Arc<Self>,
        entry: ListEntry,
        dir: Option<PathBuf>,
    ) -> Result<(), StartError> {
        let dir = dir.unwrap_or_else(|| self.options.out_dir.clone());
        if !dir.is_dir() {
            return Err(StartError::NoFolder(dir));
        }
        let name = shoal_proto::names::safe_file_name(&entry.name, &entry.id);
        let transfer = Arc::new(Transfer {
            id: entry.id,
            name: name.clone(),
            dir: dir.clone(),
            progress: Arc::new(Progress::default()),
            started: Instant::now(),
            cancel: CancellationToken::new(),
        });
        {
            let mut running = self.running.lock().unwrap();
            if running.iter().any(|t| t.id == entry.id) {
                return Err(StartError::AlreadyDownloading(name));
            }
            running.push(transfer.clone());
        }
        let opts = DownloadOptions {
            out_dir: dir,
            ..self.options.clone()
        };
        let this = self.clone();
        let progress = transfer.progress.clone();
        let cancel = transfer.cancel.clone();
        let client = self.client.clone();
        let library = self.library.clone();
        self.tasks.spawn(async move {
            let watch = tokio::spawn(report_quarters(
                transfer.clone(),
                this.console.clone(),
                cancel.clone(),
            ));
            let result =
                download(client, entry, opts, Some(library), progress, cancel.clone()).await;
            cancel.cancel();
            let _ = watch.await;
            this.running
                .lock()
                .unwrap()
                .retain(|t| !Arc::ptr_eq(t, &transfer));
            this.console.line(match result {
                Ok(s) if s.already_had => format!(
                    "already have {}: every chunk verified, nothing fetched; sharing it",
                    s.name
                ),
                Ok(s) => format!(
                    "downloaded {} ({} in {:.1} s) to {}; sharing it",
                    s.name,
                    human_bytes(s.manifest.size()),
                    s.elapsed.as_secs_f64(),
                    s.path.display()
                ),
                Err(e @ DownloadError::Cancelled { .. }) => {
                    format!("stopped {}: {e}", transfer.name)
                }
                Err(e) => format!("get {} failed: {e}", transfer.name),
            });
        });
        Ok(())
    }

    /// Stops the download called `name` (or whose id starts with it); false if there is none.
    pub fn stop(&self, name: &str) -> bool {
        let running = self.running.lock().unwrap();
        let found = running
            .iter()
            .find(|t| t.name == name || (name.len() >= 8 && t.id.to_string().starts_with(name)));
        if let Some(t) = found {
            t.cancel.cancel();
        }
        found.is_some()
    }

    /// Stops every download and waits until each has said how it ended.
    pub async fn stop_all(&self) {
        for t in self.running() {
            t.cancel.cancel();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Prints the download's line above the prompt each time it passes a quarter.
async fn report_quarters(t: Arc<Transfer>, console: Console, done: CancellationToken) {
    let mut reported = 0;
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let (total, got) = (
            t.progress.total.load(Ordering::Relaxed),
            t.progress.done.load(Ordering::Relaxed),
        );
        let quarter = (got * 4).checked_div(total).unwrap_or(0);
        // The last quarter is the end, which the download's own line reports.
        if quarter > reported && quarter < 4 {
            reported = quarter;
            console.line(t.line());
        }
    }
}
