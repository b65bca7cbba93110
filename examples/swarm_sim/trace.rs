//! `--trace`: the swarm's state every half second of simulated time, and why idle uplinks are
//! idle: for each leecher whose uplink sends nothing while a peer of it lacks a chunk it has,
//! what that peer is doing about it.

use std::cmp::Reverse;

use shoal_proto::ChunkIndex;

use super::{nanos, Sim, SAMPLE};

/// Simulated seconds between two lines.
pub const EVERY: f64 = 0.5;

impl Sim {
    pub(super) fn trace_header(&self) {
        println!(
            "{:>6} {:>6} {:>5} {:>6} {:>6} | idle uplink -> peer lacking: {:>6} {:>6} {:>6} {:>6} \
             | requests: {:>6} {:>6} {:>6} {:>6}",
            "t s",
            "held",
            "done",
            "send",
            "idle*",
            "paused",
            "asking",
            "inflt",
            "other",
            "wire",
            "sent",
            "queued",
            "line"
        );
    }

    /// Where the leechers' requests are: on the wire (either way), being sent, queued at a
    /// server behind the connection's earlier requests while it holds a slot, waiting in line
    /// for a slot.
    fn requests_at(&self) -> [u64; 4] {
        let mut at = [0u64; 4];
        for host in &self.hosts[1..] {
            for link in &host.links {
                let server = &self.hosts[link.peer as usize];
                let back = link.back;
                let queue = &server.links[back as usize].queue;
                for &c in &link.asked {
                    let k = if server.sending == Some((back, c)) || server.fair.sending(back, c) {
                        1
                    } else if !queue.contains(&c) {
                        0
                    } else if server.slots.waits(back) {
                        3
                    } else {
                        2
                    };
                    at[k] += 1;
                }
            }
        }
        at
    }

    /// One line of the trace, and the next sample scheduled.
    pub(super) fn sample(&mut self) {
        let n = self.hosts.len() - 1;
        let chunks = self.p.chunks;
        let done_of = |s: &Sim, h: usize, i: u32| match &s.hosts[h].sched {
            None => true,
            Some(sc) => sc.is_done(ChunkIndex(i)),
        };
        let mut held = 0u64;
        let mut finished = 0;
        let mut sending = 0;
        let mut idle_with_demand = 0;
        // (peer paused after Busy, peer has requests out to us, every chunk it could take from
        // us is in flight from elsewhere, anything else: a Have on its way, a pick elsewhere).
        let mut why = [0u64; 4];
        for h in 1..=n {
            let host = &self.hosts[h];
            let sched = host.sched.as_ref().expect("a leecher");
            held += u64::from(sched.done_count());
            finished += usize::from(host.finished.is_some());
            let busy = host.sending.is_some() || host.fair.busy();
            sending += usize::from(busy);
            if busy {
                continue;
            }
            let mut demand = false;
            for link in host.links.iter().filter(|l| l.live) {
                let peer = link.peer as usize;
                let wanted: Vec<u32> = (0..chunks)
                    .filter(|&i| done_of(self, h, i) && !done_of(self, peer, i))
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                demand = true;
                let back = &self.hosts[peer].links[link.back as usize];
                let in_flight =
                    |i: u32| self.hosts[peer].links.iter().any(|l| l.asked.contains(&i));
                let reason = if back.busy_until.is_some_and(|t| t > self.now) {
                    0
                } else if !back.asked.is_empty() {
                    1
                } else if wanted.iter().all(|&i| in_flight(i)) {
                    2
                } else {
                    3
                };
                why[reason] += 1;
            }
            idle_with_demand += usize::from(demand);
        }
        let at = self.requests_at();
        println!(
            "{:>6.2} {:>5.0}% {:>5} {:>6} {:>6} | {:>34} {:>6} {:>6} {:>6} | {:>16} {:>6} {:>6} {:>6}",
            self.now as f64 / 1e9,
            held as f64 * 100.0 / (n as f64 * f64::from(chunks)),
            finished,
            sending,
            idle_with_demand,
            why[0],
            why[1],
            why[2],
            why[3],
            at[0],
            at[1],
            at[2],
            at[3],
        );
        self.timed
            .push(Reverse((self.now + nanos(EVERY), SAMPLE, 0, 0)));
    }
}
