//! Super-seeding: which chunks a complete peer advertises to each client, so that its upload goes
//! to chunks the swarm does not have yet (BEP 16's idea) without starving a client that downloads
//! alone from several complete peers. Sans-IO; the rules are in `SCHEDULER.md`.
//!
//! One [`Reveal`] per complete file, shared by every server connection of that file. Each call
//! names one connection and returns the chunks to reveal to that connection only (its Bitfield on
//! [`Reveal::join`], a Have each afterwards). Reveal is advice, not access control: a request for
//! a chunk not revealed is still served.

use std::collections::HashMap;

use shoal_proto::ChunkIndex;

/// A server connection, as the server numbers them.
pub type ConnId = u64;

/// Fewest chunks kept revealed to a client that lacks them, so its requests keep our uplink busy.
pub const MIN_REVEALED: u32 = 2;
/// Most chunks kept revealed to a client that lacks them: more than a worker's window (6) with
/// room to spare, so a client alone with several complete peers never starves.
pub const MAX_REVEALED: u32 = 32;
/// Most chunks revealed on joining: a worker's window, which keeps a lone client busy until the
/// first chunk arrives, while clients that join a moment later still find chunks to show them.
pub const JOIN_REVEALED: u32 = 6;
/// Most eligible chunks a pick weighs: all of them in a file of up to this many chunks; in a
/// larger one, this many found from a random place on. A pick then costs the same however large
/// the file (a full scan per chunk served made serving quadratic: 10^8 steps for 10,000 chunks).
pub const PICK_SAMPLE: usize = 256;

/// One chunk as one client stands with it, from our point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// It lacks the chunk and we have not revealed it.
    Lacks,
    /// We revealed it; the client lacks it and we have not sent it.
    Revealed,
    /// The client has it (its Bitfield or a Have) or we sent it.
    Got,
}

struct Client {
    state: Vec<State>,
    revealed: u32,
    got: u32,
}

pub struct Reveal {
    num_chunks: u32,
    clients: HashMap<ConnId, Client>,
    /// Per chunk: connected clients in `Got`, and in `Revealed`.
    copies: Vec<u32>,
    pending: Vec<u32>,
    /// Per chunk: how many times we sent it.
    served: Vec<u32>,
    /// Chunks we never sent.
    unserved: u32,
    /// Chunks we never sent and show to no client: what the first pass can still reveal.
    free: u32,
    /// Connected clients that lack some chunk.
    partial: u32,
    rng: fastrand::Rng,
}

impl Reveal {
    /// The policy for a file of `num_chunks` chunks; `seed` drives the random tie-breaks, so that
    /// several complete peers reveal different chunks to the same client.
    pub fn new(num_chunks: u32, seed: u64) -> Reveal {
        let n = num_chunks as usize;
        Reveal {
            num_chunks,
            clients: HashMap::new(),
            copies: vec![0; n],
            pending: vec![0; n],
            served: vec![0; n],
            unserved: num_chunks,
            free: num_chunks,
            partial: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A client connected, having `client_has` (shorter means the rest is false): what to put in
    /// our Bitfield for it. A second join of the same connection starts it afresh.
    pub fn join(&mut self, conn: ConnId, client_has: &[bool]) -> Vec<ChunkIndex> {
        self.leave(conn);
        let n = self.num_chunks as usize;
        let mut client = Client {
            state: vec![State::Lacks; n],
            revealed: 0,
            got: 0,
        };
        for (i, _) in client_has.iter().take(n).enumerate().filter(|(_, h)| **h) {
            client.state[i] = State::Got;
            client.got += 1;
            self.copies[i] += 1;
        }
        if client.got < self.num_chunks {
            self.partial += 1;
        }
        self.clients.insert(conn, client);
        self.top_up(conn, JOIN_REVEALED)
    }

    /// The client got `index` (from anyone): more to reveal to it.
    pub fn client_have(&mut self, conn: ConnId, index: ChunkIndex) -> Vec<ChunkIndex> {
        self.got(conn, index.0);
        self.top_up(conn, MAX_REVEALED)
    }

    /// We sent `index` to the client: more to reveal to it.
    pub fn served(&mut self, conn: ConnId, index: ChunkIndex) -> Vec<ChunkIndex> {
        let i = index.0 as usize;
        if i < self.served.len() {
            if self.served[i] == 0 {
                self.unserved -= 1;
                if self.pending[i] == 0 {
                    self.free -= 1;
                }
            }
            self.served[i] += 1;
        }
        self.got(conn, index.0);
        self.top_up(conn, MAX_REVEALED)
    }

    /// The client can use none of the chunks revealed to it so far (it asked other peers for
    /// them): reveal up to [`JOIN_REVEALED`] more that it lacks, chosen as the Haves after a
    /// served chunk are, but also among chunks sent or shown before, since this client must not starve.
    pub fn want_more(&mut self, conn: ConnId) -> Vec<ChunkIndex> {
        let Some(client) = self.clients.get(&conn) else {
            return Vec::new();
        };
        let upto = client.revealed + JOIN_REVEALED;
        self.pick(conn, upto, false)
    }

    /// The connection closed.
    pub fn leave(&mut self, conn: ConnId) {
        let Some(client) = self.clients.remove(&conn) else {
            return;
        };
        for (i, s) in client.state.iter().enumerate() {
            match s {
                State::Got => self.copies[i] -= 1,
                State::Revealed => {
                    self.pending[i] -= 1;
                    if self.pending[i] == 0 && self.served[i] == 0 {
                        self.free += 1;
                    }
                }
                State::Lacks => {}
            }
        }
        if client.got < self.num_chunks {
            self.partial -= 1;
        }
    }

    /// How many chunks to keep revealed to each client that lacks them: the chunks we never sent
    /// nor show to anyone yet, shared among the clients that lack some, so that while the swarm
    /// lacks chunks each is revealed about once; within [`MIN_REVEALED`]..=[`MAX_REVEALED`].
    pub fn target(&self) -> u32 {
        (self.free / self.partial.max(1)).clamp(MIN_REVEALED, MAX_REVEALED)
    }

    fn got(&mut self, conn: ConnId, i: u32) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        let i = i as usize;
        match client.state.get(i) {
            None | Some(State::Got) => return,
            Some(State::Revealed) => {
                client.revealed -= 1;
                self.pending[i] -= 1;
                if self.pending[i] == 0 && self.served[i] == 0 {
                    self.free += 1;
                }
            }
            Some(State::Lacks) => {}
        }
        client.state[i] = State::Got;
        client.got += 1;
        self.copies[i] += 1;
        if client.got == self.num_chunks {
            self.partial -= 1;
        }
    }

    /// Reveals to `conn` until it has [`Reveal::target`] chunks revealed that it lacks, and no
    /// more than `at_most`. While we
    /// have not sent every chunk once, only chunks we never sent and show to no other client that
    /// lacks them: so our uplink sends each chunk once before any twice (a client may get fewer,
    /// or none, and trades with the others meanwhile). Among the eligible: those the clients we
    /// know have or were shown fewest times first; then the ones fewest have (a chunk only shown
    /// is not in the swarm yet), then those we sent fewest times, then at random.
    fn top_up(&mut self, conn: ConnId, at_most: u32) -> Vec<ChunkIndex> {
        let target = self.target().min(at_most);
        let first_pass = self.unserved > 0;
        self.pick(conn, target, first_pass)
    }

    /// Reveals to `conn` until it has `target` chunks revealed that it lacks; with `first_pass`,
    /// only chunks never sent and shown to no other client.
    fn pick(&mut self, conn: ConnId, target: u32, first_pass: bool) -> Vec<ChunkIndex> {
        let Some(client) = self.clients.get_mut(&conn) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let n = client.state.len();
        while client.revealed < target {
            if first_pass && self.free == 0 {
                // Every chunk never sent is shown to someone already: nothing is eligible.
                break;
            }
            let mut best: Option<(usize, (u32, u32, u32))> = None;
            let mut ties = 0;
            // A small file is weighed whole, from its start (as it always was); a large one from
            // a random place, until PICK_SAMPLE eligible chunks were seen.
            let start = if n > PICK_SAMPLE {
                self.rng.usize(0..n)
            } else {
                0
            };
            let mut seen = 0;
            for i in (start..n).chain(0..start) {
                if client.state[i] != State::Lacks {
                    continue;
                }
                if first_pass && (self.served[i] > 0 || self.pending[i] > 0) {
                    continue;
                }
                if seen == PICK_SAMPLE {
                    break;
                }
                seen += 1;
                let key = (
                    self.copies[i] + self.pending[i],
                    self.copies[i],
                    self.served[i],
                );
                match best {
                    Some((_, b)) if key > b => {}
                    Some((_, b)) if key == b => {
                        ties += 1;
                        if self.rng.u32(0..ties) == 0 {
                            best = Some((i, key));
                        }
                    }
                    _ => {
                        ties = 1;
                        best = Some((i, key));
                    }
                }
            }
            let Some((i, _)) = best else { break };
            client.state[i] = State::Revealed;
            client.revealed += 1;
            if self.pending[i] == 0 && self.served[i] == 0 {
                self.free -= 1;
            }
            self.pending[i] += 1;
            out.push(ChunkIndex(i as u32));
        }
        out
    }

    /// Checks that the counts agree with the clients' states; for tests and the simulation.
    pub fn check_invariants(&self) {
        let n = self.num_chunks as usize;
        let (mut copies, mut pending) = (vec![0u32; n], vec![0u32; n]);
        let mut partial = 0;
        for c in self.clients.values() {
            let count = |s| c.state.iter().filter(|x| **x == s).count() as u32;
            assert_eq!(c.revealed, count(State::Revealed));
            assert_eq!(c.got, count(State::Got));
            partial += u32::from(c.got < self.num_chunks);
            for (i, s) in c.state.iter().enumerate() {
                copies[i] += u32::from(*s == State::Got);
                pending[i] += u32::from(*s == State::Revealed);
            }
        }
        assert_eq!(copies, self.copies);
        assert_eq!(pending, self.pending);
        assert_eq!(partial, self.partial);
        let unserved = self.served.iter().filter(|s| **s == 0).count() as u32;
        assert_eq!(unserved, self.unserved);
        let free = (0..n)
            .filter(|&i| self.served[i] == 0 && self.pending[i] == 0)
            .count() as u32;
        assert_eq!(free, self.free);
    }
}

#[cfg(test)]
mod tests {
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
            assert!(shown.len() as u32 <= JOIN_REVEALED);
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
        assert_eq!(more.len(), JOIN_REVEALED as usize);
        assert!(more.iter().all(|i| !first.contains(i)), "new chunks only");
        r.check_invariants();
        // Until nothing is left that it lacks.
        let mut shown: BTreeSet<ChunkIndex> = first.into_iter().chain(more).collect();
        loop {
            let more = r.want_more(1);
            if more.is_empty() {
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
        assert_eq!(two.len(), JOIN_REVEALED as usize);
        assert!(two.iter().all(|i| *i >= 32), "client 1 has 0..32: {two:?}");
        assert!(one.is_disjoint(&two));
        assert!(r.join(3, &[true; 64]).is_empty(), "a complete client");
        r.check_invariants();
    }

    #[test]
    fn a_lone_client_gets_a_window_at_once_and_more_once_served() {
        let mut r = Reveal::new(64, 3);
        let shown = r.join(1, &[]);
        assert_eq!(shown.len(), JOIN_REVEALED as usize);
        let more = r.served(1, shown[0]);
        assert_eq!(more.len() + shown.len() - 1, MAX_REVEALED as usize);
        assert!(more.iter().all(|m| !shown.contains(m)));
        let again = r.client_have(1, shown[1]);
        assert_eq!(again.len(), 1, "one it lacks for the one it got elsewhere");
        assert!(r.client_have(1, ChunkIndex(999)).is_empty(), "out of range");
        assert!(
            r.client_have(7, ChunkIndex(0)).is_empty(),
            "unknown connection"
        );
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
                    while queues[p].len() < 6 {
                        match sched.next_for(peers[p]) {
                            Some(i) => queues[p].push_back(i),
                            None => break,
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
                let shown = match rng.u8(0..4) {
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
}
