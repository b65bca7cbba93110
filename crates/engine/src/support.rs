//! Small pieces the three command-line programs share: logging and shutdown signals.

/// Process set-up shared by the three programs: logging to stderr, filtered by `RUST_LOG`
/// (default: info), and an allocator tuned for chunk-sized buffers.
pub fn init_logging() {
    init_logging_to(std::io::stderr);
}

/// [`init_logging`], with log lines written through `writer` (which ends up on stderr; the
/// leecher's moves its progress bar out of the way first).
pub fn init_logging_to<W>(writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tune_allocator();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// glibc serves allocations over its mmap threshold (128 KiB at first) with fresh mappings, and
/// gives freed heap back to the kernel eagerly; for a stream of 512 KiB chunk buffers that means
/// page faults and zeroing on every chunk. Keep such buffers on the heap and reuse them. Memory
/// stays bounded: the number of chunk buffers alive at once is bounded by the engine.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    }
}

/// Resolves on the first Ctrl-C or SIGTERM; a second one exits the process at once (code 130).
///
/// The handlers are installed by the call itself, not on the first poll: call it before telling
/// anyone that we are ready, or a Ctrl-C in between kills the process without any cleanup (that
/// is what SIGINT does by default).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        // The same streams keep listening, so a second signal that comes at once is not lost.
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("interrupted twice; exiting now");
            std::process::exit(130);
        });
    }
}

/// Bytes as a short human figure: `512 KiB`, `1.00 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
