//! A headless Chromium driven over the DevTools protocol, through the pipe Chromium offers with
//! `--remote-debugging-pipe` (JSON messages separated by NUL bytes on file descriptors 3 and 4):
//! no port, no WebSocket library. Enough to load a page, evaluate JavaScript in it while it runs,
//! switch the colour scheme and take screenshots.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where Debian's `chromium` package puts the browser; `CHROMIUM` overrides it.
pub const DEFAULT_PATH: &str = "/usr/bin/chromium";

/// The browser to use, or a failure that says how to get one. CI installs it, so a missing
/// browser is a failed test, not a skipped one.
pub fn find() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    if !path.is_file() {
        panic!(
            "this test drives the tracker's status page in headless Chromium, and there is none \
             at {}: install Debian's `chromium` package (apt-get install -y chromium) or point \
             the CHROMIUM environment variable at a Chromium or Chrome binary",
            path.display()
        );
    }
    path
}

pub struct Browser {
    child: Child,
    to: File,
    from: Receiver<Value>,
    next_id: u64,
    /// The page's session, once attached.
    session: Option<String>,
    pub log: PathBuf,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts the browser with a fresh profile, a `width` x `height` window and no network
    /// access beyond the loopback addresses.
    pub fn start(width: u32, height: u32) -> Browser {
        use std::os::fd::AsRawFd;
        let exe = find();
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromium.log");
        let (cmd_read, cmd_write) = pipe();
        let (ev_read, ev_write) = pipe();
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            // No name resolves and only loopback is reachable by address: the page must not need
            // the Internet, and cannot use it.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg("about:blank")
        .stdin(Stdio::null());
        let log_file = File::create(&log).unwrap();
        cmd.stdout(log_file.try_clone().unwrap()).stderr(log_file);
        let (r, w) = (cmd_read.as_raw_fd(), ev_write.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) are made.
        unsafe {
            cmd.pre_exec(move || {
                // Move both ends clear of 3 and 4 first, in case they sit there already.
                let r2 = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                let w2 = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        drop((cmd_read, ev_write));
        let (tx, rx) = mpsc::channel();
        let reader = BufReader::new(File::from(ev_read));
        std::thread::spawn(move || {
            for msg in reader.split(0) {
                let Ok(msg) = msg else { break };
                let Ok(v) = serde_json::from_slice::<Value>(&msg) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Browser {
            child,
            to: File::from(cmd_write),
            from: rx,
            next_id: 1,
            session: None,
            log,
            _profile: profile,
        }
    }

    /// What Chromium printed, for failure messages.
    pub fn dump(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "--- chromium log (last lines):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Sends a command (to the page's session once attached) and waits for its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        if let Err(e) = self.to.write_all(&bytes) {
            panic!("chromium went away ({e})\n{}", self.dump());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == json!(id) => {
                    if let Some(err) = v.get("error") {
                        panic!("{method} failed: {err}\n{}", self.dump());
                    }
                    return v["result"].clone();
                }
                // Events and other sessions' traffic.
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no answer to {method} in 30 s\n{}", self.dump())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("chromium closed the pipe during {method}\n{}", self.dump())
                }
            }
        }
    }

    /// Opens a tab and attaches to it; later commands go to it.
    pub fn open_tab(&mut self, width: u32, height: u32) {
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        // Until the navigation commits, the old document (complete already) is still there.
        let expr = format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        );
        self.wait_for("the page to load", &expr, |v| v == &json!(true));
    }

    /// Evaluates `expr` in the page and returns its value (JSON-serialisable values only).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr} threw: {e}\n{}", self.dump());
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` every 50 ms until `done` holds for its value; returns that value. The
    /// page updates itself once a second, so this waits for what it shows, not for a time.
    pub fn wait_for(&mut self, what: &str, expr: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(expr);
            if done(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited 30 s for {what}; `{expr}` is still {v}\n{}",
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `light` or `dark`, as if the system asked for it.
    pub fn color_scheme(&mut self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        );
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (with padding), as DevTools sends binary data.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
