//! Test support for the end-to-end tests: runs the real binaries in a temporary folder, reads
//! their output line by line, and waits for lines (real signals), never for fixed sleeps. A
//! failed wait panics with the command, its stdout and its stderr.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub mod hostile;
pub mod hostile_manifest;
pub mod hostile_tracker;

/// Safety net for every wait: far longer than any step takes, so it only fires on a real hang.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn bin(name: &str) -> PathBuf {
    match name {
        "tracker" => env!("CARGO_BIN_EXE_tracker").into(),
        "seeder" => env!("CARGO_BIN_EXE_seeder").into(),
        "leecher" => env!("CARGO_BIN_EXE_leecher").into(),
        other => panic!("no binary {other}"),
    }
}

#[derive(Default)]
struct Lines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    closed: usize,
}

/// A running program whose output is collected as it arrives. Killed when dropped.
pub struct Proc {
    pub child: Child,
    pub command: String,
    lines: Arc<(Mutex<Lines>, Condvar)>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin(name));
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Never let a test fall back to discovery: its broadcast would leave this machine.
        cmd.env("P2P_NO_DISCOVERY", "1");
        cmd.env_remove("P2P_TRACKER").env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        collect(out, lines.clone(), true);
        collect(err, lines.clone(), false);
        Proc {
            child,
            command: format!("{name} {}", args.join(" ")),
            lines,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().stdout.clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().stderr.clone()
    }

    /// What to print when something goes wrong.
    pub fn dump(&self) -> String {
        let l = self.lines.0.lock().unwrap();
        format!(
            "--- command: {}\n--- stdout:\n{}\n--- stderr:\n{}\n",
            self.command,
            l.stdout.join("\n"),
            l.stderr.join("\n")
        )
    }

    /// Waits for a line (on stdout if `on_stdout`, else stderr) for which `pred` holds; returns it.
    pub fn wait_line(&self, on_stdout: bool, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let (lock, cvar) = &*self.lines;
        let mut l = lock.lock().unwrap();
        let mut seen = 0;
        loop {
            let stream = if on_stdout { &l.stdout } else { &l.stderr };
            if let Some(found) = stream[seen..].iter().find(|s| pred(s)) {
                return found.clone();
            }
            seen = stream.len();
            let now = Instant::now();
            if now >= deadline || l.closed == 2 {
                drop(l);
                panic!(
                    "no line {what:?} on {}\n{}",
                    if on_stdout { "stdout" } else { "stderr" },
                    self.dump()
                );
            }
            l = cvar.wait_timeout(l, deadline - now).unwrap().0;
        }
    }

    /// Waits until stdout has at least `n` lines.
    pub fn wait_stdout_count(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        let (lock, cvar) = &*self.lines;
        let mut l = lock.lock().unwrap();
        while l.stdout.len() < n {
            let now = Instant::now();
            if now >= deadline || l.closed == 2 {
                drop(l);
                panic!("expected {n} lines on stdout\n{}", self.dump());
            }
            l = cvar.wait_timeout(l, deadline - now).unwrap().0;
        }
    }

    pub fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(true, what, pred)
    }

    pub fn wait_stderr(&self, needle: &str) -> String {
        self.wait_line(false, needle, |l| l.contains(needle))
    }

    /// How many stderr lines contain `needle` so far.
    pub fn count_stderr(&self, needle: &str) -> usize {
        self.stderr().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits for the program to exit (both pipes closed) and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                let (lock, cvar) = &*self.lines;
                let mut l = lock.lock().unwrap();
                while l.closed < 2 {
                    l = cvar.wait_timeout(l, Duration::from_secs(5)).unwrap().0;
                }
                return status;
            }
            if Instant::now() >= deadline {
                panic!("{} did not exit\n{}", self.command, self.dump());
            }
            // Waiting on a child without a pidfd API: wake on output or every few ms.
            let (lock, cvar) = &*self.lines;
            let l = lock.lock().unwrap();
            let _ = cvar.wait_timeout(l, Duration::from_millis(20)).unwrap();
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ctrl-C, then waits for the program to exit; returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        self.interrupt();
        self.wait_exit()
    }

    /// Ctrl-C, and asserts a clean exit (code 0) after unregistering from the tracker.
    pub fn stop_cleanly(&mut self) {
        let status = self.stop();
        assert!(status.success(), "expected a clean exit\n{}", self.dump());
        assert!(
            self.count_stderr("unregistered from the tracker") > 0,
            "did not unregister\n{}",
            self.dump()
        );
    }

    /// The TCP port a seeder (or seeding leecher) serves on: waits for its log line naming the
    /// port (`serving; ...` for a seeder, `seeding NAME; ...` for a leecher).
    pub fn serving_port(&self) -> u16 {
        let line = self.wait_line(false, "a line with port=", |l| {
            (l.contains("serving;") || l.contains(" seeding ")) && l.contains(" port=")
        });
        port_in(&line).unwrap_or_else(|| panic!("no port in {line:?}\n{}", self.dump()))
    }

    /// The address other peers reach it on, as the tracker registers it (127.0.0.1:PORT).
    pub fn serving_addr(&self) -> String {
        format!("127.0.0.1:{}", self.serving_port())
    }
}

/// The number after `port=` in a log line.
pub fn port_in(line: &str) -> Option<u16> {
    let rest = &line[line.find("port=")? + "port=".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl Read + Send + 'static, lines: Arc<(Mutex<Lines>, Condvar)>, stdout: bool) {
    std::thread::spawn(move || {
        let reader = BufReader::new(pipe);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let (lock, cvar) = &*lines;
            let mut l = lock.lock().unwrap();
            if stdout {
                l.stdout.push(line);
            } else {
                l.stderr.push(line);
            }
            cvar.notify_all();
        }
        let (lock, cvar) = &*lines;
        lock.lock().unwrap().closed += 1;
        cvar.notify_all();
    });
}

/// A finished run: status and output.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Run {
    pub fn dump(&self) -> String {
        format!(
            "--- command: {}\n--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}\n",
            self.command, self.status, self.stdout, self.stderr
        )
    }

    pub fn assert_ok(&self) -> &Run {
        assert!(self.status.success(), "expected success\n{}", self.dump());
        self
    }

    /// The leecher's summary line (`downloaded NAME: ...`), if it printed one.
    pub fn summary(&self) -> Option<&str> {
        self.stderr.lines().find(|l| l.starts_with("downloaded "))
    }

    /// The `chunks per peer:` part of the leecher's summary, as (address, chunks) pairs.
    pub fn chunks_per_peer(&self) -> Vec<(String, u32)> {
        let line = self
            .summary()
            .unwrap_or_else(|| panic!("no summary line\n{}", self.dump()));
        chunks_per_peer(line)
    }

    /// Asserts a non-zero exit with `needle` in stderr, no panic and no debug dump.
    pub fn assert_fails_with(&self, needle: &str) -> &Run {
        assert!(!self.status.success(), "expected failure\n{}", self.dump());
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in stderr\n{}",
            self.dump()
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "panicked\n{}",
            self.dump()
        );
        self
    }
}

/// Parses `chunks per peer: ADDR=N ADDR=N` (or `none`) out of a summary line.
pub fn chunks_per_peer(summary: &str) -> Vec<(String, u32)> {
    let (_, rest) = summary
        .split_once("chunks per peer: ")
        .unwrap_or_else(|| panic!("no chunks per peer in {summary:?}"));
    let part = rest.split(';').next().unwrap().trim();
    if part == "none" {
        return Vec::new();
    }
    part.split_whitespace()
        .map(|kv| {
            let (addr, n) = kv
                .rsplit_once('=')
                .unwrap_or_else(|| panic!("bad entry {kv:?} in {summary:?}"));
            (addr.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// Runs a program to completion.
pub fn run(name: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    finish(&mut Proc::spawn(name, args, cwd, env))
}

/// Waits for `p` to exit and returns what it did.
pub fn finish(p: &mut Proc) -> Run {
    let status = p.wait_exit();
    Run {
        status,
        stdout: p.stdout().join("\n"),
        stderr: p.stderr().join("\n"),
        command: p.command.clone(),
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// A tracker on 127.0.0.1 with a one-second heartbeat interval, in its own temporary folder.
pub struct Swarm {
    pub dir: tempfile::TempDir,
    pub tracker: Proc,
    pub tracker_addr: String,
}

impl Swarm {
    pub fn new() -> Swarm {
        Swarm::with_tracker_args(&[])
    }

    pub fn with_tracker_args(extra: &[&str]) -> Swarm {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--listen", "127.0.0.1:0", "--interval", "1"];
        args.extend_from_slice(extra);
        let tracker = Proc::spawn("tracker", &args, dir.path(), &[]);
        let line = tracker.wait_stdout("tracker listening on", |l| {
            l.starts_with("tracker listening on ")
        });
        let tracker_addr = line.rsplit(' ').next().unwrap().to_string();
        Swarm {
            dir,
            tracker,
            tracker_addr,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `data` to `rel` inside the swarm's folder (creating folders) and returns the path.
    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    /// A folder inside the swarm's folder.
    pub fn folder(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn env(&self) -> [(&str, &str); 1] {
        [("P2P_TRACKER", self.tracker_addr.as_str())]
    }

    /// The tracker's port.
    pub fn tracker_port(&self) -> u16 {
        self.tracker_addr
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// `leecher --list [PATTERN]`, asserted to succeed, parsed line by line.
    pub fn list(&self, pattern: Option<&str>) -> Vec<Listed> {
        let mut args = vec!["--list"];
        args.extend(pattern);
        let run = self.run_leecher(self.dir.path(), &args);
        run.assert_ok();
        run.stdout
            .lines()
            .map(|l| {
                Listed::parse(l).unwrap_or_else(|| panic!("bad list line {l:?}\n{}", run.dump()))
            })
            .collect()
    }

    /// How many seeders the tracker lists for `id` (0 when it does not list it at all).
    pub fn seeders_of(&self, id: &str) -> u32 {
        self.list(None)
            .iter()
            .find(|l| l.id == id)
            .map_or(0, |l| l.seeders)
    }

    /// Starts a leecher that downloads and then keeps seeding, and waits until it has registered
    /// with the tracker (it does so while downloading) and finished its download.
    pub fn seeding_leecher_in(&self, cwd: &Path, args: &[&str]) -> Proc {
        let p = self.leecher_in(cwd, args);
        p.wait_stderr("registered with the tracker");
        p.wait_line(false, "the line saying it seeds", |l| {
            l.contains(" seeding ") && l.contains("Ctrl-C to stop")
        });
        p
    }

    /// Starts a seeder in `cwd` and waits until it has registered with the tracker. Returns it and
    /// its stdout lines (`<id> <size> <name>`).
    pub fn seeder_in(&self, cwd: &Path, args: &[&str]) -> (Proc, Vec<String>) {
        let p = Proc::spawn("seeder", args, cwd, &self.env());
        p.wait_stderr("registered with the tracker");
        // The lines were printed before registering, but stdout and stderr are read by two
        // threads: wait until the stdout reader has caught up.
        let files = seeder_files(args);
        p.wait_stdout_count(files);
        let out = p.stdout();
        (p, out)
    }

    pub fn seeder(&self, args: &[&str]) -> (Proc, Vec<String>) {
        self.seeder_in(self.dir.path(), args)
    }

    /// Starts a leecher in `cwd` (which it downloads into unless `--out` says otherwise).
    pub fn leecher_in(&self, cwd: &Path, args: &[&str]) -> Proc {
        Proc::spawn("leecher", args, cwd, &self.env())
    }

    /// Runs a leecher to completion.
    pub fn run_leecher(&self, cwd: &Path, args: &[&str]) -> Run {
        run("leecher", args, cwd, &self.env())
    }
}

/// How many files a seeder command line names (its positional arguments). Keep `WITH_VALUE` in
/// step with the seeder's options that take a value, or `seeder_in` waits for a line too many.
fn seeder_files(args: &[&str]) -> usize {
    const WITH_VALUE: [&str; 5] = [
        "--tracker",
        "--port",
        "--chunk-size",
        "--advertise",
        "--max-upload-rate",
    ];
    let mut n = 0;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(a) {
            it.next();
        } else if !a.starts_with("--") {
            n += 1;
        }
    }
    n
}

/// The id (first word) of a seeder's stdout line.
pub fn id_of(line: &str) -> String {
    line.split(' ').next().unwrap().to_string()
}

/// One line of `leecher --list`: `<id> <size> <seeders> <name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub size: u64,
    pub seeders: u32,
    pub name: String,
}

impl Listed {
    pub fn parse(line: &str) -> Option<Listed> {
        let mut it = line.splitn(4, ' ');
        Some(Listed {
            id: it.next()?.to_string(),
            size: it.next()?.parse().ok()?,
            seeders: it.next()?.parse().ok()?,
            name: it.next()?.to_string(),
        })
    }
}

/// Where a leecher in `dir` writes `name` (the file `id`, in hex) until it is verified.
pub fn part_of(dir: &Path, name: &str, id: &str) -> PathBuf {
    let id = shoal_proto::FileId::from_hex(id).expect("a file id");
    shoal_engine::fsafe::part_path(&dir.join(name), &id)
}

/// The names in a folder, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A UDP socket on 127.0.0.1 that never answers: hold it for as long as nothing else may take
/// its port, so a "tracker" there is certainly silent.
pub fn silent_udp() -> (std::net::UdpSocket, String) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap().to_string();
    (s, addr)
}
