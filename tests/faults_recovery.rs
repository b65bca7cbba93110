//! Issue 3, cases 5 to 8: every seeder gone, a killed leecher resumed, a restarted tracker, a
//! seeder whose file changed on disk.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use shoal_proto::FileId;
use shoal_testkit::hostile::*;
use shoal_testkit::*;

const BINS: Bins = bins!();

fn real_seeder(swarm: &Swarm, dir: &str, data: &[u8]) -> (Proc, String, SocketAddr) {
    swarm.write(&format!("{dir}/f.bin"), data);
    let (p, lines) = swarm.seeder_in(&swarm.path(dir), &["--chunk-size", "16K", "f.bin"]);
    let addr = seeder_addr(&p);
    (p, id_of(&lines[0]), addr)
}

/// Starts a leecher whose only seeder (real, behind a gate) delivers `k` chunks and is then
/// SIGKILLed, and waits until the leecher has noticed. Returns the leecher, the chunks it has on
/// disk, and the proxy (shut down: nothing listens at the seeder's address any more).
fn leecher_losing_its_only_seeder(
    swarm: &Swarm,
    data: &[u8],
    k: u32,
    out: &Path,
    extra: &[&str],
) -> (Proc, Vec<u32>, Proxy, String) {
    let gate = Gate::closed();
    gate.allow(k as usize);
    let (mut a, id, pa) = gated_seeder(swarm, "a", data, gate);
    let mut args = vec!["--no-seed"];
    args.extend_from_slice(extra);
    args.push(&id);
    let leecher = swarm.leecher_in(out, &args);
    let got = pa
        .events
        .wait("the seeder to deliver its chunks", |c| c.served == k);
    wait_part_chunks(
        &part_of(out, "f.bin", &id),
        data,
        CHUNK,
        &got.served_indices,
    );
    a.kill();
    leecher.wait_line(false, "the leecher to lose its only peer", |l| {
        dropped(l, pa.addr)
    });
    pa.shutdown();
    (leecher, got.served_indices, pa, id)
}

/// Case 5: the only seeder dies; a seeder that appears later (after the leecher logged losing its
/// peer) is found through the tracker and delivers the rest.
#[test]
fn a_seeder_appearing_later_is_used() {
    let swarm = Swarm::new(BINS);
    let data = test_file(51);
    let total = chunks_in(&data);
    let out = swarm.folder("out");
    let (mut leecher, got, pa, _) = leecher_losing_its_only_seeder(&swarm, &data, 8, &out, &[]);
    let (_b, _, b_addr) = real_seeder(&swarm, "b", &data);

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(got.len(), 8);
    assert_eq!(s.chunks_from(pa.addr), 8, "{}", run.dump());
    assert_eq!(s.chunks_from(b_addr), total - 8, "{}", run.dump());
}

/// Case 5: no seeder comes back: after `--timeout 3` without data the leecher exits 1 with one
/// clear sentence, keeps the `.part` (with what it verified) and writes nothing under the final
/// name; the same command resumes from the `.part` once a seeder is back.
#[test]
fn without_seeders_the_leecher_gives_up_and_keeps_the_part() {
    let swarm = Swarm::new(BINS);
    let data = test_file(52);
    let total = chunks_in(&data);
    let out = swarm.folder("out");
    let (mut leecher, got, _pa, id) =
        leecher_losing_its_only_seeder(&swarm, &data, 8, &out, &["--timeout", "3"]);
    let lost_at = Instant::now();

    let run = finish(&mut leecher);
    let waited = lost_at.elapsed();
    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    run.assert_fails_with("leecher: no peer could provide f.bin for");
    run.assert_fails_with("the partial download is kept in");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("leecher:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error\n{}", run.dump());
    assert!(errors[0].contains("f.bin.part"), "{}", run.dump());
    assert!(!out.join("f.bin").exists(), "nothing under the final name");
    let part = part_of(&out, "f.bin", &id);
    assert!(part.exists(), "the .part is kept");
    wait_part_chunks(&part, &data, CHUNK, &got);
    assert!(waited.as_secs_f64() < 30.0, "gave up after {waited:?}");

    // Later, with a seeder back, the same command picks up from the .part.
    let (_b, _, b_addr) = real_seeder(&swarm, "b", &data);
    let run = swarm.run_leecher(&out, &["--no-seed", "--timeout", "3", &id]);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.resumed, Some((8, total - 8)), "{}", run.dump());
    assert_eq!(s.chunks_from(b_addr), total - 8, "{}", run.dump());
}

/// Case 6: the leecher is SIGKILLed after 10 chunks (from a counting peer, the only source); the
/// same command re-verifies the `.part` and fetches exactly the other chunks, each once.
#[test]
fn a_killed_leecher_resumes_where_it_stopped() {
    let swarm = Swarm::new(BINS);
    let data = test_file(61);
    let total = chunks_in(&data);
    let gate = Gate::closed();
    gate.allow(10);
    let file = Served::new("f.bin", &data, CHUNK as u32);
    let id = file.id.to_hex();
    let peer = HostilePeer::start(&swarm.tracker_addr, vec![file], Mode::Honest, gate);
    let out = swarm.folder("out");
    let args = ["--no-seed", id.as_str()];

    let mut first = swarm.leecher_in(&out, &args);
    let before = peer.events.wait("10 chunks served", |c| c.served == 10);
    wait_part_chunks(
        &part_of(&out, "f.bin", &id),
        &data,
        CHUNK,
        &before.served_indices,
    );
    first.kill();
    // The killed leecher's connections are gone before the second run may be served.
    peer.events
        .wait("the killed leecher's connections to end", |c| {
            c.ended == c.connections
        });
    peer.gate.open_all();

    let run = swarm.run_leecher(&out, &args);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    assert!(
        run.stderr
            .contains("resuming: chunks already on disk and verified"),
        "{}",
        run.dump()
    );
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.resumed, Some((10, total - 10)), "{}", run.dump());
    let after = peer.events.now();
    let mut second: Vec<u32> = after.served_indices[10..].to_vec();
    second.sort();
    let expected: Vec<u32> = (0..total)
        .filter(|i| !before.served_indices.contains(i))
        .collect();
    assert_eq!(second, expected, "only the missing chunks, each once");
    assert!(!part_of(&out, "f.bin", &id).exists());
}

/// Case 6: a `.part` holding a different file's bytes is never mixed in. An older version
/// sharing its first half: exactly the chunks that verify are kept. A bigger, unrelated file:
/// nothing is kept. Either way the result is byte-identical.
#[test]
fn a_part_of_another_file_is_never_mixed_in() {
    let swarm = Swarm::new(BINS);
    let data = test_file(62);
    let total = chunks_in(&data);
    let file = Served::new("f.bin", &data, CHUNK as u32);
    let id = file.id.to_hex();
    let peer = HostilePeer::start(&swarm.tracker_addr, vec![file], Mode::Honest, Gate::open());

    // An older version of f.bin: the same first 32 chunks, then different bytes.
    let mut older = data.clone();
    for b in &mut older[32 * CHUNK + 5..] {
        *b ^= 0x5a;
    }
    assert_ne!(Served::new("f.bin", &older, CHUNK as u32).id.to_hex(), id);
    let out = swarm.folder("older");
    std::fs::write(part_of(&out, "f.bin", &id), &older).unwrap();
    let run = swarm.run_leecher(&out, &["--no-seed", &id]);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.resumed, Some((32, total - 32)), "{}", run.dump());
    let mut served = peer.events.now().served_indices;
    served.sort();
    assert_eq!(served, (32..total).collect::<Vec<u32>>());

    // A bigger, unrelated file left as the .part.
    let out = swarm.folder("other");
    std::fs::write(
        part_of(&out, "f.bin", &id),
        pattern(data.len() + 3 * CHUNK, 99),
    )
    .unwrap();
    let run = swarm.run_leecher(&out, &["--no-seed", &id]);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.resumed, None, "nothing of it is kept\n{}", run.dump());
    assert_eq!(
        peer.events.now().served,
        (total - 32) + total,
        "every chunk fetched"
    );
}

/// Case 7: the tracker is SIGKILLed and restarted on the same address. Both seeders notice (their
/// heartbeat is unknown) and register again, within about one heartbeat interval (1 s); a
/// leecher started after the restart finds them.
#[test]
fn seeders_register_again_after_a_tracker_restart() {
    let mut swarm = Swarm::new(BINS);
    let data = test_file(71);
    let (a, id, a_addr) = real_seeder(&swarm, "a", &data);
    let (b, _, b_addr) = real_seeder(&swarm, "b", &data);
    let file = FileId::from_hex(&id).unwrap();
    wait_tracker_peers(&swarm.tracker_addr, file, &[a_addr, b_addr]);

    let restart = Instant::now();
    restart_tracker(&mut swarm);
    assert_eq!(
        tracker_peers(&swarm.tracker_addr, file).unwrap(),
        Vec::<SocketAddr>::new(),
        "a new tracker knows nobody"
    );
    let took = wait_tracker_peers(&swarm.tracker_addr, file, &[a_addr, b_addr]);
    let since_restart = restart.elapsed();
    eprintln!("seeders registered again {took:?} after the new tracker answered ({since_restart:?} after the kill)");
    for s in [&a, &b] {
        s.wait_stderr("the tracker forgot us (it restarted?); registering again");
    }
    // One interval, plus the client's first retry waits (0.25 s, 0.5 s) and a margin for a
    // loaded machine.
    assert!(
        took.as_secs_f64() < 3.0,
        "took {took:?} to register again\n{}\n{}",
        a.dump(),
        b.dump()
    );

    let out = swarm.folder("out");
    let run = swarm.run_leecher(&out, &["--no-seed", &id]);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(
        s.chunks_from(a_addr) + s.chunks_from(b_addr),
        chunks_in(&data),
        "{}",
        run.dump()
    );
}

/// Case 8: seeder A's file changes on disk after it was hashed. A refuses to serve it (and says
/// why), withdraws it from the tracker, and the leecher gets every chunk from B.
fn changed_file_case(change: impl FnOnce(&Path)) {
    let swarm = Swarm::new(BINS);
    let data = test_file(81);
    let total = chunks_in(&data);
    let (a, id, a_addr) = real_seeder(&swarm, "a", &data);
    let (_b, _, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    change(&swarm.path("a/f.bin"));
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);

    let why = a.wait_stderr("changed on disk");
    assert!(why.contains("no longer serving it"), "{}", a.dump());
    let line = leecher.wait_line(false, "the leecher to drop A", |l| dropped(l, a_addr));
    assert!(line.contains("can no longer serve this data"), "{line}");
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.chunks_from(a_addr), 0, "{}", run.dump());
    assert_eq!(s.chunks_from(pb.addr), total, "{}", run.dump());
    assert_eq!(s.failed, 0, "A sent no wrong data\n{}", run.dump());
    a.wait_stderr("withdrawn from the tracker");
    let file = FileId::from_hex(&id).unwrap();
    wait_tracker_peers(&swarm.tracker_addr, file, &[pb.addr]);
}

#[test]
fn a_file_whose_size_changed_is_not_served() {
    changed_file_case(|path| {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        std::io::Write::write_all(&mut f, b"appended").unwrap();
    });
}

#[test]
fn a_file_whose_content_changed_is_not_served() {
    changed_file_case(|path| {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"overwritten", 5 * CHUNK as u64).unwrap();
    });
}
