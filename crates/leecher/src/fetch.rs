//! One file or folder of a `leecher` command: resolve what the user typed, download it with a
//! progress display, and hand back the summary; or list what a folder holds (`--files`).

use std::sync::Arc;
use std::time::Duration;

use shoal_engine::download::{download, manifest_of, DownloadOptions, Progress, Summary};
use shoal_engine::store::Library;
use shoal_engine::tracker_client::{resolve, ResolveError, TrackerClient, TrackerError};
use shoal_proto::tree::EntryKind;
use shoal_proto::AnyManifest;
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
    let entry = look_up(client, query, opts.timeout).await?;
    let progress = Arc::new(Progress::default());
    // The download's own token: ending its progress display must not end the command.
    let done = cancel.child_token();
    // The name as it will be written, not as the network sent it (control characters).
    let display = tokio::spawn(crate::progress::show(
        progress.clone(),
        shoal_proto::names::safe_file_name(entry.name.trim_end_matches('/'), &entry.id),
        done.clone(),
    ));
    let result = download(client.clone(), entry, opts, share, progress, done.clone()).await;
    done.cancel();
    let _ = display.await;
    Ok(result?)
}

/// `leecher --files`: what the folder `query` holds, one line each, from its verified manifest
/// (a single file is one line, its name).
pub async fn list_files(
    client: &Arc<TrackerClient>,
    query: &str,
    opts: &DownloadOptions,
) -> anyhow::Result<()> {
    use std::io::Write;
    let entry = look_up(client, query, opts.timeout).await?;
    let manifest = manifest_of(client, &entry, opts).await?;
    let mut out = std::io::stdout().lock();
    match &manifest {
        AnyManifest::File(m) => {
            let name = shoal_proto::names::safe_file_name(&entry.name, &entry.id);
            writeln!(out, "{} {name}", m.size())?;
        }
        AnyManifest::Tree(t) => {
            for e in t.entries() {
                // The path rules leave nothing a terminal would act on.
                match &e.kind {
                    EntryKind::File { size, .. } => writeln!(out, "{size} {}", e.path)?,
                    EntryKind::EmptyDir => writeln!(out, "- {}/", e.path)?,
                }
            }
        }
    }
    Ok(())
}

/// Resolves `query` at the tracker within `timeout` (`--timeout`). A tracker that did not answer
/// one round of retries is asked again while time is left: on a busy network (many hosts starting
/// at once, uplinks saturated by transfers) datagrams are lost for seconds at a time, and a
/// leecher started with the others must not give up while they go on. If it never answers, its
/// error (which says how to start one) is the one reported.
async fn look_up(
    client: &TrackerClient,
    query: &str,
    timeout: Duration,
) -> anyhow::Result<shoal_proto::tracker::ListEntry> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, resolve(client, query)).await {
            Ok(Err(ResolveError::Tracker(e @ TrackerError::Unreachable { .. }))) => {
                if last.is_none() {
                    tracing::warn!(
                        "{e}; asking again until --timeout ({} s)",
                        timeout.as_secs()
                    );
                }
                last = Some(e);
            }
            Ok(found) => return Ok(found?),
            Err(_) => {
                return Err(match last {
                    Some(e) => e.into(),
                    None => anyhow::anyhow!(
                    "looking the file up at the tracker took longer than {} s (--timeout); gave up",
                    timeout.as_secs()
                ),
                })
            }
        }
    }
}
