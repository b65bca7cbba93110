//! The command-line contract: `leecher --list`, how the tracker address is chosen, and Ctrl-C.

use shoal_testkit::*;

const BINS: Bins = bins!();

#[test]
fn list_prints_id_size_seeders_name() {
    let swarm = Swarm::new(BINS);
    assert_eq!(swarm.run_leecher(swarm.dir.path(), &["--list"]).stdout, "");

    let f = pattern(1500, 1);
    swarm.write("one/f.bin", &f);
    swarm.write("two/f.bin", &f);
    swarm.write("one/g.txt", b"ten bytes!");
    swarm.write("one/Other File.dat", b"seven b");
    let (_s1, lines) = swarm.seeder_in(&swarm.path("one"), &["f.bin", "g.txt", "Other File.dat"]);
    let (_s2, _) = swarm.seeder_in(&swarm.path("two"), &["f.bin"]);
    let (id_f, id_g, id_o) = (id_of(&lines[0]), id_of(&lines[1]), id_of(&lines[2]));

    // Sorted by name; the name is the rest of the line, spaces and all.
    let run = swarm.run_leecher(swarm.dir.path(), &["--list"]);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        format!("{id_o} 7 1 Other File.dat\n{id_f} 1500 2 f.bin\n{id_g} 10 1 g.txt"),
        "{}",
        run.dump()
    );
    assert_eq!(
        swarm.list(None),
        vec![
            Listed {
                id: id_o.clone(),
                size: 7,
                seeders: 1,
                name: "Other File.dat".into()
            },
            Listed {
                id: id_f.clone(),
                size: 1500,
                seeders: 2,
                name: "f.bin".into()
            },
            Listed {
                id: id_g.clone(),
                size: 10,
                seeders: 1,
                name: "g.txt".into()
            },
        ]
    );

    // A pattern keeps the names that contain it (ignoring case).
    let ids = |pattern: &str| -> Vec<String> {
        swarm
            .list(Some(pattern))
            .into_iter()
            .map(|l| l.id)
            .collect()
    };
    assert_eq!(ids("g.t"), [id_g.as_str()]);
    assert_eq!(ids(".bin"), [id_f.as_str()]);
    assert_eq!(ids("file"), [id_o.as_str()]);
    assert_eq!(ids("t"), [id_o.as_str(), id_g.as_str()]);
    assert!(ids("nothing like it").is_empty());
}

#[test]
fn tracker_from_env_flag_and_host_name() {
    let swarm = Swarm::new(BINS);
    let data = pattern(70_000, 2);
    swarm.write("src/f.bin", &data);
    let (_s, lines) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let id = id_of(&lines[0]);
    let (_silent, silent) = silent_udp();
    let dir = swarm.dir.path();
    let listed = |run: &Run| {
        run.assert_ok();
        assert!(run.stdout.starts_with(&id), "{}", run.dump());
    };

    // P2P_TRACKER alone.
    listed(&run(
        BINS.leecher,
        &["--list"],
        dir,
        &[("P2P_TRACKER", &swarm.tracker_addr)],
    ));
    // --tracker wins over P2P_TRACKER (which points at a tracker that never answers).
    listed(&run(
        BINS.leecher,
        &["--tracker", &swarm.tracker_addr, "--list"],
        dir,
        &[("P2P_TRACKER", &silent)],
    ));
    // ... and the other way round: the silent one named by --tracker is the one tried.
    run(
        BINS.leecher,
        &["--tracker", &silent, "--list"],
        dir,
        &[("P2P_TRACKER", &swarm.tracker_addr)],
    )
    .assert_fails_with(&format!("the tracker at {silent} did not answer"));

    // A host name resolves, for the seeder and the leecher alike.
    let by_name = format!("localhost:{}", swarm.tracker_port());
    let seeder = Proc::spawn(
        BINS.seeder,
        &["--tracker", &by_name, "f.bin"],
        &swarm.path("src"),
        &[],
    );
    seeder.wait_stderr("registered with the tracker");
    let out = swarm.folder("out");
    let run = run(
        BINS.leecher,
        &["--tracker", &by_name, "--no-seed", &id],
        &out,
        &[],
    );
    run.assert_ok();
    assert!(std::fs::read(out.join("f.bin")).unwrap() == data);
    assert_eq!(swarm.seeders_of(&id), 2);
}

#[test]
fn default_tracker_address_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    for program in [BINS.seeder, BINS.leecher] {
        let run = run(program, &["--help"], dir.path(), &[]);
        run.assert_ok();
        assert!(
            run.stdout.contains("P2P_TRACKER") && run.stdout.contains("127.0.0.1:6969"),
            "{}",
            run.dump()
        );
    }
}

#[test]
fn ctrl_c_unregisters_a_seeder_at_once() {
    // A peer timeout far longer than the test: only an unregistration can remove a seeder.
    let swarm = Swarm::with_tracker_args(BINS, &["--peer-timeout", "600"]);
    swarm.write("src/f.bin", &pattern(5000, 3));
    let (mut a, lines) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let (mut b, _) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let id = id_of(&lines[0]);
    assert_eq!(swarm.seeders_of(&id), 2);
    a.stop_cleanly();
    assert_eq!(swarm.seeders_of(&id), 1);
    b.stop_cleanly();
    assert!(swarm.list(None).is_empty());
}

#[test]
fn ctrl_c_unregisters_a_seeding_leecher_at_once() {
    let swarm = Swarm::with_tracker_args(BINS, &["--peer-timeout", "600"]);
    let data = pattern(600_000, 4);
    swarm.write("src/f.bin", &data);
    let (_s, lines) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let id = id_of(&lines[0]);
    let out = swarm.folder("out");
    let mut leecher = swarm.seeding_leecher_in(&out, &["f.bin"]);
    leecher.wait_stderr("seeding f.bin");
    assert_eq!(swarm.seeders_of(&id), 2);
    leecher.stop_cleanly();
    assert_eq!(swarm.seeders_of(&id), 1);
    assert!(std::fs::read(out.join("f.bin")).unwrap() == data);
}

#[test]
fn ctrl_c_while_waiting_for_peers() {
    let swarm = Swarm::with_tracker_args(BINS, &["--peer-timeout", "600"]);
    swarm.write("src/f.bin", &pattern(5000, 5));
    let (mut seeder, _) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    seeder.kill();
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", "f.bin"]);
    leecher.wait_stderr("no manifest from this peer");
    let status = leecher.stop();
    assert_eq!(status.code(), Some(130), "{}", leecher.dump());
    assert_eq!(
        leecher.count_stderr("leecher: interrupted"),
        1,
        "{}",
        leecher.dump()
    );
    assert!(dir_names(&out).is_empty(), "{}", leecher.dump());
}

#[test]
fn ctrl_c_stops_the_tracker() {
    let mut swarm = Swarm::new(BINS);
    let status = swarm.tracker.stop();
    assert!(status.success(), "{}", swarm.tracker.dump());
}
