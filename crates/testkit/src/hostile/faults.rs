//! Small helpers of the fault tests: their test file, reading the leecher's logs and the files
//! it writes, restarting the tracker.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Proc, Run, Swarm, PATIENCE};

/// The chunk size of the fault tests' file.
pub const CHUNK: usize = 16 * 1024;

/// The fault tests' file: 65 chunks of 16 KiB, the last one short.
pub fn test_file(seed: u64) -> Vec<u8> {
    crate::pattern(64 * CHUNK + 1000, seed)
}

pub fn chunks_in(data: &[u8]) -> u32 {
    data.len().div_ceil(CHUNK) as u32
}

/// Whether `line` is the leecher's log of dropping its connection to `peer`.
pub fn dropped(line: &str, peer: SocketAddr) -> bool {
    line.contains(&format!("peer{{addr={peer}}}")) && line.contains("peer dropped")
}

/// Asserts that the file at `path` holds exactly `data`.
pub fn assert_same_file(path: &Path, data: &[u8], run: &Run) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{e}\n{}", run.dump()));
    assert!(got == data, "{} differs\n{}", path.display(), run.dump());
}

/// The value of `name=value` in a log line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
}

/// Waits until the file at `path` holds chunk `i` of `data` for every `i` in `indices`: the
/// leecher has verified and written them. Polls the file (a real signal), with a deadline.
pub fn wait_part_chunks(path: &Path, data: &[u8], chunk: usize, indices: &[u32]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(on_disk) = std::fs::read(path) {
            let all = indices.iter().all(|&i| {
                let r = i as usize * chunk..((i as usize + 1) * chunk).min(data.len());
                on_disk.get(r.clone()) == Some(&data[r])
            });
            if all {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never held chunks {indices:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every path under `dir` (files and folders), relative to it.
pub fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// SIGKILLs the swarm's tracker and starts a new one on the same address (its port is free
/// again at once: UDP has no TIME_WAIT). Returns once the new one listens.
pub fn restart_tracker(swarm: &mut Swarm) {
    swarm.tracker.kill();
    let addr = swarm.tracker_addr.clone();
    let tracker = Proc::spawn(
        swarm.bins.tracker,
        &["--listen", &addr, "--interval", "1"],
        swarm.dir.path(),
        &[],
    );
    let want = format!("tracker listening on {addr}");
    tracker.wait_stdout(&want, |l| l == want);
    swarm.tracker = tracker;
}

/// The address a real seeder serves on, from its `serving; ... port=N` log line.
pub fn seeder_addr(seeder: &Proc) -> SocketAddr {
    let line = seeder.wait_stderr("serving; Ctrl-C to stop");
    let port: u16 = field(&line, "port")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}
