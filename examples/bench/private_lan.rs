//! The private swarm on a capped LAN (`--private-lan`, issue 13): one leecher fetches a file from
//! one seeder whose upload is capped at 1 Gbit/s with `tc tbf`, in network namespaces, once in an
//! open swarm and once in a private one (every connection over Noise, no `sendfile`), the two
//! interleaved run by run, so that the ratio of their times is what encryption costs where the
//! link, not the CPU, should be the limit. Needs root (namespaces) and iproute2.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::lan::Lan;
use crate::procs;
use crate::report::{median, Report, Target, Unit};
use crate::table::Outcome;

/// The link's cap, bits per second.
const RATE_BITS: u64 = 1_000_000_000;

pub struct Results {
    pub file_size: u64,
    pub plain: Vec<f64>,
    pub private: Vec<f64>,
}

/// Runs the case; `Err` says why it did not run (not root, no `ip`, a failure).
pub fn run(bins: &Path, dir: &Path, runs: usize, file_size: u64) -> Outcome<Results> {
    if !rustix::process::geteuid().is_root() {
        return Err("skipped: needs root (network namespaces); run with sudo".into());
    }
    measure(bins, dir, runs, file_size).map_err(|e| {
        procs::park_if_stopping();
        println!("    private LAN case failed: {e:#}");
        format!("failed: {e}")
    })
}

fn measure(bins: &Path, dir: &Path, runs: usize, file_size: u64) -> Result<Results> {
    let mut lan = Lan::new(3, RATE_BITS, None, dir)?;
    crate::machine::generate(&lan.home(2).join("s.bin"), file_size)?;
    let tracker_addr = format!("{}:6969", lan.ip(1));
    let secret = shoal_secret::Secret::generate()?.to_text();
    let timeout = Duration::from_secs(60 + file_size / (RATE_BITS / 8));
    let (mut plain, mut private) = (Vec::new(), Vec::new());
    for i in 0..runs {
        for sealed in [false, true] {
            // A tracker of the kind of swarm this round is: an open one does not answer sealed
            // datagrams, nor a private one plain ones.
            lan.secret = sealed.then(|| secret.clone());
            let mut tracker = lan.tracker(bins)?;
            let r = lan.round(bins, &tracker_addr, 1, true, timeout)?;
            tracker.stop(libc::SIGINT, Duration::from_secs(5));
            let kind = if sealed { "private" } else { "open" };
            println!("    run {}/{runs}, {kind}: {:.2} s", i + 1, r.last);
            if sealed {
                private.push(r.last);
            } else {
                plain.push(r.last);
            }
        }
    }
    Ok(Results {
        file_size,
        plain,
        private,
    })
}

/// The case's rows, with the goal on the ratio of rates.
pub fn tabulate(r: &mut Report, x: &Outcome<Results>) {
    r.section("8. private swarm on a 1 Gbit/s link (network namespaces)");
    let x = match x {
        Ok(x) => x,
        Err(why) => return r.note("private LAN case", why.clone()),
    };
    let mib = x.file_size >> 20;
    r.row(
        &format!("{mib} MiB, one seeder at 1 Gbit/s, open swarm"),
        Unit::Secs,
        x.plain.clone(),
        None,
    );
    r.row(
        &format!("{mib} MiB, one seeder at 1 Gbit/s, private swarm"),
        Unit::Secs,
        x.private.clone(),
        None,
    );
    // Rate ratio of each private run against the median open one: time open / time private.
    let ratios = median(&x.plain).map_or(Vec::new(), |open| {
        x.private.iter().map(|t| open / t).collect()
    });
    r.row(
        "private / open rate (median open run)",
        Unit::Ratio,
        ratios,
        Some(Target::at_least(0.95, ">= 0.95")),
    );
}
