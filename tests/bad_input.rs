//! Every ordinary mistake gets one clear sentence on stderr, a non-zero exit, no panic, and
//! nothing written under the destination name.

use std::time::{Duration, Instant};

use shoal_testkit::*;

const BINS: Bins = bins!();

/// Asserts that a failed download left the output folder as it was: empty.
fn nothing_written(out: &std::path::Path, run: &Run) {
    assert!(
        dir_names(out).is_empty(),
        "files left behind: {:?}\n{}",
        dir_names(out),
        run.dump()
    );
}

/// Asserts the error is a single line prefixed by the program name.
fn one_sentence(run: &Run, program: &str) {
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{program}: ")))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line\n{}", run.dump());
}

#[test]
fn unknown_name_or_id() {
    let swarm = Swarm::new(BINS);
    swarm.write("src/f.bin", &pattern(1000, 1));
    let (_s, lines) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let id = id_of(&lines[0]);
    let out = swarm.folder("out");
    // A name, a full id and a prefix nobody has. (A real id cut below 8 characters is told that
    // prefixes need 8: tests/newcomer.rs.)
    let mut unknown_id = id.clone().into_bytes();
    unknown_id[0] = if unknown_id[0] == b'0' { b'1' } else { b'0' };
    let unknown_id = String::from_utf8(unknown_id).unwrap();
    for query in ["nosuch.bin", unknown_id.as_str(), &unknown_id[..8]] {
        let run = swarm.run_leecher(&out, &["--no-seed", query]);
        run.assert_fails_with("the tracker knows no file named or with id")
            .assert_fails_with(query)
            .assert_fails_with("leecher --list");
        one_sentence(&run, "leecher");
        nothing_written(&out, &run);
    }
}

#[test]
fn ambiguous_name_lists_every_id() {
    let swarm = Swarm::new(BINS);
    let (a, b) = (pattern(2000, 2), pattern(3000, 3));
    swarm.write("one/same.bin", &a);
    swarm.write("two/same.bin", &b);
    let (_s1, l1) = swarm.seeder_in(&swarm.path("one"), &["same.bin"]);
    let (_s2, l2) = swarm.seeder_in(&swarm.path("two"), &["same.bin"]);
    let (id_a, id_b) = (id_of(&l1[0]), id_of(&l2[0]));
    assert_ne!(id_a, id_b);
    let out = swarm.folder("out");
    let run = swarm.run_leecher(&out, &["--no-seed", "same.bin"]);
    run.assert_fails_with("\"same.bin\" matches 2 files")
        .assert_fails_with(&id_a)
        .assert_fails_with(&id_b);
    one_sentence(&run, "leecher");
    nothing_written(&out, &run);

    // An 8-character prefix of either id is unique and picks that one file.
    for (id, data, dir) in [(&id_a, &a, "by-a"), (&id_b, &b, "by-b")] {
        let out = swarm.folder(dir);
        let run = swarm.run_leecher(&out, &["--no-seed", &id[..8]]);
        run.assert_ok();
        assert_eq!(&std::fs::read(out.join("same.bin")).unwrap(), data);
    }
}

#[test]
fn tracker_not_answering() {
    // A socket we hold and never read: nothing else can answer on its port.
    let (_silent, addr) = silent_udp();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        vec!["--tracker", addr.as_str(), "--no-seed", "f.bin"],
        vec!["--tracker", addr.as_str(), "--list"],
    ];
    // Each waits out the client's retries (about four seconds): run them side by side.
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|args| s.spawn(|| run(BINS.leecher, args, dir.path(), &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in runs {
        run.assert_fails_with(&format!("the tracker at {addr} did not answer"))
            .assert_fails_with("--tracker");
        one_sentence(&run, "leecher");
        nothing_written(dir.path(), &run);
    }
}

#[test]
fn tracker_address_with_a_bad_port() {
    // Without a port it means 6969 (tests/newcomer.rs); a port that is not one is refused.
    let dir = tempfile::tempdir().unwrap();
    let run = run(
        BINS.leecher,
        &["--tracker", "127.0.0.1:http", "--list"],
        dir.path(),
        &[],
    );
    run.assert_fails_with("could not resolve tracker address \"127.0.0.1:http\"")
        .assert_fails_with("HOST[:PORT]");
    one_sentence(&run, "leecher");
}

#[test]
fn no_seeder_reachable() {
    // The tracker keeps listing the dead seeder for a minute: only the leecher's timeout ends it.
    let swarm = Swarm::with_tracker_args(BINS, &["--peer-timeout", "60"]);
    swarm.write("src/f.bin", &pattern(100_000, 4));
    let (mut seeder, lines) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let id = id_of(&lines[0]);
    seeder.kill();
    assert_eq!(swarm.seeders_of(&id), 1, "the tracker should still list it");
    let out = swarm.folder("out");
    let start = Instant::now();
    let run = swarm.run_leecher(&out, &["--no-seed", "--timeout", "2", "f.bin"]);
    let took = start.elapsed();
    run.assert_fails_with("no peer could provide f.bin");
    one_sentence(&run, "leecher");
    nothing_written(&out, &run);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "--timeout 2 took {took:?}\n{}",
        run.dump()
    );
}

#[test]
fn destination_exists() {
    let swarm = Swarm::new(BINS);
    let data = pattern(600_000, 5);
    swarm.write("src/f.bin", &data);
    let (_s, _) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let out = swarm.folder("out");
    let dest = swarm.write("out/f.bin", b"precious");
    let run = swarm.run_leecher(&out, &["--no-seed", "f.bin"]);
    run.assert_fails_with("already exists; use --force to replace it");
    one_sentence(&run, "leecher");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious", "{}", run.dump());
    assert_eq!(dir_names(&out), ["f.bin"], "{}", run.dump());

    let run = swarm.run_leecher(&out, &["--no-seed", "--force", "f.bin"]);
    run.assert_ok();
    assert!(std::fs::read(&dest).unwrap() == data, "{}", run.dump());
    assert_eq!(dir_names(&out), ["f.bin"], "{}", run.dump());
}

#[test]
fn output_folder_missing() {
    let swarm = Swarm::new(BINS);
    let run = swarm.run_leecher(
        swarm.dir.path(),
        &["--no-seed", "--out", "no/such/dir", "f.bin"],
    );
    run.assert_fails_with("the output folder no/such/dir does not exist");
    one_sentence(&run, "leecher");
}

/// Runs a seeder that must refuse at once; asserts it registered nothing.
fn seeder_refuses(swarm: &Swarm, args: &[&str], needle: &str) {
    let run = run(
        BINS.seeder,
        args,
        &swarm.path("src"),
        &[("P2P_TRACKER", &swarm.tracker_addr)],
    );
    run.assert_fails_with(needle);
    one_sentence(&run, "seeder");
    assert!(run.stdout.is_empty(), "printed ids\n{}", run.dump());
    assert!(swarm.list(None).is_empty(), "registered\n{}", run.dump());
}

#[test]
fn seeder_path_missing_or_a_directory() {
    let swarm = Swarm::new(BINS);
    swarm.write("src/ok.bin", b"fine");
    swarm.folder("src/sub");
    seeder_refuses(&swarm, &["nosuch.bin"], "nosuch.bin: no such file");
    seeder_refuses(&swarm, &["sub"], "sub is a directory");
    // One bad path among good ones: nothing is shared.
    seeder_refuses(
        &swarm,
        &["ok.bin", "nosuch.bin"],
        "nosuch.bin: no such file",
    );
}

/// A file the seeder may not read (mode 000). Root ignores modes, so when the test runs as root
/// the seeder runs as `nobody` (uid 65534), from a copy inside the test's folder (the build's own
/// may be out of nobody's reach, as in a checkout under a 0700 folder).
#[test]
fn seeder_path_unreadable() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let swarm = Swarm::new(BINS);
    let path = swarm.write("src/locked.bin", b"secret");
    let mode = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(&path, 0o000);
    let root = rustix::process::geteuid().is_root();
    let mut cmd = if root {
        mode(swarm.dir.path(), 0o755);
        mode(&swarm.path("src"), 0o755);
        let copy = swarm.path("seeder-copy");
        std::fs::copy(BINS.seeder, &copy).expect("copying the seeder");
        mode(&copy, 0o755);
        let mut cmd = std::process::Command::new(copy);
        cmd.uid(65534).gid(65534);
        cmd
    } else {
        std::process::Command::new(BINS.seeder)
    };
    let out = cmd
        .arg("locked.bin")
        .env("P2P_TRACKER", &swarm.tracker_addr)
        .current_dir(swarm.path("src"))
        .output()
        .expect("running the seeder");
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command: format!("{cmd:?}"),
    };
    run.assert_fails_with("locked.bin: permission denied");
    one_sentence(&run, "seeder");
    assert!(run.stdout.is_empty(), "printed ids\n{}", run.dump());
    assert!(swarm.list(None).is_empty(), "registered\n{}", run.dump());
}

#[test]
fn seeder_bad_chunk_size() {
    let swarm = Swarm::new(BINS);
    swarm.write("src/f.bin", b"data");
    for bad in ["8K", "32M", "100K", "lots"] {
        let run = run(
            BINS.seeder,
            &["--chunk-size", bad, "f.bin"],
            &swarm.path("src"),
            &[("P2P_TRACKER", &swarm.tracker_addr)],
        );
        run.assert_fails_with("--chunk-size");
        assert!(run.stdout.is_empty(), "{}", run.dump());
    }
    assert!(swarm.list(None).is_empty());
}
