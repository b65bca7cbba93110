//! A child's output, read line by line as it arrives by one thread per pipe, kept with the time
//! each line was read, and waited on with deadlines: the core of the harness that the tests
//! ([`crate::Proc`]), the demo and the benchmark share. Waits end on a real signal (a line, the
//! pipes closing) or at the deadline, never after a fixed sleep.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    /// How [`Output::tail`] marks the stream: `>` for stdout, `|` for stderr.
    pub fn mark(self) -> char {
        match self {
            Stream::Out => '>',
            Stream::Err => '|',
        }
    }
}

#[derive(Clone, Debug)]
pub struct Line {
    pub stream: Stream,
    /// When it was read.
    pub at: Instant,
    pub text: String,
}

/// Shows each line as it arrives (the demo's tour, the benchmark's `--verbose`).
pub type Echo = Arc<dyn Fn(Stream, &str) + Send + Sync>;

/// Why a wait for a line ended without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The program closed its output first.
    Ended,
    /// The deadline passed.
    TimedOut,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::Ended => "its output closed first",
            WaitError::TimedOut => "the deadline passed",
        })
    }
}

impl std::error::Error for WaitError {}

#[derive(Default)]
struct State {
    lines: Vec<Line>,
    /// Pipes still being read.
    open: u8,
}

/// The lines read so far from a child's pipes. Clones share them.
#[derive(Clone)]
pub struct Output {
    state: Arc<(Mutex<State>, Condvar)>,
    /// Most lines kept; a chatty child's oldest half goes first.
    max_lines: usize,
}

impl Default for Output {
    fn default() -> Self {
        Output::new(usize::MAX)
    }
}

impl Output {
    pub fn new(max_lines: usize) -> Output {
        Output {
            state: Arc::new((Mutex::new(State::default()), Condvar::new())),
            max_lines: max_lines.max(2),
        }
    }

    /// Reads `pipe` on a thread of its own until it closes, showing each line through `echo`.
    pub fn read(&self, stream: Stream, pipe: impl Read + Send + 'static, echo: Option<Echo>) {
        self.lock().open += 1;
        let out = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if let Some(echo) = &echo {
                    echo(stream, &text);
                }
                let mut s = out.lock();
                if s.lines.len() >= out.max_lines {
                    s.lines.drain(..out.max_lines / 2);
                }
                s.lines.push(Line { stream, at, text });
                out.state.1.notify_all();
            }
            out.lock().open -= 1;
            out.state.1.notify_all();
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A reader thread that panicked leaves lines that are still worth showing.
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `pred` holds for what has been read (checked at once, then on every change),
    /// or the pipes close, or `deadline`.
    fn wait_until<T>(
        &self,
        deadline: Instant,
        mut pred: impl FnMut(&State) -> Option<T>,
    ) -> Result<T, WaitError> {
        let mut s = self.lock();
        loop {
            if let Some(t) = pred(&s) {
                return Ok(t);
            }
            if s.open == 0 {
                return Err(WaitError::Ended);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::TimedOut);
            }
            s = self
                .state
                .1
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The first line on `stream` (read before or during the wait) for which `pred` holds.
    pub fn wait_line(
        &self,
        stream: Stream,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Line, WaitError> {
        self.wait_until(Instant::now() + timeout, |s| {
            s.lines
                .iter()
                .find(|l| l.stream == stream && pred(&l.text))
                .cloned()
        })
    }

    /// Waits until `stream` has at least `n` lines.
    pub fn wait_count(&self, stream: Stream, n: usize, timeout: Duration) -> Result<(), WaitError> {
        self.wait_until(Instant::now() + timeout, |s| {
            (s.lines.iter().filter(|l| l.stream == stream).count() >= n).then_some(())
        })
    }

    /// Waits until every pipe has closed; false if `timeout` passed first.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let closed = self.wait_until(Instant::now() + timeout, |s| (s.open == 0).then_some(()));
        closed != Err(WaitError::TimedOut)
    }

    /// Waits at most `timeout` for any new line or a pipe closing.
    pub fn wait_change(&self, timeout: Duration) {
        let s = self.lock();
        let _ = self.state.1.wait_timeout(s, timeout);
    }

    /// Every line read so far from `stream`.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.lock()
            .lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text.clone())
            .collect()
    }

    /// The last `n` lines of both streams, in the order read, each marked with its stream.
    pub fn tail(&self, n: usize) -> String {
        let s = self.lock();
        s.lines[s.lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| format!("      {} {}", l.stream.mark(), l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_a_line_then_for_the_end() {
        let out = Output::default();
        out.read(Stream::Out, &b"one\ntwo\r\nthree"[..], None);
        let l = out
            .wait_line(Stream::Out, Duration::from_secs(60), |l| l == "two")
            .unwrap();
        assert_eq!(l.text, "two");
        assert!(out.wait_closed(Duration::from_secs(60)));
        assert_eq!(out.lines(Stream::Out), ["one", "two", "three"]);
        let none = out.wait_line(Stream::Err, Duration::from_secs(60), |_| true);
        assert_eq!(none.unwrap_err(), WaitError::Ended);
    }

    #[test]
    fn keeps_the_newest_lines() {
        let out = Output::new(4);
        out.read(Stream::Err, &b"1\n2\n3\n4\n5\n"[..], None);
        assert!(out.wait_closed(Duration::from_secs(60)));
        assert_eq!(out.lines(Stream::Err), ["3", "4", "5"]);
    }
}
