//! The reveal policy's tests: what a client is shown, alone or among many, and the counts (those
//! of a client that wants more, and of the first pass, are in `tests_first_pass.rs`).
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use super::*;
use crate::scheduler::Scheduler;

pub(super) fn set(v: &[ChunkIndex]) -> BTreeSet<u32> {
    v.iter().map(|i| i.0).collect()
}

#[test]
fn no_chunk_is_revealed_twice_while_another_is_unrevealed() {
    let mut r = Reveal::new(64, 1);
    let mut all = BTreeSet::new();
    let mut total = 0;
    for c in 0..16u64 {
        let shown = r.join(c, &[]);
        assert!(shown.len() as u32 <= AHEAD);
        assert!(shown.len() >= 2, "client {c}: {shown:?}");
        total += shown.len();
        all.extend(set(&shown));
    }
    assert_eq!(all.len(), total, "a chunk was shown to two clients");
    r.check_invariants();
}

/// A client whose revealed chunks all went to other peers (in flight there) asks for more
/// and is shown chunks it lacks even while the first pass would keep them for others; this
/// is what keeps a lone client from waiting forever on a server that waits for a request.
#[test]
fn a_client_that_wants_more_is_shown_more() {
    let mut r = Reveal::new(64, 4);
    let first = r.join(1, &[]);
    // Other clients take every chunk nobody was shown yet.
    for conn in 2..20 {
        r.join(conn, &[]);
    }
    r.check_invariants();
    let more = r.want_more(1);
    assert_eq!(more.len(), AHEAD as usize);
    assert!(more.iter().all(|i| !first.contains(i)), "new chunks only");
    r.check_invariants();
    // Until nothing is left that it lacks, asking for what it was shown once it holds
    // MAX_REVEALED it did not ask for (then it is shown nothing more).
    let mut shown: BTreeSet<ChunkIndex> = first.into_iter().chain(more).collect();
    loop {
        let mut more = r.want_more(1);
        if more.is_empty() {
            // Nothing new in the first pass: any chunk never sent when it asks again.
            more = r.want_more(1);
        }
        if more.is_empty() {
            if shown.len() as u32 >= MAX_REVEALED && shown.len() < 64 {
                assert_eq!(
                    shown.len() as u32,
                    MAX_REVEALED,
                    "at most that many not asked for"
                );
                for i in &shown {
                    r.requested(1, *i);
                }
                continue;
            }
            break;
        }
        assert!(
            more.iter().all(|i| shown.insert(*i)),
            "never the same chunk twice"
        );
    }
    assert_eq!(shown.len(), 64);
    assert!(
        r.want_more(99).is_empty(),
        "an unknown connection is shown nothing"
    );
    r.check_invariants();
}

#[test]
fn what_the_swarm_has_is_revealed_last() {
    let mut r = Reveal::new(64, 2);
    let first_half: Vec<bool> = (0..64).map(|i| i < 32).collect();
    let one = set(&r.join(1, &first_half));
    assert!(one.iter().all(|i| *i >= 32));
    let two = set(&r.join(2, &[]));
    assert_eq!(two.len(), AHEAD as usize);
    assert!(two.iter().all(|i| *i >= 32), "client 1 has 0..32: {two:?}");
    assert!(one.is_disjoint(&two));
    assert!(r.join(3, &[true; 64]).is_empty(), "a complete client");
    r.check_invariants();
}

/// A lone client is shown two chunks on joining, and one more for each it asks for: it is kept
/// [`AHEAD`] chunks ahead of its requests, however many it has in flight.
#[test]
fn a_lone_client_is_kept_a_few_chunks_ahead_of_its_requests() {
    let mut r = Reveal::new(64, 3);
    let mut shown: VecDeque<ChunkIndex> = r.join(1, &[]).into();
    assert_eq!(shown.len(), AHEAD as usize);
    let mut asked = Vec::new();
    while asked.len() < 6 {
        let i = shown.pop_front().unwrap();
        asked.push(i);
        let more = r.requested(1, i);
        assert_eq!(more.len(), 1, "one more for each asked");
        assert!(!asked.contains(&more[0]) && !shown.contains(&more[0]));
        shown.extend(more);
    }
    assert_eq!(shown.len(), AHEAD as usize, "two ahead of six asked");
    assert!(
        r.requested(1, asked[0]).is_empty(),
        "asked twice: no change"
    );
    assert!(r.served(1, asked[0]).is_empty(), "nothing until it asks");
    let again = r.client_have(1, shown[0]);
    assert_eq!(again.len(), 1, "one it lacks for the one it got elsewhere");
    assert!(r.client_have(1, ChunkIndex(999)).is_empty(), "out of range");
    assert!(
        r.client_have(7, ChunkIndex(0)).is_empty(),
        "unknown connection"
    );
    r.check_invariants();
    r.leave(1);
    r.check_invariants();
}

/// One client, four complete peers each with its own `Reveal`, the real scheduler with a
/// window of 6 per peer; each round every peer sends one requested chunk. If no window ever
/// starves, 64 chunks take 16 rounds.
#[test]
fn a_lone_client_of_four_complete_peers_never_starves() {
    const N: u32 = 64;
    for seed in 0..20 {
        let peers: Vec<SocketAddr> = (1..=4)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let mut sched = Scheduler::new(N, &[], seed);
        let mut reveals: Vec<Reveal> = (0..4).map(|p| Reveal::new(N, seed * 10 + p)).collect();
        let mut queues: Vec<VecDeque<ChunkIndex>> = vec![VecDeque::new(); 4];
        let mut sent = [0u32; 4];
        for (p, r) in reveals.iter_mut().enumerate() {
            let mut bits = vec![false; N as usize];
            for i in r.join(0, &[]) {
                bits[i.0 as usize] = true;
            }
            sched.peer_bitfield(peers[p], &bits);
        }
        let mut rounds = 0;
        while !sched.is_complete() {
            rounds += 1;
            assert!(rounds <= 40, "seed {seed}: stuck");
            for p in 0..4 {
                // The worker: requests until its window is full; when the peer showed too
                // little for that, it asks the peer to show more (again after each Have).
                while queues[p].len() < 6 {
                    match sched.next_for(peers[p]) {
                        Some(i) => {
                            queues[p].push_back(i);
                            for more in reveals[p].requested(0, i) {
                                sched.peer_have(peers[p], more);
                            }
                        }
                        None => {
                            let more = reveals[p].want_more(0);
                            if more.is_empty() {
                                break;
                            }
                            for i in more {
                                sched.peer_have(peers[p], i);
                            }
                        }
                    }
                }
                // Before anything arrived the peers' random reveals may overlap; once a chunk
                // arrived, each tops up what the others took.
                let enough = if rounds == 1 { 1 } else { 6 };
                if queues[p].len() < enough && sched.done_count() + 24 < N {
                    panic!("seed {seed}, round {rounds}: peer {p}'s window starved");
                }
            }
            for p in 0..4 {
                let Some(i) = queues[p].pop_front() else {
                    continue;
                };
                for more in reveals[p].served(0, i) {
                    sched.peer_have(peers[p], more);
                }
                sent[p] += 1;
                if sched.completed(peers[p], i, 1) == crate::scheduler::Completion::Accepted {
                    for (q, r) in reveals.iter_mut().enumerate() {
                        for more in r.client_have(0, i) {
                            sched.peer_have(peers[q], more);
                        }
                    }
                }
            }
            sched.check_invariants();
        }
        assert!(
            rounds <= 18,
            "seed {seed}: {rounds} rounds for 64 chunks from 4 peers"
        );
        assert!(
            sent.iter().all(|s| *s >= 12),
            "seed {seed}: uneven {sent:?}"
        );
    }
}

/// A crude swarm of 16 clients in rounds: each round the seeder sends one chunk to a client
/// that asks for a revealed one, and every client sends one chunk to another that lacks it.
/// Returns what the seeder sent, in order.
fn seeder_upload(chunks: u32, clients: usize, seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut r = Reveal::new(chunks, seed);
    let n = chunks as usize;
    let mut has = vec![vec![false; n]; clients];
    let mut shown = vec![vec![false; n]; clients];
    for (c, s) in shown.iter_mut().enumerate() {
        for i in r.join(c as u64, &[]) {
            s[i.0 as usize] = true;
        }
    }
    let mut uploads = Vec::new();
    let give = |c: usize,
                i: usize,
                has: &mut Vec<Vec<bool>>,
                r: &mut Reveal,
                shown: &mut Vec<Vec<bool>>| {
        has[c][i] = true;
        for more in r.client_have(c as u64, ChunkIndex(i as u32)) {
            shown[c][more.0 as usize] = true;
        }
    };
    while has.iter().any(|h| h.contains(&false)) {
        // The seeder serves a random client that asks for a chunk it was shown and lacks.
        let asking: Vec<(usize, usize)> = (0..clients)
            .flat_map(|c| (0..n).map(move |i| (c, i)))
            .filter(|&(c, i)| shown[c][i] && !has[c][i])
            .collect();
        if !asking.is_empty() {
            let (c, i) = asking[rng.usize(0..asking.len())];
            uploads.push(i);
            for more in r.served(c as u64, ChunkIndex(i as u32)) {
                shown[c][more.0 as usize] = true;
            }
            give(c, i, &mut has, &mut r, &mut shown);
        }
        // Every client sends one chunk it has to a random client lacking it.
        for from in 0..clients {
            let offers: Vec<(usize, usize)> = (0..clients)
                .flat_map(|c| (0..n).map(move |i| (c, i)))
                .filter(|&(c, i)| has[from][i] && !has[c][i])
                .collect();
            if !offers.is_empty() {
                let (c, i) = offers[rng.usize(0..offers.len())];
                give(c, i, &mut has, &mut r, &mut shown);
            }
        }
    }
    r.check_invariants();
    uploads
}

#[test]
fn the_seeder_sends_new_chunks_and_little_more_than_the_file() {
    for seed in 0..5 {
        let sent = seeder_upload(64, 16, seed);
        assert!(
            sent.len() < 2 * 64,
            "seed {seed}: sent {} chunks",
            sent.len()
        );
        let distinct = sent.iter().take(64).collect::<BTreeSet<_>>().len();
        assert!(
            distinct >= 56,
            "seed {seed}: {distinct} distinct chunks among the first 64 sent"
        );
    }
}

#[test]
fn random_operations_keep_the_counts() {
    let mut rng = fastrand::Rng::with_seed(5);
    for round in 0..200 {
        let n = rng.u32(0..12);
        let mut r = Reveal::new(n, round);
        for _ in 0..200 {
            let c = rng.u64(0..4);
            let i = ChunkIndex(rng.u32(0..n + 2));
            let shown = match rng.u8(0..10) {
                4 => r.requested(c, i),
                5 => r.want_more(c),
                6 => r.declines(c, i).unwrap_or_default(),
                7 => {
                    r.refused(c, i);
                    Vec::new()
                }
                8 => r.send_or_decline(c, i).unwrap_or_default(),
                9 => {
                    r.not_sent(c);
                    Vec::new()
                }
                0 => {
                    let bits: Vec<bool> = (0..rng.u32(0..n + 2)).map(|_| rng.bool()).collect();
                    r.join(c, &bits)
                }
                1 => r.client_have(c, i),
                2 => r.served(c, i),
                _ => {
                    r.leave(c);
                    Vec::new()
                }
            };
            assert!(shown.iter().all(|i| i.0 < n));
            r.check_invariants();
        }
    }
}

/// A file far larger than a pick weighs: one client is shown, and sent, every chunk exactly
/// once, the counts stay consistent, and a pick weighs a sample, not the file (this ran
/// 10^8 steps per 10,000 chunks before).
#[test]
fn a_large_file_is_revealed_whole_by_sampled_picks() {
    let n = 20_000u32;
    let mut r = Reveal::new(n, 7);
    let mut queue: VecDeque<ChunkIndex> = r.join(1, &[]).into();
    let mut sent = vec![0u32; n as usize];
    while let Some(i) = queue.pop_front() {
        sent[i.0 as usize] += 1;
        queue.extend(r.served(1, i));
        if i.0 % 4096 == 0 {
            r.check_invariants();
        }
    }
    r.check_invariants();
    assert!(sent.iter().all(|s| *s == 1), "every chunk once");
    assert_eq!(r.target(), MIN_REVEALED, "nothing left to show");
}
