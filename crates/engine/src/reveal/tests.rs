//! The reveal policy's tests: what a client is shown, alone or among many, and the counts.
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use super::*;
use crate::scheduler::Scheduler;

fn set(v: &[ChunkIndex]) -> BTreeSet<u32> {
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

/// In the first pass a client that wants more is shown chunks another client was shown and has
/// not asked for, but a chunk is taken so from one client once at most: two clients shown it
/// besides its first could each ask for it, and be sent it.
#[test]
fn a_chunk_is_taken_from_a_client_once_at_most() {
    let mut r = Reveal::new(4, 1);
    let a = set(&r.join(1, &[]));
    let b = set(&r.join(2, &[]));
    assert_eq!(a.len() + b.len(), 4, "every chunk shown once");
    assert!(r.join(3, &[]).is_empty(), "nothing free is left");
    let three = set(&r.want_more(3));
    assert_eq!(three.len(), AHEAD as usize);
    assert!(r.join(4, &[]).is_empty());
    let four = set(&r.want_more(4));
    assert_eq!(four.len(), AHEAD as usize);
    assert!(three.is_disjoint(&four), "{three:?} and {four:?}");
    assert!(r.join(5, &[]).is_empty());
    assert!(
        r.want_more(5).is_empty(),
        "every chunk is shown to two clients: nothing yet, even to an idle client"
    );
    assert_eq!(
        r.want_more(5).len() as u32,
        AHEAD,
        "asked again: any chunk never sent, not nothing"
    );
    // Once asked for, a chunk is nobody else's to take: with three of four asked for, the one
    // left is all a client that wants more is shown.
    r.leave(3);
    r.leave(4);
    let mut all: Vec<u32> = a.iter().chain(&b).copied().collect();
    let left = all.pop().unwrap();
    for i in all {
        let owner = if a.contains(&i) { 1 } else { 2 };
        r.requested(owner, ChunkIndex(i));
    }
    r.leave(5);
    assert!(r.join(6, &[]).is_empty());
    assert_eq!(set(&r.want_more(6)), BTreeSet::from([left]));
    r.check_invariants();
}

/// In the first pass, a client that wants more and finds nothing new (never sent, never asked
/// for) is shown nothing, whether or not a chunk it asked us for is on its way (an idle client
/// trades with the others meanwhile); when it asks again, chunks never sent even if another
/// client asked for them (whoever asks first is sent it), never a chunk sent already.
#[test]
fn a_client_that_found_nothing_is_shown_unsent_chunks_next_time() {
    let mut r = Reveal::new(3, 1);
    let a = r.join(1, &[]);
    assert_eq!(a.len(), 2);
    let b = r.join(2, &[]);
    assert_eq!(b.len(), 1, "the one chunk left");
    r.requested(1, a[0]);
    r.served(1, a[0]);
    r.requested(1, a[1]);
    r.requested(2, b[0]);
    assert!(
        r.want_more(2).is_empty(),
        "one chunk sent, two asked for, and one on its way to this client"
    );
    let next = set(&r.want_more(2));
    assert_eq!(next, set(&a[1..]), "the chunk never sent, not the one sent");
    r.check_invariants();
    // The same with nothing on its way: client 3 joins when every chunk is shown or asked.
    let c = r.join(3, &[]);
    assert!(c.is_empty());
    assert!(
        r.want_more(3).is_empty(),
        "idle, but the first pass goes on"
    );
    assert_eq!(
        set(&r.want_more(3)),
        set(&[a[1], b[0]]),
        "asked again: the chunks never sent"
    );
    r.check_invariants();
}

/// A lone client is shown any chunk it lacks when it wants more, even by a seeder whose first
/// pass never ended (it served other clients before, and other seeders sent some chunks).
#[test]
fn a_lone_client_is_shown_any_chunk() {
    let mut r = Reveal::new(4, 1);
    let a = r.join(1, &[]);
    for i in &a {
        r.requested(1, *i);
        r.served(1, *i);
    }
    r.leave(1);
    let b = r.join(2, &[]);
    for i in &b {
        r.requested(2, *i);
    }
    assert_eq!(
        r.want_more(2).len() as u32,
        AHEAD,
        "two sent before, shown again"
    );
    r.check_invariants();
}

/// A client can make us show it no more than about `MAX_REVEALED` chunks it did not ask for,
/// however often it wants more, and others still get theirs.
#[test]
fn wanting_more_cannot_hoard() {
    let mut r = Reveal::new(1000, 1);
    r.join(1, &[]);
    for _ in 0..1000 {
        r.want_more(1);
    }
    let c = &r.clients[&1];
    assert!(
        c.revealed - c.asked < MAX_REVEALED + AHEAD,
        "{}",
        c.revealed
    );
    assert_eq!(
        r.join(2, &[]).len() as u32,
        AHEAD,
        "others still get theirs"
    );
    r.check_invariants();
}

/// In the first pass, a request for a chunk sent to a client that still has it, or being sent
/// to another client, is declined once (the client gets it from the swarm) and the client is
/// shown another chunk instead; asked again, it is sent. A chunk whose only holder left, a lone
/// client, and every client once each chunk went out once, are sent it.
#[test]
fn a_chunk_sent_already_is_declined_once_in_the_first_pass() {
    let mut r = Reveal::new(6, 1);
    let a = r.join(1, &[]);
    r.join(2, &[]);
    r.join(3, &[]);
    r.requested(1, a[0]);
    assert_eq!(r.send_or_decline(1, a[0]), None, "never sent: sent");
    assert!(r.declines(2, a[0]).is_some(), "being sent to client 1");
    assert_eq!(r.declines(2, a[0]), None, "declined once at most");
    r.check_invariants();
    r.served(1, a[0]);
    r.requested(3, a[0]);
    let instead = r.declines(3, a[0]).expect("sent to client 1, which has it");
    assert!(instead.iter().all(|i| *i != a[0]));
    r.check_invariants();
    // Its only holder left: client 4 is sent it.
    r.leave(1);
    r.join(4, &[]);
    assert_eq!(r.declines(4, a[0]), None, "nobody connected has it");
    r.check_invariants();
    // Once every chunk went out once, anyone is sent anything.
    let mut r = Reveal::new(2, 1);
    r.join(1, &[]);
    r.join(2, &[]);
    for i in 0..2 {
        assert_eq!(r.send_or_decline(1, ChunkIndex(i)), None);
        r.served(1, ChunkIndex(i));
    }
    assert_eq!(r.declines(2, ChunkIndex(0)), None, "the first pass is over");
    r.check_invariants();
    // A lone client is never declined.
    let mut r = Reveal::new(4, 1);
    r.join(1, &[]);
    r.served(1, ChunkIndex(0));
    r.join(2, &[true, true, true, true]);
    r.join(3, &[]);
    r.leave(1);
    assert_eq!(r.declines(3, ChunkIndex(0)), None);
    r.check_invariants();
}

/// A client declined a chunk that finds nothing else to ask for is shown that chunk again (when
/// it asks a second time), and is sent it: a client that cannot reach the chunk's holders is not
/// declined for ever.
#[test]
fn a_declined_chunk_is_shown_again_to_a_client_with_nothing_to_ask() {
    let mut r = Reveal::new(2, 1);
    let a = r.join(1, &[]);
    assert_eq!(a.len(), 2);
    assert!(r.join(2, &[]).is_empty());
    r.requested(1, ChunkIndex(0));
    assert_eq!(r.send_or_decline(1, ChunkIndex(0)), None);
    r.served(1, ChunkIndex(0));
    assert!(r.declines(2, ChunkIndex(0)).is_some());
    // Chunk 1 is shown to client 1 only, and never asked for: client 2 may be shown it.
    assert_eq!(r.want_more(2), vec![ChunkIndex(1)]);
    r.requested(2, ChunkIndex(1));
    assert!(r.want_more(2).is_empty(), "nothing new");
    assert_eq!(
        r.want_more(2),
        vec![ChunkIndex(0)],
        "asked again: the declined chunk"
    );
    r.requested(2, ChunkIndex(0));
    assert_eq!(r.send_or_decline(2, ChunkIndex(0)), None, "sent this time");
    r.check_invariants();
}

/// A chunk never sent whose request we refused as busy goes back to the first pass: the next
/// client to be shown chunks may be shown it.
#[test]
fn a_chunk_refused_as_busy_can_be_shown_to_another_client() {
    let mut r = Reveal::new(4, 1);
    let a = r.join(1, &[]);
    let b = r.join(2, &[]);
    assert_eq!(set(&a).len() + set(&b).len(), 4);
    r.requested(1, a[0]);
    r.refused(1, a[0]);
    r.check_invariants();
    let c = r.join(3, &[]);
    assert_eq!(c, vec![a[0]], "the only chunk free again");
    // Client 1 asks again: it is not declined, the chunk was never sent.
    r.requested(1, a[0]);
    assert_eq!(r.declines(1, a[0]), None);
    r.check_invariants();
}
