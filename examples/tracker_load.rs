//! Load generator for the tracker: how many peer-list requests per second does it answer?
//!
//! ```text
//! tracker --listen 127.0.0.1:6969 --rate-limit 0 &          # or: taskset -c 0 tracker ...
//! cargo run --release --example tracker_load -- --tracker 127.0.0.1:6969 --cpu 1
//! ```
//!
//! It registers `--peers` fake peers for one made-up file, then sends "get peers" requests from
//! `--sockets` UDP sockets with `--in-flight` requests outstanding on each, for `--secs` seconds
//! after a short warm-up, and prints the replies per second. The tracker must run with
//! `--rate-limit 0`: every request comes from 127.0.0.1, far over the per-address limit.
//! `cargo run --release --example bench` runs the same generator against a tracker pinned to one
//! core (see examples/bench.rs).

#[path = "bench/load.rs"]
mod load;

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

const USAGE: &str = "usage: tracker_load [--tracker HOST:PORT] [--secs S] [--sockets N] \
[--in-flight N] [--peers N] [--cpu N]
  --tracker    the tracker (default: $P2P_TRACKER, else 127.0.0.1:6969); run it with --rate-limit 0
  --secs       seconds to measure, after a 0.5 s warm-up (default 5)
  --sockets    UDP sockets sending at once (default 8)
  --in-flight  requests outstanding per socket (default 64)
  --peers      fake peers registered for the file, so replies carry full lists (default 300)
  --cpu        pin the generator to this CPU (e.g. 1 when the tracker runs with taskset -c 0)";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(|opts| {
        let report = load::run_with(&opts, |_| {})?;
        Ok((opts, report))
    }) {
        Ok((opts, r)) => {
            println!(
                "{:.0} replies/s ({} replies in {:.2} s; {} sockets x {} in flight; {:.1} peers per reply; {} lost, {} errors; generator found nothing waiting in {:.0}% of its polls)",
                r.per_sec(),
                r.replies,
                r.elapsed.as_secs_f64(),
                opts.sockets,
                opts.in_flight,
                r.peers_per_reply,
                r.lost,
                r.errors,
                r.generator_idle * 100.0
            );
            if r.rate_limited {
                eprintln!(
                    "tracker_load: the tracker rate-limited us; start it with --rate-limit 0"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tracker_load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<load::LoadOptions> {
    let mut opts = load::LoadOptions::default();
    let mut tracker = std::env::var("P2P_TRACKER").unwrap_or_else(|_| "127.0.0.1:6969".into());
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--tracker" => tracker = value()?,
            "--secs" => opts.duration = Duration::from_secs_f64(number(&flag, &value()?)?),
            "--sockets" => opts.sockets = number(&flag, &value()?)? as usize,
            "--in-flight" => opts.in_flight = number(&flag, &value()?)? as usize,
            "--peers" => opts.peers = number(&flag, &value()?)? as usize,
            "--cpu" => opts.cpu = Some(number(&flag, &value()?)? as usize),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    opts.tracker = tracker
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("cannot resolve the tracker address {tracker:?}"))?;
    if opts.peers > 1000 {
        bail!("--peers is at most 1000 (the tracker's default cap per file)");
    }
    Ok(opts)
}

fn number(flag: &str, s: &str) -> Result<f64> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .with_context(|| format!("{flag} takes a non-negative number, not {s:?}"))
}
