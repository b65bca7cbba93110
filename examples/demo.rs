//! The README's first command: `cargo run --release --example demo`.
//!
//! A scripted tour of the whole suite on 127.0.0.1, with the real programs: it builds `tracker`,
//! `seeder` and `leecher`, generates a file in a temporary folder, starts a tracker, three seeders
//! and a leecher, checks the download's SHA-256 against the source, stops the seeders and lets a
//! second leecher fetch the file from the first one alone, then starts three leechers together that
//! trade chunks with each other while they download. Every wait is on a line a program
//! prints or on its exit, never a sleep. Whatever happens (success, failure, Ctrl-C) every child
//! is stopped and the temporary folder removed before the demo exits.

#[path = "common/build.rs"]
mod build;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use shoal_testkit::output::{Echo as Show, Output, Stream, WaitError};
use shoal_testkit::Summary;
use tokio::process::{Child, Command};

/// The generated file: 64 MiB and an odd tail, so that its last chunk is a short one.
const FILE_SIZE: u64 = 64 * 1024 * 1024 + 12_345;
const NAME: &str = "demo.bin";
/// Safety net for every wait: far longer than any step takes, so it only fires on a real hang.
const PATIENCE: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    // One thread: children are spawned from the main thread, which matters for PR_SET_PDEATHSIG.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run())
}

async fn run() -> ExitCode {
    let dir = match tempfile::Builder::new().prefix("shoal-demo-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("demo: cannot create a temporary folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut procs = Procs::default();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    let outcome = tokio::select! {
        r = demo(&mut procs, dir.path()) => r.map(|()| true),
        _ = tokio::signal::ctrl_c() => Ok(false),
        _ = term.recv() => Ok(false),
    };
    let code = match &outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("\ndemo: interrupted; stopping everything");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            procs.dump();
            ExitCode::FAILURE
        }
    };
    let stopped = procs.kill_all().await;
    let shown = dir.path().display().to_string();
    match dir.close() {
        Ok(()) if outcome.as_ref().is_ok_and(|ok| *ok) => step(&format!(
            "done: both copies verified, every program stopped, {shown} removed"
        )),
        Ok(()) => eprintln!("demo: {stopped} processes killed, {shown} removed"),
        Err(e) => eprintln!("demo: could not remove {shown}: {e}"),
    }
    code
}

async fn demo(procs: &mut Procs, dir: &Path) -> Result<()> {
    println!(
        "shoal demo: a tracker, three seeders and two leechers on 127.0.0.1, in {}",
        dir.display()
    );
    println!(
        "(indented lines come from the programs: `name >` is their stdout, `name |` their stderr)"
    );
    let bins = build().await?;

    step(&format!(
        "generating {NAME}: {FILE_SIZE} bytes of pseudo-random data (64 MiB and an odd tail)"
    ));
    let seeders_dir = dir.join("seeders");
    std::fs::create_dir(&seeders_dir)?;
    let source_hash = generate(&seeders_dir.join(NAME), FILE_SIZE)?;

    step("starting the tracker on a port the OS picks: tracker --listen 127.0.0.1:0");
    let tracker = procs.spawn(
        "tracker",
        &bins.join("tracker"),
        &["--listen", "127.0.0.1:0"],
        dir,
        Echo::STDOUT,
    )?;
    let line = procs[tracker]
        .wait_line(Stream::Out, "tracker listening on ADDR", |l| {
            l.starts_with("tracker listening on ")
        })
        .await?;
    let addr = line.rsplit(' ').next().unwrap_or_default().to_string();
    procs.tracker = Some(addr.clone());

    step(&format!(
        "starting three seeders with P2P_TRACKER={addr}: `seeder {NAME}` hashes it, registers, prints `<id> <size> <name>`"
    ));
    let mut seeders = Vec::new();
    for i in 1..=3 {
        let label = format!("seeder{i}");
        seeders.push(procs.spawn(
            &label,
            &bins.join("seeder"),
            &[NAME],
            &seeders_dir,
            Echo::STDOUT,
        )?);
    }
    let mut id = String::new();
    for &s in &seeders {
        let line = procs[s]
            .wait_line(Stream::Out, "<id> <size> <name>", |l| l.ends_with(NAME))
            .await?;
        procs[s]
            .wait_line(Stream::Err, "registered with the tracker", |l| {
                l.contains("registered with the tracker")
            })
            .await?;
        let this = line.split(' ').next().unwrap_or_default().to_string();
        ensure!(
            id.is_empty() || id == this,
            "the seeders disagree on the id: {id} and {this}"
        );
        id = this;
    }
    let short = &id[..8.min(id.len())];

    step("asking the tracker what it knows: leecher --list prints `<id> <size> <seeders> <name>`");
    expect_seeders(procs, &bins, dir, &id, 3).await?;

    step(&format!(
        "leecher1 downloads {NAME} by name from all three seeders, checking every chunk, and then seeds it with its upload held to 16 MiB/s (as on a busy office link): leecher --max-upload-rate 16M {NAME}"
    ));
    let leecher1_dir = dir.join("leecher1");
    std::fs::create_dir(&leecher1_dir)?;
    let leecher1 = procs.spawn(
        "leecher1",
        &bins.join("leecher"),
        &["--max-upload-rate", "16M", NAME],
        &leecher1_dir,
        Echo::BOTH,
    )?;
    procs[leecher1]
        .wait_line(Stream::Out, "<id> <size> <path>", {
            let id = id.clone();
            move |l| l.starts_with(&id)
        })
        .await?;
    // Once the file is in place, the leecher registers as one more seeder and logs its port.
    let seeding = procs[leecher1]
        .wait_line(Stream::Err, "seeding ...", |l| {
            l.contains("seeding ") && l.contains("port=")
        })
        .await?;
    let leecher1_port = seeding
        .split_whitespace()
        .find_map(|w| w.strip_prefix("port="))
        .ok_or_else(|| anyhow!("no port in leecher1's line {seeding:?}"))?
        .to_string();
    procs[leecher1]
        .wait_line(Stream::Err, "registered with the tracker", |l| {
            l.contains("registered with the tracker")
        })
        .await?;

    step("verifying leecher1's copy: SHA-256 of the source and of the download");
    verify(&source_hash, &leecher1_dir.join(NAME))?;

    step("stopping the three seeders with Ctrl-C (SIGINT): each unregisters and exits 0");
    for &s in &seeders {
        let status = procs[s].interrupt_and_wait().await?;
        ensure!(status.success(), "{} exited with {status}", procs[s].label);
        procs[s]
            .wait_line(Stream::Err, "unregistered from the tracker", |l| {
                l.contains("unregistered from the tracker")
            })
            .await?;
        println!("    {} unregistered and exited 0", procs[s].label);
    }

    step("asking the tracker again: leecher1, still running, is now the only seeder");
    expect_seeders(procs, &bins, dir, &id, 1).await?;

    step(&format!(
        "leecher2 downloads by id prefix from leecher1 alone, then exits: leecher --no-seed {short}"
    ));
    let leecher2_dir = dir.join("leecher2");
    std::fs::create_dir(&leecher2_dir)?;
    let leecher2 = procs.spawn(
        "leecher2",
        &bins.join("leecher"),
        &["--no-seed", short],
        &leecher2_dir,
        Echo::BOTH,
    )?;
    let status = procs[leecher2].wait_exit().await?;
    ensure!(status.success(), "leecher2 exited with {status}");
    let summary = procs[leecher2]
        .wait_line(Stream::Err, "downloaded ...", Summary::is_summary)
        .await?;
    let peers = Summary::parse(&summary).per_peer;
    ensure!(
        peers.len() == 1 && peers[0].0.port().to_string() == leecher1_port,
        "leecher2 should have been served by leecher1 (port {leecher1_port}) alone: {summary}"
    );
    println!("    served by leecher1 alone (port {leecher1_port})");

    step("verifying leecher2's copy");
    verify(&source_hash, &leecher2_dir.join(NAME))?;

    step(
        "three more leechers start together with leecher1 as the only seeder; each serves the chunks it has verified to the others while it downloads: leecher --no-seed ID"
    );
    let mut swarm = Vec::new();
    for i in 3..6 {
        let label = format!("leecher{i}");
        let folder = dir.join(&label);
        std::fs::create_dir(&folder)?;
        swarm.push(procs.spawn(
            &label,
            &bins.join("leecher"),
            &["--no-seed", &id],
            &folder,
            Echo::BOTH,
        )?);
    }
    let mut from_leechers = 0;
    for &p in &swarm {
        let status = procs[p].wait_exit().await?;
        ensure!(status.success(), "{} exited with {status}", procs[p].label);
        let summary = procs[p]
            .wait_line(Stream::Err, "downloaded ...", Summary::is_summary)
            .await?;
        let summary = Summary::parse(&summary);
        from_leechers += summary.from_leechers;
        println!(
            "    {}: from seeders: {} chunks, from leechers: {} chunks",
            procs[p].label, summary.from_seeders, summary.from_leechers
        );
        verify(&source_hash, &dir.join(&procs[p].label).join(NAME))?;
    }

    ensure!(
        from_leechers > 0,
        "the three leechers traded no chunk among themselves"
    );
    println!("    {from_leechers} chunks went from leecher to leecher, not over leecher1's capped uplink");

    step("stopping leecher1 and the tracker with Ctrl-C (SIGINT)");
    for p in [leecher1, tracker] {
        let status = procs[p].interrupt_and_wait().await?;
        ensure!(status.success(), "{} exited with {status}", procs[p].label);
    }
    Ok(())
}

/// One line of narration per step.
fn step(what: &str) {
    println!("\n==> {what}");
}

/// Builds the three programs with the cargo that runs this example, in the same profile, and
/// returns the folder they are in (the one above this example's `examples/` folder).
async fn build() -> Result<PathBuf> {
    let plan = build::plan()?;
    step(&format!(
        "building tracker, seeder and leecher: cargo build --bins{}",
        build::profile_flag(&plan.profile)
    ));
    let cargo = plan.command.get_program().to_string_lossy().into_owned();
    let status = Command::from(plan.command)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("cannot run {cargo}"))?;
    ensure!(status.success(), "cargo build failed ({status})");
    build::check(&plan.dir)?;
    Ok(plan.dir)
}

/// Writes `size` deterministic pseudo-random bytes to `path`; returns their SHA-256.
fn generate(path: &Path, size: u64) -> Result<String> {
    let mut rng = fastrand::Rng::with_seed(size);
    let mut file = std::fs::File::create(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(hex(&hasher.finalize()))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn verify(source_hash: &str, copy: &Path) -> Result<()> {
    let copy_hash = sha256_file(copy)?;
    let size = std::fs::metadata(copy)?.len();
    println!("    source   {source_hash}");
    println!("    download {copy_hash}  ({size} bytes)");
    ensure!(
        copy_hash == source_hash,
        "{} differs from the source",
        copy.display()
    );
    println!("    identical");
    Ok(())
}

/// Runs `leecher --list`, shows its output and checks that `id` has `seeders` seeders.
async fn expect_seeders(
    procs: &mut Procs,
    bins: &Path,
    dir: &Path,
    id: &str,
    seeders: u32,
) -> Result<()> {
    let list = procs.spawn(
        "list",
        &bins.join("leecher"),
        &["--list"],
        dir,
        Echo::STDOUT,
    )?;
    let status = procs[list].wait_exit().await?;
    ensure!(status.success(), "leecher --list exited with {status}");
    let line = procs[list]
        .wait_line(Stream::Out, "the demo file's line", {
            let id = id.to_string();
            move |l| l.starts_with(&id)
        })
        .await?;
    let count: u32 = line
        .split(' ')
        .nth(2)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unexpected --list line {line:?}"))?;
    ensure!(
        count == seeders,
        "expected {seeders} seeders in {line:?}, the tracker says {count}"
    );
    Ok(())
}

/// Which of a program's streams the demo shows as they arrive (all are kept for failures).
#[derive(Clone, Copy)]
struct Echo {
    stdout: bool,
    stderr: bool,
}

impl Echo {
    const STDOUT: Echo = Echo {
        stdout: true,
        stderr: false,
    };
    const BOTH: Echo = Echo {
        stdout: true,
        stderr: true,
    };
}

/// Every program the demo started, so that all of them can be stopped whatever happens.
#[derive(Default)]
struct Procs {
    all: Vec<Proc>,
    /// The tracker's address once it is known, passed to later programs in P2P_TRACKER.
    tracker: Option<String>,
}

impl std::ops::Index<usize> for Procs {
    type Output = Proc;
    fn index(&self, i: usize) -> &Proc {
        &self.all[i]
    }
}

impl std::ops::IndexMut<usize> for Procs {
    fn index_mut(&mut self, i: usize) -> &mut Proc {
        &mut self.all[i]
    }
}

impl Procs {
    /// Starts a program with piped output; the tracker address, once known, goes in P2P_TRACKER.
    fn spawn(
        &mut self,
        label: &str,
        bin: &Path,
        args: &[&str],
        cwd: &Path,
        echo: Echo,
    ) -> Result<usize> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The lines the demo waits for are info-level logs.
            .env("RUST_LOG", "info")
            .env_remove("P2P_TRACKER")
            .kill_on_drop(true);
        if let Some(addr) = &self.tracker {
            cmd.env("P2P_TRACKER", addr);
        }
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            // If the demo itself dies without cleaning up (SIGKILL), its children go with it.
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let output = Output::default();
        let prefix = format!("    {label:>8}");
        let show = move |stream: Stream, line: &str| println!("{prefix} {} {line}", stream.mark());
        let show: Show = Arc::new(show);
        let stdout = child.stdout.take().expect("piped").into_owned_fd()?;
        let stderr = child.stderr.take().expect("piped").into_owned_fd()?;
        output.read(
            Stream::Out,
            File::from(stdout),
            echo.stdout.then(|| show.clone()),
        );
        output.read(Stream::Err, File::from(stderr), echo.stderr.then_some(show));
        let command = format!(
            "{} {}",
            bin.file_name().unwrap_or_default().to_string_lossy(),
            args.join(" ")
        );
        self.all.push(Proc {
            label: label.to_string(),
            command,
            child,
            output,
        });
        Ok(self.all.len() - 1)
    }

    /// SIGKILLs every program still running and reaps it; returns how many there were.
    async fn kill_all(&mut self) -> usize {
        let mut killed = 0;
        for p in &mut self.all {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.start_kill();
                let _ = p.child.wait().await;
                killed += 1;
            }
        }
        killed
    }

    /// After a failure: the last lines of every program, to show what went wrong.
    fn dump(&self) {
        for p in &self.all {
            eprintln!("--- {} ($ {}), last lines:", p.label, p.command);
            eprintln!("{}", p.output.tail(20));
        }
    }
}

struct Proc {
    label: String,
    command: String,
    child: Child,
    output: Output,
}

impl Proc {
    /// Waits until the program prints a line for which `pred` holds on `stream`, and returns it.
    /// Fails if the program closes its output first.
    async fn wait_line(
        &mut self,
        stream: Stream,
        what: &str,
        pred: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<String> {
        // The wait blocks a thread of tokio's blocking pool, so Ctrl-C is still seen meanwhile.
        let output = self.output.clone();
        let found =
            tokio::task::spawn_blocking(move || output.wait_line(stream, PATIENCE, pred)).await?;
        match found {
            Ok(line) => Ok(line.text),
            Err(WaitError::Ended) => {
                let status = self.status_text();
                bail!("{} ended without printing {what:?} ({status})", self.label)
            }
            Err(WaitError::TimedOut) => bail!(
                "{} did not print {what:?} within {} s",
                self.label,
                PATIENCE.as_secs()
            ),
        }
    }

    fn status_text(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited with {status}"),
            _ => "its output closed".to_string(),
        }
    }

    /// Waits for the program to exit and for its output to be read to the end.
    async fn wait_exit(&mut self) -> Result<ExitStatus> {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .map_err(|_| anyhow!("{} did not exit", self.label))??;
        // The readers finish once the pipes are drained.
        let output = self.output.clone();
        let closed = tokio::task::spawn_blocking(move || output.wait_closed(PATIENCE)).await?;
        ensure!(closed, "{} exited but its output did not close", self.label);
        Ok(status)
    }

    /// Ctrl-C, as a person would press it, then waits for the exit.
    async fn interrupt_and_wait(&mut self) -> Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            // SAFETY: sends a signal to our own child, which has not been reaped (id() is Some).
            unsafe {
                libc::kill(pid as i32, libc::SIGINT);
            }
        }
        self.wait_exit().await
    }
}
