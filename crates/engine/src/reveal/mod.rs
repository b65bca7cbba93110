//! Super-seeding: which chunks a complete peer advertises to each client, so that its upload goes
//! to chunks the swarm does not have yet (BEP 16's idea) without starving a client that downloads
//! alone from several complete peers. Sans-IO; the rules are in `SCHEDULER.md`.
//!
//! One [`Reveal`] per complete file, shared by every server connection of that file. Each call
//! names one connection and returns the chunks to reveal to that connection only (its Bitfield on
//! [`Reveal::join`], a Have each afterwards). Reveal is advice, not access control: a request for
//! a chunk not revealed is still served, except that in the first pass a chunk sent already (to
//! a client that still has it) or being sent is declined once ([`Reveal::declines`]), revealed
//! or not: the client gets it from the swarm.

use std::collections::{HashMap, HashSet};

use shoal_proto::ChunkIndex;

/// A server connection, as the server numbers them.
pub type ConnId = u64;

/// Fewest chunks kept revealed to a client that lacks them, so its requests keep our uplink busy.
pub const MIN_REVEALED: u32 = 2;
/// Most chunks kept revealed to a client that lacks them: more than a worker's window (6) with
/// room to spare, so a client alone with several complete peers never starves.
pub const MAX_REVEALED: u32 = 32;
/// Most chunks kept revealed to a client beyond those it asked us for and was not sent yet (so
/// also on joining): enough for its next requests, and no more, so that no client holds chunks
/// it will not ask for soon while others have none. (Without it, a client that joined before
/// the others took dozens, and fetched them one by one at the end of the first pass: 0.45 s each
/// over a connection whose congestion window had shrunk to a sixteenth of the uplink.)
pub const AHEAD: u32 = 2;
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
    /// The client asked us for it (revealed or not) and we have not sent it yet.
    Asked,
    /// The client has it (its Bitfield or a Have) or we sent it.
    Got,
}

/// Which chunks a pick may reveal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Eligible {
    /// Never sent, and shown to no client: the first pass.
    Free,
    /// Never sent, asked for by no client, and shown to one client at most: taken from a client
    /// that has not asked for it yet, but never from two (each could ask; the second is
    /// declined).
    NeverAsked,
    /// Never sent, whoever was shown it or asked for it, or declined to this client before (its
    /// next request is served): for a client that found none of the above (it competes for the
    /// chunk; whoever asks first is sent it).
    Unsent,
    /// Any chunk the client lacks.
    Any,
}

struct Client {
    state: Vec<State>,
    /// Chunks in `Revealed` or `Asked`.
    revealed: u32,
    /// Chunks in `Asked`.
    asked: u32,
    /// Its last [`Reveal::want_more`] in the first pass found nothing to show it.
    starved: bool,
    got: u32,
    /// The chunk we are sending it ([`Reveal::send_or_decline`]), until [`Reveal::served`],
    /// [`Reveal::not_sent`] or it leaves.
    sending: Option<u32>,
    /// Chunks we declined it ([`Reveal::declines`]): a request for one of them is served.
    declined: HashSet<u32>,
}

pub struct Reveal {
    num_chunks: u32,
    clients: HashMap<ConnId, Client>,
    /// Per chunk: connected clients in `Got`; in `Revealed` or `Asked`; in `Asked`.
    copies: Vec<u32>,
    pending: Vec<u32>,
    asked: Vec<u32>,
    /// Per chunk: how many times we sent it.
    served: Vec<u32>,
    /// Per chunk: to how many clients we are sending it now.
    in_send: Vec<u32>,
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
            asked: vec![0; n],
            served: vec![0; n],
            in_send: vec![0; n],
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
            asked: 0,
            starved: false,
            got: 0,
            sending: None,
            declined: HashSet::new(),
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
        self.top_up(conn, MAX_REVEALED)
    }

    /// The client got `index` (from anyone): more to reveal to it.
    pub fn client_have(&mut self, conn: ConnId, index: ChunkIndex) -> Vec<ChunkIndex> {
        self.got(conn, index.0);
        self.top_up(conn, MAX_REVEALED)
    }

    /// The client asked us for `index` (we have not sent it yet): more to reveal to it. While we
    /// have chunks never sent, no other client is shown `index` by [`Reveal::want_more`] unless
    /// it found nothing else to ask for.
    pub fn requested(&mut self, conn: ConnId, index: ChunkIndex) -> Vec<ChunkIndex> {
        self.asked(conn, index);
        self.top_up(conn, MAX_REVEALED)
    }

    fn asked(&mut self, conn: ConnId, index: ChunkIndex) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        let i = index.0 as usize;
        match client.state.get(i) {
            Some(State::Lacks) => {
                client.revealed += 1;
                if self.pending[i] == 0 && self.served[i] == 0 {
                    self.free -= 1;
                }
                self.pending[i] += 1;
            }
            Some(State::Revealed) => {}
            None | Some(State::Asked | State::Got) => return,
        }
        client.state[i] = State::Asked;
        client.asked += 1;
        self.asked[i] += 1;
    }

    /// We sent `index` to the client: more to reveal to it.
    pub fn served(&mut self, conn: ConnId, index: ChunkIndex) -> Vec<ChunkIndex> {
        if let Some(client) = self.clients.get_mut(&conn) {
            if let Some(i) = client.sending.take() {
                self.in_send[i as usize] -= 1;
            }
        }
        let i = index.0 as usize;
        if i < self.served.len() {
            tracing::debug!(chunk = i, copy = self.served[i] + 1, conn, "sent");
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

    /// The client has nothing left to ask us for: reveal up to [`AHEAD`] more that it lacks,
    /// chosen as the Haves after a served chunk are. In the first pass (some chunk never sent,
    /// and more than one client lacks some), only chunks never sent that no client asked for
    /// yet, shown to one other client at most (which may not ask for them for a while: it was
    /// shown them before the swarm joined, or has a small window); when the client's last ask
    /// found none of those, any chunk never sent (whoever asks first gets it; no client waits
    /// for ever). After the first pass, or for a lone client, any chunk it lacks. Nothing while
    /// the client has [`MAX_REVEALED`] chunks shown that it did not ask for: asking for more
    /// cannot hoard.
    pub fn want_more(&mut self, conn: ConnId) -> Vec<ChunkIndex> {
        let Some(client) = self.clients.get(&conn) else {
            return Vec::new();
        };
        if client.revealed - client.asked >= MAX_REVEALED {
            return Vec::new();
        }
        let upto = client.revealed + AHEAD;
        // A lone client takes nothing from anyone: any chunk (a seeder that served others before
        // may never leave its first pass, some chunks having gone out from other seeders).
        let eligible = if !self.first_pass() {
            Eligible::Any
        } else if client.starved {
            Eligible::Unsent
        } else {
            Eligible::NeverAsked
        };
        let shown = self.pick(conn, upto, eligible);
        if let Some(client) = self.clients.get_mut(&conn) {
            // Nothing of those: any chunk never sent, but only when it asks again (it trades
            // with the others meanwhile; shown one at once, idle clients made the first pass end
            // later).
            client.starved = eligible == Eligible::NeverAsked && shown.is_empty();
        }
        tracing::debug!(conn, unserved = self.unserved, shown = ?shown, "want more");
        shown
    }

    /// The connection closed.
    pub fn leave(&mut self, conn: ConnId) {
        let Some(client) = self.clients.remove(&conn) else {
            return;
        };
        if let Some(i) = client.sending {
            self.in_send[i as usize] -= 1;
        }
        for (i, s) in client.state.iter().enumerate() {
            match s {
                State::Got => self.copies[i] -= 1,
                State::Revealed | State::Asked => {
                    if *s == State::Asked {
                        self.asked[i] -= 1;
                    }
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
        let i = i as usize;
        self.unreveal(conn, i);
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        if client.state.get(i) != Some(&State::Lacks) {
            return;
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
        let Some(client) = self.clients.get(&conn) else {
            return Vec::new();
        };
        let target = self.target().min(at_most).min(client.asked + AHEAD);
        let eligible = if self.unserved > 0 {
            Eligible::Free
        } else {
            Eligible::Any
        };
        self.pick(conn, target, eligible)
    }

    /// Reveals to `conn` until it has `target` chunks revealed that it lacks, among the
    /// `eligible`.
    fn pick(&mut self, conn: ConnId, target: u32, eligible: Eligible) -> Vec<ChunkIndex> {
        let Some(client) = self.clients.get_mut(&conn) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let n = client.state.len();
        while client.revealed < target {
            if eligible == Eligible::Free && self.free == 0 {
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
                let ok = match eligible {
                    Eligible::Free => self.served[i] == 0 && self.pending[i] == 0,
                    Eligible::NeverAsked => {
                        self.served[i] == 0 && self.asked[i] == 0 && self.pending[i] <= 1
                    }
                    Eligible::Unsent => {
                        self.served[i] == 0 || client.declined.contains(&(i as u32))
                    }
                    Eligible::Any => true,
                };
                if !ok {
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

    /// Takes chunk `i` off what `conn` was shown or asked for (if it is `Revealed` or `Asked`;
    /// else nothing changes): the client's and the chunk's counts follow (a chunk never sent
    /// that nobody is shown any more is free again), and the client lacks it.
    fn unreveal(&mut self, conn: ConnId, i: usize) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        match client.state.get(i) {
            Some(State::Asked) => {
                self.asked[i] -= 1;
                client.asked -= 1;
            }
            Some(State::Revealed) => {}
            _ => return,
        }
        client.revealed -= 1;
        client.state[i] = State::Lacks;
        self.pending[i] -= 1;
        if self.pending[i] == 0 && self.served[i] == 0 {
            self.free += 1;
        }
    }

    /// Checks that the counts agree with the clients' states; for tests and the simulation.
    pub fn check_invariants(&self) {
        let n = self.num_chunks as usize;
        let (mut copies, mut pending, mut asked) = (vec![0u32; n], vec![0u32; n], vec![0u32; n]);
        let mut partial = 0;
        for c in self.clients.values() {
            let count = |s| c.state.iter().filter(|x| **x == s).count() as u32;
            assert_eq!(c.revealed, count(State::Revealed) + count(State::Asked));
            assert_eq!(c.asked, count(State::Asked));
            assert_eq!(c.got, count(State::Got));
            partial += u32::from(c.got < self.num_chunks);
            for (i, s) in c.state.iter().enumerate() {
                copies[i] += u32::from(*s == State::Got);
                pending[i] += u32::from(matches!(s, State::Revealed | State::Asked));
                asked[i] += u32::from(*s == State::Asked);
            }
        }
        assert_eq!(copies, self.copies);
        assert_eq!(pending, self.pending);
        assert_eq!(asked, self.asked);
        assert_eq!(partial, self.partial);
        let mut in_send = vec![0u32; n];
        for c in self.clients.values() {
            if let Some(i) = c.sending {
                in_send[i as usize] += 1;
            }
        }
        assert_eq!(in_send, self.in_send);
        let unserved = self.served.iter().filter(|s| **s == 0).count() as u32;
        assert_eq!(unserved, self.unserved);
        let free = (0..n)
            .filter(|&i| self.served[i] == 0 && self.pending[i] == 0)
            .count() as u32;
        assert_eq!(free, self.free);
    }
}

mod first_pass;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_first_pass;
