//! The lines a finished download prints: the summary on stderr and `<id> <size> <path>` on stdout.

use shoal_engine::download::Summary;
use shoal_engine::support::human_bytes;

/// Prints both lines of a finished (or already present) download.
pub fn report(summary: &Summary) -> std::io::Result<()> {
    use std::io::Write;
    if summary.already_had {
        eprintln!(
            "already have {}: every chunk verified, nothing fetched",
            summary.name
        );
    } else {
        eprintln!("{}", summary_line(summary));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} {} {}",
        summary.id,
        summary.bytes,
        summary.path.display()
    )?;
    out.flush()
}

pub fn summary_line(s: &Summary) -> String {
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
    let files = match s.files {
        Some(1) => "1 file, ".to_string(),
        Some(n) => format!("{n} files, "),
        None => String::new(),
    };
    let mut line = format!(
        "downloaded {}: {files}{} in {secs:.2} s ({}/s); chunks per peer: {}",
        s.name,
        human_bytes(s.bytes),
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
