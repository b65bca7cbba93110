//! What a person new to shoal trips over (issue 14, items 2, 3 and 5), through the real binaries:
//! several files in one `leecher` command, a seeder that cannot register, lookups that explain a
//! miss, `--tracker HOST` without a port, who fetched what, and usage lines without the
//! environment's values.

use shoal_testkit::*;

const BINS: Bins = bins!();

#[test]
fn several_files_in_one_command_each_fetched_and_one_failure_counted() {
    let swarm = Swarm::new(BINS);
    let (a, b) = (pattern(40_000, 1), pattern(3_000, 2));
    swarm.write("s/a.bin", &a);
    swarm.write("s/b.bin", &b);
    let (mut seeder, lines) = swarm.seeder_in(&swarm.path("s"), &["a.bin", "b.bin"]);
    let id_b = id_of(&lines[1]);
    let out = swarm.folder("one");
    let run = swarm.run_leecher(&out, &["a.bin", "nothing.bin", &id_b[..8], "--no-seed"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    // The failure is named and the files after it are still fetched, each with its lines.
    run.assert_fails_with("leecher: nothing.bin: the tracker knows no file named");
    run.assert_fails_with("leecher: 1 of 3 files failed");
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.dump());
    assert!(
        run.stdout.contains(&format!("{id_b} 3000 ")),
        "{}",
        run.dump()
    );
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| Summary::is_summary(l))
            .count(),
        2,
        "{}",
        run.dump()
    );
    assert_eq!(std::fs::read(out.join("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(out.join("b.bin")).unwrap(), b);

    // Without --no-seed both are seeded from one library on one port: with the seeder gone, a
    // second leecher gets both from the first.
    let two = swarm.folder("two");
    let mut first = swarm.seeding_leecher_in(&two, &["a.bin", "b.bin"]);
    let line = first.wait_stderr(" seeding ");
    assert!(line.contains("a.bin, b.bin; Ctrl-C to stop"), "{line}");
    seeder.stop_cleanly();
    let three = swarm.folder("three");
    let run = swarm.run_leecher(&three, &["a.bin", "b.bin", "--no-upload"]);
    run.assert_ok();
    let from = first.serving_addr();
    for name in ["a.bin", "b.bin"] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("downloaded {name}:")))
            .unwrap_or_else(|| panic!("no summary for {name}\n{}", run.dump()));
        assert!(
            chunks_per_peer(line).iter().all(|(p, _)| *p == from),
            "{line}"
        );
    }
    assert_eq!(std::fs::read(three.join("b.bin")).unwrap(), b);
    first.stop_cleanly();
}

#[test]
fn a_seeder_whose_tracker_does_not_answer_says_so_and_exits_1() {
    let swarm = Swarm::new(BINS);
    swarm.write("f.bin", b"some bytes");
    let (_held, silent) = silent_udp();
    let mut seeder = Proc::spawn(
        BINS.seeder,
        &["--tracker", &silent, "f.bin"],
        swarm.dir.path(),
        &[],
    );
    let run = finish(&mut seeder);
    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    run.assert_fails_with(&format!("seeder: the tracker at {silent} did not answer"));
    // No id was printed: nothing was registered.
    assert_eq!(run.stdout, "", "{}", run.dump());
}

#[test]
fn a_seeder_the_tracker_refuses_prints_no_id_and_exits_1() {
    // Names the tracker refuses: too long for it, and one with an escape sequence in it.
    let swarm = Swarm::with_tracker_args(BINS, &["--max-name-len", "8"]);
    for name in ["much-too-long.bin", "a\u{1b}[2Jb"] {
        swarm.write(name, b"some bytes");
        let run = run(BINS.seeder, &[name], swarm.dir.path(), &swarm.env());
        assert_eq!(run.status.code(), Some(1), "{}", run.dump());
        run.assert_fails_with("seeder: could not register ");
        run.assert_fails_with(" with the tracker: the tracker refused");
        assert_eq!(run.stdout, "", "{}", run.dump());
        assert!(!run.stderr.contains('\u{1b}'), "{}", run.dump());
    }
}

#[test]
fn lookups_explain_short_prefixes_and_suggest_near_names() {
    let swarm = Swarm::new(BINS);
    swarm.write("s/Big.iso", &pattern(5_000, 3));
    let (_seeder, lines) = swarm.seeder_in(&swarm.path("s"), &["Big.iso"]);
    let id = id_of(&lines[0]);
    let out = swarm.folder("out");
    for typed in ["big.iso", "Bgi.iso", "BIG.ISO"] {
        swarm
            .run_leecher(&out, &[typed, "--no-upload"])
            .assert_fails_with(&format!(
            "leecher: the tracker knows no file named or with id {typed:?} (did you mean Big.iso?)"
        ));
    }
    let run = swarm.run_leecher(&out, &["holiday.jpg", "--no-upload"]);
    run.assert_fails_with("the tracker knows no file named or with id \"holiday.jpg\"; ");
    assert!(!run.stderr.contains("did you mean"), "{}", run.dump());
    swarm
        .run_leecher(&out, &[&id[..6], "--no-upload"])
        .assert_fails_with(&format!(
            "leecher: id prefixes need at least 8 hex characters; {:?} is the start of:\n  {id} 5000 Big.iso",
            &id[..6]
        ));
    assert!(dir_names(&out).is_empty());
}

#[test]
fn a_tracker_host_without_port_means_port_6969() {
    let swarm = Swarm::new(BINS);
    // Whatever answers (or not) on this machine's port 6969, that is the address tried.
    let run = run(
        BINS.leecher,
        &["--tracker", "localhost", "--list"],
        swarm.dir.path(),
        &[],
    );
    assert!(!run.stderr.contains("could not resolve"), "{}", run.dump());
    assert!(
        run.status.success() || run.stderr.contains("the tracker at 127.0.0.1:6969 "),
        "{}",
        run.dump()
    );
}

#[test]
fn the_seeder_logs_who_fetched_what() {
    let swarm = Swarm::new(BINS);
    let data = pattern(50_000, 4);
    swarm.write("s/f.bin", &data);
    let (seeder, _) = swarm.seeder_in(&swarm.path("s"), &["f.bin", "--chunk-size", "16K"]);
    let out = swarm.folder("out");
    swarm
        .run_leecher(&out, &["f.bin", "--no-upload"])
        .assert_ok();
    let line = seeder.wait_stderr("served f.bin to 127.0.0.1:");
    assert!(line.ends_with(": 4 chunks, 50000 bytes"), "{line}");
}

#[test]
fn usage_lines_do_not_show_values_from_the_environment() {
    let swarm = Swarm::new(BINS);
    let env = [("P2P_TRACKER", "10.9.8.7:6969"), ("P2P_NO_DISCOVERY", "1")];
    for (program, args) in [
        (BINS.leecher, &[][..]),
        (BINS.seeder, &[][..]),
        (BINS.leecher, &["--bogus"][..]),
    ] {
        let run = run(program, args, swarm.dir.path(), &env);
        assert_eq!(run.status.code(), Some(2), "{}", run.dump());
        let usage = run
            .stderr
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_else(|| panic!("no usage line\n{}", run.dump()));
        assert!(
            !usage.contains("--tracker") && !usage.contains("--no-discovery"),
            "{usage}"
        );
    }
}
