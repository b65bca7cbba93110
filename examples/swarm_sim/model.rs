//! The simulated swarm: hosts, links and an event queue around the real `Scheduler` (one per
//! leecher) and `Reveal` (the seeder's). Time is simulated; nothing here sleeps or does I/O.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;

use std::time::{Duration, Instant};

use shoal_engine::download::pace::{Pace, BUSY_WAIT, BUSY_WAIT_MOST};
use shoal_engine::reveal::Reveal;
use shoal_engine::scheduler::Scheduler;
use shoal_proto::ChunkIndex;

use super::uplink::FairUplink;
use slots::Slots;

#[path = "client.rs"]
mod client;
#[path = "serve.rs"]
mod serve;
#[path = "slots.rs"]
mod slots;
#[path = "trace.rs"]
mod trace;

/// What one run simulates.
#[derive(Clone, Debug)]
pub struct Params {
    pub leechers: u32,
    pub chunks: u32,
    pub chunk_bytes: u64,
    /// Every host's upload, bytes per second.
    pub upload: f64,
    pub window: u32,
    /// Connections per host at most (the seeder's too).
    pub max_peers: u32,
    /// One-way latency of every message (Request, Have), seconds.
    pub latency: f64,
    /// Leechers register with the tracker at a uniform time in [0, join) seconds.
    pub join: f64,
    /// Super-seeding; without it the seeder advertises every chunk.
    pub reveal: bool,
    /// On completing a chunk, a leecher cancels its other requests for it (a request the uploader
    /// has not started sending is dropped); without it, endgame copies are all sent.
    pub cancel: bool,
    /// Check both structures' invariants after every event (slow; for small runs).
    pub check: bool,
    /// Uplinks shared by all connections at once, as TCP shares them, instead of one chunk at a
    /// time with connections in turn.
    pub fair_share: bool,
    /// Upload slots as the engine gives them (`uploads.rs`); without them every request waits
    /// its turn at the uplink.
    pub slots: bool,
    /// Print the swarm's state every half second (`trace.rs`).
    pub trace: bool,
    pub seed: u64,
}

/// What one run measured.
pub struct Outcome {
    /// Finish time of each leecher, seconds.
    pub finish: Vec<f64>,
    /// Chunks the seeder uploaded.
    pub seeder_chunks: u64,
    /// Chunks uploaded that the receiver already had (endgame duplicates).
    pub wasted_chunks: u64,
    /// When the seeder had sent every chunk at least once, seconds.
    pub all_out: f64,
    /// Chunks uploaded by all leechers, over (leechers x last finish x chunks/s of one uplink).
    pub leecher_busy: f64,
    /// Requests refused as busy (upload slots taken).
    pub busy: u64,
    pub events: u64,
}

/// One side of a connection, kept by the host at this end.
struct Link {
    peer: u32,
    /// Index of the same connection in the peer's links.
    back: u32,
    /// Requests this host has outstanding with the peer (at most the window).
    asked: Vec<u32>,
    /// The engine's pacing of those requests: no more than a quarter of a second of the peer's
    /// measured delivery (`download/pace.rs`), within the window.
    pace: Pace,
    /// Requests from the peer waiting for this host's uplink.
    queue: VecDeque<u32>,
    live: bool,
    /// Whether this host asked the peer (the seeder) to show more since its last Have.
    asked_more: bool,
    /// When a wake-up for a late chunk (endgame) is due on this link, if one is.
    wake_at: Option<u64>,
    /// Until when this host asks the peer nothing, after it refused a request as busy; and how
    /// long the next such pause is (ns), as the worker does.
    busy_until: Option<u64>,
    busy_wait: u64,
    /// Serving: whether further requests were queued behind the chunk being sent when it was
    /// taken (the engine's `more`, read then, not after the send).
    sent_more: bool,
    /// Serving: while the link waits for a slot, whether requests were queued behind the one
    /// that waits (the engine reads no further request meanwhile).
    line_more: Option<bool>,
}

struct Host {
    /// None for the seeder, which has everything.
    sched: Option<Scheduler>,
    links: Vec<Link>,
    /// Uplink: the link and chunk being sent, and where the round-robin resumes.
    sending: Option<(u32, u32)>,
    next_link: usize,
    /// With `fair_share`: the chunks being sent, one per connection at most.
    fair: FairUplink,
    slots: Slots,
    finished: Option<f64>,
    uploaded: u64,
}

enum Msg {
    Request {
        to: u32,
        link: u32,
        chunk: u32,
    },
    Have {
        to: u32,
        link: u32,
        chunk: u32,
    },
    /// A chunk's last byte reaches the requester.
    Chunk {
        to: u32,
        link: u32,
        chunk: u32,
    },
    Cancel {
        to: u32,
        link: u32,
        chunk: u32,
    },
    /// From the seeder: a request declined in its first pass (`Reject { reason: Elsewhere }`).
    Declined {
        to: u32,
        link: u32,
        chunk: u32,
    },
    /// A request refused: the server's upload slots are taken (`Reject { reason: Busy }`).
    Busy {
        to: u32,
        link: u32,
        chunk: u32,
    },
    /// To the seeder: show more (`Header::WantMore`).
    WantMore {
        to: u32,
        link: u32,
    },
}

/// Host 0 is the seeder; leecher n is host n.
const SEEDER: u32 = 0;

fn key(h: u32) -> SocketAddr {
    SocketAddr::from(([10, (h >> 16) as u8, (h >> 8) as u8, h as u8], 7000))
}

fn nanos(secs: f64) -> u64 {
    (secs * 1e9).round() as u64
}

pub struct Sim {
    p: Params,
    hosts: Vec<Host>,
    reveal: Reveal,
    /// Uplink completions and connection set-ups, by time: (time, kind, host, link).
    timed: BinaryHeap<Reverse<(u64, u8, u32, u32)>>,
    /// Messages in flight; one latency for all, so they arrive in the order they were sent.
    wire: VecDeque<(u64, Msg)>,
    now: u64,
    out: Outcome,
    seeder_sent: Vec<bool>,
    /// Simulated time 0 as an `Instant`, for `Pace`, which reads instants.
    epoch: Instant,
}

const UPLINK_DONE: u8 = 0;
const CONNECT: u8 = 1;
/// A worker with room looks again: a chunk in flight elsewhere became late (endgame).
const WAKE: u8 = 2;
/// A worker's pause after a busy refusal is over.
const BUSY_OVER: u8 = 3;
/// `--trace`: a line of the swarm's state is due.
const SAMPLE: u8 = 4;

impl Sim {
    pub fn new(p: Params) -> Sim {
        let mut rng = fastrand::Rng::with_seed(p.seed);
        let n = p.leechers + 1;
        let hosts = (0..n)
            .map(|h| Host {
                sched: (h != SEEDER)
                    .then(|| Scheduler::new(p.chunks, &[], p.seed ^ u64::from(h) << 20)),
                links: Vec::new(),
                sending: None,
                next_link: 0,
                fair: FairUplink::default(),
                slots: Slots::default(),
                finished: None,
                uploaded: 0,
            })
            .collect();
        let mut sim = Sim {
            reveal: Reveal::new(p.chunks, p.seed),
            hosts,
            timed: BinaryHeap::new(),
            wire: VecDeque::new(),
            now: 0,
            seeder_sent: vec![false; p.chunks as usize],
            epoch: Instant::now(),
            out: Outcome {
                finish: Vec::new(),
                seeder_chunks: 0,
                wasted_chunks: 0,
                all_out: 0.0,
                leecher_busy: 0.0,
                busy: 0,
                events: 0,
            },
            p,
        };
        // The tracker: a leecher registers at a random time in [0, join) and then connects to
        // the peers it is told of (the seeder, registered before, and those registered already;
        // later ones connect to it), until either side has max_peers connections. Peers are taken
        // in random order, as a tracker's random sample would give them.
        let joined: Vec<f64> = (0..n)
            .map(|h| {
                if h == SEEDER {
                    0.0
                } else {
                    rng.f64() * sim.p.join
                }
            })
            .collect();
        let mut order: Vec<u32> = (1..n).collect();
        order.sort_by(|a, b| joined[*a as usize].total_cmp(&joined[*b as usize]));
        let mut known: Vec<u32> = vec![SEEDER];
        let cap = sim.p.max_peers as usize;
        for &h in &order {
            // Up to 4 x max_peers candidates, like a few tracker replies.
            let mut tries = 4 * cap;
            let mut candidates: Vec<u32> = Vec::new();
            if known.len() <= tries {
                candidates.clone_from(&known);
                rng.shuffle(&mut candidates);
            } else {
                while tries > 0 {
                    candidates.push(known[rng.usize(0..known.len())]);
                    tries -= 1;
                }
            }
            // A leecher opens at most half its connections itself, so that hosts that came
            // earlier keep room for those that come later (else late ones form an island).
            let mut opened = 0;
            for c in candidates {
                if sim.hosts[h as usize].links.len() >= cap || opened >= cap.div_ceil(2) {
                    break;
                }
                let full = sim.hosts[c as usize].links.len() >= cap;
                let linked = sim.hosts[h as usize].links.iter().any(|l| l.peer == c);
                if !full && !linked {
                    sim.link(h, c, joined[h as usize]);
                    opened += 1;
                }
            }
            known.push(h);
        }
        sim
    }

    fn link(&mut self, a: u32, b: u32, at: f64) {
        let (la, lb) = (
            self.hosts[a as usize].links.len() as u32,
            self.hosts[b as usize].links.len() as u32,
        );
        let (window, chunk) = (self.p.window as usize, self.p.chunk_bytes as u32);
        let new = |peer, back| Link {
            peer,
            back,
            asked: Vec::new(),
            pace: Pace::new(window, chunk),
            queue: VecDeque::new(),
            live: false,
            asked_more: false,
            wake_at: None,
            busy_until: None,
            busy_wait: nanos(BUSY_WAIT.as_secs_f64()),
            sent_more: false,
            line_more: None,
        };
        self.hosts[a as usize].links.push(new(b, lb));
        self.hosts[b as usize].links.push(new(a, la));
        // The connection needs a round trip before either side can ask for anything.
        self.timed
            .push(Reverse((nanos(at + 2.0 * self.p.latency), CONNECT, a, la)));
    }

    pub fn run(mut self) -> Outcome {
        if self.p.trace {
            self.trace_header();
            self.timed.push(Reverse((0, SAMPLE, 0, 0)));
        }
        let leechers = self.p.leechers as usize;
        while self.out.finish.len() < leechers {
            let next_timed = self.timed.peek().map(|Reverse(e)| e.0);
            let next_wire = self.wire.front().map(|(t, _)| *t);
            let timed_first = match (next_timed, next_wire) {
                (None, None) => panic!(
                    "the swarm stalled with {} of {leechers} leechers done",
                    self.out.finish.len()
                ),
                (Some(t), Some(w)) => t <= w,
                (t, _) => t.is_some(),
            };
            if timed_first {
                let Reverse((t, kind, h, l)) = self.timed.pop().unwrap();
                self.now = t;
                if kind == CONNECT {
                    self.connect(h, l);
                } else if kind == SAMPLE {
                    self.sample();
                } else if kind == BUSY_OVER {
                    self.wake(h, l);
                } else if kind == WAKE {
                    let link = &mut self.hosts[h as usize].links[l as usize];
                    if link.wake_at == Some(t) {
                        link.wake_at = None;
                        self.wake(h, l);
                    }
                } else if self.p.fair_share {
                    // `l` is the generation the event was scheduled for.
                    if l == self.hosts[h as usize].fair.generation {
                        self.fair_done(h);
                    }
                } else {
                    self.uplink_done(h);
                }
            } else {
                let (t, msg) = self.wire.pop_front().unwrap();
                self.now = t;
                self.deliver(msg);
            }
            self.out.events += 1;
            if self.p.check {
                self.reveal.check_invariants();
                for h in &self.hosts {
                    if let Some(s) = &h.sched {
                        s.check_invariants();
                    }
                }
                self.check_serving();
            }
        }
        self.out.seeder_chunks = self.hosts[SEEDER as usize].uploaded;
        let last = self.now as f64 / 1e9;
        let per_uplink = last * self.p.upload / self.p.chunk_bytes as f64;
        let up: u64 = self.hosts.iter().skip(1).map(|h| h.uploaded).sum();
        self.out.leecher_busy = up as f64 / (f64::from(self.p.leechers) * per_uplink);
        self.out
    }

    fn instant(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.now)
    }

    fn send(&mut self, msg: Msg) {
        self.wire.push_back((self.now + nanos(self.p.latency), msg));
    }

    fn have_bits(&self, h: u32) -> Vec<bool> {
        match &self.hosts[h as usize].sched {
            None => vec![true; self.p.chunks as usize],
            Some(s) => (0..self.p.chunks)
                .map(|i| s.is_done(ChunkIndex(i)))
                .collect(),
        }
    }

    /// Both sides exchange Bitfields (the seeder's from its reveal policy) and start asking.
    fn connect(&mut self, a: u32, la: u32) {
        let (b, lb) = {
            let l = &self.hosts[a as usize].links[la as usize];
            (l.peer, l.back)
        };
        for (me, my_link, peer, peer_link) in [(a, la, b, lb), (b, lb, a, la)] {
            self.hosts[me as usize].links[my_link as usize].live = true;
            let peer_has = self.have_bits(peer);
            let shown = if peer == SEEDER && self.p.reveal {
                let mut bits = vec![false; self.p.chunks as usize];
                for i in self.reveal.join(u64::from(peer_link), &self.have_bits(me)) {
                    bits[i.0 as usize] = true;
                }
                bits
            } else {
                peer_has
            };
            if let Some(s) = &mut self.hosts[me as usize].sched {
                // As the worker does for a peer whose Welcome says complete (it reveals).
                if peer == SEEDER && self.p.reveal {
                    s.peer_reveals(key(peer));
                }
                s.peer_bitfield(key(peer), &shown);
            }
        }
        self.fill(a, la);
        self.fill(b, lb);
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Request { to, link, chunk } => {
                self.hosts[to as usize].links[link as usize]
                    .queue
                    .push_back(chunk);
                if to == SEEDER && self.p.reveal {
                    let more = self.reveal.requested(u64::from(link), ChunkIndex(chunk));
                    self.reveal_to(link, more);
                }
                self.take_request(to, link);
            }
            Msg::Chunk { to, link, chunk } => self.receive(to, link, chunk),
            Msg::Busy { to, link, chunk } => {
                if !self.refused(to, link, chunk) {
                    return;
                }
                let now = self.now;
                let l = &mut self.hosts[to as usize].links[link as usize];
                // The requests pipelined behind it are refused with it: one pause for them all.
                if l.busy_until.is_none() {
                    let until = now + l.busy_wait;
                    l.busy_until = Some(until);
                    l.busy_wait = (2 * l.busy_wait).min(nanos(BUSY_WAIT_MOST.as_secs_f64()));
                    self.timed.push(Reverse((until, BUSY_OVER, to, link)));
                }
                self.fill(to, link);
                self.fill_all(to);
            }
            Msg::Declined { to, link, chunk } => {
                if !self.refused(to, link, chunk) {
                    return;
                }
                let host = &mut self.hosts[to as usize];
                let peer = key(host.links[link as usize].peer);
                if let Some(s) = &mut host.sched {
                    s.peer_lacks(peer, ChunkIndex(chunk));
                }
                self.fill(to, link);
                self.fill_all(to);
            }
            Msg::Cancel { to, link, chunk } => {
                self.hosts[to as usize].links[link as usize]
                    .queue
                    .retain(|c| *c != chunk);
                self.cancelled(to, link);
            }
            Msg::WantMore { to, link } => {
                if to == SEEDER && self.p.reveal {
                    let more = self.reveal.want_more(u64::from(link));
                    self.reveal_to(link, more);
                }
            }
            Msg::Have { to, link, chunk } => {
                let from = self.hosts[to as usize].links[link as usize].peer;
                if from == SEEDER {
                    self.hosts[to as usize].links[link as usize].asked_more = false;
                }
                if to == SEEDER {
                    if self.p.reveal {
                        let more = self.reveal.client_have(u64::from(link), ChunkIndex(chunk));
                        self.reveal_to(link, more);
                    }
                    return;
                }
                if let Some(s) = &mut self.hosts[to as usize].sched {
                    s.peer_have(key(from), ChunkIndex(chunk));
                }
                self.fill(to, link);
            }
        }
    }

    /// The seeder announces `chunks` on its link `link` (Haves, so with a latency).
    fn reveal_to(&mut self, link: u32, chunks: Vec<ChunkIndex>) {
        let l = &self.hosts[SEEDER as usize].links[link as usize];
        let (to, back) = (l.peer, l.back);
        for i in chunks {
            self.send(Msg::Have {
                to,
                link: back,
                chunk: i.0,
            });
        }
    }
}
