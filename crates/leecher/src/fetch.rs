//! One file of a `leecher` command: resolve what the user typed, download it with a progress
//! display, and hand back the summary.

use std::sync::Arc;

use shoal_engine::download::{download, DownloadOptions, Progress, Summary};
use shoal_engine::store::Library;
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
    let display = tokio::spawn(crate::progress::show(
        progress.clone(),
        shoal_proto::names::safe_file_name(&entry.name, &entry.id),
        done.clone(),
    ));
    let result = download(client.clone(), entry, opts, share, progress, done.clone()).await;
    done.cancel();
    let _ = display.await;
    Ok(result?)
}
