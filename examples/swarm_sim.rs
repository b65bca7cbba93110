//! A simulated swarm for scales this machine cannot hold: the real, sans-IO `Scheduler` (one per
//! leecher) and the seeder's super-seeding `Reveal`, driven by simulated hosts and links.
//!
//! ```text
//! cargo run --release --example swarm_sim -- --help
//! ```
//!
//! One seeder and N leechers that start together; every host's upload is capped at the same
//! rate, downloads are not capped. It prints, per N, the time T1 one leecher alone takes, the
//! first and last finish, TN/T1, the Kumar-Ross bound and what the seeder uploaded. What it models
//! and what it leaves out is in PERFORMANCE.md ("The swarm simulation").

#[path = "swarm_sim/model.rs"]
mod model;
#[path = "swarm_sim/uplink.rs"]
mod uplink;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use model::{Params, Sim};

const USAGE: &str = "usage: swarm_sim [--leechers N,N,...] [--file-mib F] [--chunk-kib C] \
[--upload-mbit U] [--window W] [--max-peers P] [--latency-ms L] [--join-s J] [--no-reveal] \
[--cancel] [--fair-share] [--no-slots] [--seed S] [--check] [--trace]
  --leechers    swarm sizes to run (default 100,1000,10000)
  --file-mib    file size, MiB (default 32)
  --chunk-kib   chunk size, KiB (default 512)
  --upload-mbit every host's upload, Mbit/s (default 50); downloads are not capped
  --window      requests in flight per connection at most (default 6, as the leecher), paced
                as the engine paces them (a quarter of a second of the peer's measured delivery)
  --max-peers   connections per host at most, the seeder's too (default 32, as the leecher)
  --latency-ms  one-way latency of every message (default 5)
  --join-s      leechers register with the tracker within this many seconds (default 1)
  --no-reveal   the seeder advertises every chunk (no super-seeding), for comparison
  --cancel      a leecher that completes a chunk cancels its other requests for it (the engine
                does not send Cancel today; this shows what it would change)
  --fair-share  every uplink sends to all its connections at once, each at its share of the
                rate, as TCP does (default: one chunk at a time, connections in turn)
  --no-slots    every request waits its turn at the uplink (default: upload slots as the engine
                gives them, 4 sending and 4 waiting, the rest refused as busy)
  --seed        random seed (default 1)
  --trace       print the swarm's state every half second of simulated time, and why idle
                uplinks are idle (`examples/swarm_sim/trace.rs`)
  --check       check the scheduler's and the reveal policy's invariants after every event (slow)";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarm_sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run((base, sizes): (Params, Vec<u32>)) -> Result<()> {
    let file = base.chunks as f64 * base.chunk_bytes as f64;
    let u = base.upload;
    println!(
        "F = {:.0} MiB in {} chunks of {} KiB; upload {:.0} Mbit/s per host{}; window {} (paced); at \
         most {} connections per host; upload slots {}; latency {} ms; joins within {} s; super-seeding {}; \
         cancel {}",
        file / 1048576.0,
        base.chunks,
        base.chunk_bytes / 1024,
        u * 8.0 / 1e6,
        if base.fair_share {
            ", shared fairly by its connections"
        } else {
            ", one chunk at a time"
        },
        base.window,
        base.max_peers,
        if base.slots { "on" } else { "off" },
        base.latency * 1e3,
        base.join,
        if base.reveal { "on" } else { "off" },
        if base.cancel { "on" } else { "off" },
    );
    // T1: one leecher alone with the seeder, registered at once.
    let alone = Sim::new(Params {
        leechers: 1,
        join: 0.0,
        trace: false,
        ..base.clone()
    })
    .run();
    let t1 = alone.finish[0];
    println!("T1 = {t1:.2} s (F/u = {:.2} s)", file / u);
    println!(
        "{:>6} {:>8} {:>8} {:>6} {:>8} {:>10} {:>10} {:>7} {:>8} {:>7} {:>9} {:>7}",
        "N",
        "first s",
        "last s",
        "TN/T1",
        "bound s",
        "seeder xF",
        "all out s",
        "dup xF",
        "l. busy",
        "busy/N F",
        "events",
        "wall s"
    );
    for n in sizes {
        let started = Instant::now();
        let out = Sim::new(Params {
            leechers: n,
            ..base.clone()
        })
        .run();
        let first = out.finish.iter().copied().fold(f64::INFINITY, f64::min);
        let last = out.finish.iter().copied().fold(0.0, f64::max);
        // Kumar & Ross: max(F/u_s, F/d_min, N F / (u_s + N u)); downloads are not capped here,
        // so the middle term is 0.
        let bound = (file / u).max(f64::from(n) * file / (u + f64::from(n) * u));
        println!(
            "{:>6} {:>8.2} {:>8.2} {:>6.2} {:>8.2} {:>10.2} {:>10.2} {:>7.2} {:>7.0}% {:>7.2} {:>9} {:>7.1}",
            n,
            first,
            last,
            last / t1,
            bound,
            out.seeder_chunks as f64 / f64::from(base.chunks),
            out.all_out,
            out.wasted_chunks as f64 / f64::from(base.chunks),
            out.leecher_busy * 100.0,
            out.busy as f64 / (f64::from(n) * f64::from(base.chunks)),
            out.events,
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(())
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<(Params, Vec<u32>)> {
    let mut p = Params {
        leechers: 0,
        chunks: 0,
        chunk_bytes: 512 * 1024,
        upload: 50e6 / 8.0,
        window: 6,
        max_peers: 32,
        latency: 0.005,
        join: 1.0,
        reveal: true,
        cancel: false,
        check: false,
        fair_share: false,
        slots: true,
        trace: false,
        seed: 1,
    };
    let mut sizes = vec![100, 1000, 10_000];
    let mut file_mib = 32.0;
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--no-reveal" {
            p.reveal = false;
            continue;
        }
        if flag == "--cancel" {
            p.cancel = true;
            continue;
        }
        if flag == "--fair-share" {
            p.fair_share = true;
            continue;
        }
        if flag == "--no-slots" {
            p.slots = false;
            continue;
        }
        if flag == "--trace" {
            p.trace = true;
            continue;
        }
        if flag == "--check" {
            p.check = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Result<f64> {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => bail!("{flag} wants a non-negative number, not {v:?}"),
            }
        };
        match flag.as_str() {
            "--leechers" => {
                sizes = value
                    .split(',')
                    .map(|v| match v.parse::<u32>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => bail!("--leechers wants positive whole numbers, not {v:?}"),
                    })
                    .collect::<Result<_>>()?
            }
            "--file-mib" => file_mib = num(&value)?,
            "--chunk-kib" => p.chunk_bytes = (num(&value)? * 1024.0) as u64,
            "--upload-mbit" => p.upload = num(&value)? * 1e6 / 8.0,
            "--window" => p.window = num(&value)? as u32,
            "--max-peers" => p.max_peers = num(&value)? as u32,
            "--latency-ms" => p.latency = num(&value)? / 1e3,
            "--join-s" => p.join = num(&value)?,
            "--seed" => p.seed = num(&value)? as u64,
            _ => bail!("unknown option {flag}\n{USAGE}"),
        }
    }
    if p.chunk_bytes == 0 || p.upload <= 0.0 || p.window == 0 || p.max_peers == 0 {
        bail!("--chunk-kib, --upload-mbit, --window and --max-peers must be above 0");
    }
    let chunks = (file_mib * 1048576.0 / p.chunk_bytes as f64).ceil();
    if !(1.0..=1e6).contains(&chunks) {
        bail!("--file-mib {file_mib} makes {chunks} chunks; between 1 and 1,000,000 please");
    }
    p.chunks = chunks as u32;
    Ok((p, sizes))
}
