//! Issue 3, cases 1 to 4: peers that die, lie, stall or send garbage. The download still ends
//! with a byte-identical file from the honest peers, and the summary says who did what.
//!
//! Honest seeders are the real `seeder` behind a [`Proxy`] whose gate holds their chunks back
//! until the hostile peer has done its damage, so every test is deterministic: the hostile peer
//! is always asked for chunks before an honest one could finish the download alone.

use shoal_testkit::hostile::*;
use shoal_testkit::*;

const BINS: Bins = bins!();

/// Case 1: a real seeder is SIGKILLed once it has delivered half the chunks and while it still
/// owes more; the other seeder delivers exactly the rest.
#[test]
fn a_seeder_killed_half_way_hands_its_chunks_to_the_others() {
    let swarm = Swarm::new(BINS);
    let data = test_file(11);
    let total = chunks_in(&data);
    let half = total / 2;
    let a_gate = Gate::closed();
    a_gate.allow(half as usize);
    let (mut a, id, pa) = gated_seeder(&swarm, "a", &data, a_gate);
    let (_b, _, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);

    let at_kill = pa
        .events
        .wait("A to deliver half the chunks", |c| c.served == half);
    // Really mid-transfer: those chunks are verified on disk, and A owes the leecher more.
    wait_part_chunks(
        &part_of(&out, "f.bin", &id),
        &data,
        CHUNK,
        &at_kill.served_indices,
    );
    pa.events
        .wait("more requests to A than it answered", |c| c.requests > half);
    a.kill();
    pa.events
        .wait("the proxy to see A gone", |c| c.upstream_lost >= 1);
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.chunks_from(pa.addr), half, "{}", run.dump());
    assert_eq!(s.chunks_from(pb.addr), total - half, "{}", run.dump());
    assert!(s.banned.is_empty() && s.failed == 0, "{}", run.dump());
}

/// Case 1, in-process: a peer that dies on its own (closes everything, stops listening) after
/// 20 chunks; the honest seeder delivers everything else.
#[test]
fn a_peer_dying_mid_transfer_is_replaced() {
    let swarm = Swarm::new(BINS);
    let data = test_file(12);
    let total = chunks_in(&data);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let dying = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::DieAfter(20));
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);

    dying.events.wait("the peer to die after 20 chunks", |c| {
        c.served == 20 && c.ended >= 1
    });
    leecher.wait_line(false, "the leecher to drop the dead peer", |l| {
        dropped(l, dying.addr)
    });
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert!(s.chunks_from(dying.addr) <= 20, "{}", run.dump());
    assert_eq!(s.total(), total, "{}", run.dump());
    assert_eq!(
        dying.events.now().served,
        20,
        "a dead peer serves nothing more"
    );
}

/// Case 2: a liar is struck for each bad chunk and banned at the second; the file is right, the
/// summary names the liar, and the leecher never connects to it again.
fn liar_case(mode: Mode, lies_everywhere: bool) {
    let swarm = Swarm::new(BINS);
    let data = test_file(21);
    let total = chunks_in(&data);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let liar = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, mode);
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);

    let peer_field = format!("peer={}", liar.addr);
    leecher.wait_line(false, "the liar to be banned", |l| {
        l.contains("failed its hash") && l.contains(&peer_field) && l.contains("banned=true")
    });
    let connections_at_ban = liar.events.now().connections;
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert!(
        s.line.contains(&format!("banned: {}", liar.addr)),
        "{}",
        run.dump()
    );
    assert!(
        s.line.contains("chunks failed verification"),
        "{}",
        run.dump()
    );
    assert_eq!(s.banned, vec![liar.addr], "{}", run.dump());
    let lies = liar.events.now().lies;
    assert!(
        (2..=lies).contains(&s.failed),
        "{lies} lies told\n{}",
        run.dump()
    );
    assert_eq!(s.total(), total, "{}", run.dump());
    if lies_everywhere {
        assert_eq!(s.chunks_from(liar.addr), 0, "{}", run.dump());
    }
    assert_eq!(
        liar.events.now().connections,
        connections_at_ban,
        "banned for the rest of the download: no new connection\n{}",
        run.dump()
    );
}

#[test]
fn a_peer_lying_on_every_chunk_is_banned() {
    liar_case(Mode::LieAll, true);
}

#[test]
fn a_peer_lying_on_some_chunks_is_banned() {
    // Odd chunks only: any window of 6 consecutive requests holds three of them.
    liar_case(Mode::LieOn((1..65).step_by(2).collect()), false);
}

/// Case 3: a peer silent after hello and one that trickles a few bytes a second are dropped
/// after `--stall-timeout 2`, and the download finishes from the honest seeder.
#[test]
fn stalled_peers_time_out() {
    let swarm = Swarm::new(BINS);
    let data = test_file(31);
    let total = chunks_in(&data);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let silent = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::Silent);
    let trickle = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::Trickle);
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", "--stall-timeout", "2", &id]);

    // Silence, and a trickle of less than 16 KiB per stall window, both count as a stall.
    for (peer, why) in [
        (silent.addr, "sent nothing for 2s"),
        (trickle.addr, "bytes in 2s"),
    ] {
        let line = leecher.wait_line(false, "a stalled peer to time out", |l| dropped(l, peer));
        assert!(line.contains(why), "{line}");
    }
    silent
        .events
        .wait("requests to the silent peer", |c| c.requests > 0);
    trickle
        .events
        .wait("requests to the trickling peer", |c| c.requests > 0);
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.chunks_from(pb.addr), total, "{}", run.dump());
    assert!(s.banned.is_empty(), "{}", run.dump());
}

/// Case 3, endgame: slow peers hold chunks, and the stall timeout is far away (300 s, longer than
/// the test waits for anything). The honest seeder also fetches the chunks they hold, the first
/// verified copy wins, and the download finishes without waiting for any timeout.
#[test]
fn endgame_does_not_wait_for_a_slow_peer() {
    let swarm = Swarm::new(BINS);
    let data = test_file(32);
    let total = chunks_in(&data);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let stall = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::StallChunks);
    let trickle = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::Trickle);
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", "--stall-timeout", "300", &id]);

    // Both slow peers hold chunks before the honest one delivers anything.
    stall
        .events
        .wait("requests to the stalling peer", |c| c.requests > 0);
    trickle
        .events
        .wait("requests to the trickling peer", |c| c.requests > 0);
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.chunks_from(pb.addr), total, "{}", run.dump());
    assert!(
        !run.stderr.contains("sent nothing for"),
        "nobody timed out\n{}",
        run.dump()
    );
}

/// Case 4: one peer sending one kind of garbage. The leecher drops the connection at once, for
/// the reason `why` (not by a timeout: the stall timeout is 30 s), and finishes from the honest
/// seeder.
fn garbage_case(kind: Garbage, why: &str) {
    let swarm = Swarm::new(BINS);
    let data = test_file(40 + kind as u64);
    let total = chunks_in(&data);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let bad = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::Garbage(kind));
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", "--stall-timeout", "30", &id]);

    let line = leecher.wait_line(false, "the garbage sender to be dropped", |l| {
        dropped(l, bad.addr)
    });
    assert!(line.contains(why), "dropped for the garbage: {line}");
    bad.events
        .wait("the garbage to be counted", |c| c.garbage >= 1);
    if kind != Garbage::Truncated {
        // The sender keeps the connection open: the leecher is the one that closed it.
        bad.events.wait("the leecher to close the connection", |c| {
            c.closed_by_client >= 1
        });
    }
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.chunks_from(bad.addr), 0, "{}", run.dump());
    assert_eq!(s.chunks_from(pb.addr), total, "{}", run.dump());
}

#[test]
fn garbage_length_prefix_over_the_maximum() {
    garbage_case(Garbage::OverMax, "exceeds the maximum");
}

#[test]
fn garbage_frame_over_the_chunk_limit() {
    garbage_case(Garbage::OverChunkMax, "exceeds the maximum");
}

#[test]
fn garbage_truncated_frame_then_close() {
    garbage_case(Garbage::Truncated, "in the middle of a frame");
}

#[test]
fn garbage_unknown_message() {
    garbage_case(Garbage::UnknownMessage, "malformed frame header");
}

#[test]
fn garbage_chunk_with_the_wrong_index() {
    garbage_case(Garbage::WrongIndex, "while chunk");
}

#[test]
fn garbage_chunk_with_the_wrong_length() {
    garbage_case(Garbage::WrongLength, "bytes for chunk");
}

/// A peer whose upload slots are always taken refuses every request as busy: the leecher keeps
/// the connection, asks it again after a pause (more than once), and gets the file from the
/// honest seeder meanwhile. Busy is not a fault: nobody is dropped, banned or struck.
#[test]
fn a_busy_peer_is_asked_again_later_and_never_dropped() {
    let swarm = Swarm::new(BINS);
    let data = test_file(17);
    let total = chunks_in(&data);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let busy = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::AlwaysBusy);
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);

    // Asked, refused, and asked again after each pause.
    busy.events
        .wait("the busy peer to be asked three times", |c| c.requests >= 3);
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.chunks_from(busy.addr), 0, "{}", run.dump());
    assert_eq!(s.chunks_from(pb.addr), total, "{}", run.dump());
    assert!(s.banned.is_empty() && s.failed == 0, "{}", run.dump());
    assert!(
        !run.stderr.lines().any(|l| dropped(l, busy.addr)),
        "{}",
        run.dump()
    );
}

/// A peer that declines every request as sent elsewhere (a seeder in its first pass) is asked
/// for each chunk once at most (the leecher forgets that it has a chunk it declined), kept, and
/// never struck; the file comes from the honest seeder.
#[test]
fn a_declined_chunk_is_fetched_from_another_peer() {
    let swarm = Swarm::new(BINS);
    let data = test_file(18);
    let total = chunks_in(&data);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let declines = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::DeclinesAll);
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);

    declines
        .events
        .wait("the declining peer to be asked three times", |c| {
            c.requests >= 3
        });
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.chunks_from(declines.addr), 0, "{}", run.dump());
    assert_eq!(s.chunks_from(pb.addr), total, "{}", run.dump());
    assert!(s.banned.is_empty() && s.failed == 0, "{}", run.dump());
    assert!(
        declines.events.now().requests <= total,
        "each chunk asked once at most: {}",
        run.dump()
    );
    assert!(
        !run.stderr.lines().any(|l| dropped(l, declines.addr)),
        "{}",
        run.dump()
    );
}

/// A peer that declines a chunk, shows it again, and declines it again (an honest seeder declines
/// a client a chunk once at most) is dropped instead of being asked in a loop; the file comes
/// from the honest seeder.
#[test]
fn a_peer_that_declines_a_chunk_twice_is_dropped() {
    let swarm = Swarm::new(BINS);
    let data = test_file(19);
    let total = chunks_in(&data);
    let (_b, id, pb) = gated_seeder(&swarm, "b", &data, Gate::closed());
    let cycler = HostilePeer::one(&swarm, "f.bin", &data, CHUNK as u32, Mode::DeclinesAgain);
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", &id]);

    leecher.wait_stderr("declined chunk");
    pb.gate.open_all();

    let run = finish(&mut leecher);
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let s = Summary::from_stderr(&run.stderr);
    assert_eq!(s.chunks_from(cycler.addr), 0, "{}", run.dump());
    assert_eq!(s.chunks_from(pb.addr), total, "{}", run.dump());
    assert!(
        run.stderr
            .lines()
            .any(|l| dropped(l, cycler.addr) && l.contains("a second time")),
        "{}",
        run.dump()
    );
}
