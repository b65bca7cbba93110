//! A tracker of the tests' own in a temporary folder, and the helpers that start seeders and
//! leechers against it and read what they print.

use std::path::{Path, PathBuf};

use crate::proc::{run, Bins, Proc, Run};

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// A tracker on 127.0.0.1 with a one-second heartbeat interval, in its own temporary folder.
pub struct Swarm {
    pub bins: Bins,
    pub dir: tempfile::TempDir,
    pub tracker: Proc,
    pub tracker_addr: String,
}

impl Swarm {
    pub fn new(bins: Bins) -> Swarm {
        Swarm::with_tracker_args(bins, &[])
    }

    pub fn with_tracker_args(bins: Bins, extra: &[&str]) -> Swarm {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--listen", "127.0.0.1:0", "--interval", "1"];
        args.extend_from_slice(extra);
        let tracker = Proc::spawn(bins.tracker, &args, dir.path(), &[]);
        let line = tracker.wait_stdout("tracker listening on", |l| {
            l.starts_with("tracker listening on ")
        });
        let tracker_addr = line.rsplit(' ').next().unwrap().to_string();
        Swarm {
            bins,
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
        let p = Proc::spawn(self.bins.seeder, args, cwd, &self.env());
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
        Proc::spawn(self.bins.leecher, args, cwd, &self.env())
    }

    /// Runs a leecher to completion.
    pub fn run_leecher(&self, cwd: &Path, args: &[&str]) -> Run {
        run(self.bins.leecher, args, cwd, &self.env())
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
