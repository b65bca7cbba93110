//! The `seeder` command: hashes files, prints their ids, registers them with the tracker and
//! serves their chunks until Ctrl-C.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use shoal_cli::flags::TrackerFlags;
use shoal_cli::{init_logging, shutdown_signal};
use shoal_engine::discovery::{choose_tracker, discovery_wanted, tracker_setting};
use shoal_engine::rate::{Rate, RateLimit};
use shoal_engine::seeding::{prepare, Seeding};
use shoal_engine::store::{Library, SharedFile};
use shoal_proto::manifest::DEFAULT_CHUNK_SIZE;
use shoal_proto::FileId;

#[derive(Parser, Debug)]
#[command(
    name = "seeder",
    version,
    about = "Share files: hash them, register them with the tracker, serve their chunks."
)]
struct Args {
    /// Files to share.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    find: TrackerFlags,
    /// A private swarm: read its secret from this file (else from P2P_SECRET, if set).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// TCP port to serve on (default: one the OS picks).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Chunk size: a power of two from 16K to 16M (suffixes K and M).
    #[arg(long, default_value = "512K", value_parser = parse_size)]
    chunk_size: u32,
    /// Register this address with the tracker instead of the one it sees (NAT, several networks).
    #[arg(long, value_name = "HOST[:PORT]")]
    advertise: Option<String>,
    /// Upload at most this many bytes per second over all peers (suffixes K, M, G).
    #[arg(long, value_name = "RATE")]
    max_upload_rate: Option<Rate>,
}

/// Why `--chunk-size` was refused.
#[derive(Debug, thiserror::Error)]
enum SizeError {
    #[error("{0:?} is not a size like 512K or 1M")]
    NotASize(String),
    #[error("too large")]
    TooLarge,
    #[error(transparent)]
    Chunk(#[from] shoal_proto::manifest::ManifestError),
}

fn parse_size(s: &str) -> Result<u32, SizeError> {
    let (num, mult) = match s.to_ascii_uppercase() {
        u if u.ends_with("KIB") || u.ends_with("K") => (
            u.trim_end_matches("IB").trim_end_matches('K').to_string(),
            1024,
        ),
        u if u.ends_with("MIB") || u.ends_with("M") => (
            u.trim_end_matches("IB").trim_end_matches('M').to_string(),
            1024 * 1024,
        ),
        u => (u, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| SizeError::NotASize(s.to_string()))?;
    let size = n
        .checked_mul(mult)
        .filter(|v| *v <= u64::from(u32::MAX))
        .ok_or(SizeError::TooLarge)? as u32;
    shoal_proto::manifest::chunk_count(0, size)?;
    Ok(size)
}

pub fn main() -> ExitCode {
    shoal_cli::tune_allocator();
    let args = Args::parse();
    init_logging();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seeder: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    debug_assert!(DEFAULT_CHUNK_SIZE.is_power_of_two());
    shoal_engine::private::set_up(args.secret_file.as_deref())?;
    // Check every path, the serving port and the tracker before hashing anything, so that a typo
    // or a tracker that is not there fails at once, not after hashing 20 GiB.
    for path in &args.files {
        let meta =
            std::fs::metadata(path).map_err(|e| shoal_engine::store::StoreError::io(path, e))?;
        if meta.is_dir() {
            anyhow::bail!("{} is a directory; seeder shares files", path.display());
        }
        std::fs::File::open(path).map_err(|e| shoal_engine::store::StoreError::io(path, e))?;
    }
    let (listener, advertise) = prepare(args.port, args.advertise.as_deref()).await?;
    let client = Arc::new(
        choose_tracker(
            tracker_setting(args.find.tracker.clone()).as_deref(),
            discovery_wanted(args.find.no_discovery),
        )
        .await?,
    );
    // An address that was given has not been tried yet; one found by choose_tracker answered.
    client.ping().await?;
    // From here a Ctrl-C stops the hashing, or unregisters.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let library = Library::new();
    // Every file hashed before the first announcement, so that the announcer registers them in
    // as few datagrams as fit (a thousand small files: a few dozen, not a thousand).
    let lines = tokio::select! {
        r = hash_all(&args, &library) => r?,
        _ = &mut shutdown => return Ok(()),
    };
    let upload = args.max_upload_rate.map(|r| Arc::new(RateLimit::new(r)));
    let seeding = Seeding::start(library.clone(), client.clone(), listener, advertise, upload)?;
    let printed = tokio::select! {
        r = print_when_registered(&args, lines, &seeding) => Some(r),
        _ = &mut shutdown => None,
    };
    if let Some(Ok(())) = printed {
        tracing::info!(port = seeding.port, files = library.entries().len(), tracker = %client.addr(), "serving; Ctrl-C to stop");
        (&mut shutdown).await;
    }
    tracing::info!("stopping");
    seeding.stop().await;
    printed.unwrap_or(Ok(()))
}

/// Hashes each file into the library; returns each one's id and its stdout line.
async fn hash_all(args: &Args, library: &Library) -> anyhow::Result<Vec<(FileId, String)>> {
    let mut lines = Vec::new();
    for path in &args.files {
        let shared = hash_with_progress(path.clone(), args.chunk_size).await?;
        let name = shoal_proto::names::printable(&shared.name);
        lines.push((
            shared.id,
            format!("{} {} {name}", shared.id, shared.manifest.size()),
        ));
        library.add(shared);
    }
    Ok(lines)
}

/// Prints each file's line once the tracker has it, in the order given: an id on stdout is one
/// a leecher can fetch at once. A first registration that fails ends the seeder with its reason.
async fn print_when_registered(
    args: &Args,
    lines: Vec<(FileId, String)>,
    seeding: &Seeding,
) -> anyhow::Result<()> {
    let mut registration = seeding.registration();
    for (path, (id, line)) in args.files.iter().zip(lines) {
        let now = registration
            .wait_for(|r| r.files.contains(&id) || r.failure.is_some())
            .await?
            .clone();
        if let (false, Some(why)) = (now.files.contains(&id), now.failure) {
            anyhow::bail!(
                "could not register {} with the tracker: {why}",
                shoal_proto::names::printable(&path.display().to_string())
            );
        }
        println!("{line}");
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Hashes on a blocking thread while a progress bar (on a terminal) shows how far it got.
async fn hash_with_progress(path: PathBuf, chunk_size: u32) -> anyhow::Result<SharedFile> {
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let done = Arc::new(AtomicU64::new(0));
    let task = {
        let (path, done) = (path.clone(), done.clone());
        tokio::task::spawn_blocking(move || SharedFile::hash(&path, chunk_size, &done))
    };
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template(
            "hashing {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(path.display().to_string());
    // Only draw if hashing takes more than a moment.
    let show_after = tokio::time::Instant::now() + Duration::from_millis(300);
    tokio::pin!(task);
    let result = loop {
        tokio::select! {
            r = &mut task => break r.expect("hashing panicked"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if tokio::time::Instant::now() >= show_after {
                    bar.set_position(done.load(Ordering::Relaxed));
                }
            }
        }
    };
    bar.finish_and_clear();
    Ok(result?)
}
