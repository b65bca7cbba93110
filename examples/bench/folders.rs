//! The folder cases (`--folders`, issue 12), each beside the machine's own limit measured in the
//! same run:
//!
//! - 10,000 files of 4 KiB in 100 folders, one seeder to one leecher: wall time from starting the
//!   leecher to its exit (the tree synced and renamed into place), beside `tar -cf - | tar -xf -`
//!   of the same folder into the same file system followed by `sync`;
//! - seeder start-up on that folder: files hashed per second;
//! - 8 files of 128 MiB from 4 seeders: the leecher's data-phase rate, beside the same for one
//!   1 GiB file from 4 seeders (interleaved, so both see the same machine).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};

use crate::machine::clear_dir;
use crate::procs::{self, Opts, Proc, Stream};
use crate::report::{Report, Target, Unit};
use crate::shoal::start_tracker;

const SMALL_FILES: usize = 10_000;
const SMALL_SIZE: usize = 4096;
const BIG_FILES: usize = 8;
const BIG_SIZE: u64 = 128 << 20;

pub struct Results {
    tree_wall: Vec<f64>,
    tar_wall: Vec<f64>,
    ratio: Vec<f64>,
    files_per_sec: Vec<f64>,
    tree_rate: Vec<f64>,
    file_rate: Vec<f64>,
}

/// Runs every folder case `runs` times in `dir`.
pub fn run(bins: &Path, dir: &Path, runs: usize) -> Result<Results> {
    let src = dir.join("src");
    let out = dir.join("out");
    std::fs::create_dir_all(&out)?;
    let small = src.join("small");
    println!("    writing {SMALL_FILES} files of {SMALL_SIZE} bytes in 100 folders");
    for i in 0..SMALL_FILES {
        let d = small.join(format!("d{:02}", i % 100));
        std::fs::create_dir_all(&d)?;
        let mut data = vec![0u8; SMALL_SIZE];
        fastrand::Rng::with_seed(i as u64).fill(&mut data);
        std::fs::write(d.join(format!("f{i:05}")), data)?;
    }
    let mut r = Results {
        tree_wall: vec![],
        tar_wall: vec![],
        ratio: vec![],
        files_per_sec: vec![],
        tree_rate: vec![],
        file_rate: vec![],
    };
    // Every run into fresh folders, nothing deleted between: ext4 looks long for a free inode
    // among ten thousand just deleted (`recently_deleted` was most of the time in a profile), so
    // whichever ran after a deletion lost. The order alternates too.
    for run in 1..=runs {
        let (tar_out, shoal_out) = (
            out.join(format!("tar{run}")),
            out.join(format!("shoal{run}")),
        );
        std::fs::create_dir_all(&tar_out)?;
        std::fs::create_dir_all(&shoal_out)?;
        sync();
        let (tar, (wall, files_per_sec, _)) = if run % 2 == 1 {
            let tar = tar_copy(&small, &tar_out)?;
            sync();
            (tar, transfer(bins, &small, &shoal_out, 1)?)
        } else {
            let shoal = transfer(bins, &small, &shoal_out, 1)?;
            sync();
            (tar_copy(&small, &tar_out)?, shoal)
        };
        println!(
            "    run {run}: leecher {wall:.2} s, tar | tar + sync {tar:.2} s ({:.2}x); seeder hashed {files_per_sec:.0} files/s",
            wall / tar
        );
        r.tree_wall.push(wall);
        r.tar_wall.push(tar);
        r.ratio.push(wall / tar);
        r.files_per_sec.push(files_per_sec);
    }
    clear_dir(&out)?;
    let big = src.join("big");
    let one = src.join("one");
    std::fs::create_dir_all(&big)?;
    std::fs::create_dir_all(&one)?;
    println!("    writing {BIG_FILES} files of 128 MiB, and one file of 1 GiB");
    for i in 0..BIG_FILES {
        crate::machine::generate(&big.join(format!("part{i}")), BIG_SIZE)?;
    }
    crate::machine::generate(&one.join("one.bin"), BIG_SIZE * BIG_FILES as u64)?;
    for run in 1..=runs {
        sync();
        let (_, _, tree) = transfer(bins, &big, &out, 4)?;
        clear_dir(&out)?;
        sync();
        let (_, _, file) = transfer(bins, &one.join("one.bin"), &out, 4)?;
        clear_dir(&out)?;
        println!(
            "    run {run}: data phase {:.2} GB/s for 8 x 128 MiB, {:.2} GB/s for 1 GiB",
            tree / 1e9,
            file / 1e9
        );
        r.tree_rate.push(tree);
        r.file_rate.push(file);
    }
    Ok(r)
}

/// Every run starts with nothing dirty in the page cache.
fn sync() {
    // SAFETY: a plain syscall.
    unsafe { libc::sync() };
}

/// `tar -cf - -C PARENT NAME | tar -xf - -C OUT && sync`, timed.
fn tar_copy(src: &Path, out: &Path) -> Result<f64> {
    let parent = src.parent().ok_or_else(|| anyhow!("no parent"))?;
    let name = src.file_name().ok_or_else(|| anyhow!("no name"))?;
    let script = "tar -cf - -C \"$1\" \"$2\" | tar -xf - -C \"$3\" && sync";
    let t0 = Instant::now();
    let status = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(parent)
        .arg(name)
        .arg(out)
        .status()
        .context("running tar")?;
    ensure!(status.success(), "tar | tar failed: {status}");
    Ok(t0.elapsed().as_secs_f64())
}

/// A tracker, `seeders` seeders of `src` (a file or folder) and one `leecher --no-seed` into
/// `out`: the leecher's wall time, the first seeder's files hashed per second (folders), and the
/// data-phase rate from the leecher's summary.
fn transfer(bins: &Path, src: &Path, out: &Path, seeders: usize) -> Result<(f64, f64, f64)> {
    let (mut tracker, addr) = start_tracker(bins, &[], None, "warn")?;
    let mut procs: Vec<Proc> = Vec::new();
    let mut id = String::new();
    let mut files_per_sec = 0.0;
    let files = if src.is_dir() { walkdir_count(src)? } else { 1 };
    for i in 1..=seeders {
        let mut cmd = Command::new(bins.join("seeder"));
        cmd.args(["--tracker", &addr])
            .arg(src)
            .env("P2P_NO_DISCOVERY", "1")
            .env("RUST_LOG", "info");
        let p = procs::spawn(&format!("seeder{i}"), &mut cmd, Opts::default())?;
        let line = p.wait_line(Stream::Out, "its id line", Duration::from_secs(600), |_| {
            true
        })?;
        if i == 1 {
            // Hashing comes before registering: the id line's time is the start-up.
            let t = line.at.duration_since(p.started).as_secs_f64();
            files_per_sec = files as f64 / t;
        }
        id = line.text.split(' ').next().unwrap_or_default().to_string();
        procs.push(p);
    }
    let mut cmd = Command::new(bins.join("leecher"));
    cmd.args(["--tracker", &addr, "--no-seed", "--out"])
        .arg(out)
        .arg(&id)
        .env("P2P_NO_DISCOVERY", "1")
        .env("RUST_LOG", "info");
    let t0 = Instant::now();
    let mut p = procs::spawn("leecher", &mut cmd, Opts::default())?;
    let exit = p.wait(Duration::from_secs(900))?;
    let wall = exit.at.duration_since(t0).as_secs_f64();
    p.wait_output_closed(Duration::from_secs(5));
    ensure!(
        exit.success(),
        "the leecher failed: {}\n{}",
        exit.describe(),
        p.tail()
    );
    let rate = p
        .lines(Stream::Err)
        .iter()
        .find(|l| l.contains("downloaded ") && l.contains("/s)"))
        .and_then(|l| {
            let rest = l.rsplit_once(" s (")?.1;
            crate::parse_human_bytes(rest.split_once("/s)")?.0)
        })
        .ok_or_else(|| anyhow!("no summary line\n{}", p.tail()))?;
    for s in &mut procs {
        s.stop(libc::SIGINT, Duration::from_secs(5));
    }
    tracker.stop(libc::SIGINT, Duration::from_secs(5));
    Ok((wall, files_per_sec, rate))
}

fn walkdir_count(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        n += if e.file_type()?.is_dir() {
            walkdir_count(&e.path())?
        } else {
            1
        };
    }
    Ok(n)
}

pub fn tabulate(r: &mut Report, x: &crate::table::Outcome<Results>) {
    r.section("8. folders (issue 12)");
    let x = match x {
        Ok(x) => x,
        Err(why) => return r.note("folder cases", why.clone()),
    };
    r.row(
        "10,000 x 4 KiB in 100 folders, 1 seeder -> 1 leecher, to the synced tree",
        Unit::Secs,
        x.tree_wall.clone(),
        None,
    );
    r.row(
        "tar -cf - | tar -xf - into the same file system, then sync",
        Unit::Secs,
        x.tar_wall.clone(),
        None,
    );
    r.row(
        "leecher / tar",
        Unit::Ratio,
        x.ratio.clone(),
        Some(Target::at_most(2.0, "<= 2x tar")),
    );
    r.row(
        "seeder start-up on the 10,000 files, files hashed/s",
        Unit::PerSec,
        x.files_per_sec.clone(),
        None,
    );
    r.row(
        "8 x 128 MiB from 4 seeders, data phase",
        Unit::Rate,
        x.tree_rate.clone(),
        None,
    );
    r.row(
        "one 1 GiB file from 4 seeders, data phase",
        Unit::Rate,
        x.file_rate.clone(),
        None,
    );
    let ratio: Vec<f64> = x
        .tree_rate
        .iter()
        .zip(&x.file_rate)
        .map(|(t, f)| t / f)
        .collect();
    r.row(
        "8 x 128 MiB rate / 1 GiB rate",
        Unit::Ratio,
        ratio,
        Some(Target::at_least(0.9, "within 10 %")),
    );
}
