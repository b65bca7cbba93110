//! The leecher's interactive prompt, driven through a real pseudo-terminal as a person would type:
//! list, get (a real download from a seeder, verified), Tab completion, Ctrl-C, share (then a
//! plain leecher fetches the file from the prompt's process), status, stop and exit (the tracker
//! no longer lists what the prompt shared). Without a terminal, no file is a usage error. A
//! tracker that never ends its listing cannot hold `list` or `get` past `--timeout`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use shoal_testkit::*;

const BINS: Bins = bins!();

/// A program running on the slave side of a pseudo-terminal, its output collected as it comes.
struct Pty {
    child: Child,
    master: File,
    out: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// Where the next wait starts looking (in the text without escape sequences).
    seen: usize,
}

impl Pty {
    fn leecher(swarm: &Swarm, cwd: &Path, args: &[&str]) -> Pty {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)
            .expect("this test needs a pseudo-terminal (/dev/ptmx, devpts mounted)");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        // Wide, so that no line the test looks for is wrapped.
        let size = rustix::termios::Winsize {
            ws_row: 50,
            ws_col: 250,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, size).expect("window size");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = File::options()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .expect("opening the pty's slave side");
        let mut cmd = Command::new(BINS.leecher);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env("P2P_NO_DISCOVERY", "1")
            .env("P2P_TRACKER", &swarm.tracker_addr)
            .env("RUST_LOG", "info")
            .env("TERM", "xterm");
        let child = cmd.spawn().expect("starting the leecher on a pty");
        // `cmd` holds the last copies of the slave side: once dropped, the master reads EIO when
        // the child has exited.
        drop(cmd);
        let master = File::from(master);
        let out = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
                sink.1.notify_all();
            }
        });
        Pty {
            child,
            master,
            out,
            seen: 0,
        }
    }

    fn text(&self) -> String {
        strip_escapes(&String::from_utf8_lossy(&self.out.0.lock().unwrap()))
    }

    /// Waits for `needle` past what earlier waits consumed; returns the text up to the end of
    /// the line it is on.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut out = self.out.0.lock().unwrap();
        loop {
            let text = strip_escapes(&String::from_utf8_lossy(&out));
            if let Some(at) = text[self.seen.min(text.len())..].find(needle) {
                let start = self.seen + at;
                let end = text[start..].find('\n').map_or(text.len(), |e| start + e);
                let line_start = text[..start].rfind('\n').map_or(0, |s| s + 1);
                self.seen = start + needle.len();
                return text[line_start..end].to_string();
            }
            let now = Instant::now();
            if now >= deadline {
                drop(out);
                panic!(
                    "no {needle:?} from the prompt; its screen so far:\n{}",
                    self.text()
                );
            }
            out = self.out.1.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Types `keys` one at a time, as a person does, each once the prompt has read the one
    /// before: a typed character once it is echoed at the end of the line, Enter once the line
    /// is closed by a newline, Ctrl-C once a fresh empty prompt is up. Any change of the screen
    /// is not enough: a log line printed above the prompt changes it, and so does the terminal's
    /// own echo of keys typed while a command runs (the line editor is not reading then). Keys
    /// sent before the previous one is read arrive in one read, and rustyline 18 (with an
    /// external printer) holds all but the first unread until a further key press (fixed in
    /// rustyline 19, which needs a newer Rust than ours).
    fn send(&mut self, keys: &str) {
        for c in keys.chars() {
            let text = self.text();
            let prev = edit_line(&text).unwrap_or("").to_string();
            let mark = text.rfind(PROMPT).unwrap_or(0);
            let before = self.out.0.lock().unwrap().len();
            let mut b = [0u8; 4];
            self.master
                .write_all(c.encode_utf8(&mut b).as_bytes())
                .unwrap();
            let typed = format!("{prev}{c}");
            let closed = format!("{PROMPT}{prev}\n");
            self.wait_screen(&format!("the echo of the key {c:?}"), |raw, text| match c {
                '\r' => text.get(mark..).is_some_and(|t| t.contains(&closed)),
                '\x03' => raw.len() > before && edit_line(text) == Some(""),
                c if !c.is_control() => edit_line(text) == Some(typed.as_str()),
                _ => raw.len() > before,
            });
        }
    }

    /// Pastes `text` as a terminal does with bracketed paste on: all of it in one write; returns
    /// once it is at the end of the line.
    fn paste(&mut self, text: &str) {
        let typed = format!("{}{text}", edit_line(&self.text()).unwrap_or(""));
        let burst = format!("\x1b[200~{text}\x1b[201~");
        self.master.write_all(burst.as_bytes()).unwrap();
        self.wait_screen(&format!("the echo of the paste {text:?}"), |_, t| {
            edit_line(t) == Some(typed.as_str())
        });
    }

    /// Waits until `done` holds for the raw output and its text without escape sequences.
    fn wait_screen(&self, what: &str, done: impl Fn(&[u8], &str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut out = self.out.0.lock().unwrap();
        loop {
            let text = strip_escapes(&String::from_utf8_lossy(&out));
            if done(&out, &text) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(out);
                panic!(
                    "no {what} from the prompt; its screen so far:\n{}",
                    self.text()
                );
            }
            out = self.out.1.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Types a command and Enter at the next prompt. What it prints is waited for with
    /// [`Pty::expect`]: a line printed above the prompt redraws the prompt, so the prompt alone
    /// does not say that a command is done.
    fn command(&mut self, line: &str) {
        self.expect(PROMPT);
        self.send(line);
        self.send("\r");
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PROMPT: &str = "shoal> ";

/// What is typed on the prompt's line (the last line of `text`, after its last prompt); rustyline
/// redraws the whole line at times, and with `\r` stripped the redraws follow each other.
fn edit_line(text: &str) -> Option<&str> {
    let last = text.rsplit('\n').next().unwrap_or(text);
    last.rfind(PROMPT).map(|at| &last[at + PROMPT.len()..])
}

/// The screen's text: escape sequences (cursor moves, clearing) and carriage returns removed.
fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// `N` in a status line's `sent N chunks`.
fn sent_chunks(status_line: &str) -> u64 {
    let after = status_line
        .split("sent ")
        .nth(1)
        .unwrap_or_else(|| panic!("no chunk count in {status_line:?}"));
    after.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_person_lists_gets_shares_and_leaves() {
    let swarm = Swarm::new(BINS);
    let seeded = pattern(3 * 512 * 1024 + 77, 1);
    let seed_dir = swarm.folder("seed");
    std::fs::write(seed_dir.join("film one.bin"), &seeded).unwrap();
    let (_seeder, lines) = swarm.seeder_in(&seed_dir, &["film one.bin"]);
    let seeded_id = id_of(&lines[0]);

    let home = swarm.folder("home");
    let mine = pattern(2 * 512 * 1024 + 5, 2);
    std::fs::write(home.join("mine.bin"), &mine).unwrap();
    // No file and a terminal: the prompt, without --interactive.
    let mut p = Pty::leecher(&swarm, &home, &[]);
    p.expect("type help for the commands");

    p.expect("shoal> ");
    p.paste("list");
    p.send("\r");
    let listed = p.expect(&format!("{seeded_id} {} 1 film one.bin", seeded.len()));
    assert!(listed.starts_with(&seeded_id), "{listed}");
    p.command("help");
    p.expect("share PATH");

    // Ctrl-C at the prompt clears the line: what was typed before it is not run.
    p.expect("shoal> ");
    p.send("bogus words");
    p.send("\x03");
    p.command("status");
    p.expect("downloading: nothing");

    // Tab completes the name the tracker knows (quoted: it has a space); the download runs in
    // the background and says when it is done.
    p.expect("shoal> ");
    p.send("get fil\t");
    p.expect("get \"film one.bin\"");
    p.send("\r");
    let done = p.expect("downloaded film one.bin");
    assert!(done.contains("sharing it"), "{done}");
    assert_eq!(std::fs::read(home.join("film one.bin")).unwrap(), seeded);

    // Tab completes a local path after `share`.
    p.expect("shoal> ");
    p.send("share mi\t");
    p.expect("share mine.bin");
    p.send("\r");
    p.expect("hashing mine.bin in the background");
    let sharing = p.expect(&format!(" {} mine.bin", mine.len()));
    // Printed above the prompt, whose text (erased on a real screen) stays in this transcript.
    let mine_id = sharing
        .split("sharing ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in {sharing:?}"))
        .to_string();

    // A plain leecher fetches it from the prompt's process, the only peer that has it.
    let other = swarm.folder("other");
    let run = swarm.run_leecher(&other, &["--no-seed", &mine_id]);
    assert!(run.status.success(), "{}\n{}", run.command, run.stderr);
    assert_eq!(std::fs::read(other.join("mine.bin")).unwrap(), mine);

    p.command("status");
    p.expect("sharing:");
    let line = p.expect(" mine.bin ");
    assert_eq!(sent_chunks(&line), 3, "{line}");
    assert!(p.text().contains(" film one.bin "), "{}", p.text());

    // stop on a shared file stops sharing it: the seeder is its only holder again.
    wait_seeders(&swarm, &seeded_id, 2);
    p.command("stop \"film one.bin\"");
    p.expect("stopped sharing film one.bin");
    wait_seeders(&swarm, &seeded_id, 1);

    // A folder is one share, as with `seeder FOLDER`.
    std::fs::create_dir_all(home.join("album/deep")).unwrap();
    std::fs::write(home.join("album/a.bin"), pattern(20_000, 7)).unwrap();
    std::fs::write(home.join("album/deep/b.bin"), pattern(30_000, 8)).unwrap();
    p.command("share album");
    let sharing = p.expect(" 50000 album/");
    let album = sharing
        .split("sharing ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in {sharing:?}"))
        .to_string();
    wait_until_listed(&swarm, &album);
    p.command("get nothing-like-it");
    p.expect("no file named or with id \"nothing-like-it\"");
    assert!(
        !p.text().contains("unknown command"),
        "Ctrl-C did not clear the line"
    );

    p.command("exit");
    // Log lines come through the prompt too, all of them before it leaves.
    p.expect("unregistered from the tracker");
    p.expect("bye");
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let listed = swarm.list(None);
    assert!(
        !listed.iter().any(|l| l.id == mine_id),
        "the tracker still lists what the prompt shared"
    );
    assert_eq!(swarm.seeders_of(&seeded_id), 1, "only the seeder is left");
}

#[test]
fn stop_ends_a_download_in_the_background() {
    let swarm = Swarm::new(BINS);
    let data = pattern(4 * 512 * 1024, 3);
    let seed_dir = swarm.folder("seed");
    std::fs::write(seed_dir.join("slow.bin"), &data).unwrap();
    let (_seeder, _) = swarm.seeder_in(&seed_dir, &["slow.bin"]);
    let home = swarm.folder("home");
    // 2 MiB at 16 KiB/s: minutes; the test ends as soon as stop works.
    let mut p = Pty::leecher(
        &swarm,
        &home,
        &["--interactive", "--max-download-rate", "16K"],
    );
    p.command("get slow.bin");
    p.command("status");
    p.expect("downloading:");
    p.expect("  slow.bin");
    p.command("stop slow.bin");
    p.expect("stopped slow.bin: interrupted");
    p.command("status");
    p.expect("downloading: nothing");
    assert!(!home.join("slow.bin").exists());
    // Ctrl-D leaves too.
    p.expect("shoal> ");
    p.send("\x04");
    p.expect("bye");
    assert!(p.child.wait().unwrap().success());
}

#[test]
fn sigterm_unregisters_and_gives_the_terminal_back() {
    let swarm = Swarm::new(BINS);
    let home = swarm.folder("home");
    std::fs::write(home.join("mine.bin"), pattern(100_000, 4)).unwrap();
    let mut p = Pty::leecher(&swarm, &home, &["--interactive"]);
    p.command("share mine.bin");
    let sharing = p.expect(" 100000 mine.bin");
    let id = sharing
        .split("sharing ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in {sharing:?}"))
        .to_string();
    wait_until_listed(&swarm, &id);
    // Mid-line, in the line editor's raw mode.
    p.expect("shoal> ");
    p.send("stat");
    let raw = rustix::termios::tcgetattr(&p.master).unwrap();
    assert!(!raw
        .local_modes
        .contains(rustix::termios::LocalModes::ICANON));
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    p.expect("terminated: stopping downloads and unregistering");
    p.expect("bye");
    assert!(p.child.wait().unwrap().success());
    let cooked = rustix::termios::tcgetattr(&p.master).unwrap();
    assert!(
        cooked
            .local_modes
            .contains(rustix::termios::LocalModes::ICANON | rustix::termios::LocalModes::ECHO),
        "the terminal was left in raw mode"
    );
    assert!(!swarm.list(None).iter().any(|l| l.id == id), "still listed");
}

/// Waits until the tracker lists `n` seeders of `id` (each look is a `leecher --list`).
fn wait_seeders(swarm: &Swarm, id: &str, n: u32) {
    let deadline = Instant::now() + PATIENCE;
    while swarm.seeders_of(id) != n {
        assert!(
            Instant::now() < deadline,
            "the tracker never listed {n} seeders of {id}"
        );
    }
}

/// Waits until the tracker lists `id` (registration follows the share by a round trip).
fn wait_until_listed(swarm: &Swarm, id: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !swarm.list(None).iter().any(|l| l.id == id) {
        assert!(Instant::now() < deadline, "{id} never registered");
    }
}

#[test]
fn without_a_terminal_no_file_is_still_a_usage_error() {
    let swarm = Swarm::new(BINS);
    let run = swarm.run_leecher(swarm.dir.path(), &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the following required arguments were not provided"),
        "{}",
        run.stderr
    );
}

/// `list` and `get` at the prompt give up at `--timeout` on a tracker that always offers one more
/// page, as the plain leecher does, and the prompt stays usable.
#[test]
fn lookups_at_the_prompt_give_up_at_timeout_on_an_endless_listing() {
    use shoal_testkit::hostile_tracker::{FakeTracker, Script};
    let swarm = Swarm::new(BINS);
    let home = swarm.folder("home");
    let tracker = FakeTracker::start(Script {
        endless: Some(std::time::Duration::from_millis(100)),
        ..Script::default()
    });
    let t = tracker.arg();
    let mut p = Pty::leecher(
        &swarm,
        &home,
        &["--interactive", "--tracker", &t, "--timeout", "2"],
    );
    p.command("list");
    p.expect("listing the tracker's files took longer than 2 s (--timeout)");
    p.command("get some-name");
    p.expect("looking the file up at the tracker took longer than 2 s (--timeout)");
    p.command("exit");
    p.expect("bye");
    assert!(p.child.wait().unwrap().success());
}
