//! Issue 11, "The file system", and issue 14 items 5 and 6: nothing unverified or unintended ever
//! stands under a final name. A file that appears at the destination during the download is left
//! alone (unless `--force`), only the `.part` that was written and verified is renamed, a `.part`
//! that is not a plain file of ours with one name is never written through, and a destination
//! that already is the file is reported, not fetched again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_testkit::hostile::*;
use shoal_testkit::*;

const BINS: Bins = bins!();

/// The leecher failed with exactly one error line, which contains every one of `needles`.
fn assert_one_error(run: &Run, needles: &[&str]) {
    assert_eq!(run.status.code(), Some(1), "exit code 1\n{}", run.dump());
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("leecher:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line\n{}", run.dump());
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} in the error\n{}", run.dump());
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.dump());
}

/// The `.part` the leecher is writing in `dir` (the only one there), once it exists. Found by
/// looking, not by name, so that the tests below check behaviour whatever the naming scheme.
fn the_part_in(dir: &Path) -> PathBuf {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let parts: Vec<String> = dir_names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(
            parts.len() <= 1,
            "one .part in {}: {parts:?}",
            dir.display()
        );
        if let [part] = &parts[..] {
            return dir.join(part);
        }
        assert!(Instant::now() < deadline, "no .part in {}", dir.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A leecher of `id` into `out` whose only seeder (behind a gate) has delivered `k` chunks, so it
/// is in the middle of its download.
fn leecher_held_up(
    swarm: &Swarm,
    out: &Path,
    data: &[u8],
    gate: &Gate,
    id: &str,
    proxy: &Proxy,
) -> Proc {
    const K: u32 = 4;
    gate.allow(K as usize);
    let leecher = swarm.leecher_in(out, &["--no-seed", id]);
    let got = proxy
        .events
        .wait("the seeder to deliver its first chunks", |c| c.served == K);
    wait_part_chunks(&the_part_in(out), data, CHUNK, &got.served_indices);
    leecher
}

#[test]
fn a_file_appearing_at_the_destination_is_never_replaced() {
    let swarm = Swarm::new(BINS);
    let data = test_file(111);
    let gate = Gate::closed();
    let (_seeder, id, proxy) = gated_seeder(&swarm, "a", &data, gate.clone());
    let out = swarm.folder("out");
    let mut leecher = leecher_held_up(&swarm, &out, &data, &gate, &id, &proxy);
    std::fs::write(out.join("f.bin"), b"mine, written while the download ran").unwrap();
    gate.open_all();

    let run = finish(&mut leecher);
    assert_one_error(
        &run,
        &[
            "f.bin appeared during the download",
            "use --force to replace it",
        ],
    );
    assert_eq!(
        std::fs::read(out.join("f.bin")).unwrap(),
        b"mine, written while the download ran"
    );
    // The verified download is kept: with --force the same command replaces the file from it
    // without fetching a chunk again.
    assert_same_file(&the_part_in(&out), &data, &run);
    let run = swarm.run_leecher(&out, &["--no-seed", "--force", &id]);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.resumed, Some((chunks_in(&data), 0)), "{}", run.dump());
    assert_eq!(dir_names(&out), vec!["f.bin"], "{}", run.dump());
}

/// Issue 14 item 5: refused at once, before any peer is asked for anything (and without
/// `--force`, the same sentence rather than a suggestion to use `--force`).
#[test]
fn force_onto_a_directory_is_refused_before_downloading() {
    let swarm = Swarm::new(BINS);
    let data = test_file(112);
    let (_seeder, id, proxy) = gated_seeder(&swarm, "a", &data, Gate::open());
    let out = swarm.folder("out");
    std::fs::create_dir(out.join("f.bin")).unwrap();
    std::fs::write(out.join("f.bin/inside"), b"kept").unwrap();

    for force in [true, false] {
        let mut args = vec!["--no-seed", "--timeout", "5", &id];
        if force {
            args.push("--force");
        }
        let run = swarm.run_leecher(&out, &args);
        assert_one_error(
            &run,
            &["f.bin is a directory; a download never replaces one"],
        );
        assert_eq!(proxy.events.now().connections, 0, "no peer was contacted");
        assert_eq!(dir_names(&out), vec!["f.bin"], "no .part\n{}", run.dump());
        assert_eq!(std::fs::read(out.join("f.bin/inside")).unwrap(), b"kept");
    }
}

/// A `.part` moved away and replaced by another file during the download: that other file is
/// never renamed to the final name.
#[test]
fn a_part_replaced_underneath_is_not_renamed() {
    let swarm = Swarm::new(BINS);
    let data = test_file(113);
    let gate = Gate::closed();
    let (_seeder, id, proxy) = gated_seeder(&swarm, "a", &data, gate.clone());
    let out = swarm.folder("out");
    let mut leecher = leecher_held_up(&swarm, &out, &data, &gate, &id, &proxy);
    let part = the_part_in(&out);
    std::fs::rename(&part, swarm.path("moved-away")).unwrap();
    std::fs::write(&part, b"an impostor").unwrap();
    gate.open_all();

    let run = finish(&mut leecher);
    assert_one_error(
        &run,
        &[
            "was moved or replaced during the download",
            "nothing was renamed to",
        ],
    );
    assert!(!out.join("f.bin").exists(), "{}", run.dump());
    assert_eq!(std::fs::read(&part).unwrap(), b"an impostor");
}

/// What a `.part` planted before the download may be: a hard link to another file, a symbolic
/// link to it, something other than a file, or a file of another user. None is written through.
#[test]
fn a_planted_part_is_never_written_through() {
    let swarm = Swarm::new(BINS);
    let data = test_file(114);
    let (_seeder, id, _proxy) = gated_seeder(&swarm, "a", &data, Gate::open());
    let out = swarm.folder("out");
    let victim = swarm.write("victim", b"precious");
    let part = part_of(&out, "f.bin", &id);

    let refused = |why: &str| {
        let run = swarm.run_leecher(&out, &["--no-seed", "--timeout", "10", &id]);
        let part_name = part.file_name().unwrap().to_str().unwrap();
        assert_one_error(&run, &[part_name, why]);
        assert!(!out.join("f.bin").exists(), "{}", run.dump());
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"precious",
            "{}",
            run.dump()
        );
        std::fs::remove_file(&part).unwrap();
    };
    std::fs::hard_link(&victim, &part).unwrap();
    refused("has 2 names (hard links); refusing to write through it");
    std::os::unix::fs::symlink(&victim, &part).unwrap();
    refused("is a symbolic link; refusing to write through it");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &part,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    refused("is not a regular file; refusing to write through it");
    if rustix::process::geteuid().is_root() {
        std::fs::copy(&victim, &part).unwrap();
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::fs::chown(&part, Some(nobody), None).unwrap();
        refused("belongs to another user (uid 65534); refusing to write through it");
    } else {
        eprintln!("skipped the other user's .part: needs root to give a file away");
    }
}

/// Issue 14 item 6: the very file at the destination is reported, and nothing is fetched; a
/// different file of the same size is still "exists, use --force".
#[test]
fn a_complete_file_at_the_destination_is_already_had() {
    let swarm = Swarm::new(BINS);
    let data = test_file(115);
    let (_seeder, id, proxy) = gated_seeder(&swarm, "a", &data, Gate::closed());
    let out = swarm.folder("out");
    std::fs::write(out.join("f.bin"), &data).unwrap();

    let run = swarm.run_leecher(&out, &["--no-seed", "--timeout", "10", &id]);
    run.assert_ok();
    assert!(run.stderr.contains("already have f.bin"), "{}", run.dump());
    assert!(
        run.stdout.starts_with(&format!("{id} {} ", data.len())),
        "{}",
        run.dump()
    );
    assert_eq!(proxy.events.now().served, 0, "nothing fetched");
    assert_eq!(dir_names(&out), vec!["f.bin"], "{}", run.dump());

    let mut other = data.clone();
    other[12345] ^= 1;
    std::fs::write(out.join("f.bin"), &other).unwrap();
    let run = swarm.run_leecher(&out, &["--no-seed", "--timeout", "10", &id]);
    assert_one_error(&run, &["f.bin already exists; use --force to replace it"]);
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), other);
    assert_eq!(dir_names(&out), vec!["f.bin"], "{}", run.dump());
}
