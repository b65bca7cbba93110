//! Issue 3, cases 9 and 10: where the leecher writes. A destination it cannot write, or a full
//! disk, is one clear error with nothing under the final name; and a name from the network is
//! only ever a label, never a path.

use std::path::{Component, Path};
use std::process::{Command, Output};

use shoal_engine::tracker_client::TrackerError;
use shoal_proto::names::{safe_file_name, MAX_LOCAL_NAME};
use shoal_proto::tracker::{ErrorCode, FileEntry, MAX_NAME_LEN};
use shoal_proto::FileId;
use shoal_testkit::hostile::*;
use shoal_testkit::*;

const BINS: Bins = bins!();

const CHUNK: u32 = 16 * 1024;

/// A real seeder of `data` as f.bin; returns it and the file's id.
fn seeder_of(swarm: &Swarm, data: &[u8]) -> (Proc, String) {
    swarm.write("src/f.bin", data);
    let (p, lines) = swarm.seeder_in(&swarm.path("src"), &["--chunk-size", "16K", "f.bin"]);
    (p, id_of(&lines[0]))
}

/// Asserts a failure with exactly one error line, prefixed by the program name, and no panic.
fn assert_one_error<'a>(status: Option<i32>, stderr: &'a str, dump: &str) -> &'a str {
    assert_eq!(status, Some(1), "exit code 1\n{dump}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{dump}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("leecher:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line\n{dump}");
    errors[0]
}

/// The leecher failed with exactly one error line, one that `says_why` accepts, and left `out`
/// empty.
fn assert_failed_writing_nothing(res: &Output, out: &Path, says_why: impl Fn(&str) -> bool) {
    let stderr = String::from_utf8_lossy(&res.stderr);
    let error = assert_one_error(res.status.code(), &stderr, &dump(res));
    assert!(says_why(error), "{}", dump(res));
    assert!(dir_names(out).is_empty(), "nothing written\n{}", dump(res));
    eprintln!("{error}");
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The `unshare` flags that give a private mount namespace here, where a test can mount a
/// read-only or tiny file system without touching the host's: `-m` as root, else `-rm` (as root
/// of a new user namespace). Panics, saying how to get one, when that does not work.
fn mount_namespace_flags() -> &'static str {
    let flags = if is_root() { "-m" } else { "-rm" };
    match Command::new("unshare").args([flags, "true"]).output() {
        Ok(o) if o.status.success() => flags,
        Ok(o) => panic!(
            "this test needs a private mount namespace, and `unshare {flags} true` failed ({}): \
             run the tests as root, or allow unprivileged user namespaces \
             (`sysctl -w kernel.unprivileged_userns_clone=1`; on Ubuntu also \
             `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "this test needs `unshare` from util-linux (Debian: apt-get install util-linux): {e}"
        ),
    }
}

/// Runs `script` under `sh` in a private mount namespace, with `$0` = `dir`, `$1` = the leecher
/// binary and `$2` = `id`.
fn in_mount_namespace(swarm: &Swarm, script: &str, dir: &Path, id: &str) -> std::process::Output {
    Command::new("unshare")
        .args([mount_namespace_flags(), "sh", "-c", script])
        .arg(dir)
        .arg(BINS.leecher)
        .arg(id)
        .env("P2P_TRACKER", &swarm.tracker_addr)
        .env("RUST_LOG", "info")
        .current_dir(swarm.dir.path())
        .output()
        .expect("running unshare")
}

fn dump(out: &std::process::Output) -> String {
    format!(
        "--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Case 9: a folder the leecher may not write into (mode 0555). Root ignores modes, so when the
/// test runs as root the leecher runs as `nobody` (uid 65534).
#[test]
fn a_folder_without_write_permission_is_one_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let swarm = Swarm::new(BINS);
    let (_s, id) = seeder_of(&swarm, &pattern(200_000, 91));
    let out = swarm.folder("out");
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(swarm.dir.path(), 0o755).unwrap();
    mode(&out, 0o555).unwrap();
    // As nobody, the build's own copy may be out of reach (a checkout under a 0700 folder, as
    // in `mktemp -d`), so nobody runs a copy inside the test's folder.
    let leecher = if is_root() {
        // A hard link where the file system allows: a copy is a file open for writing for a
        // moment, and a child another test thread forks in that moment keeps it open until it
        // execs, which makes running the copy fail with ETXTBSY (see `output_retrying_busy`).
        let copy = swarm.dir.path().join("leecher-copy");
        if std::fs::hard_link(BINS.leecher, &copy).is_err() {
            std::fs::copy(BINS.leecher, &copy).expect("copying the leecher");
        }
        mode(&copy, 0o755).unwrap();
        copy
    } else {
        BINS.leecher.into()
    };
    let mut cmd = Command::new(&leecher);
    cmd.args(["--no-seed", "--out", "out", &id])
        .env("P2P_TRACKER", &swarm.tracker_addr)
        .env("RUST_LOG", "info")
        .current_dir(swarm.dir.path());
    if is_root() {
        eprintln!("note: running as root, which ignores modes: the leecher runs as nobody");
        cmd.uid(65534).gid(65534);
    }
    let res = output_retrying_busy(&mut cmd);
    mode(&out, 0o755).unwrap();
    assert_failed_writing_nothing(&res, &out, |error| {
        error.contains("f.bin.part: permission denied")
    });
}

/// Case 9: a read-only folder (a read-only bind mount in a private mount namespace: this stops
/// root too). Needs `unshare`: see [`mount_namespace_flags`].
#[test]
fn a_read_only_folder_is_one_clear_error() {
    let swarm = Swarm::new(BINS);
    let (_s, id) = seeder_of(&swarm, &pattern(200_000, 92));
    let out = swarm.folder("out");
    let script = r#"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$1" --no-seed --out "$0" "$2""#;
    let res = in_mount_namespace(&swarm, script, &out, &id);
    assert_failed_writing_nothing(&res, &out, |error| {
        error.contains("f.bin.part") && error.matches("Read-only file system").count() == 1
    });
}

/// Case 9: the disk is full: the destination is a 256 KiB tmpfs and the file is 1 MiB. Space is
/// reserved up front, so this is caught before any download: one clear error, the `.part` kept,
/// nothing under the final name.
#[test]
fn a_full_disk_is_one_clear_error() {
    let swarm = Swarm::new(BINS);
    let (_s, id) = seeder_of(&swarm, &pattern(1 << 20, 93));
    let out = swarm.folder("out");
    // The tmpfs only exists inside the namespace: list the folder there, after the leecher.
    let script = r#"mount -t tmpfs -o size=256k tmpfs "$0" || exit 99; "$1" --no-seed --out "$0" "$2"; rc=$?; echo "--- listing"; ls -A "$0"; exit $rc"#;
    let res = in_mount_namespace(&swarm, script, &out, &id);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert_ne!(
        res.status.code(),
        Some(99),
        "mounting failed\n{}",
        dump(&res)
    );
    let error = assert_one_error(res.status.code(), &stderr, &dump(&res));
    assert!(
        error.contains("not enough space on the disk for") && error.contains("f.bin.part"),
        "{}",
        dump(&res)
    );
    let listing: Vec<&str> = stdout
        .split("--- listing\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no listing\n{}", dump(&res)))
        .lines()
        .collect();
    let part = part_of(&out, "f.bin", &id);
    assert_eq!(
        listing,
        vec![part.file_name().unwrap().to_str().unwrap()],
        "the .part is kept, nothing under the final name\n{}",
        dump(&res)
    );
    eprintln!("{error}");
}

/// Case 10: a hostile seeder registers files under names that try to be paths; the leecher
/// downloads each by id and writes it inside `--out`, under `safe_file_name`, and nowhere else.
#[test]
fn names_from_the_network_are_never_paths() {
    let swarm = Swarm::new(BINS);
    // Deep enough that anything climbing out of `out` would still land in the temporary folder.
    let work = swarm.folder("w/x/y");
    let out = swarm.folder("w/x/y/out");
    let canary = swarm.folder("canary");
    // Where `../../etc/passwd` would land if it were taken as a path: it must stay empty.
    let trap = swarm.folder("w/x/etc");
    let into_canary = format!("{}/escaped.bin", canary.display());
    let long = format!("{}-long.bin", "é".repeat(120));
    assert!(long.len() <= MAX_NAME_LEN);
    let names: Vec<&str> = vec![
        "../../etc/passwd",
        "/abs/path",
        &into_canary,
        "a/b",
        "..",
        ".",
        "..\\..\\windows.bin",
        &long,
    ];
    let files: Vec<Served> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Served::new(n, &pattern(20_000 + i * 1000, 100 + i as u64), CHUNK))
        .collect();
    let peer = HostilePeer::start(
        &swarm.tracker_addr,
        files.clone(),
        Mode::Honest,
        Gate::open(),
    );

    // The tracker itself refuses an empty name and one over its limit.
    for bad in [String::new(), "x".repeat(MAX_NAME_LEN + 1)] {
        let entry = FileEntry {
            id: FileId([7; 32]),
            size: 1,
            name: bad.clone(),
            have: shoal_proto::tracker::Have::Complete,
        };
        let refused = announce(&swarm.tracker_addr, peer.addr.port(), entry);
        assert!(
            matches!(refused, Err(TrackerError::Refused(ErrorCode::BadName))),
            "name of {} bytes: {refused:?}",
            bad.len()
        );
    }

    // And names a terminal would act on: control characters, bidirectional overrides.
    for bad in [
        "bad\u{1}na\u{7}me\u{1b}[31m\r\n.bin",
        "\u{7f}\t\u{1b}",
        "invoice\u{202E}fdp.exe",
    ] {
        let entry = FileEntry {
            id: FileId([8; 32]),
            size: 1,
            name: bad.to_string(),
            have: shoal_proto::tracker::Have::Complete,
        };
        let refused = announce(&swarm.tracker_addr, peer.addr.port() + 1, entry);
        assert!(
            matches!(
                refused,
                Err(TrackerError::Refused(ErrorCode::UnprintableName))
            ),
            "{bad:?}: {refused:?}"
        );
    }

    for f in &files {
        let safe = safe_file_name(&f.name, &f.id);
        let parts: Vec<Component<'_>> = Path::new(&safe).components().collect();
        assert!(
            matches!(parts[..], [Component::Normal(_)]) && safe.len() <= MAX_LOCAL_NAME,
            "{:?} -> {safe:?}",
            f.name
        );
        let before = tree(swarm.dir.path());
        let run = swarm.run_leecher(&work, &["--no-seed", "--out", "out", &f.id.to_hex()]);
        run.assert_ok();
        let want = Path::new("out").join(&safe);
        assert_eq!(
            run.stdout.trim_end(),
            format!("{} {} {}", f.id, f.data.len(), want.display()),
            "{:?}\n{}",
            f.name,
            run.dump()
        );
        assert!(
            std::fs::read(work.join(&want)).unwrap() == f.data,
            "{}",
            run.dump()
        );
        let mut added: Vec<_> = tree(swarm.dir.path())
            .difference(&before)
            .cloned()
            .collect();
        added.sort();
        assert_eq!(
            added,
            vec![Path::new("w/x/y").join(&want)],
            "{:?}: only {safe:?} inside --out is new\n{}",
            f.name,
            run.dump()
        );
    }
    assert!(dir_names(&canary).is_empty() && dir_names(&trap).is_empty());
    assert!(!Path::new("/abs").exists());
    assert_eq!(dir_names(&out).len(), files.len(), "one file per name");

    // Asked for by its name instead of its id, the traversal is just as harmless.
    let by_name = swarm.folder("w/x/y/by-name");
    let run = swarm.run_leecher(
        &work,
        &["--no-seed", "--out", "by-name", "../../etc/passwd"],
    );
    run.assert_ok();
    assert_eq!(dir_names(&by_name), vec!["passwd"], "{}", run.dump());
    assert!(std::fs::read(by_name.join("passwd")).unwrap() == files[0].data);
}

/// Case 10, the terminal: a name with escape sequences and a newline never gets into the tracker
/// (refused at announce), so it reaches neither a leecher nor the tracker's log raw: it could forge
/// lines or drive the terminal. (`names::printable` covers a hostile tracker's names.)
#[test]
fn names_from_the_network_never_reach_the_terminal_raw() {
    let swarm = Swarm::new(BINS);
    let name = "evil\u{1b}[2J\u{7}\nforged line";
    let file = Served::new(name, &pattern(40_000, 101), CHUNK);
    let refused = announce(&swarm.tracker_addr, 9, file.entry());
    assert!(
        matches!(
            refused,
            Err(TrackerError::Refused(ErrorCode::UnprintableName))
        ),
        "{refused:?}"
    );
    let run = swarm.run_leecher(swarm.dir.path(), &["--list"]);
    run.assert_ok();
    assert_eq!(run.stdout, "", "{}", run.dump());
    let log = swarm.tracker.stderr().join("\n");
    assert!(
        !log.contains(['\u{1b}', '\u{7}']) && !log.contains("\nforged line"),
        "{log:?}"
    );
}

/// Runs `cmd`, trying again while the kernel says its program is busy (ETXTBSY): a copy of a
/// program just written stays open for writing in any child forked meanwhile until that child
/// execs, a matter of milliseconds.
fn output_retrying_busy(cmd: &mut Command) -> std::process::Output {
    const ETXTBSY: i32 = 26;
    for _ in 0..100 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            res => return res.expect("running the leecher"),
        }
    }
    panic!("the copy of the leecher stayed busy (ETXTBSY) for 2 s");
}
