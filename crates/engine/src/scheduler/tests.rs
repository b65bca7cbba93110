//! The scheduler's tests: picks, the endgame, faults and the invariants under random events.
use super::*;

fn peer(n: u16) -> PeerKey {
    SocketAddr::from(([127, 0, 0, 1], n))
}

fn all(n: usize) -> Vec<bool> {
    vec![true; n]
}

/// `n` chunks of which the first [`RANDOM_FIRST`] are done, so that picks are rarest first.
fn past_random_start(n: u32, seed: u64) -> Scheduler {
    let have: Vec<bool> = (0..n).map(|i| i < RANDOM_FIRST).collect();
    Scheduler::new(n, &have, seed)
}

#[test]
fn only_chunks_the_peer_has_and_otherwise_wait_for_a_have() {
    let mut s = Scheduler::new(4, &[], 1);
    let (a, silent) = (peer(1), peer(2));
    assert_eq!(
        s.next_for(silent),
        None,
        "a peer that sent no Bitfield has nothing"
    );
    s.peer_bitfield(a, &[false, true]);
    assert_eq!(s.next_for(a), Some(ChunkIndex(1)));
    assert_eq!(
        s.next_for(a),
        None,
        "chunks 0, 2, 3 are missing but a lacks them"
    );
    s.peer_have(a, ChunkIndex(3));
    s.peer_have(a, ChunkIndex(99)); // out of range: ignored
    assert_eq!(s.next_for(a), Some(ChunkIndex(3)));
    assert!(!s.peer_is_complete(a));
    s.check_invariants();
}

/// In endgame a chunk in flight is asked of a second peer only once it is late: twice the
/// typical delivery after it was asked.
#[test]
fn the_endgame_doubles_only_late_chunks() {
    let mut s = Scheduler::new(2, &[], 1);
    let (a, b) = (peer(1), peer(2));
    s.peer_bitfield(a, &all(2));
    s.peer_bitfield(b, &all(2));
    let first = s.next_for(a).unwrap();
    let second = s.next_for(a).unwrap();
    s.set_clock(Duration::from_secs(1));
    s.arrived(first);
    assert_eq!(s.completed(a, first, 1), Completion::Accepted);
    assert_eq!(s.next_for(b), None, "asked 1 s ago, typical delivery 1 s");
    assert_eq!(s.next_late(), Some(Duration::from_secs(2)));
    s.set_clock(Duration::from_millis(1999));
    assert_eq!(s.next_for(b), None);
    s.set_clock(Duration::from_secs(2));
    s.set_clock(Duration::from_secs(1));
    assert_eq!(
        s.next_for(b),
        Some(second),
        "late at 2 s: the clock never goes back"
    );
    assert_eq!(s.next_late(), None);
    s.check_invariants();
}

/// One slow delivery among fast ones moves the typical delivery by a bounded step, and the
/// patience never exceeds `MAX_PATIENCE` however slow the first delivery was.
#[test]
fn one_slow_peer_cannot_hold_the_endgame_back() {
    let (a, b) = (peer(1), peer(2));
    // The last chunk is asked at `at`, after deliveries that took `took` each: when is it late?
    let late_at = |took: &[u64]| {
        let n = took.len() as u32 + 1;
        let mut s = Scheduler::new(n, &[], 1);
        s.peer_bitfield(a, &all(n as usize));
        s.peer_bitfield(b, &all(n as usize));
        let mut now = 0;
        for &t in took {
            s.set_clock(Duration::from_secs(now));
            let i = s.next_for(a).unwrap();
            now += t;
            s.set_clock(Duration::from_secs(now));
            s.arrived(i);
            s.completed(a, i, 1);
        }
        let last = s.next_for(a).unwrap();
        assert_eq!(s.next_for(b), None);
        let late = s.next_late().unwrap() - Duration::from_secs(now);
        s.set_clock(Duration::from_secs(now) + late);
        assert_eq!(s.next_for(b), Some(last));
        late
    };
    let mut took = vec![1; 10];
    assert_eq!(late_at(&took), Duration::from_secs(2));
    took.push(300);
    let late = late_at(&took);
    assert!(late <= Duration::from_millis(3200), "{late:?}");
    assert_eq!(late_at(&[300]), MAX_PATIENCE);
}

/// A complete peer that reveals its chunks is asked for them in the order it showed them
/// (among the rarest), from the first pick on; another peer's ties are broken at random.
#[test]
fn a_revealing_peer_is_asked_in_the_order_it_showed() {
    for seed in 0..8 {
        let mut s = Scheduler::new(16, &[], seed);
        let (seeder, other) = (peer(1), peer(2));
        s.peer_reveals(seeder);
        for i in [9, 2, 14, 5] {
            s.peer_have(seeder, ChunkIndex(i));
        }
        s.peer_have(other, ChunkIndex(14));
        // 14 is the least rare: last.
        let order: Vec<u32> = (0..4).map(|_| s.next_for(seeder).unwrap().0).collect();
        assert_eq!(order, [9, 2, 5, 14], "seed {seed}");
        s.peer_gone(seeder);
        s.check_invariants();
    }
}

#[test]
fn rarest_first_once_past_the_random_start() {
    let mut s = past_random_start(10, 3);
    let (a, b, c) = (peer(1), peer(2), peer(3));
    s.peer_bitfield(a, &all(10));
    let mut b_has = vec![false; 10];
    b_has[5] = true;
    b_has[6] = true;
    s.peer_bitfield(b, &b_has);
    s.peer_bitfield(c, &[false, false, false, false, false, true]);
    assert!(s.peer_is_complete(a) && !s.peer_is_complete(b));
    let picks: Vec<u32> = (0..6).map(|_| s.next_for(a).unwrap().0).collect();
    let mut first: Vec<u32> = picks[..4].to_vec();
    first.sort();
    assert_eq!(first, [4, 7, 8, 9], "held by a alone: rarest");
    assert_eq!(picks[4..], [6, 5], "then held by two, then by three");
    s.check_invariants();
}

#[test]
fn ties_and_the_first_picks_are_random() {
    let firsts: BTreeMap<u32, u32> = (0..40).fold(BTreeMap::new(), |mut m, seed| {
        let mut s = Scheduler::new(64, &[], seed);
        s.peer_bitfield(peer(1), &all(64));
        *m.entry(s.next_for(peer(1)).unwrap().0).or_default() += 1;
        m
    });
    assert!(firsts.len() > 10, "first picks of 40 seeds: {firsts:?}");
    let tied: BTreeMap<u32, u32> = (0..40).fold(BTreeMap::new(), |mut m, seed| {
        let mut s = past_random_start(64, seed);
        s.peer_bitfield(peer(1), &all(64));
        *m.entry(s.next_for(peer(1)).unwrap().0).or_default() += 1;
        m
    });
    assert!(tied.len() > 10, "rarest-first ties of 40 seeds: {tied:?}");
}

#[test]
fn endgame_doubles_up_only_on_chunks_the_peer_has() {
    let mut s = Scheduler::new(3, &[], 5);
    let (a, b) = (peer(1), peer(2));
    s.peer_bitfield(a, &all(3));
    s.peer_bitfield(b, &[true, false, true]);
    let mut got: Vec<u32> = (0..3).map(|_| s.next_for(a).unwrap().0).collect();
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(s.next_for(a), None, "never twice to the same peer");
    let mut dup: Vec<u32> = (0..2).map(|_| s.next_for(b).unwrap().0).collect();
    dup.sort();
    assert_eq!(dup, [0, 2], "b lacks chunk 1");
    assert_eq!(s.next_for(b), None);
    s.check_invariants();
    assert_eq!(s.completed(b, ChunkIndex(0), 10), Completion::Accepted);
    assert_eq!(s.completed(a, ChunkIndex(0), 10), Completion::Duplicate);
    s.check_invariants();
    assert_eq!(s.stats()[&b].chunks, 1);
    assert_eq!(s.stats()[&a].chunks, 0);
}

#[test]
fn the_endgame_begins_with_the_last_missing_chunk_asked_for_and_ends_with_the_download() {
    let mut s = Scheduler::new(2, &[], 7);
    let (a, b) = (peer(1), peer(2));
    s.peer_bitfield(a, &all(2));
    assert!(!s.in_endgame(), "nothing asked for yet");
    let first = s.next_for(a).unwrap();
    assert!(!s.in_endgame());
    let second = s.next_for(a).unwrap();
    assert!(
        s.in_endgame(),
        "both on their way: the worker that took the last one wakes the others"
    );
    assert_eq!(s.completed(a, first, 10), Completion::Accepted);
    assert!(s.in_endgame(), "{second} is still on its way");
    // Its only holder leaves: it is missing again, until another peer is asked for it.
    s.peer_gone(a);
    assert!(!s.in_endgame());
    s.peer_bitfield(b, &all(2));
    assert_eq!(s.next_for(b), Some(second));
    assert!(s.in_endgame());
    assert_eq!(s.completed(b, second, 10), Completion::Accepted);
    assert!(
        s.is_complete() && !s.in_endgame(),
        "done is not the endgame"
    );
    s.check_invariants();
}

#[test]
fn a_lost_peer_gives_its_chunks_and_its_availability_back() {
    let mut s = Scheduler::new(4, &[true, false, false, false], 9);
    let (a, b) = (peer(1), peer(2));
    s.peer_bitfield(a, &all(4));
    s.peer_bitfield(b, &all(4));
    let taken = [s.next_for(a).unwrap(), s.next_for(a).unwrap()];
    s.peer_gone(a);
    s.check_invariants();
    assert!(!s.peer_is_complete(a));
    assert_eq!(s.next_for(a), None, "its have-set is forgotten");
    let mut got: Vec<ChunkIndex> = (0..3).map(|_| s.next_for(b).unwrap()).collect();
    assert!(taken.iter().all(|t| got.contains(t)));
    got.sort();
    for i in got {
        s.completed(b, i, 1);
    }
    assert!(s.is_complete());
    s.check_invariants();
}

#[test]
fn a_new_bitfield_releases_what_the_peer_no_longer_claims() {
    let mut s = Scheduler::new(2, &[], 2);
    let a = peer(1);
    s.peer_bitfield(a, &all(2));
    let first = s.next_for(a).unwrap();
    let mut only_other = vec![true; 2];
    only_other[first.0 as usize] = false;
    s.peer_bitfield(a, &only_other);
    s.check_invariants();
    assert_eq!(s.next_for(a).map(|i| i.0), Some(1 - first.0));
    assert_eq!(s.next_for(a), None);
}

#[test]
fn liars_are_struck_then_banned() {
    let mut s = Scheduler::new(2, &[], 4);
    let (liar, honest) = (peer(1), peer(2));
    s.peer_bitfield(liar, &all(2));
    let i = s.next_for(liar).unwrap();
    assert!(!s.hash_failed(liar, i));
    s.check_invariants();
    let (x, y) = (s.next_for(liar).unwrap(), s.next_for(liar).unwrap());
    assert_ne!(x, y);
    assert!(s.hash_failed(liar, x));
    s.check_invariants();
    assert_eq!(s.next_for(liar), None, "banned");
    s.peer_bitfield(liar, &all(2));
    s.peer_have(liar, ChunkIndex(0));
    s.check_invariants(); // a banned peer's claims do not count
    s.peer_bitfield(honest, &all(2));
    assert!(s.next_for(honest).is_some());
    assert!(s.next_for(honest).is_some());
    assert!(s.stats()[&liar].banned);
}

#[test]
fn a_large_download_from_many_peers_completes() {
    let n = 2048;
    let mut s = Scheduler::new(n, &[], 11);
    let mut rng = fastrand::Rng::with_seed(11);
    for p in 1..=32 {
        let has: Vec<bool> = (0..n).map(|_| p <= 4 || rng.u8(0..4) == 0).collect();
        s.peer_bitfield(peer(p), &has);
    }
    let mut rounds = 0;
    while !s.is_complete() {
        rounds += 1;
        for p in 1..=32 {
            if let Some(i) = s.next_for(peer(p)) {
                s.completed(peer(p), i, 1);
            }
        }
    }
    s.check_invariants();
    assert!(rounds < 200, "took {rounds} rounds");
}

#[test]
fn random_operations_keep_the_invariants() {
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..300 {
        let n = rng.u32(0..20);
        let have: Vec<bool> = (0..n).map(|_| rng.bool()).collect();
        let mut s = Scheduler::new(n, &have, round);
        for _ in 0..300 {
            let p = peer(rng.u16(1..6));
            let i = ChunkIndex(rng.u32(0..n + 2));
            match rng.u8(0..10) {
                9 => {
                    s.release(p, i);
                    s.peer_lacks(p, i);
                }
                0..=2 => {
                    if let Some(got) = s.next_for(p) {
                        assert!(s.haves[&p].has(got.0));
                    }
                }
                3 => {
                    s.completed(p, i, 1);
                }
                4 => {
                    s.hash_failed(p, i);
                }
                5 => s.release(p, i),
                6 => {
                    let len = rng.usize(0..n as usize + 3);
                    let bits: Vec<bool> = (0..len).map(|_| rng.u8(0..4) != 0).collect();
                    s.peer_bitfield(p, &bits);
                }
                7 => s.peer_have(p, i),
                _ => s.peer_gone(p),
            }
            s.check_invariants();
        }
    }
}

/// A chunk a seeder declined (`Elsewhere`) is asked of another holder, and of that seeder only
/// once it shows the chunk again with a Have.
#[test]
fn a_declined_chunk_is_asked_of_others_until_shown_again() {
    let mut s = past_random_start(6, 1);
    let (seeder, other) = (peer(1), peer(2));
    s.peer_have(seeder, ChunkIndex(4));
    assert_eq!(s.next_for(seeder), Some(ChunkIndex(4)));
    s.release(seeder, ChunkIndex(4));
    s.peer_lacks(seeder, ChunkIndex(4));
    s.peer_lacks(seeder, ChunkIndex(5)); // never claimed: nothing changes
    s.peer_lacks(peer(9), ChunkIndex(4)); // unknown peer: nothing changes
    s.check_invariants();
    assert_eq!(s.next_for(seeder), None, "it no longer claims chunk 4");
    s.peer_have(other, ChunkIndex(4));
    assert_eq!(s.next_for(other), Some(ChunkIndex(4)));
    s.release(other, ChunkIndex(4));
    s.peer_have(seeder, ChunkIndex(4));
    assert_eq!(s.next_for(seeder), Some(ChunkIndex(4)), "shown again");
    s.check_invariants();
}
