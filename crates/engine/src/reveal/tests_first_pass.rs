//! The reveal policy's tests for a client that wants more, and for the first pass's declines and
//! busy refusals (`first_pass.rs`).
use std::collections::BTreeSet;

use super::tests::set;
use super::*;

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
