//! One file of a `leecher` command: resolve what the user typed, download it with a progress
//! display, and hand back the summary.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use shoal_engine::download::{download, DownloadOptions, Progress, Summary};
use shoal_engine::store::Library;
use shoal_engine::support::human_bytes;
use shoal_engine::tracker_client::{resolve, TrackerClient};
use tokio_util::sync::CancellationToken;

/// Resolves `query` and downloads it into `opts.out_dir`, sharing its verified chunks through
/// `share` (the command's one library) while it goes. `cancel` is the command's Ctrl-C.
pub async fn fetch(
    client: &Arc<TrackerClient>,
    query: &str,
    opts: DownloadOptions,
    share: Option<Arc<Library>>,
    cancel: &CancellationToken,
) -> anyhow::Result<Summary> {
    let entry = super::within(opts.timeout, "looking the file up at the tracker", async {
        Ok(resolve(client, query).await?)
    })
    .await?;
    let progress = Arc::new(Progress::default());
    // The download's own token: ending its progress display must not end the command.
    let done = cancel.child_token();
    // The name as it will be written, not as the network sent it (control characters).
    let display = tokio::spawn(show_progress(
        progress.clone(),
        shoal_proto::names::safe_file_name(&entry.name, &entry.id),
        done.clone(),
    ));
    let result = download(client.clone(), entry, opts, share, progress, done.clone()).await;
    done.cancel();
    let _ = display.await;
    Ok(result?)
}

/// A bar on a terminal; otherwise a plain line every few seconds. Ends when `done` fires.
async fn show_progress(p: Arc<Progress>, name: String, done: CancellationToken) {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {prefix} peers",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(name.clone());
        Some(bar)
    } else {
        None
    };
    let start = Instant::now();
    let mut last_line = Instant::now();
    loop {
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(if tty { 100 } else { 500 })) => {}
        }
        let (total, got, peers) = (
            p.total.load(Ordering::Relaxed),
            p.done.load(Ordering::Relaxed),
            p.peers.load(Ordering::Relaxed),
        );
        match &bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(got);
                bar.set_prefix(peers.to_string());
            }
            None if last_line.elapsed() >= Duration::from_secs(2) && total > 0 => {
                last_line = Instant::now();
                let pct = got as f64 * 100.0 / total as f64;
                let rate = got as f64 / start.elapsed().as_secs_f64().max(1e-6);
                eprintln!(
                    "{name}: {pct:.0}% {}/{} {}/s, {peers} peers",
                    human_bytes(got),
                    human_bytes(total),
                    human_bytes(rate as u64)
                );
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
