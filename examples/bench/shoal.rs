//! Our own programs under measurement: a swarm (tracker + seeders), one timed download, a
//! seeder's start-up, and the tracker under the load generator.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use shoal_testkit::Summary;

use crate::load;
use crate::procs::{self, Opts, Proc, Stream};

/// CPU seconds of a running child so far (NaN once it is gone).
pub fn cpu(p: &Proc) -> f64 {
    p.cpu_secs().unwrap_or(f64::NAN)
}

/// Peak RSS (KiB) of each running child.
pub fn peak_rss(procs: &[Proc]) -> Vec<f64> {
    procs
        .iter()
        .filter_map(|p| p.peak_rss_kib())
        .map(|k| k as f64)
        .collect()
}

/// Generous bounds, so that only a hang trips them.
pub fn hash_timeout(size: u64) -> Duration {
    Duration::from_secs(60 + size / (20 << 20))
}

pub fn download_timeout(size: u64) -> Duration {
    Duration::from_secs(120 + size / (10 << 20))
}

/// The tracker and seeders of one file.
pub struct Swarm {
    pub tracker: Proc,
    pub addr: String,
    pub seeders: Vec<Proc>,
    pub id: String,
    /// A private swarm's secret (`P2P_SECRET` of every program).
    pub secret: Option<String>,
}

/// The environment that puts a program in the private swarm of `secret`, if any.
fn secret_env(secret: Option<&str>) -> Vec<(&'static str, String)> {
    secret
        .map(|s| ("P2P_SECRET", s.to_string()))
        .into_iter()
        .collect()
}

impl Swarm {
    /// Starts a tracker and `seeders` seeders of `src`; returns once every one has registered.
    pub fn start(bins: &Path, src: &Path, seeders: usize) -> Result<Swarm> {
        Swarm::start_with(bins, src, seeders, None)
    }

    /// [`Swarm::start`], a private swarm when `secret` is given.
    pub fn start_with(
        bins: &Path,
        src: &Path,
        seeders: usize,
        secret: Option<&str>,
    ) -> Result<Swarm> {
        let size = std::fs::metadata(src)?.len();
        let name = file_name(src)?;
        let (tracker, addr) = start_tracker_with(bins, &[], None, "info", secret)?;
        let mut swarm = Swarm {
            tracker,
            addr,
            seeders: Vec::new(),
            id: String::new(),
            secret: secret.map(str::to_string),
        };
        for i in 1..=seeders {
            let mut cmd = Command::new(bins.join("seeder"));
            cmd.args(["--tracker", &swarm.addr])
                .arg(src)
                .env("P2P_NO_DISCOVERY", "1")
                .env("RUST_LOG", "info")
                .envs(secret_env(secret));
            swarm.seeders.push(procs::spawn(
                &format!("seeder{i}"),
                &mut cmd,
                Opts::default(),
            )?);
        }
        for s in &swarm.seeders {
            let line = s.wait_line(Stream::Out, "its id line", hash_timeout(size), |l| {
                l.ends_with(&name)
            })?;
            let id = line.text.split(' ').next().unwrap_or_default().to_string();
            ensure!(
                swarm.id.is_empty() || swarm.id == id,
                "the seeders disagree on the id: {} and {id}",
                swarm.id
            );
            swarm.id = id;
            s.wait_line(
                Stream::Err,
                "\"registered with the tracker\"",
                Duration::from_secs(30),
                |l| l.contains("registered with the tracker"),
            )?;
        }
        Ok(swarm)
    }

    /// Ctrl-C to each (they unregister), SIGKILL if one lingers.
    pub fn stop(&mut self) {
        for s in &mut self.seeders {
            s.stop(libc::SIGINT, Duration::from_secs(5));
        }
        self.tracker.stop(libc::SIGINT, Duration::from_secs(5));
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("odd file name {}", path.display()))
}

/// Starts `tracker --listen 127.0.0.1:0 EXTRA...` (pinned to `cpu` if given) and returns it with
/// its address.
pub fn start_tracker(
    bins: &Path,
    extra: &[&str],
    cpu: Option<usize>,
    log: &str,
) -> Result<(Proc, String)> {
    start_tracker_with(bins, extra, cpu, log, None)
}

/// [`start_tracker`], of a private swarm when `secret` is given.
pub fn start_tracker_with(
    bins: &Path,
    extra: &[&str],
    cpu: Option<usize>,
    log: &str,
    secret: Option<&str>,
) -> Result<(Proc, String)> {
    let mut cmd = Command::new(bins.join("tracker"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", log)
        .envs(secret_env(secret));
    let p = procs::spawn(
        "tracker",
        &mut cmd,
        Opts {
            cpu,
            ..Opts::default()
        },
    )?;
    let line = p.wait_line(
        Stream::Out,
        "\"tracker listening on ADDR\"",
        Duration::from_secs(30),
        |l| l.starts_with("tracker listening on "),
    )?;
    let addr = line.text.rsplit(' ').next().unwrap_or_default().to_string();
    Ok((p, addr))
}

/// One download by our leecher, with what every process used meanwhile.
pub struct Download {
    /// From starting the leecher to its exit (after the verified file is fsynced and renamed).
    pub wall: f64,
    /// Data-phase rate from the leecher's summary line, bytes/s.
    pub rate: Option<f64>,
    pub cpu_leecher: f64,
    pub cpu_seeders: Vec<f64>,
    pub cpu_tracker: f64,
    pub rss_kib: f64,
}

/// `leecher --no-seed` of the swarm's file into `out`, timed.
pub fn download(bins: &Path, swarm: &Swarm, out: &Path, size: u64) -> Result<Download> {
    let seeders0: Vec<f64> = swarm.seeders.iter().map(cpu).collect();
    let tracker0 = cpu(&swarm.tracker);
    let mut cmd = Command::new(bins.join("leecher"));
    cmd.args(["--tracker", &swarm.addr, "--no-seed", "--out"])
        .arg(out)
        .arg(&swarm.id)
        .current_dir(out)
        .env("P2P_NO_DISCOVERY", "1")
        .env("RUST_LOG", "info")
        .envs(secret_env(swarm.secret.as_deref()));
    let t0 = Instant::now();
    let mut p = procs::spawn("leecher", &mut cmd, Opts::default())?;
    let exit = p.wait(download_timeout(size))?;
    let wall = exit.at.duration_since(t0).as_secs_f64();
    let seeders1: Vec<f64> = swarm.seeders.iter().map(cpu).collect();
    let tracker1 = cpu(&swarm.tracker);
    p.wait_output_closed(Duration::from_secs(5));
    ensure!(
        exit.success(),
        "the leecher exited with {}\n{}",
        exit.describe(),
        p.tail()
    );
    let path = p
        .lines(Stream::Out)
        .iter()
        .find(|l| l.starts_with(&swarm.id))
        .and_then(|l| l.splitn(3, ' ').nth(2).map(str::to_string))
        .ok_or_else(|| anyhow!("the leecher printed no `<id> <size> <path>` line"))?;
    // Relative paths are relative to the leecher's folder, `out`.
    let got = std::fs::metadata(out.join(&path))
        .with_context(|| format!("no {path} after the download"))?
        .len();
    ensure!(got == size, "the download has {got} bytes, not {size}");
    let rate = p
        .lines(Stream::Err)
        .iter()
        .find(|l| Summary::is_summary(l))
        .and_then(|l| crate::parse_human_bytes(&Summary::parse(l).rate));
    Ok(Download {
        wall,
        rate,
        cpu_leecher: exit.cpu_secs,
        cpu_seeders: seeders0.iter().zip(&seeders1).map(|(a, b)| b - a).collect(),
        cpu_tracker: tracker1 - tracker0,
        rss_kib: exit.max_rss_kib as f64,
    })
}

/// Starts a seeder alone (held to `cpu` if given) and times it to its id line (it hashes the
/// whole file first, then registers: a seeder whose tracker does not answer exits, so a tracker
/// of its own answers, a millisecond's round trip). It is killed right after.
pub fn seeder_startup(bins: &Path, src: &Path, cpu: Option<usize>) -> Result<f64> {
    let size = std::fs::metadata(src)?.len();
    let name = file_name(src)?;
    let (_tracker, addr) = start_tracker(bins, &[], None, "warn")?;
    let mut cmd = Command::new(bins.join("seeder"));
    cmd.args(["--tracker", &addr])
        .arg(src)
        .env("P2P_NO_DISCOVERY", "1")
        .env("RUST_LOG", "warn");
    let opts = Opts {
        cpu,
        ..Opts::default()
    };
    let mut p = procs::spawn("seeder", &mut cmd, opts)?;
    let line = p.wait_line(Stream::Out, "its id line", hash_timeout(size), |l| {
        l.ends_with(&name)
    })?;
    let t = line.at.duration_since(p.started).as_secs_f64();
    p.kill();
    Ok(t)
}

/// One run of the tracker load generator.
pub struct LoadRun {
    pub per_sec: f64,
    /// Tracker CPU seconds per second of the measured window.
    pub busy: f64,
    /// Replies per second of tracker CPU: what one core would answer if it did nothing else.
    pub per_cpu_sec: f64,
    /// Share of the window the tracker was runnable but waited for its core (other programs
    /// on it): a busy machine, not a slow tracker.
    pub starved: f64,
    /// Share of the load generator's polls that found no reply waiting (near 0: the generator,
    /// not the tracker, may have been the limit).
    pub generator_idle: f64,
}

/// A tracker pinned to CPU 0 (`--rate-limit 0`: all the load comes from 127.0.0.1), the load
/// generator pinned to CPU 1, `runs` times `secs` seconds; of a private swarm (every datagram
/// sealed) when `secret` is given.
pub fn tracker_load(
    bins: &Path,
    runs: usize,
    secs: f64,
    secret: Option<&str>,
) -> Result<Vec<LoadRun>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tracker_cpu, load_cpu) = if cores >= 2 {
        (Some(0), Some(1))
    } else {
        println!("    one core only: nothing pinned, tracker and load share it");
        (None, None)
    };
    let (mut tracker, addr) = start_tracker_with(
        bins,
        &["--rate-limit", "0", "--interval", "60"],
        tracker_cpu,
        "warn",
        secret,
    )?;
    let sealer = match secret {
        Some(s) => {
            let (secret, _) = shoal_secret::Secret::parse(s)?;
            Some(std::sync::Arc::new(
                shoal_secret::Keys::derive(&secret).datagrams,
            ))
        }
        None => None,
    };
    let mut out = Vec::new();
    for i in 0..runs {
        let opts = load::LoadOptions {
            tracker: addr.parse().context("tracker address")?,
            duration: Duration::from_secs_f64(secs),
            cpu: load_cpu,
            sealer: sealer.clone(),
            ..load::LoadOptions::default()
        };
        // The generator runs on a thread of its own, pinned (children spawned later from the
        // main thread must not inherit the pinning); the tracker's CPU time is read right at the
        // start and the end of the measured window.
        let mut window = [(0.0, 0.0, Instant::now()); 2];
        let report = std::thread::scope(|s| {
            s.spawn(|| {
                load::run_with(&opts, |m| {
                    window[(m == load::Mark::End) as usize] = (
                        cpu(&tracker),
                        tracker.run_queue_secs().unwrap_or(f64::NAN),
                        Instant::now(),
                    )
                })
            })
            .join()
        })
        .map_err(|_| anyhow!("the load generator panicked"))??;
        let span = window[1].2.duration_since(window[0].2).as_secs_f64();
        let busy = (window[1].0 - window[0].0) / span;
        let starved = (window[1].1 - window[0].1) / span;
        println!(
            "    run {}: {:.0} replies/s ({:.1} peers each, {} lost, {} errors); tracker: CPU use {:.2} of its core, waited for it {:.0}% of the time; generator found nothing waiting in {:.0}% of its polls",
            i + 1,
            report.per_sec(),
            report.peers_per_reply,
            report.lost,
            report.errors,
            busy,
            starved * 100.0,
            report.generator_idle * 100.0
        );
        ensure!(
            !report.rate_limited,
            "the tracker rate-limited the load generator"
        );
        out.push(LoadRun {
            per_sec: report.per_sec(),
            busy,
            per_cpu_sec: report.per_sec() / busy,
            starved,
            generator_idle: report.generator_idle,
        });
    }
    tracker.stop(libc::SIGINT, Duration::from_secs(5));
    Ok(out)
}
