//! Test support for the end-to-end tests: runs the real binaries in a temporary folder, reads
//! their output line by line, and waits for lines (real signals), never for fixed sleeps. A
//! failed wait panics with the command, its stdout and its stderr.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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

/// Runs a program to completion.
pub fn run(name: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let mut p = Proc::spawn(name, args, cwd, env);
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

    fn env(&self) -> [(&str, &str); 1] {
        [("P2P_TRACKER", self.tracker_addr.as_str())]
    }

    /// Starts a seeder in `cwd` and waits until it has registered with the tracker. Returns it and
    /// its stdout lines (`<id> <size> <name>`).
    pub fn seeder_in(&self, cwd: &Path, args: &[&str]) -> (Proc, Vec<String>) {
        let p = Proc::spawn("seeder", args, cwd, &self.env());
        p.wait_stderr("registered with the tracker");
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

/// The id (first word) of a seeder's stdout line.
pub fn id_of(line: &str) -> String {
    line.split(' ').next().unwrap().to_string()
}
