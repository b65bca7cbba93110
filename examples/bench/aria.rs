//! The comparison swarm: aria2c as seeders and leecher, opentracker as the tracker, on 127.0.0.1.
//!
//! The torrent has 512 KiB pieces (`mktorrent -l 19`) and announces over HTTP (aria2 1.36 has no
//! UDP tracker client without its DHT). Debian's opentracker serves only whitelisted info-hashes,
//! so the torrent's hash goes into a whitelist file. DHT, local peer discovery and peer exchange
//! are off and every aria2c binds to 127.0.0.1, so peers meet only through the tracker, on
//! loopback. The seeders share the one source file (`--bt-seed-unverified`: no start-up check,
//! the data is known good; each seeder has its own listening port).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::procs::{self, Exit, Opts, Proc, Stream};

const TOOLS: [(&str, &str); 3] = [
    ("aria2c", "aria2"),
    ("mktorrent", "mktorrent"),
    ("opentracker", "opentracker"),
];

/// Options every aria2c gets: no user config, loopback only, no peer discovery besides the
/// tracker, quiet console.
const COMMON: &[&str] = &[
    "--no-conf=true",
    "--enable-dht=false",
    "--enable-dht6=false",
    "--bt-enable-lpd=false",
    "--enable-peer-exchange=false",
    "--disable-ipv6=true",
    "--interface=127.0.0.1",
    "--console-log-level=warn",
    "--summary-interval=0",
];

pub fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Checks for aria2c, mktorrent and opentracker; installs the missing ones from Debian's
/// packages when allowed and running as root.
pub fn ensure_tools(install: bool) -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(bin, _)| !in_path(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = rustix::process::geteuid().is_root();
    if !install || !root || !in_path("apt-get") {
        bail!(
            "missing {} (install with: apt-get install -y {})",
            missing.join(", "),
            missing.join(" ")
        );
    }
    println!("installing {} with apt-get ...", missing.join(", "));
    procs::run_tool(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
        Duration::from_secs(600),
    )?;
    procs::run_tool(
        "apt-get install",
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        Duration::from_secs(600),
    )?;
    if let Some((bin, _)) = TOOLS.iter().find(|(bin, _)| !in_path(bin)) {
        bail!("{bin} is still missing after apt-get install");
    }
    Ok(())
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

pub struct AriaSwarm {
    pub tracker: Proc,
    pub seeders: Vec<Proc>,
    torrent: PathBuf,
    /// The file name inside the torrent.
    name: String,
    size: u64,
}

/// One download by aria2c.
pub struct AriaRun {
    /// From starting aria2c to the file fsynced after it exited.
    pub wall: Duration,
    /// aria2's own "avg speed" from its download results, bytes/s.
    pub avg_speed: Option<f64>,
    pub exit: Exit,
}

impl AriaSwarm {
    /// Makes the torrent for `src` in `dir`, starts opentracker and `seeders` aria2c seeders, and
    /// waits until the tracker counts them all.
    pub fn start(dir: &Path, src: &Path, seeders: usize) -> Result<AriaSwarm> {
        std::fs::create_dir_all(dir)?;
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("odd source name {}", src.display()))?
            .to_string();
        let size = std::fs::metadata(src)?.len();
        let (tracker, port, info_hash) = start_opentracker_with_torrent(dir, src)?;
        let torrent = dir.join("bench.torrent");
        let src_dir = src.parent().unwrap_or(Path::new("."));
        let mut swarm = AriaSwarm {
            tracker,
            seeders: Vec::new(),
            torrent,
            name,
            size,
        };
        for i in 1..=seeders {
            let mut cmd = Command::new("aria2c");
            cmd.args(COMMON)
                .arg(format!("--listen-port={}", free_port()?))
                .arg(format!("--dir={}", src_dir.display()))
                .args(["--seed-ratio=0.0", "--bt-seed-unverified=true", "-T"])
                .arg(&swarm.torrent)
                .current_dir(dir);
            swarm.seeders.push(procs::spawn(
                &format!("aria2-seed{i}"),
                &mut cmd,
                Opts::default(),
            )?);
        }
        // Ready when opentracker counts every seeder as complete.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for s in &mut swarm.seeders {
                if let Some(e) = s.try_reap()? {
                    bail!("{} exited ({})\n{}", s.label, e.describe(), s.tail());
                }
            }
            if scrape_complete(port, &info_hash).unwrap_or(0) >= seeders as u64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("the aria2 seeders did not all announce to opentracker within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(swarm)
    }

    /// Downloads the torrent into `out` (which must not hold the file yet), then fsyncs it.
    pub fn download(&self, out: &Path, timeout: Duration) -> Result<AriaRun> {
        let mut cmd = Command::new("aria2c");
        cmd.args(COMMON)
            .arg(format!("--listen-port={}", free_port()?))
            .arg(format!("--dir={}", out.display()))
            .args(["--seed-time=0", "-T"])
            .arg(&self.torrent)
            .current_dir(out);
        let t0 = Instant::now();
        let mut p = procs::spawn("aria2-leech", &mut cmd, Opts::default())?;
        let exit = p.wait(timeout)?;
        let file = out.join(&self.name);
        // aria2 does not fsync; the shoal leecher does before its exit, so count it in.
        let synced = std::fs::File::open(&file).and_then(|f| f.sync_all());
        let wall = t0.elapsed();
        p.wait_output_closed(Duration::from_secs(5));
        if !exit.success() {
            bail!("aria2c exited with {}\n{}", exit.describe(), p.tail());
        }
        synced.with_context(|| format!("cannot fsync {}", file.display()))?;
        let got = std::fs::metadata(&file)?.len();
        if got != self.size {
            bail!(
                "aria2c left {got} bytes in {}, not {}",
                file.display(),
                self.size
            );
        }
        let avg_speed = p.lines(Stream::Out).iter().find_map(|l| avg_speed(l));
        Ok(AriaRun {
            wall,
            avg_speed,
            exit,
        })
    }

    pub fn stop(&mut self) {
        // aria2 on SIGTERM says goodbye to the tracker and may linger; nothing to save here.
        for s in &mut self.seeders {
            s.kill();
        }
        self.tracker.kill();
    }
}

/// Picks a port, makes the torrent announcing to it, whitelists its hash and starts opentracker
/// there; retries with another port if that one was taken meanwhile.
fn start_opentracker_with_torrent(dir: &Path, src: &Path) -> Result<(Proc, u16, [u8; 20])> {
    let torrent = dir.join("bench.torrent");
    let mut last_err = None;
    for _ in 0..3 {
        let port = free_port()?;
        let _ = std::fs::remove_file(&torrent);
        procs::run_tool(
            "mktorrent",
            Command::new("mktorrent")
                .args(["-l", "19", "-a"])
                .arg(format!("http://127.0.0.1:{port}/announce"))
                .arg("-o")
                .arg(&torrent)
                .arg(src),
            Duration::from_secs(600),
        )?;
        let hash = info_hash(&torrent)?;
        // opentracker chroots to -d and drops to user nobody when started as root: its folder
        // and whitelist must be readable by anyone.
        let ot_dir = dir.join("opentracker");
        std::fs::create_dir_all(&ot_dir)?;
        let whitelist = ot_dir.join("whitelist");
        std::fs::write(&whitelist, format!("{}\n", hex(&hash)))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ot_dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644))?;
        let mut cmd = Command::new("opentracker");
        cmd.args(["-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-d")
            .arg(&ot_dir)
            .args(["-w", "whitelist"])
            .current_dir(&ot_dir);
        let mut p = procs::spawn("opentracker", &mut cmd, Opts::default())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = p.try_reap()? {
                last_err = Some(anyhow!(
                    "opentracker exited ({}) on port {port}\n{}",
                    e.describe(),
                    p.tail()
                ));
                break;
            }
            if TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
                return Ok((p, port, hash));
            }
            if Instant::now() > deadline {
                bail!("opentracker did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow!("opentracker did not start")))
}

/// The torrent's info-hash, as `aria2c -S` shows it.
fn info_hash(torrent: &Path) -> Result<[u8; 20]> {
    let (_, out) = procs::run_tool(
        "aria2c -S",
        Command::new("aria2c")
            .arg("--no-conf=true")
            .arg("-S")
            .arg(torrent),
        Duration::from_secs(30),
    )?;
    let hex_hash = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Info Hash:"))
        .map(str::trim)
        .ok_or_else(|| anyhow!("aria2c -S printed no info hash"))?;
    let mut hash = [0u8; 20];
    if hex_hash.len() != 40 {
        bail!("odd info hash {hex_hash:?}");
    }
    for (i, b) in hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex_hash[2 * i..2 * i + 2], 16)
            .with_context(|| format!("odd info hash {hex_hash:?}"))?;
    }
    Ok(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How many complete peers (seeders) opentracker knows for `hash`, from its scrape page.
fn scrape_complete(port: u16, hash: &[u8; 20]) -> Result<u64> {
    let mut s = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let escaped: String = hash.iter().map(|b| format!("%{b:02x}")).collect();
    write!(
        s,
        "GET /scrape?info_hash={escaped} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    // Bencoded: ...8:completei<N>e...
    let text = String::from_utf8_lossy(&body);
    let n = text
        .split_once("8:completei")
        .and_then(|(_, rest)| rest.split_once('e'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    Ok(n)
}

/// aria2's "avg speed" from a download-results line such as `09b484|OK  |   350MiB/s|out/f.bin`.
fn avg_speed(line: &str) -> Option<f64> {
    let mut cols = line.split('|');
    let _gid = cols.next()?;
    if cols.next()?.trim() != "OK" {
        return None;
    }
    let speed = cols.next()?.trim().strip_suffix("/s")?;
    crate::parse_human_bytes(speed)
}

/// One aria2 download with the CPU its swarm used meanwhile.
pub struct AriaSample {
    pub run: AriaRun,
    pub cpu_seeders: Vec<f64>,
    pub cpu_tracker: f64,
}

impl AriaSwarm {
    /// [`AriaSwarm::download`], with the seeders' and tracker's CPU time over it.
    pub fn sample(&self, out: &Path, timeout: Duration) -> Result<AriaSample> {
        use crate::shoal::cpu;
        let seeders0: Vec<f64> = self.seeders.iter().map(cpu).collect();
        let tracker0 = cpu(&self.tracker);
        let run = self.download(out, timeout)?;
        let cpu_seeders = self
            .seeders
            .iter()
            .map(cpu)
            .zip(&seeders0)
            .map(|(b, a)| b - a)
            .collect();
        Ok(AriaSample {
            cpu_seeders,
            cpu_tracker: cpu(&self.tracker) - tracker0,
            run,
        })
    }
}
