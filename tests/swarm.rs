//! The swarm on loopback, with the real binaries: leechers started together serve each other the
//! chunks they have verified, so they all finish even when the only seeder dies once every chunk
//! has reached some leecher.

use std::time::{Duration, Instant};

use shoal_testkit::*;

const BINS: Bins = bins!();

const CHUNK: usize = 16 * 1024;
const CHUNKS: usize = 256;
const LEECHERS: usize = 3;

/// `from seeders: S chunks, from leechers: L chunks; uploaded U chunks while downloading`.
fn sources(summary: &str) -> (u32, u32, u32) {
    let s = Summary::parse(summary);
    (s.from_seeders, s.from_leechers, s.uploaded)
}

#[test]
fn leechers_finish_from_each_other_after_the_seeder_dies() {
    let swarm = Swarm::new(BINS);
    let data = pattern(CHUNK * CHUNKS, 10);
    swarm.write("seed/big.bin", &data);
    // The seeder's upload is capped (4 MiB at 2 MiB/s) so that it has sent about one copy when
    // it is killed: the leechers must then get about two thirds of their chunks from each other.
    // Uncapped, on loopback, all three could finish from the seeder before they knew each other.
    let (mut seeder, lines) = swarm.seeder_in(
        &swarm.folder("seed"),
        &["--chunk-size", "16K", "--max-upload-rate", "2M", "big.bin"],
    );
    let id = id_of(&lines[0]);
    // Chunk-level logs from the verifiers: the signal that every chunk has reached a leecher.
    let mut env: Vec<(&str, &str)> = swarm.env().to_vec();
    env.push(("RUST_LOG", "info,shoal_engine::download::verify=debug"));
    let mut leechers: Vec<Proc> = (0..LEECHERS)
        .map(|i| {
            let out = swarm.folder(&format!("l{i}"));
            Proc::spawn(BINS.leecher, &["--window", "2", &id], &out, &env)
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = verified_chunks(&leechers).len();
        if seen == CHUNKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {seen} of {CHUNKS} chunks reached a leecher\n{}\n{}",
            seeder.dump(),
            leechers.iter().map(Proc::dump).collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    seeder.kill();
    let unfinished = leechers
        .iter()
        .filter(|p| !p.stderr().iter().any(|l| Summary::is_summary(l)))
        .count();
    eprintln!("the seeder died with {unfinished} of {LEECHERS} leechers unfinished");

    let summaries = wait_all_stderr(&mut leechers, "downloaded big.bin: ", PATIENCE);
    let mut from_leechers = 0;
    for (i, (mut p, summary)) in leechers.into_iter().zip(summaries).enumerate() {
        eprintln!("leecher {i}: {summary}");
        let got = std::fs::read(swarm.path(&format!("l{i}/big.bin"))).unwrap();
        assert!(got == data, "leecher {i}: bytes differ\n{}", p.dump());
        let (seeders, leechers, _uploaded) = sources(&summary);
        assert_eq!(
            (seeders + leechers) as usize,
            CHUNKS,
            "leecher {i}: every chunk came from a seeder or a leecher\n{}",
            p.dump()
        );
        from_leechers += leechers;
        p.stop_cleanly();
    }
    assert!(
        from_leechers > 0,
        "no chunk went from one leecher to another"
    );
}

#[test]
fn a_leecher_with_no_upload_serves_nothing_and_is_not_listed() {
    let swarm = Swarm::new(BINS);
    let data = pattern(CHUNK * 8, 11);
    swarm.write("seed/small.bin", &data);
    let (_seeder, lines) =
        swarm.seeder_in(&swarm.folder("seed"), &["--chunk-size", "16K", "small.bin"]);
    let id = id_of(&lines[0]);
    let out = swarm.folder("quiet");
    let run = swarm.run_leecher(&out, &["--no-upload", &id]);
    run.assert_ok();
    assert!(std::fs::read(out.join("small.bin")).unwrap() == data);
    assert!(
        !run.stderr.contains("registered with the tracker") && !run.stderr.contains("serving;"),
        "a --no-upload leecher registered or served\n{}",
        run.dump()
    );
    let (seeders, leechers, uploaded) = sources(run.summary().unwrap());
    assert_eq!((seeders, leechers, uploaded), (8, 0, 0), "{}", run.dump());
    assert_eq!(swarm.seeders_of(&id), 1);
}

/// A protocol 1 peer in the swarm is named in one sentence, and the download goes on without it.
#[test]
fn a_protocol_1_peer_is_named_and_skipped() {
    use shoal_testkit::hostile::{HostilePeer, Mode};
    let swarm = Swarm::new(BINS);
    let data = pattern(CHUNK * 8, 12);
    swarm.write("seed/f.bin", &data);
    let (_seeder, lines) =
        swarm.seeder_in(&swarm.folder("seed"), &["--chunk-size", "16K", "f.bin"]);
    let id = id_of(&lines[0]);
    let old = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::ProtocolV1);
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);
    let sentence = format!(
        "peer {} speaks protocol 1, this leecher speaks {}",
        old.addr,
        shoal_proto::peer::PROTOCOL_VERSION
    );
    leecher.wait_stderr(&sentence);
    let run = finish(&mut leecher);
    run.assert_ok();
    assert!(
        std::fs::read(out.join("f.bin")).unwrap() == data,
        "{}",
        run.dump()
    );
    assert!(
        run.chunks_per_peer()
            .iter()
            .all(|(a, _)| *a != old.addr.to_string()),
        "{}",
        run.dump()
    );
}

/// A lying peer that is still downloading is struck and banned as a lying seeder is: the file is
/// right, nothing it sent was kept, and the summary names it.
#[test]
fn a_lying_leecher_is_banned_like_a_lying_seeder() {
    use shoal_testkit::hostile::*;
    let swarm = Swarm::new(BINS);
    let data = test_file(13);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let liar = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::PartialLiar(20));
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);
    let peer_field = format!("peer={}", liar.addr);
    leecher.wait_line(false, "the lying leecher to be banned", |l| {
        l.contains("failed its hash") && l.contains(&peer_field) && l.contains("banned=true")
    });
    pb.gate.open_all();
    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let summary = run.summary().unwrap();
    assert!(
        summary.contains(&format!("banned: {}", liar.addr)),
        "{}",
        run.dump()
    );
    let (_, from_leechers, _) = sources(summary);
    assert_eq!(from_leechers, 0, "{}", run.dump());
}
