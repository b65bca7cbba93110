//! The benchmark's child processes: spawned with piped output read by threads, reaped with
//! `wait4` (so a leecher's CPU time and peak RSS come from its rusage), observed through /proc
//! while they run, and killed whatever happens.
//!
//! Every live child's pid is kept in [`LIVE`]; Ctrl-C, SIGTERM or a panic ([`Cleanup`]) SIGKILLs
//! them all and removes the benchmark's temporary folder. Children also get `PR_SET_PDEATHSIG`,
//! so they die with the benchmark even if it is SIGKILLed (except opentracker, which changes user
//! and so loses it; it is killed by pid like the rest). A pid leaves [`LIVE`] only while the lock
//! is held and at the moment it is reaped, so a kill can never hit a recycled pid.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
pub use shoal_testkit::output::{Line, Stream};
use shoal_testkit::output::{Output, WaitError};

/// Children not yet reaped: (pid, whether it leads a process group of its own).
static LIVE: Mutex<Vec<(i32, bool)>> = Mutex::new(Vec::new());
/// Folders to remove on an abnormal exit.
static TEMP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Network namespaces to delete on an abnormal exit (the swarm case's).
static NETNS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Files to write back on an abnormal exit, with what they held (the ARP table's thresholds).
static RESTORE: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
/// Set once cleanup started: no more children may be spawned.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Echo every child's output as it arrives (`--verbose`).
pub static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Most lines kept per child; a chatty child's oldest lines go first.
const MAX_LINES: usize = 20_000;

fn live() -> std::sync::MutexGuard<'static, Vec<(i32, bool)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes `dir` (recursively) if the benchmark is interrupted or panics.
pub fn remove_on_abort(dir: PathBuf) {
    TEMP.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
}

/// Deletes network namespace `name` if the benchmark is interrupted or panics; [`netns_deleted`]
/// once it is gone.
pub fn delete_netns_on_abort(name: &str) {
    NETNS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.to_string());
}

/// Writes `value` back into `path` if the benchmark is interrupted or panics; [`restored`] once
/// it was put back. The last registered is written first.
pub fn restore_on_abort(path: PathBuf, value: String) {
    RESTORE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path, value));
}

pub fn restored(path: &std::path::Path) {
    RESTORE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| p != path);
}

pub fn netns_deleted(name: &str) {
    NETNS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|n| n != name);
}

/// SIGKILLs every live child, then deletes the registered namespaces, writes the registered files
/// back and removes the registered folders. Idempotent.
pub fn kill_everything() {
    STOPPING.store(true, Ordering::SeqCst);
    for &(pid, group) in live().iter() {
        // SAFETY: `pid` is our unreaped child (the lock keeps it from being reaped meanwhile),
        // so neither it nor the group it leads can be a recycled id.
        unsafe {
            libc::kill(if group { -pid } else { pid }, libc::SIGKILL);
        }
    }
    for name in NETNS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
    }
    for (path, value) in RESTORE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .rev()
    {
        let _ = std::fs::write(path, value);
    }
    for dir in TEMP.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// After Ctrl-C the signal thread is killing everything and about to exit: the calling thread
/// waits for that instead of reporting the failures the kills cause.
pub fn park_if_stopping() {
    if STOPPING.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// Kills everything when dropped: keep one alive in `main` so a panic cleans up too.
pub struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        kill_everything();
    }
}

/// On Ctrl-C, SIGTERM or SIGHUP: kill every child, remove the temporary folder, exit 130.
pub fn install_signal_handlers() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Register the handlers before returning, so no signal slips through.
    let mut signals = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .map(signal)
        .collect::<std::io::Result<Vec<_>>>()
    })?;
    std::thread::spawn(move || {
        rt.block_on(async {
            let [a, b, c] = &mut signals[..] else {
                unreachable!("three handlers")
            };
            tokio::select! {
                _ = a.recv() => {}
                _ = b.recv() => {}
                _ = c.recv() => {}
            }
        });
        eprintln!("\nbench: interrupted; killing every child and removing the temporary files");
        kill_everything();
        std::process::exit(130);
    });
    Ok(())
}

/// How a child ended, with what it used.
#[derive(Clone, Debug)]
pub struct Exit {
    pub at: Instant,
    /// `Ok(code)` for a normal exit, `Err(signal)` if killed.
    pub code: std::result::Result<i32, i32>,
    /// User + system CPU seconds, all threads.
    pub cpu_secs: f64,
    /// Peak resident set, KiB.
    pub max_rss_kib: u64,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Ok(0)
    }
    pub fn describe(&self) -> String {
        match self.code {
            Ok(c) => format!("exit code {c}"),
            Err(s) => format!("signal {s}"),
        }
    }
}

pub struct Proc {
    pub label: String,
    pub pid: i32,
    pub started: Instant,
    pidfd: Option<OwnedFd>,
    out: Output,
    exit: Option<Exit>,
}

/// Options for [`spawn`].
#[derive(Default)]
pub struct Opts {
    /// Pin the child to this CPU.
    pub cpu: Option<usize>,
    /// Let the child write to the benchmark's own stdout/stderr instead of capturing it.
    pub inherit: bool,
    /// Put the child in a process group of its own, and kill the whole group (for programs
    /// that start their own children, like cargo and apt-get).
    pub group: bool,
}

/// Starts `cmd` (stdin closed, output captured unless `opts.inherit`).
pub fn spawn(label: &str, cmd: &mut Command, opts: Opts) -> Result<Proc> {
    cmd.stdin(Stdio::null());
    if !opts.inherit {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    if opts.group {
        cmd.process_group(0);
    }
    let cpu = opts.cpu;
    // SAFETY: only async-signal-safe calls (prctl, sched_setaffinity) on memory owned by the
    // child's copy of the stack.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = {
        let mut live = live();
        if STOPPING.load(Ordering::SeqCst) {
            bail!("shutting down");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        live.push((child.id() as i32, opts.group));
        child
    };
    let pid = child.id() as i32;
    let started = Instant::now();
    // SAFETY: plain syscall; the pid is our unreaped child, so it names the right process.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a new file descriptor that we own.
    let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    let out = Output::new(MAX_LINES);
    let echo = VERBOSE.load(Ordering::Relaxed).then(|| {
        let label = label.to_string();
        Arc::new(move |stream: Stream, text: &str| {
            eprintln!("    {label:>10} {} {text}", stream.mark())
        }) as shoal_testkit::output::Echo
    });
    if let Some(pipe) = child.stdout.take() {
        out.read(Stream::Out, pipe, echo.clone());
    }
    if let Some(pipe) = child.stderr.take() {
        out.read(Stream::Err, pipe, echo);
    }
    // `child` is dropped without waiting: we reap it ourselves with wait4.
    drop(child);
    Ok(Proc {
        label: label.to_string(),
        pid,
        started,
        pidfd,
        out,
        exit: None,
    })
}

impl Proc {
    /// Waits for the first line on `stream` for which `pred` holds (including lines already read).
    pub fn wait_line(
        &self,
        stream: Stream,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Line> {
        match self.out.wait_line(stream, timeout, pred) {
            Ok(line) => Ok(line),
            Err(WaitError::Ended) => bail!(
                "{} ended without printing {what}\n{}",
                self.label,
                self.tail()
            ),
            Err(WaitError::TimedOut) => bail!(
                "{} did not print {what} within {} s\n{}",
                self.label,
                timeout.as_secs(),
                self.tail()
            ),
        }
    }

    /// Every line read so far from `stream`.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.out.lines(stream)
    }

    /// Waits until the output pipes close (after an exit, so every line is in).
    pub fn wait_output_closed(&self, timeout: Duration) {
        self.out.wait_closed(timeout);
    }

    /// The last lines of output, for error messages.
    pub fn tail(&self) -> String {
        self.out.tail(15)
    }

    /// Reaps the child if it has exited.
    pub fn try_reap(&mut self) -> Result<Option<Exit>> {
        if let Some(e) = &self.exit {
            return Ok(Some(e.clone()));
        }
        let mut live = live();
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == 0 {
            return Ok(None);
        }
        if r != self.pid {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("waiting for {}", self.label));
        }
        let at = Instant::now();
        live.retain(|&(p, _)| p != self.pid);
        drop(live);
        let code = if libc::WIFEXITED(status) {
            Ok(libc::WEXITSTATUS(status))
        } else {
            Err(libc::WTERMSIG(status))
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let exit = Exit {
            at,
            code,
            cpu_secs: tv(ru.ru_utime) + tv(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss.max(0) as u64,
        };
        self.exit = Some(exit.clone());
        self.pidfd = None;
        Ok(Some(exit))
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_reap()? {
                return Ok(Some(e));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let step = left.min(Duration::from_secs(1));
            match &self.pidfd {
                Some(fd) => {
                    let mut pfd = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // The pidfd turns readable the moment the child exits.
                    // SAFETY: one valid pollfd.
                    unsafe {
                        libc::poll(&mut pfd, 1, step.as_millis().max(1) as i32);
                    }
                }
                None => std::thread::sleep(step.min(Duration::from_millis(2))),
            }
        }
    }

    /// Waits for the exit; kills the child and fails if it takes longer than `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        match self.wait_timeout(timeout)? {
            Some(e) => Ok(e),
            None => {
                self.kill();
                bail!(
                    "{} did not finish within {} s; killed\n{}",
                    self.label,
                    timeout.as_secs(),
                    self.tail()
                )
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        let live = live();
        if let Some(&(pid, group)) = live.iter().find(|(p, _)| *p == self.pid) {
            // SAFETY: our unreaped child (checked under the lock), or the group it leads.
            unsafe {
                libc::kill(if group { -pid } else { pid }, sig);
            }
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_timeout(Duration::from_secs(10));
    }

    /// Sends `sig`, waits up to `grace`, then SIGKILLs.
    pub fn stop(&mut self, sig: i32, grace: Duration) -> Option<Exit> {
        self.signal(sig);
        match self.wait_timeout(grace) {
            Ok(Some(e)) => Some(e),
            _ => {
                self.kill();
                self.exit.clone()
            }
        }
    }

    /// User + system CPU seconds so far, from /proc (while it runs).
    pub fn cpu_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        // SAFETY: plain query.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(ticks / hz)
    }

    /// Seconds its main thread spent runnable but waiting for a CPU (from /proc's schedstat):
    /// how much other programs kept it from running.
    pub fn run_queue_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/schedstat", self.pid)).ok()?;
        let ns: f64 = stat.split_whitespace().nth(1)?.parse().ok()?;
        Some(ns / 1e9)
    }

    /// Peak resident set so far (VmHWM), KiB, from /proc (while it runs).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill();
        }
    }
}

/// Runs a short-lived tool (in a process group of its own) to completion; fails unless it exits
/// 0. Returns the exit and stdout.
pub fn run_tool(label: &str, cmd: &mut Command, timeout: Duration) -> Result<(Exit, String)> {
    let opts = Opts {
        group: true,
        ..Opts::default()
    };
    let mut p = spawn(label, cmd, opts)?;
    let exit = p.wait(timeout)?;
    p.wait_output_closed(Duration::from_secs(5));
    if !exit.success() {
        return Err(anyhow!(
            "{label} failed ({})\n{}",
            exit.describe(),
            p.tail()
        ));
    }
    Ok((exit, p.lines(Stream::Out).join("\n")))
}
