//! The benchmark's command line: its flags, their defaults, and the checks on their values.

use std::path::PathBuf;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::{parse_human_bytes, procs, GIB, MIB};

pub const USAGE: &str = "\
usage: cargo run --release --example bench -- [FLAGS]
  --runs N         times each case runs (default 3)
  --size SIZE      file size for cases 1-3 and 5 (default 1G; suffixes K, M, G)
  --big-size SIZE  the second file for the peak-RSS case (default 4G)
  --skip-big       leave out the big-file case
  --skip-aria2     leave out the aria2 + opentracker comparison
  --skip-tracker   leave out the tracker throughput case
  --load-secs S    seconds of tracker load per run (default 5)
  --quick          --runs 1 --skip-big --load-secs 2
  --seeders N      seeders in the swarm (default 4)
  --dir DIR        where to make the temporary folder (default: the system temp folder)
  --drop-caches    drop the page cache before every timed run (root), so seeders read from disk;
                   by default the source file is read into the cache first
  --no-install     do not apt-get install aria2, mktorrent, opentracker when missing
  --json PATH      write the results there (default target/bench.json); --no-json to skip
  --verbose        show every program's output as it arrives
  --swarm          run only the swarm case instead (needs root: network namespaces; skipped,
                   with a note, otherwise): N leechers of a 32 MiB file at once, every upload
                   capped at 50 Mbit/s (--swarm-rate) with tc; results in target/bench-swarm.json
                   by default
  --swarm-sizes L  the N of the swarm case, comma-separated (default 8,16,32)
  --swarm-rate M   every host's upload cap in the swarm case, Mbit/s (default 50, the issue's)
  --swarm-cc NAME  every host's TCP congestion control in the swarm case (default cubic, Linux's
                   default; `system` keeps this machine's, `bbr` for BBR)
  --folders        run only the folder cases instead (issue 12): 10,000 files of 4 KiB beside
                   tar | tar + sync, seeder start-up in files/s, 8 x 128 MiB beside one 1 GiB
                   file from 4 seeders; results in target/bench-folders.json by default
  --private-lan    run only the private-swarm LAN case instead (issue 13; needs root): a file of
                   --size from one seeder whose upload is capped at 1 Gbit/s with tc, open and
                   private runs interleaved; results in target/bench-private-lan.json by default";

pub struct Args {
    pub runs: usize,
    pub size: u64,
    pub big: Option<u64>,
    pub aria2: bool,
    pub tracker: bool,
    pub load_secs: f64,
    pub seeders: usize,
    pub dir: Option<PathBuf>,
    pub drop_caches: bool,
    pub install: bool,
    pub json: Option<Option<PathBuf>>,
    pub swarm: bool,
    pub swarm_sizes: Vec<usize>,
    pub swarm_rate_mbit: u64,
    /// `None`: the machine's own.
    pub swarm_cc: Option<String>,
    pub folders: bool,
    pub private_lan: bool,
}

pub fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 3,
        size: GIB,
        big: Some(4 * GIB),
        aria2: true,
        tracker: true,
        load_secs: 5.0,
        seeders: 4,
        dir: None,
        drop_caches: false,
        install: true,
        json: Some(None),
        swarm: false,
        swarm_sizes: vec![8, 16, 32],
        swarm_rate_mbit: 50,
        swarm_cc: Some("cubic".into()),
        folders: false,
        private_lan: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--runs" => a.runs = value()?.parse().context("--runs takes a number")?,
            "--size" => a.size = parse_size(&value()?)?,
            "--big-size" => a.big = Some(parse_size(&value()?)?),
            "--skip-big" | "--skip-4g" => a.big = None,
            "--skip-aria2" => a.aria2 = false,
            "--skip-tracker" => a.tracker = false,
            "--load-secs" => a.load_secs = value()?.parse().context("--load-secs takes seconds")?,
            "--quick" => {
                a.runs = 1;
                a.big = None;
                a.load_secs = 2.0;
            }
            "--seeders" => a.seeders = value()?.parse().context("--seeders takes a number")?,
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "--drop-caches" => a.drop_caches = true,
            "--no-install" => a.install = false,
            "--json" => a.json = Some(Some(PathBuf::from(value()?))),
            "--no-json" => a.json = None,
            "--swarm" => a.swarm = true,
            "--folders" => a.folders = true,
            "--private-lan" => a.private_lan = true,
            "--swarm-sizes" => {
                a.swarm_sizes = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--swarm-sizes takes numbers like 8,16,32")?
            }
            "--swarm-rate" => {
                a.swarm_rate_mbit = value()?
                    .parse()
                    .context("--swarm-rate takes a whole number of Mbit/s")?
            }
            "--swarm-cc" => {
                let cc = value()?;
                ensure!(
                    crate::lan::is_congestion_control_name(&cc),
                    "--swarm-cc takes a name like cubic or bbr, or system"
                );
                a.swarm_cc = (cc != "system").then_some(cc);
            }
            "--verbose" => procs::VERBOSE.store(true, std::sync::atomic::Ordering::Relaxed),
            other => bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        [a.swarm, a.folders, a.private_lan]
            .iter()
            .filter(|on| **on)
            .count()
            <= 1,
        "--swarm, --folders and --private-lan are cases of their own: give one at most"
    );
    ensure!(a.runs >= 1, "--runs must be at least 1");
    ensure!(a.size >= MIB, "--size must be at least 1M");
    ensure!(a.seeders >= 1, "--seeders must be at least 1");
    ensure!(
        !a.swarm_sizes.is_empty() && a.swarm_sizes.iter().all(|&n| (1..=248).contains(&n)),
        "--swarm-sizes must be numbers from 1 to 248"
    );
    ensure!(
        (1..=10_000).contains(&a.swarm_rate_mbit),
        "--swarm-rate must be from 1 to 10000 (Mbit/s)"
    );
    ensure!(
        a.load_secs > 0.0 && a.load_secs <= 600.0,
        "--load-secs must be between 0 and 600"
    );
    Ok(a)
}

/// `1G`, `512M`, `64K`, `4GiB` or a plain number of bytes.
fn parse_size(s: &str) -> Result<u64> {
    parse_human_bytes(s)
        .filter(|v| *v >= 1.0)
        .map(|v| v as u64)
        .ok_or_else(|| anyhow!("{s:?} is not a size like 1G or 512M"))
}
