//! Log lines on stderr, filtered by `RUST_LOG` (default: info), the same way in every program.

use tracing_subscriber::fmt::MakeWriter;

/// Logging to stderr, in colour on a terminal.
pub fn init_logging() {
    init_logging_to(std::io::stderr);
}

/// [`init_logging`], with log lines written through `writer` (which ends up on stderr; the
/// leecher's moves its progress bar out of the way first).
pub fn init_logging_to<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    init(writer, ansi);
}

/// [`init_logging_to`] without colours: for a writer whose text a line editor counts (escape
/// sequences would be taken for characters of the line).
pub fn init_logging_plain<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    init(writer, false);
}

fn init<W>(writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
