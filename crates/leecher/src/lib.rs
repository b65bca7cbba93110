//! The `leecher` command: finds a file through the tracker, downloads and verifies it while
//! serving the chunks it has verified to other peers, then keeps seeding it until Ctrl-C (unless
//! `--no-seed`). `leecher --list` prints what the tracker knows. With no file on a terminal (or
//! `--interactive`), it opens a prompt ([`prompt`]).

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use shoal_engine::discovery::choose_tracker;
use shoal_engine::download::{download, DownloadError, DownloadOptions, Progress, Summary};
use shoal_engine::rate::{Rate, RateLimit};
use shoal_engine::seeding::{prepare, Seeding};
use shoal_engine::store::Library;
use shoal_engine::support::{human_bytes, init_logging, shutdown_signal};
use shoal_engine::tracker_client::resolve;
use shoal_proto::tracker::Filter;
use tokio_util::sync::CancellationToken;

mod prompt;

#[derive(Parser, Debug)]
#[command(
    name = "leecher",
    version,
    about = "Download a file from the swarm, verify every chunk, then seed it."
)]
struct Args {
    /// The file: its id, a unique id prefix (8+ hex characters) or its name. With --list, a
    /// pattern that names must contain.
    #[arg(value_name = "ID-or-NAME", required_unless_present_any = ["list", "interactive"])]
    query: Option<String>,
    /// Open a prompt to list, get, share and watch files (the default with no file on a terminal).
    #[arg(long, conflicts_with_all = ["query", "list", "no_seed", "no_upload"])]
    interactive: bool,
    /// Print what the tracker knows: `<id> <size-in-bytes> <seeders> <name>` per file.
    #[arg(long)]
    list: bool,
    /// Tracker address [env: P2P_TRACKER] (default: 127.0.0.1:6969, else one found on the LAN).
    #[arg(long, env = "P2P_TRACKER", value_name = "HOST:PORT", hide_env = true)]
    tracker: Option<String>,
    /// Do not look for a tracker on the local network when none is configured [env: P2P_NO_DISCOVERY=1].
    #[arg(long, env = "P2P_NO_DISCOVERY", hide_env = true, value_parser = clap::builder::FalseyValueParser::new())]
    no_discovery: bool,
    /// Folder to write the file into.
    #[arg(long, default_value = ".", value_name = "DIR")]
    out: PathBuf,
    /// Replace the destination file if it exists.
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
        return prompt::main(args);
    }
    init_logging();
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
    if args.window == 0 || args.max_peers == 0 || args.stall_timeout == 0 {
        anyhow::bail!("--window, --max-peers and --stall-timeout must be at least 1");
    }
    let find = Duration::from_secs(args.timeout);
    let client = Arc::new(
        within(find, "finding the tracker", async {
            Ok(choose_tracker(args.tracker.as_deref(), !args.no_discovery).await?)
        })
        .await?,
    );
    if args.list {
        let filter = args.query.clone().map_or(Filter::All, Filter::NameContains);
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
    let query = args.query.clone().expect("clap requires it without --list");
    if !args.out.is_dir() {
        anyhow::bail!("the output folder {} does not exist", args.out.display());
    }
    let entry = within(find, "looking the file up at the tracker", async {
        Ok(resolve(&client, &query).await?)
    })
    .await?;
    // Everything serving needs is checked now, not after a long download. Verified chunks are
    // served from the start (partial seeding): the download joins the library once its manifest
    // is verified, and the announcer registers it.
    let library = Library::new();
    let seeding = if args.no_upload {
        None
    } else {
        let (listener, advertise) = prepare(args.port, args.advertise.as_deref())
            .await
            .map_err(anyhow::Error::msg)?;
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
        out_dir: args.out.clone(),
        force: args.force,
        window: args.window,
        max_peers: args.max_peers,
        stall_timeout: Duration::from_secs(args.stall_timeout),
        timeout: Duration::from_secs(args.timeout),
        download_rate: args.max_download_rate.map(|r| Arc::new(RateLimit::new(r))),
        serving_port: seeding.as_ref().map(|(port, _)| *port),
    };
    let progress = Arc::new(Progress::default());
    let cancel = CancellationToken::new();
    // The name as it will be written, not as the network sent it (control characters).
    let display = tokio::spawn(show_progress(
        progress.clone(),
        shoal_proto::names::safe_file_name(&entry.name, &entry.id),
        cancel.clone(),
    ));
    let signal = {
        let (cancel, shutdown) = (cancel.clone(), shutdown_signal());
        tokio::spawn(async move {
            shutdown.await;
            cancel.cancel();
        })
    };
    let share = seeding.as_ref().map(|_| library.clone());
    let result = download(client.clone(), entry, opts, share, progress, cancel.clone()).await;
    let interrupted = cancel.is_cancelled();
    cancel.cancel();
    let _ = display.await;
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            if let Some((_, seeding)) = seeding {
                seeding.stop().await;
            }
            if interrupted && matches!(e, DownloadError::Cancelled { .. }) {
                eprintln!("leecher: {e}");
                return Ok(ExitCode::from(130));
            }
            return Err(e.into());
        }
    };
    if summary.already_had {
        eprintln!(
            "already have {}: every chunk verified, nothing fetched",
            summary.name
        );
    } else {
        eprintln!("{}", summary_line(&summary));
    }
    println!(
        "{} {} {}",
        summary.id,
        summary.manifest.size(),
        summary.path.display()
    );
    std::io::stdout().flush()?;
    let Some((_, seeding)) = seeding else {
        return Ok(ExitCode::SUCCESS);
    };
    if args.no_seed {
        seeding.stop().await;
        return Ok(ExitCode::SUCCESS);
    }
    // The download's file is in the library already, complete now: no need to hash it again.
    tracing::info!(
        port = seeding.port,
        "seeding {}; Ctrl-C to stop",
        summary.name
    );
    // The download's signal task is still waiting for the first Ctrl-C.
    let _ = signal.await;
    seeding.stop().await;
    Ok(ExitCode::SUCCESS)
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

fn summary_line(s: &Summary) -> String {
    let secs = s.elapsed.as_secs_f64();
    let fetched: u64 = s.peers.iter().map(|(_, p)| p.bytes).sum();
    let rate = fetched as f64 / s.data_phase.as_secs_f64().max(1e-6);
    let per_peer: Vec<String> = s
        .peers
        .iter()
        .filter(|(_, p)| p.chunks > 0)
        .map(|(a, p)| format!("{a}={}", p.chunks))
        .collect();
    let banned = s.banned();
    let mut line = format!(
        "downloaded {}: {} in {secs:.2} s ({}/s); chunks per peer: {}",
        s.name,
        human_bytes(s.manifest.size()),
        human_bytes(rate as u64),
        if per_peer.is_empty() {
            "none".to_string()
        } else {
            per_peer.join(" ")
        }
    );
    line += &format!(
        "; from seeders: {} chunks, from leechers: {} chunks; uploaded {} chunks while downloading",
        s.from_seeders, s.from_leechers, s.uploaded
    );
    if s.resumed_chunks > 0 {
        line += &format!(
            "; resumed {} chunks, fetched {}",
            s.resumed_chunks, s.fetched_chunks
        );
    }
    if s.hash_failures > 0 {
        line += &format!("; {} chunks failed verification", s.hash_failures);
    }
    if !banned.is_empty() {
        line += &format!(
            "; banned: {}",
            banned
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    line
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
