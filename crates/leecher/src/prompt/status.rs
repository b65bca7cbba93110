//! The `status` command: what is downloading, what is shared, to whom and at what rate.
//!
//! "To whom" is what the tracker knows: the other peers registered for the file, who are the ones
//! that fetch from us. The rate is measured here: chunks sent, sampled every second.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_engine::store::Library;
use shoal_engine::support::human_bytes;
use shoal_engine::tracker_client::TrackerClient;
use shoal_proto::FileId;
use tokio_util::sync::CancellationToken;

use super::transfers::Transfers;

/// The upload rate is the average over this many one-second samples.
const WINDOW: usize = 5;

/// Chunks sent per shared file, sampled every second.
#[derive(Default)]
pub struct Meter {
    samples: Mutex<HashMap<FileId, VecDeque<(Instant, u64)>>>,
}

impl Meter {
    /// Samples `library` every second until `stop` fires.
    pub fn start(library: Arc<Library>, stop: CancellationToken) -> Arc<Meter> {
        let meter = Arc::new(Meter::default());
        let m = meter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = Instant::now();
                let mut samples = m.samples.lock().unwrap();
                for (entry, _) in library.vouched() {
                    let Some(file) = library.get(&entry.id) else {
                        continue;
                    };
                    let bytes = file.uploaded() * u64::from(file.manifest.chunk_size());
                    let s = samples.entry(entry.id).or_default();
                    s.push_back((now, bytes));
                    if s.len() > WINDOW + 1 {
                        s.pop_front();
                    }
                }
            }
        });
        meter
    }

    /// Bytes per second sent over the last few seconds (full chunks: a short last chunk counts
    /// whole).
    fn rate(&self, id: &FileId) -> u64 {
        let samples = self.samples.lock().unwrap();
        let Some(s) = samples.get(id) else { return 0 };
        match (s.front(), s.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                ((b1 - b0) as f64 / (*t1 - *t0).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }
}

/// The text `status` prints.
pub async fn report(
    client: &TrackerClient,
    library: &Library,
    transfers: &Transfers,
    meter: &Meter,
    serving: SocketAddr,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tracker {}; serving on port {}",
        client.addr(),
        serving.port()
    );
    let running = transfers.running();
    if running.is_empty() {
        out.push_str("downloading: nothing\n");
    } else {
        out.push_str("downloading:\n");
        for t in &running {
            let _ = writeln!(out, "  {} (into {})", t.line(), t.dir.display());
        }
    }
    let shared: Vec<_> = library
        .vouched()
        .into_iter()
        .filter(|(_, partial)| partial.is_none())
        .collect();
    if shared.is_empty() {
        out.push_str("sharing: nothing\n");
        return out;
    }
    out.push_str("sharing:\n");
    for (entry, _) in shared {
        let Some(file) = library.get(&entry.id) else {
            continue;
        };
        let peers = match client.peers(entry.id).await {
            Ok(p) => {
                let others: Vec<String> = p
                    .iter()
                    .filter(|a| a.port() != serving.port())
                    .map(|a| a.to_string())
                    .collect();
                if others.is_empty() {
                    "no other peers".to_string()
                } else {
                    format!("peers: {}", others.join(" "))
                }
            }
            Err(e) => format!("peers unknown ({e})"),
        };
        let _ = writeln!(
            out,
            "  {} {} {}: sent {} chunks, {}/s now; {peers}",
            &entry.id.to_string()[..8],
            shoal_proto::names::printable(&file.name),
            human_bytes(entry.size),
            file.uploaded(),
            human_bytes(meter.rate(&entry.id)),
        );
    }
    out
}
