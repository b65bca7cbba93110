//! The child-process harness: runs a program with its output read line by line as it arrives,
//! waits for lines (real signals), never for fixed sleeps, and kills it when dropped. A failed
//! wait panics with the command, its stdout and its stderr.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::output::{Output, Stream};
use crate::summary::Summary;

/// Safety net for every wait: far longer than any step takes, so it only fires on a real hang.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Where the three programs are. Only the root package's integration tests and examples see
/// `CARGO_BIN_EXE_*`, so each test file builds this with [`bins!`](crate::bins) and passes it in.
#[derive(Clone, Copy, Debug)]
pub struct Bins {
    pub tracker: &'static str,
    pub seeder: &'static str,
    pub leecher: &'static str,
}

/// The [`Bins`] of the test crate this is expanded in: `const BINS: Bins = bins!();`.
#[macro_export]
macro_rules! bins {
    () => {
        $crate::Bins {
            tracker: env!("CARGO_BIN_EXE_tracker"),
            seeder: env!("CARGO_BIN_EXE_seeder"),
            leecher: env!("CARGO_BIN_EXE_leecher"),
        }
    };
}

/// A running program whose output is collected as it arrives. Killed when dropped.
pub struct Proc {
    pub child: Child,
    pub command: String,
    pub output: Output,
}

impl Proc {
    /// Starts `program` (a path, such as [`Bins::leecher`]) in `cwd`, with discovery off, no
    /// tracker from the environment, `RUST_LOG=info`, and then `env`.
    pub fn spawn(program: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Proc {
        let name = Path::new(program)
            .file_name()
            .map_or(program.into(), |n| n.to_string_lossy());
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(cwd);
        // Never let a test fall back to discovery: its broadcast would leave this machine.
        cmd.env("P2P_NO_DISCOVERY", "1");
        cmd.env_remove("P2P_TRACKER").env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::start(&format!("{name} {}", args.join(" ")), &mut cmd)
    }

    /// Starts `cmd` as it is set up (stdin closed, stdout and stderr read line by line); `command`
    /// names it in failure messages.
    pub fn start(command: &str, cmd: &mut Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        let output = Output::default();
        output.read(Stream::Out, child.stdout.take().expect("piped"), None);
        output.read(Stream::Err, child.stderr.take().expect("piped"), None);
        Proc {
            child,
            command: command.to_string(),
            output,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> Vec<String> {
        self.output.lines(Stream::Out)
    }

    pub fn stderr(&self) -> Vec<String> {
        self.output.lines(Stream::Err)
    }

    /// What to print when something goes wrong.
    pub fn dump(&self) -> String {
        format!(
            "--- command: {}\n--- stdout:\n{}\n--- stderr:\n{}\n",
            self.command,
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    /// Waits for a line (on stdout if `on_stdout`, else stderr) for which `pred` holds; returns it.
    pub fn wait_line(&self, on_stdout: bool, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let stream = if on_stdout { Stream::Out } else { Stream::Err };
        match self.output.wait_line(stream, PATIENCE, pred) {
            Ok(line) => line.text,
            Err(e) => panic!(
                "no line {what:?} on {} ({e})\n{}",
                if on_stdout { "stdout" } else { "stderr" },
                self.dump()
            ),
        }
    }

    /// Waits until stdout has at least `n` lines.
    pub fn wait_stdout_count(&self, n: usize) {
        if let Err(e) = self.output.wait_count(Stream::Out, n, PATIENCE) {
            panic!("expected {n} lines on stdout ({e})\n{}", self.dump());
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
                if !self.output.wait_closed(PATIENCE) {
                    panic!(
                        "{} exited, its output stayed open\n{}",
                        self.command,
                        self.dump()
                    );
                }
                return status;
            }
            if Instant::now() >= deadline {
                panic!("{} did not exit\n{}", self.command, self.dump());
            }
            // Waiting on a child without a pidfd API: wake on output or every few ms.
            self.output.wait_change(Duration::from_millis(20));
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
        self.stderr.lines().find(|l| Summary::is_summary(l))
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

/// The `chunks per peer:` part of a summary line, as (address, chunks) pairs in its order.
pub fn chunks_per_peer(summary: &str) -> Vec<(String, u32)> {
    Summary::parse(summary)
        .per_peer
        .iter()
        .map(|(a, n)| (a.to_string(), *n))
        .collect()
}

/// The chunks the leechers have logged as verified (`chunk verified chunk=N`, at
/// `shoal_engine::download::verify=debug`), all together.
pub fn verified_chunks(leechers: &[Proc]) -> std::collections::BTreeSet<u32> {
    leechers
        .iter()
        .flat_map(|p| p.stderr())
        .filter(|l| l.contains("chunk verified"))
        .filter_map(|l| {
            let rest = &l[l.find("chunk=")? + "chunk=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Waits until every one of `procs` has printed a line on stderr containing `needle`, and returns
/// those lines in order. On a timeout it prints every process, and says which have exited: when
/// one of several peers is stuck, the cause is often another that left.
pub fn wait_all_stderr(procs: &mut [Proc], needle: &str, patience: Duration) -> Vec<String> {
    let deadline = Instant::now() + patience;
    loop {
        let found: Vec<Option<String>> = procs
            .iter()
            .map(|p| p.stderr().into_iter().find(|l| l.contains(needle)))
            .collect();
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
        if Instant::now() >= deadline {
            let report: String = procs
                .iter_mut()
                .enumerate()
                .map(|(i, p)| {
                    let state = match p.child.try_wait() {
                        Ok(Some(status)) => format!("exited: {status}"),
                        _ => "running".to_string(),
                    };
                    format!("=== process {i} ({state})\n{}", p.dump())
                })
                .collect();
            panic!(
                "not every process printed {needle:?} within {} s\n{report}",
                patience.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a program (a path, as for [`Proc::spawn`]) to completion.
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
