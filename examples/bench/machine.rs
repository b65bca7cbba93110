//! The machine: what it is, what its disk and SHA-256 can do on their own, and the chores around
//! the timed runs (building, writing the test file, warming the page cache).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::procs::{self, Opts};

/// Builds the three programs in the bench's own profile; returns their folder and `target/`.
pub fn build() -> Result<(PathBuf, PathBuf)> {
    let mut plan = crate::build::plan()?;
    let profile = &plan.profile;
    if profile != "release" {
        println!("  warning: built as {profile}; run with --release for meaningful figures");
    }
    println!("\n==> building tracker, seeder and leecher ({profile})");
    let mut p = procs::spawn(
        "cargo build",
        &mut plan.command,
        Opts {
            inherit: true,
            group: true,
            ..Opts::default()
        },
    )?;
    let exit = p.wait(Duration::from_secs(3600))?;
    ensure!(exit.success(), "cargo build failed ({})", exit.describe());
    crate::build::check(&plan.dir)?;
    let target_dir = plan
        .dir
        .parent()
        .unwrap_or(Path::new("target"))
        .to_path_buf();
    Ok((plan.dir, target_dir))
}

/// What the figures were measured on, as (key, value) pairs.
pub fn describe() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let sha_ni = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "sha_ni"));
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown".into(), |k| {
            format!("{:.1} GiB", k as f64 / (1 << 20) as f64)
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut m = vec![
        ("cpus".to_string(), cores.to_string()),
        (
            "cpu".to_string(),
            format!("{model}{}", if sha_ni { " (sha_ni)" } else { "" }),
        ),
        (
            "kernel".to_string(),
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        ("memory".to_string(), mem),
        ("load".to_string(), loadavg()),
    ];
    if crate::aria::in_path("aria2c") {
        if let Ok(out) = Command::new("aria2c").arg("--version").output() {
            if let Some(l) = String::from_utf8_lossy(&out.stdout).lines().next() {
                m.push(("aria2".to_string(), l.trim().to_string()));
            }
        }
    }
    m
}

/// One line: "2 x CPU MODEL, Linux VERSION".
pub fn summary(m: &[(String, String)]) -> String {
    let get = |k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("?")
    };
    format!("{} x {}, Linux {}", get("cpus"), get("cpu"), get("kernel"))
}

/// The 1, 5 and 15 minute load averages: how busy the machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn statfs(path: &Path) -> Option<libc::statfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain data; the path is a valid C string.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut s) == 0).then_some(s)
    }
}

/// Bytes an unprivileged user may still write under `path`.
// statfs field types differ between platforms; the casts are not useless everywhere.
#[allow(clippy::unnecessary_cast)]
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = statfs(path)?;
    Some(s.f_bavail as u64 * s.f_bsize as u64)
}

pub fn fs_type(path: &Path) -> String {
    match statfs(path).map(|s| s.f_type as u64) {
        Some(0xEF53) => "ext4".into(),
        Some(0x5846_5342) => "xfs".into(),
        Some(0x9123_683E) => "btrfs".into(),
        Some(0x0102_1994) => "tmpfs".into(),
        Some(0x794C_7630) => "overlayfs".into(),
        Some(t) => format!("filesystem 0x{t:x}"),
        None => "unknown filesystem".into(),
    }
}

/// `dd if=/dev/zero of=DIR/dd.bin bs=1M count=SIZE conv=fdatasync`, timed from start to exit.
pub fn dd(dir: &Path, size: u64, timeout: Duration) -> Result<f64> {
    let file = dir.join("dd.bin");
    let mut cmd = Command::new("dd");
    cmd.arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={}", size.div_ceil(1 << 20))])
        .args(["conv=fdatasync", "status=none"]);
    let t0 = Instant::now();
    let (exit, _) = procs::run_tool("dd", &mut cmd, timeout)?;
    let t = exit.at.duration_since(t0).as_secs_f64();
    std::fs::remove_file(&file)?;
    Ok(t)
}

/// SHA-256 throughput of the sha2 crate with `threads` threads, each hashing its own 256 MiB
/// buffer (filled beforehand, so no page faults are timed), in bytes/s.
pub fn sha256_rate(threads: usize) -> f64 {
    const LEN: usize = 256 << 20;
    let bufs: Vec<Vec<u8>> = (0..threads)
        .map(|t| {
            let mut b = vec![0u8; LEN];
            fastrand::Rng::with_seed(t as u64).fill(&mut b);
            b
        })
        .collect();
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for b in &bufs {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                std::hint::black_box(Sha256::digest(b));
                barrier.wait();
            });
        }
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        (threads * LEN) as f64 / t0.elapsed().as_secs_f64()
    })
}

/// SHA-256 throughput of shoal's own hashing on one thread: 256 MiB as 512 KiB chunks, two at a
/// time (`shoal_proto::sha256::digest_pair`, which interleaves two chunks' SHA-NI rounds).
pub fn sha256_pair_rate() -> f64 {
    const LEN: usize = 256 << 20;
    const CHUNK: usize = 512 << 10;
    let mut b = vec![0u8; LEN];
    fastrand::Rng::with_seed(7).fill(&mut b);
    let t0 = Instant::now();
    for pair in b.chunks(2 * CHUNK) {
        let (x, y) = pair.split_at(CHUNK);
        std::hint::black_box(shoal_proto::sha256::digest_pair(x, y));
    }
    LEN as f64 / t0.elapsed().as_secs_f64()
}

/// Writes `size` pseudo-random bytes to `path` and fsyncs them.
pub fn generate(path: &Path, size: u64) -> Result<()> {
    let mut rng = fastrand::Rng::with_seed(size);
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// Before a timed run: `src` read into the page cache (or, with `drop_caches`, every clean page
/// dropped so the seeders read from disk), and nothing dirty left waiting to be written.
pub fn prepare(src: &Path, drop_caches: bool) -> Result<()> {
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
    if drop_caches {
        std::fs::write("/proc/sys/vm/drop_caches", "3\n")
            .context("--drop-caches: cannot write /proc/sys/vm/drop_caches (root needed)")?;
    } else {
        let mut f = std::fs::File::open(src)?;
        let mut buf = vec![0u8; 4 << 20];
        while f.read(&mut buf)? > 0 {}
    }
    Ok(())
}

/// Removes everything inside `dir`.
pub fn clear_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}
