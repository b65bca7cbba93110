//! The `leecher` command: finds files through the tracker, downloads and verifies each while
//! serving the chunks it has verified to other peers, then keeps seeding them until Ctrl-C
//! (unless `--no-seed`). `leecher --list` prints what the tracker knows. With no file on a terminal (or
//! `--interactive`), it opens a prompt ([`prompt`]).

#![forbid(unsafe_code)]

mod fetch;
mod progress;
mod summary;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use shoal_cli::flags::TrackerFlags;
use shoal_cli::{init_logging_to, shutdown_signal};
use shoal_engine::discovery::{choose_tracker, discovery_wanted, tracker_setting};
use shoal_engine::download::{DownloadError, DownloadOptions, PathFilter};
use shoal_engine::rate::{Rate, RateLimit};
use shoal_engine::seeding::{prepare, Seeding};
use shoal_engine::store::Library;
use shoal_proto::tracker::Filter;
use tokio_util::sync::CancellationToken;

mod prompt;

#[derive(Parser, Debug)]
#[command(
    name = "leecher",
    version,
    about = "Download files from the swarm, verify every chunk, then seed them."
)]
struct Args {
    /// The files: each an id, a unique id prefix (8+ hex characters) or a name. With --list, one
    /// pattern that names must contain.
    #[arg(value_name = "ID-or-NAME", required_unless_present_any = ["list", "interactive"])]
    queries: Vec<String>,
    /// Open a prompt to list, get, share and watch files (the default with no file on a terminal).
    #[arg(long, conflicts_with_all = ["queries", "list", "no_seed", "no_upload"])]
    interactive: bool,
    /// Print what the tracker knows: `<id> <size-in-bytes> <seeders> <name>` per file (a
    /// folder's name ends in `/`).
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    find: TrackerFlags,
    /// Print what a folder holds: `<size-in-bytes> <path>` per file, `- <path>/` per empty
    /// folder.
    #[arg(long, conflicts_with = "list")]
    files: bool,
    /// Of a folder, fetch only the files whose relative paths match GLOB (`*` within a
    /// folder, `**` across folders); may be given several times.
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// A private swarm: read its secret from this file (else from P2P_SECRET, if set).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// Folder to write the file into.
    #[arg(long, default_value = ".", value_name = "DIR")]
    out: PathBuf,
    /// Replace the destination file or folder if it exists (a folder only once the new one is
    /// complete and verified).
    #[arg(long)]
    force: bool,
    /// Exit as soon as the verified file is in place instead of seeding it.
    #[arg(long)]
    no_seed: bool,
    /// Serve nothing, neither while downloading nor afterwards, and do not register with the
    /// tracker (implies --no-seed).
    #[arg(long)]
    no_upload: bool,
    /// TCP port to serve on while downloading and afterwards (default: one the OS picks).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Register this address with the tracker instead of the one it sees.
    #[arg(long, value_name = "HOST[:PORT]")]
    advertise: Option<String>,
    /// Give up after this many seconds: to reach the tracker and find the file (or list), to
    /// get the manifest, and then without any peer delivering data.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
    /// Drop a peer that, while it owes us chunks, sends less than 16 KiB in this many seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    stall_timeout: u64,
    /// Most peer connections at once.
    #[arg(long, default_value_t = DownloadOptions::default().max_peers)]
    max_peers: usize,
    /// Chunk requests in flight per peer.
    #[arg(long, default_value_t = DownloadOptions::default().window)]
    window: usize,
    /// Download at most this many bytes per second over all peers (suffixes K, M, G).
    #[arg(long, value_name = "RATE")]
    max_download_rate: Option<Rate>,
    /// Upload at most this many bytes per second over all peers, while downloading and after
    /// (suffixes K, M, G).
    #[arg(long, value_name = "RATE")]
    max_upload_rate: Option<Rate>,
}

pub fn main() -> ExitCode {
    // For the prompt too: it downloads as the command does.
    shoal_cli::tune_allocator();
    let args = match Args::try_parse() {
        // No file on a terminal: the prompt. Elsewhere, the usage error as before.
        Err(e)
            if e.kind() == clap::error::ErrorKind::MissingRequiredArgument
                && prompt::on_terminal() =>
        {
            Args::parse_from(std::env::args_os().chain(["--interactive".into()]))
        }
        parsed => parsed.unwrap_or_else(|e| e.exit()),
    };
    if args.interactive {
        // Logging starts with the prompt's console: say the passphrase warning now.
        let warn = |w: &str| eprintln!("leecher: warning: {w}");
        if let Err(e) =
            shoal_engine::private::set_up_warning_with(args.secret_file.as_deref(), warn)
        {
            eprintln!("leecher: {e}");
            return ExitCode::FAILURE;
        }
        return prompt::main(args);
    }
    init_logging_to(|| progress::LogWriter);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leecher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    shoal_engine::private::set_up(args.secret_file.as_deref())?;
    if args.window == 0 || args.max_peers == 0 || args.stall_timeout == 0 {
        anyhow::bail!("--window, --max-peers and --stall-timeout must be at least 1");
    }
    if args.list && args.queries.len() > 1 {
        anyhow::bail!("--list takes one pattern; quote a pattern with spaces");
    }
    let only = match args.only.is_empty() {
        true => None,
        false => Some(PathFilter::new(&args.only).map_err(|e| anyhow::anyhow!("--only: {e}"))?),
    };
    let find = Duration::from_secs(args.timeout);
    let client = Arc::new(
        within(find, "finding the tracker", async {
            let tracker = tracker_setting(args.find.tracker.clone());
            Ok(
                choose_tracker(tracker.as_deref(), discovery_wanted(args.find.no_discovery))
                    .await?,
            )
        })
        .await?,
    );
    if args.list {
        let filter = args
            .queries
            .first()
            .cloned()
            .map_or(Filter::All, Filter::NameContains);
        let listing = within(find, "listing the tracker's files", async {
            Ok(client.list(filter).await?)
        });
        let mut out = std::io::stdout().lock();
        for e in listing.await? {
            // One line per file whatever the name holds: scripts split on lines.
            let name = shoal_proto::names::printable(&e.name);
            writeln!(out, "{} {} {} {name}", e.id, e.size, e.seeders)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.files {
        for query in &args.queries {
            fetch::list_files(&client, query, &download_options(&args)).await?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.out.is_dir() {
        anyhow::bail!("the output folder {} does not exist", args.out.display());
    }
    // Everything serving needs is checked now, not after a long download. Verified chunks are
    // served from the start (partial seeding): each download joins the one library once its
    // manifest is verified, and the announcer registers it; all are served on one port.
    let library = Library::new();
    let seeding = if args.no_upload {
        None
    } else {
        let (listener, advertise) = prepare(args.port, args.advertise.as_deref()).await?;
        let port = advertise.and_then(|(_, p)| p);
        let upload = args.max_upload_rate.map(|r| Arc::new(RateLimit::new(r)));
        let seeding = Seeding::start(library.clone(), client.clone(), listener, advertise, upload)?;
        tracing::info!(
            port = seeding.port,
            "serving; verified chunks go to other peers while we download"
        );
        Some((port.unwrap_or(seeding.port), seeding))
    };
    let opts = DownloadOptions {
        serving_port: seeding.as_ref().map(|(port, _)| *port),
        only,
        ..download_options(&args)
    };
    // The first Ctrl-C stops the download under way and the files after it, or the seeding.
    let cancel = CancellationToken::new();
    let signal = {
        let (cancel, shutdown) = (cancel.clone(), shutdown_signal());
        tokio::spawn(async move {
            shutdown.await;
            cancel.cancel();
        })
    };
    let share = seeding.as_ref().map(|_| library.clone());
    let (mut fetched, mut failed) = (Vec::new(), 0);
    for query in &args.queries {
        let result = match cancel.is_cancelled() {
            true => Err(DownloadError::Cancelled { part: None }.into()),
            false => fetch::fetch(&client, query, opts.clone(), share.clone(), &cancel).await,
        };
        match result {
            Ok(summary) => {
                summary::report(&summary)?;
                fetched.push(summary.name);
            }
            Err(e) => {
                let interrupted = cancel.is_cancelled()
                    && matches!(e.downcast_ref(), Some(DownloadError::Cancelled { .. }));
                if interrupted || args.queries.len() == 1 {
                    if let Some((_, seeding)) = seeding {
                        seeding.stop().await;
                    }
                    if interrupted {
                        eprintln!("leecher: {e:#}");
                        return Ok(ExitCode::from(130));
                    }
                    return Err(e);
                }
                // One file's failure is its own: the others are still fetched.
                eprintln!("leecher: {query}: {e:#}");
                failed += 1;
            }
        }
    }
    let code = if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("leecher: {failed} of {} files failed", args.queries.len());
        ExitCode::FAILURE
    };
    let Some((_, seeding)) = seeding else {
        return Ok(code);
    };
    if args.no_seed || fetched.is_empty() {
        seeding.stop().await;
        return Ok(code);
    }
    // The downloads' files are in the library already, complete now: no need to hash them again.
    tracing::info!(
        port = seeding.port,
        "seeding {}; Ctrl-C to stop",
        fetched.join(", ")
    );
    // The signal task is still waiting for the first Ctrl-C.
    let _ = signal.await;
    seeding.stop().await;
    Ok(code)
}

/// The download options the flags set (no serving port yet), for the command and the prompt.
fn download_options(args: &Args) -> DownloadOptions {
    DownloadOptions {
        out_dir: args.out.clone(),
        force: args.force,
        window: args.window,
        max_peers: args.max_peers,
        stall_timeout: Duration::from_secs(args.stall_timeout),
        timeout: Duration::from_secs(args.timeout),
        download_rate: args.max_download_rate.map(|r| Arc::new(RateLimit::new(r))),
        serving_port: None,
        only: None,
    }
}

/// `--timeout` around one phase before the download (which bounds its own): a tracker that
/// answers slowly, or always offers one more page, cannot hold the leecher past it.
async fn within<T>(
    limit: Duration,
    what: &str,
    phase: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, phase)
        .await
        .unwrap_or_else(|_| {
            anyhow::bail!(
                "{what} took longer than {} s (--timeout); gave up",
                limit.as_secs()
            )
        })
}
