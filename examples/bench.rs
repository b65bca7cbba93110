//! The benchmark: `cargo run --release --example bench [-- FLAGS]`.
//!
//! Everything runs on 127.0.0.1 in a temporary folder on the real disk (under the system's temp
//! folder, or `--dir`), with the release binaries it builds first:
//!
//! 1. a file (1 GiB, `--size`) from 4 seeders to 1 leecher (`leecher --no-seed`): wall time from
//!    starting the leecher to its exit (it exits once the verified file is fsynced under its final
//!    name), the data-phase rate from its summary line, CPU seconds of every process;
//! 2. the same file and topology with aria2c (seeders and leecher) and opentracker, 512 KiB
//!    pieces, in the same run (interleaved with 1, so both see the same machine), and the ratio;
//! 3. the machine's limits: `dd conv=fdatasync` of the same size in the leecher's folder, and
//!    SHA-256 throughput of the sha2 crate on one core and on two threads (and, beside it, of
//!    shoal's own hashing of two chunks at a time on one thread);
//! 4. peak RSS of the leecher and the seeders for that file and for a 4 GiB one (`--big-size`);
//! 5. seeder start-up: the time from starting a seeder to its id line (hashing the whole file);
//! 6. tracker throughput: peer-list replies per second from a tracker pinned to CPU 0 under the
//!    load generator of `examples/tracker_load.rs` pinned to CPU 1.
//!
//! 7. with `--swarm` (instead of 1-6; needs root): N leechers of a 32 MiB file started together
//!    for N = 8, 16, 32 (`--swarm-sizes`), each host in a network namespace with its upload
//!    capped at 50 Mbit/s (`--swarm-rate`) and Linux's default TCP congestion control, CUBIC
//!    (`--swarm-cc`): T1 (one leecher alone), the first and last finish times, TN/T1, the
//!    Kumar-Ross bound, the seeder's upload as a multiple of the file (`bench/swarm.rs`).
//!
//! 8. with `--folders` (instead of 1-6): the folder cases of issue 12 (`bench/folders.rs`).
//!
//! Each case runs `--runs` times (default 3); the table shows median, min and max, and the
//! issue's target with PASS or MISS. Results also go to `target/bench.json`. It is a benchmark,
//! not a test: a missed target does not fail it. Every child is killed and the temporary folder
//! removed on exit, on Ctrl-C and on panic. aria2, mktorrent and opentracker are installed from
//! Debian's packages when missing (as root; `--no-install` to skip, `--skip-aria2` to leave out
//! the comparison).

#[path = "bench/args.rs"]
mod args;
#[path = "bench/aria.rs"]
mod aria;
#[path = "common/build.rs"]
mod build;
#[path = "bench/folders.rs"]
mod folders;
#[path = "bench/lan.rs"]
mod lan;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/machine.rs"]
mod machine;
#[path = "bench/neigh.rs"]
mod neigh;
#[path = "bench/private_lan.rs"]
mod private_lan;
#[path = "bench/procs.rs"]
mod procs;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/shoal.rs"]
mod shoal;
#[path = "bench/swarm.rs"]
mod swarm;
#[path = "bench/table.rs"]
mod table;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{ensure, Context, Result};
use args::{parse_args, Args};
use machine::{clear_dir, free_bytes};
use table::{Big, Outcome, Results};

const NAME: &str = "bench.bin";
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// The swarm case's file, as in the issue.
const SWARM_FILE: u64 = 32 * MIB;

/// Parses sizes the way our programs and aria2 print them: `1.00 GiB`, `350MiB`, `12 B`, `1G`.
pub fn parse_human_bytes(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KI" | "KIB" => 1024.0,
        "M" | "MB" | "MI" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GI" | "GIB" => GIB as f64,
        "T" | "TB" | "TI" | "TIB" => 1024.0 * GIB as f64,
        _ => return None,
    };
    Some(num * mult)
}

fn human(n: u64) -> String {
    if n >= GIB && n.is_multiple_of(GIB) {
        format!("{} GiB", n / GIB)
    } else if n >= GIB {
        format!("{:.2} GiB", n as f64 / GIB as f64)
    } else if n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Dropped last: kills whatever is still running, also when unwinding from a panic.
    let _cleanup = procs::Cleanup;
    if let Err(e) = procs::install_signal_handlers() {
        eprintln!("bench: cannot install signal handlers: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = bench(&args);
    // After Ctrl-C the signal thread exits with 130; errors caused by its kills are not news.
    procs::park_if_stopping();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Result<()> {
    let about = machine::describe();
    println!("shoal benchmark");
    for (k, v) in &about {
        println!("  {k:10} {v}");
    }
    let (bins, target_dir) = machine::build()?;

    let aria2 = if args.swarm || args.folders || args.private_lan {
        Err("not in --swarm".to_string())
    } else if args.aria2 {
        aria::ensure_tools(args.install).map_err(|e| {
            println!("aria2 comparison skipped: {e:#}");
            format!("skipped: {e}")
        })
    } else {
        Err("skipped (--skip-aria2)".to_string())
    };

    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("shoal-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot make a temporary folder in {}", parent.display()))?;
    procs::remove_on_abort(tmp.path().to_path_buf());
    let fs = machine::fs_type(tmp.path());
    println!("  folder     {} ({fs})", tmp.path().display());
    if fs == "tmpfs" {
        println!(
            "  warning: {} is in memory, not on a disk; use --dir for a disk",
            tmp.path().display()
        );
    }
    let free = free_bytes(tmp.path()).unwrap_or(u64::MAX);
    // Three copies of the file, or one per host of the swarm case, and a margin.
    let most = args.swarm_sizes.iter().copied().max().unwrap_or(0) as u64;
    let need = if args.folders {
        4 * GIB
    } else if args.private_lan {
        2 * args.size + GIB
    } else if args.swarm {
        (most + 2) * SWARM_FILE + GIB
    } else {
        3 * args.size + GIB
    };
    ensure!(
        free > need,
        "{} has {} free; the benchmark needs {}",
        tmp.path().display(),
        human(free),
        human(need)
    );

    let report = if args.private_lan {
        step(&format!(
            "private swarm: {} from one seeder capped at 1 Gbit/s, open and private runs interleaved",
            human(args.size)
        ));
        let results = private_lan::run(&bins, tmp.path(), args.runs, args.size);
        let mut report = report::Report::default();
        private_lan::tabulate(&mut report, &results);
        report
    } else if args.folders {
        step("folders: 10,000 small files, and 8 x 128 MiB beside one 1 GiB file");
        let results = folders::run(&bins, tmp.path(), args.runs).map_err(|e| failed("", &e));
        let mut report = report::Report::default();
        folders::tabulate(&mut report, &results);
        report
    } else if args.swarm {
        swarm_case(args, &bins, tmp.path())
    } else {
        table::tabulate(&run_cases(args, &bins, tmp.path(), aria2)?)
    };
    procs::park_if_stopping();
    println!(
        "\n== results ({} runs each; machine: {})",
        args.runs,
        machine::summary(&about)
    );
    print!("{}", report.table());
    println!("load average after: {}", machine::loadavg());
    if let Some(json) = &args.json {
        let path = json.clone().unwrap_or_else(|| {
            target_dir.join(if args.private_lan {
                "bench-private-lan.json"
            } else if args.folders {
                "bench-folders.json"
            } else if args.swarm {
                "bench-swarm.json"
            } else {
                "bench.json"
            })
        });
        let doc = serde_json::json!({
            "machine": about.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "runs": args.runs,
            "size": if args.swarm { SWARM_FILE } else { args.size },
            "big_size": args.big,
            "seeders": args.seeders,
            "drop_caches": args.drop_caches,
            "swarm_sizes": args.swarm.then_some(&args.swarm_sizes),
            "swarm_rate_mbit": args.swarm.then_some(args.swarm_rate_mbit),
            "swarm_congestion_control": args
                .swarm
                .then(|| args.swarm_cc.clone().unwrap_or_else(|| "system".into())),
            "sections": report.json(),
        });
        match std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n") {
            Ok(()) => println!("results written to {}", path.display()),
            Err(e) => println!("could not write {}: {e}", path.display()),
        }
    }
    let shown = tmp.path().display().to_string();
    tmp.close()
        .with_context(|| format!("cannot remove {shown}"))
}

/// Case 7 alone (`--swarm`).
fn swarm_case(args: &Args, bins: &Path, dir: &Path) -> report::Report {
    let plan = swarm::Plan {
        sizes: args.swarm_sizes.clone(),
        runs: args.runs,
        file_size: SWARM_FILE,
        rate_bits: args.swarm_rate_mbit * 1_000_000,
        cc: args.swarm_cc.clone(),
    };
    step(&format!(
        "swarm: N = {:?} leechers of {} at once, every upload capped at {} Mbit/s",
        plan.sizes,
        human(plan.file_size),
        args.swarm_rate_mbit
    ));
    let results = swarm::run(&plan, bins, dir);
    if let Err(why) = &results {
        println!("    swarm case {why}");
    }
    let mut report = report::Report::default();
    swarm::tabulate(&mut report, &results);
    report
}

fn step(what: &str) {
    println!("\n==> {what}");
}

/// Reports a failed case (and returns why, for the table), unless the failure comes from
/// Ctrl-C killing everything: then this thread just waits for the exit.
fn failed(what: &str, e: &anyhow::Error) -> String {
    procs::park_if_stopping();
    println!("    {what}failed: {e:#}");
    format!("failed: {e}")
}

fn gbps(rate: Option<f64>) -> String {
    rate.map_or("?".into(), |v| format!("{:.2} GB/s", v / 1e9))
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|c| format!("{c:.2}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Runs every case in turn. A case that fails is reported and left out; the others go on.
fn run_cases(args: &Args, bins: &Path, dir: &Path, aria2: Outcome<()>) -> Result<Results> {
    let size = args.size;
    let label = human(size);
    let src_dir = dir.join("src");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&src_dir)?;
    std::fs::create_dir_all(&out_dir)?;
    let src = src_dir.join(NAME);
    let warm = |src: &Path| machine::prepare(src, args.drop_caches);

    step("SHA-256 of the sha2 crate and of shoal's pair hashing, 256 MiB in memory per thread");
    let sha_1: Vec<f64> = (0..args.runs).map(|_| machine::sha256_rate(1)).collect();
    let sha_2: Vec<f64> = (0..args.runs).map(|_| machine::sha256_rate(2)).collect();
    let sha_pair: Vec<f64> = (0..args.runs)
        .map(|_| machine::sha256_pair_rate())
        .collect();
    println!(
        "    1 thread {:.2} GB/s, 2 threads {:.2} GB/s; shoal's two chunks at a time, 1 thread {:.2} GB/s",
        report::median(&sha_1).unwrap_or(0.0) / 1e9,
        report::median(&sha_2).unwrap_or(0.0) / 1e9,
        report::median(&sha_pair).unwrap_or(0.0) / 1e9
    );

    step(&format!("writing the {label} source file"));
    machine::generate(&src, size)?;

    // Case 5 first, with nothing else running: once held to one core, once with all of them.
    let one_core = (std::thread::available_parallelism().map_or(1, |n| n.get()) > 1).then_some(0);
    step(&format!(
        "seeder start-up: time to hash {label} and print its id, on one core and on all"
    ));
    let mut startup = [Vec::new(), Vec::new()];
    for i in 0..args.runs {
        for (k, cpu) in [one_core, None].into_iter().enumerate() {
            warm(&src)?;
            let what = if k == 0 { "one core" } else { "all cores" };
            match shoal::seeder_startup(bins, &src, cpu) {
                Ok(t) => {
                    println!("    run {}, {what}: {t:.2} s", i + 1);
                    startup[k].push(t);
                }
                Err(e) => {
                    failed(&format!("run {}, {what}: ", i + 1), &e);
                }
            }
        }
    }
    let [startup_1, startup_all] = startup;

    step(&format!(
        "starting the shoal swarm: tracker and {} seeders of {label}",
        args.seeders
    ));
    let mut swarm = shoal::Swarm::start(bins, &src, args.seeders)?;
    println!("    tracker on {}, file id {}", swarm.addr, swarm.id);
    let secret = shoal_secret::Secret::generate()?.to_text();
    step(&format!(
        "starting a private shoal swarm (P2P_SECRET): tracker and {} seeders of {label}",
        args.seeders
    ));
    let mut private = shoal::Swarm::start_with(bins, &src, args.seeders, Some(&secret))?;
    println!("    tracker on {}, file id {}", private.addr, private.id);

    let mut aria_swarm = aria2.and_then(|()| {
        step(&format!(
            "starting the aria2 swarm: opentracker and {} aria2c seeders (mktorrent -l 19)",
            args.seeders
        ));
        aria::AriaSwarm::start(&dir.join("aria2"), &src, args.seeders).map_err(|e| failed("", &e))
    });

    // Interleaved, so that both programs and dd see the same machine, busy or not.
    let mut shoal_runs = Vec::new();
    let mut private_runs = Vec::new();
    let mut aria_runs = Vec::new();
    let mut aria_error = None;
    let mut dd_runs = Vec::new();
    let timeout = shoal::download_timeout(size);
    for i in 0..args.runs {
        step(&format!("run {}/{}", i + 1, args.runs));
        warm(&src)?;
        match shoal::download(bins, &swarm, &out_dir, size) {
            Ok(d) => {
                println!(
                    "    shoal: {:.2} s, data phase {}, CPU leecher {:.2} s, seeders {} s, tracker {:.2} s, peak RSS {:.1} MiB",
                    d.wall,
                    gbps(d.rate),
                    d.cpu_leecher,
                    list(&d.cpu_seeders),
                    d.cpu_tracker,
                    d.rss_kib / 1024.0
                );
                shoal_runs.push(d);
            }
            Err(e) => {
                failed("shoal: ", &e);
            }
        }
        clear_dir(&out_dir)?;
        warm(&src)?;
        match shoal::download(bins, &private, &out_dir, size) {
            Ok(d) => {
                println!(
                    "    shoal, private swarm: {:.2} s, data phase {}, CPU leecher {:.2} s, seeders {} s",
                    d.wall,
                    gbps(d.rate),
                    d.cpu_leecher,
                    list(&d.cpu_seeders)
                );
                private_runs.push(d);
            }
            Err(e) => {
                failed("shoal, private swarm: ", &e);
            }
        }
        clear_dir(&out_dir)?;
        if let Ok(a) = &aria_swarm {
            warm(&src)?;
            match a.sample(&out_dir, timeout) {
                Ok(s) => {
                    println!(
                        "    aria2: {:.2} s, avg speed {}, CPU leecher {:.2} s, seeders {} s, opentracker {:.2} s",
                        s.run.wall.as_secs_f64(),
                        gbps(s.run.avg_speed),
                        s.run.exit.cpu_secs,
                        list(&s.cpu_seeders),
                        s.cpu_tracker
                    );
                    aria_runs.push(s);
                }
                Err(e) => aria_error = Some(failed("aria2: ", &e)),
            }
            clear_dir(&out_dir)?;
        }
        warm(&src)?;
        match machine::dd(&out_dir, size, timeout) {
            Ok(t) => {
                println!("    dd conv=fdatasync: {t:.2} s");
                dd_runs.push(t);
            }
            Err(e) => {
                failed("dd: ", &e);
            }
        }
        clear_dir(&out_dir)?;
    }
    let seeder_rss = shoal::peak_rss(&swarm.seeders);
    let aria_seeder_rss = aria_swarm
        .as_ref()
        .map_or(Vec::new(), |a| shoal::peak_rss(&a.seeders));
    swarm.stop();
    drop(swarm);
    private.stop();
    drop(private);
    let rates =
        |runs: &[shoal::Download]| -> Vec<f64> { runs.iter().filter_map(|d| d.rate).collect() };
    let (plain_rate, private_rate) = (
        report::median(&rates(&shoal_runs)),
        report::median(&rates(&private_runs)),
    );
    if let (Some(plain), Some(private)) = (plain_rate, private_rate) {
        let ratio = private / plain;
        println!(
            "    private swarm vs plain, data phase (medians): {} vs {}: {ratio:.2} x (goal >= 0.7 x: {})",
            gbps(Some(private)),
            gbps(Some(plain)),
            if ratio >= 0.7 { "PASS" } else { "MISS" }
        );
    }
    if let Ok(a) = &mut aria_swarm {
        a.stop();
    }
    let aria = match aria_swarm {
        Err(why) => Err(why),
        Ok(_) if aria_runs.is_empty() => Err(aria_error.unwrap_or_else(|| "no run".into())),
        Ok(_) => Ok(aria_runs),
    };

    let load = if args.tracker {
        step(&format!(
            "tracker throughput: {} s of peer-list requests per run, tracker on CPU 0, load on CPU 1",
            args.load_secs
        ));
        let plain =
            shoal::tracker_load(bins, args.runs, args.load_secs, None).map_err(|e| failed("", &e));
        step("tracker throughput, private swarm: the same load, every datagram sealed");
        match shoal::tracker_load(bins, args.runs, args.load_secs, Some(&secret)) {
            Ok(runs) => {
                let per_sec: Vec<f64> = runs.iter().map(|r| r.per_sec).collect();
                let per_cpu: Vec<f64> = runs.iter().map(|r| r.per_cpu_sec).collect();
                println!(
                    "    private swarm: {:.0} replies/s, {:.0} per tracker CPU second (medians)",
                    report::median(&per_sec).unwrap_or(0.0),
                    report::median(&per_cpu).unwrap_or(0.0)
                );
            }
            Err(e) => {
                failed("private swarm: ", &e);
            }
        }
        plain
    } else {
        Err("skipped (--skip-tracker)".to_string())
    };

    let big = match args.big {
        None => Err("skipped (--skip-big)".to_string()),
        Some(big) => {
            step(&format!("peak RSS with a {} file", human(big)));
            clear_dir(&src_dir)?;
            let free = free_bytes(dir).unwrap_or(u64::MAX);
            let result = if free < 2 * big + GIB {
                let why = format!(
                    "skipped: {} free, {} needed",
                    human(free),
                    human(2 * big + GIB)
                );
                println!("    {why}");
                Err(why)
            } else {
                big_case(args, bins, &src_dir, &out_dir, big).map_err(|e| failed("", &e))
            };
            clear_dir(&out_dir)?;
            clear_dir(&src_dir)?;
            result
        }
    };

    Ok(Results {
        size,
        seeders: args.seeders,
        sha_1,
        sha_2,
        sha_pair,
        startup_1,
        startup_all,
        shoal: shoal_runs,
        seeder_rss,
        aria,
        aria_seeder_rss,
        dd: dd_runs,
        load,
        big,
    })
}

/// One download of a big file, for the peak RSS of the leecher and the seeders.
fn big_case(args: &Args, bins: &Path, src_dir: &Path, out: &Path, big: u64) -> Result<Big> {
    let src = src_dir.join(NAME);
    println!("    writing {}", human(big));
    machine::generate(&src, big)?;
    println!("    starting the tracker and {} seeders", args.seeders);
    let mut swarm = shoal::Swarm::start(bins, &src, args.seeders)?;
    machine::prepare(&src, args.drop_caches)?;
    let d = shoal::download(bins, &swarm, out, big)?;
    let seeder_rss_kib = shoal::peak_rss(&swarm.seeders);
    swarm.stop();
    println!(
        "    {:.2} s, leecher peak RSS {:.1} MiB",
        d.wall,
        d.rss_kib / 1024.0
    );
    Ok(Big {
        size: big,
        wall: d.wall,
        leecher_rss_kib: d.rss_kib,
        seeder_rss_kib,
    })
}
