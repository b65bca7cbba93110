//! The swarm case (`--swarm`, issue 10): N leechers of one file started together, every host in
//! a network namespace of its own on one bridge, every upload capped with `tc tbf`, so that the
//! seeder's link, not this machine's CPU or loopback, is what a client-server fan-out runs into.
//!
//! h1 runs the tracker, h2 the seeder (a fresh one every round), h3.. the leechers, which keep
//! seeding once they finish (as in a swarm) until the last one is done. Needs root (namespaces)
//! and iproute2.
//!
//! To see where a round's time goes: `SHOAL_BENCH_RUST_LOG` is every program's `RUST_LOG` (default
//! `info`; `info,shoal_engine=debug` logs every request, verified chunk, chunk the seeder sent and
//! `WantMore`, with times), and `SHOAL_BENCH_LOG_DIR=DIR` keeps each round's stderr of the seeder
//! and of every leecher in `DIR/rK-nN/`, and the tracker's, for all rounds, in `DIR/tracker.log`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lan::Lan;
use crate::procs::{self, Proc, Stream};
use crate::report::{median, Report, Target, Unit};
use crate::table::Outcome;

/// What `--swarm` measures.
pub struct Plan {
    pub sizes: Vec<usize>,
    pub runs: usize,
    pub file_size: u64,
    /// Every host's upload cap, bits per second.
    pub rate_bits: u64,
    /// Every host's TCP congestion control; `None`: this machine's.
    pub cc: Option<String>,
}

/// The figures of one swarm size, one sample per run.
pub struct SizeResult {
    pub n: usize,
    pub first: Vec<f64>,
    pub last: Vec<f64>,
    /// The seeder's upload, counted by tc on its link, as a multiple of the file size.
    pub seeder_upload: Vec<f64>,
    /// Everything the seeder and the leechers sent, over N x F.
    pub all_upload: Vec<f64>,
    /// The largest peak resident set of the round's leechers, KiB.
    pub peak_rss_kib: Vec<f64>,
}

pub struct Results {
    pub file_size: u64,
    pub rate_bits: u64,
    /// The hosts' TCP congestion control, as the LAN printed it.
    pub cc: String,
    pub t1: Vec<f64>,
    pub sizes: Vec<Outcome<SizeResult>>,
}

/// Runs the case; `Err` says why it did not run at all (not root, no `ip`).
pub fn run(plan: &Plan, bins: &Path, dir: &Path) -> Outcome<Results> {
    if !rustix::process::geteuid().is_root() {
        return Err("skipped: needs root (network namespaces); run with sudo".into());
    }
    measure(plan, bins, dir).map_err(|e| {
        procs::park_if_stopping();
        println!("    swarm case failed: {e:#}");
        format!("failed: {e}")
    })
}

fn measure(plan: &Plan, bins: &Path, dir: &Path) -> Result<Results> {
    let max_n = plan.sizes.iter().copied().max().unwrap_or(1);
    let lan = Lan::new(2 + max_n, plan.rate_bits, plan.cc.as_deref(), dir)?;
    let src = lan.home(2).join("s.bin");
    crate::machine::generate(&src, plan.file_size)?;

    let tracker_addr = format!("{}:6969", lan.ip(1));
    let mut tracker = lan.tracker(bins)?;
    let timeout = |n: usize| Duration::from_secs(60 + 10 * n as u64);
    let mut t1 = Vec::new();
    for i in 0..plan.runs {
        let r = lan.round(bins, &tracker_addr, 1, true, timeout(1))?;
        println!("    T1, run {}/{}: {:.2} s", i + 1, plan.runs, r.last);
        t1.push(r.last);
    }
    let mut sizes = Vec::new();
    for &n in &plan.sizes {
        let mut res = SizeResult {
            n,
            first: Vec::new(),
            last: Vec::new(),
            seeder_upload: Vec::new(),
            all_upload: Vec::new(),
            peak_rss_kib: Vec::new(),
        };
        let mut error = None;
        for i in 0..plan.runs {
            match lan.round(bins, &tracker_addr, n, false, timeout(n)) {
                Ok(r) => {
                    let up = r.seeder_sent as f64 / plan.file_size as f64;
                    // Everything sent over what the leechers needed: copies that were wasted
                    // (and the TCP/IP headers, about 3 %).
                    let all = (r.seeder_sent + r.leechers_sent) as f64
                        / (n as f64 * plan.file_size as f64);
                    println!(
                        "    N = {n}, run {}/{}: first {:.2} s, last {:.2} s, seeder sent {up:.2} x F, all sent {all:.3} x N F",
                        i + 1,
                        plan.runs,
                        r.first,
                        r.last
                    );
                    res.first.push(r.first);
                    res.last.push(r.last);
                    res.seeder_upload.push(up);
                    res.all_upload.push(all);
                    res.peak_rss_kib.push(r.peak_rss_kib as f64);
                }
                Err(e) => {
                    procs::park_if_stopping();
                    println!("    N = {n}, run {}: failed: {e:#}", i + 1);
                    error = Some(format!("failed: {e}"));
                }
            }
        }
        sizes.push(match error {
            Some(why) if res.last.is_empty() => Err(why),
            _ => Ok(res),
        });
    }
    tracker.stop(libc::SIGINT, Duration::from_secs(5));
    if let Some(dir) = std::env::var_os("SHOAL_BENCH_LOG_DIR") {
        tracker.wait_output_closed(Duration::from_secs(5));
        let log = Path::new(&dir).join("tracker.log");
        std::fs::write(&log, tracker.lines(Stream::Err).join("\n") + "\n")
            .with_context(|| format!("writing {}", log.display()))?;
    }
    Ok(Results {
        file_size: plan.file_size,
        rate_bits: plan.rate_bits,
        cc: lan.cc.clone(),
        t1,
        sizes,
    })
}

/// One round: finish times from the start of the first leecher, the seeder's upload, and the
/// largest peak resident set of its leechers.
pub(crate) struct Round {
    first: f64,
    pub(crate) last: f64,
    seeder_sent: u64,
    /// What the leechers uploaded, counted as the seeder's is.
    leechers_sent: u64,
    peak_rss_kib: u64,
}

impl Lan {
    /// A seeder of h2's file, registered with the tracker: a fresh one per round, so that no
    /// round starts with what the seeder learned serving the one before (its reveal policy's
    /// counts of what it sent). Returns it with the file's id.
    fn seeder(&self, bins: &Path, tracker: &str) -> Result<(Proc, String)> {
        let args = [
            "--tracker",
            tracker,
            "--port",
            "7000",
            "--chunk-size",
            "256K",
            "s.bin",
        ];
        let seeder = self.spawn(2, "seeder", &bins.join("seeder"), &args)?;
        let id_line =
            seeder.wait_line(Stream::Out, "its id line", Duration::from_secs(120), |l| {
                l.ends_with("s.bin")
            })?;
        let id = id_line
            .text
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        seeder.wait_line(
            Stream::Err,
            "\"registered\"",
            Duration::from_secs(30),
            |l| l.contains("registered with the tracker"),
        )?;
        Ok((seeder, id))
    }

    /// `n` leechers on h3.. started together, from a fresh seeder; `alone` (T1) exits once done
    /// instead of seeding.
    pub(crate) fn round(
        &self,
        bins: &Path,
        tracker: &str,
        n: usize,
        alone: bool,
        timeout: Duration,
    ) -> Result<Round> {
        for h in 3..3 + n {
            let home = self.home(h);
            std::fs::remove_dir_all(&home)?;
            std::fs::create_dir_all(&home)?;
        }
        let (mut seeder, id) = self.seeder(bins, tracker)?;
        let sent0 = self.sent(2)?;
        let leechers_sent0 = (3..3 + n).map(|h| self.sent(h)).sum::<Result<u64>>()?;
        let mut args = vec!["--tracker", tracker, "--timeout", "30", "--port", "7000"];
        if alone {
            args.push("--no-seed");
        }
        args.push(&id);
        let start = Instant::now();
        let mut leechers = Vec::new();
        for h in 3..3 + n {
            leechers.push(self.spawn(
                h,
                &format!("leecher{}", h - 2),
                &bins.join("leecher"),
                &args,
            )?);
        }
        let deadline = start + timeout;
        let mut done = Vec::new();
        for l in &leechers {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let line = l.wait_line(Stream::Err, "its summary", left, |t| {
                t.starts_with("downloaded ")
            })?;
            done.push(line.at.duration_since(start).as_secs_f64());
        }
        let seeder_sent = self.sent(2)? - sent0;
        let leechers_sent = (3..3 + n).map(|h| self.sent(h)).sum::<Result<u64>>()? - leechers_sent0;
        // All at once, so that none is left seeding alone while another stops.
        for l in &leechers {
            l.signal(libc::SIGINT);
        }
        let mut peak_rss_kib = 0;
        for l in &mut leechers {
            match l.wait_timeout(Duration::from_secs(10))? {
                Some(exit) if exit.success() => peak_rss_kib = peak_rss_kib.max(exit.max_rss_kib),
                Some(exit) => bail!("{} exited with {} on Ctrl-C", l.label, exit.describe()),
                None => bail!("{} did not exit within 10 s of Ctrl-C", l.label),
            }
        }
        seeder.stop(libc::SIGINT, Duration::from_secs(5));
        if let Some(dir) = std::env::var_os("SHOAL_BENCH_LOG_DIR") {
            keep_logs(Path::new(&dir), n, &seeder, &leechers)?;
        }
        let first = done.iter().copied().fold(f64::INFINITY, f64::min);
        let last = done.iter().copied().fold(0.0, f64::max);
        if n > 1 {
            // The last to finish, and its warnings: what held the round up.
            let slowest = done.iter().position(|t| *t == last).unwrap_or(0);
            let l = &leechers[slowest];
            for line in l.lines(Stream::Err) {
                if line.starts_with("downloaded ") || line.contains(" WARN ") {
                    println!("      last, {}: {line}", l.label);
                }
            }
        }
        Ok(Round {
            first,
            last,
            seeder_sent,
            leechers_sent,
            peak_rss_kib,
        })
    }
}

/// Writes the round's stderr of the seeder and of each leecher into `dir/rK-nN/` (K counts the
/// rounds of this run).
fn keep_logs(dir: &Path, n: usize, seeder: &Proc, leechers: &[Proc]) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static ROUND: AtomicUsize = AtomicUsize::new(0);
    let round = ROUND.fetch_add(1, Ordering::Relaxed);
    let dir = dir.join(format!("r{round}-n{n}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let procs =
        std::iter::once(("seeder", seeder)).chain(leechers.iter().map(|l| (l.label.as_str(), l)));
    for (label, p) in procs {
        std::fs::write(
            dir.join(format!("{label}.log")),
            p.lines(Stream::Err).join("\n") + "\n",
        )?;
    }
    Ok(())
}

/// The Kumar-Ross minimum distribution time max(F/u_s, F/d_min, N F / (u_s + sum u_i)), every
/// upload `u` bytes/s; downloads are not capped here, so F/d_min is left out (taken as 0).
pub fn kumar_ross(file: u64, n: usize, u: f64) -> f64 {
    let f = file as f64;
    (f / u).max(n as f64 * f / (u + n as f64 * u))
}

/// The case's rows, with the goals.
pub fn tabulate(r: &mut Report, x: &Outcome<Results>) {
    r.section("7. swarm: N leechers at once, uploads capped (network namespaces)");
    let x = match x {
        Ok(x) => x,
        Err(why) => return r.note("swarm case", why.clone()),
    };
    let mib = x.file_size >> 20;
    let mbit = x.rate_bits / 1_000_000;
    r.row(
        &format!(
            "T1: one leecher alone, {mib} MiB at {mbit} Mbit/s, TCP {}",
            x.cc
        ),
        Unit::Secs,
        x.t1.clone(),
        None,
    );
    let t1 = median(&x.t1);
    for s in &x.sizes {
        let s = match s {
            Ok(s) => s,
            Err(why) => {
                r.note("swarm size", why.clone());
                continue;
            }
        };
        let n = s.n;
        r.row(
            &format!("N = {n}: first finish"),
            Unit::Secs,
            s.first.clone(),
            None,
        );
        r.row(
            &format!("N = {n}: last finish (TN)"),
            Unit::Secs,
            s.last.clone(),
            None,
        );
        let goal = match n {
            16 => Some(1.2),
            32 => Some(1.3),
            _ => None,
        };
        let ratios = t1.map_or(Vec::new(), |t1| s.last.iter().map(|t| t / t1).collect());
        r.row(
            &format!("N = {n}: TN/T1 (median T1)"),
            Unit::Ratio,
            ratios,
            goal.map(|g| Target::at_most(g, format!("<= {g}"))),
        );
        let bound = kumar_ross(x.file_size, n, x.rate_bits as f64 / 8.0);
        r.row(
            &format!("N = {n}: Kumar-Ross bound"),
            Unit::Secs,
            vec![bound],
            None,
        );
        r.row(
            &format!("N = {n}: seeder upload / F"),
            Unit::Ratio,
            s.seeder_upload.clone(),
            None,
        );
        r.row(
            &format!("N = {n}: all uploads / (N x F)"),
            Unit::Ratio,
            s.all_upload.clone(),
            None,
        );
        r.row(
            &format!("N = {n}: largest leecher peak RSS"),
            Unit::Kib,
            s.peak_rss_kib.clone(),
            None,
        );
    }
}
