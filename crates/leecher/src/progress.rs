//! What a download shows while it runs: a bar on a terminal (or a plain line every few seconds
//! when stderr is not one), first for the re-check of data already on disk, then for the
//! download; and a log writer that prints above the bar, so that log lines never leave stale
//! copies of it on the screen.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use shoal_engine::download::Progress;
use shoal_engine::support::human_bytes;
use tokio_util::sync::CancellationToken;

/// The bar on screen now, if any: log lines are written with it out of the way.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Where log lines go: stderr, above the progress bar when one is drawn.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole event per call; a poisoned lock only means a
        // panic elsewhere, and the line must still come out.
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The two phases a display goes through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Data already on disk (a resumed `.part`, or a destination that may be the file) is being
    /// checked against the manifest.
    Checking,
    Downloading,
}

fn style(phase: Phase) -> ProgressStyle {
    let template = match phase {
        Phase::Checking => "checking {msg} [{bar:30}] {bytes}/{total_bytes} already on disk",
        Phase::Downloading => {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {prefix} peers"
        }
    };
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}

/// Shows `p` until `done` fires, then clears the bar (also on Ctrl-C, which fires `done`).
pub async fn show(p: Arc<Progress>, name: String, done: CancellationToken) {
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let bar = ProgressBar::new(0).with_style(style(Phase::Downloading));
        bar.set_message(name.clone());
        *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        bar
    });
    let mut phase = Phase::Downloading;
    let mut start = Instant::now();
    let mut last_line = Instant::now();
    loop {
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(if tty { 100 } else { 500 })) => {}
        }
        let now_phase = if p.checking.load(Ordering::Relaxed) {
            Phase::Checking
        } else {
            Phase::Downloading
        };
        if now_phase != phase {
            phase = now_phase;
            start = Instant::now();
            if let Some(bar) = &bar {
                bar.set_style(style(phase));
                bar.reset();
            }
        }
        let total = p.total.load(Ordering::Relaxed);
        let got = match phase {
            Phase::Checking => p.checked.load(Ordering::Relaxed),
            Phase::Downloading => p.done.load(Ordering::Relaxed),
        };
        let peers = p.peers.load(Ordering::Relaxed);
        match &bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(got);
                bar.set_prefix(peers.to_string());
            }
            None if last_line.elapsed() >= Duration::from_secs(2) && total > 0 => {
                last_line = Instant::now();
                eprintln!("{}", plain_line(phase, &name, got, total, peers, start));
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        bar.finish_and_clear();
    }
}

/// The line printed every few seconds when stderr is not a terminal.
fn plain_line(
    phase: Phase,
    name: &str,
    got: u64,
    total: u64,
    peers: usize,
    start: Instant,
) -> String {
    let (got_h, total_h) = (human_bytes(got), human_bytes(total));
    match phase {
        Phase::Checking => format!("checking {name}: {got_h}/{total_h} already on disk"),
        Phase::Downloading => {
            let pct = got as f64 * 100.0 / total as f64;
            let rate = got as f64 / start.elapsed().as_secs_f64().max(1e-6);
            format!(
                "{name}: {pct:.0}% {got_h}/{total_h} {}/s, {peers} peers",
                human_bytes(rate as u64)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_says_which_phase_it_is_in() {
        let start = Instant::now();
        let gib = 1u64 << 30;
        assert_eq!(
            plain_line(Phase::Checking, "big.iso", gib, 2 * gib, 0, start),
            "checking big.iso: 1.00 GiB/2.00 GiB already on disk"
        );
        assert!(
            plain_line(Phase::Downloading, "big.iso", gib, 2 * gib, 3, start)
                .starts_with("big.iso: 50% 1.00 GiB/2.00 GiB ")
        );
    }
}
