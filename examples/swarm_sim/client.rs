//! The leecher side of a simulated host: its workers asking their peers for chunks (paced, paused
//! after a busy refusal, woken for the endgame), and what it does with a chunk that arrives.

use std::cmp::Reverse;
use std::time::Duration;

use shoal_engine::download::pace::BUSY_WAIT;
use shoal_engine::scheduler::Completion;
use shoal_proto::ChunkIndex;

use super::{key, nanos, Msg, Sim, SEEDER, WAKE};

impl Sim {
    /// The worker of `h` for link `l` asks for chunks until its window is full.
    pub(super) fn fill(&mut self, h: u32, l: u32) {
        let now = self.instant();
        let reveal = self.p.reveal;
        let host = &mut self.hosts[h as usize];
        let Some(sched) = &mut host.sched else { return };
        let link = &mut host.links[l as usize];
        sched.set_clock(Duration::from_nanos(self.now));
        if link.busy_until.is_some_and(|t| t <= self.now) {
            link.busy_until = None;
        }
        let mut asked = Vec::new();
        while link.live && link.busy_until.is_none() && link.asked.len() < link.pace.window() {
            match sched.next_for(key(link.peer)) {
                Some(i) => {
                    link.pace.requested(link.asked.is_empty(), now);
                    link.asked.push(i.0);
                    asked.push(i.0);
                }
                None => break,
            }
        }
        let room = link.live && link.busy_until.is_none() && link.asked.len() < link.pace.window();
        // As the worker does: ask the seeder to show more when what it showed leaves room.
        let want_more = room && reveal && link.peer == SEEDER && !link.asked_more;
        if want_more {
            link.asked_more = true;
        }
        let mut wake = None;
        if let Some(t) = sched.next_late().filter(|_| room) {
            let t = t.as_nanos() as u64;
            if link.wake_at.is_none_or(|w| t < w) {
                link.wake_at = Some(t);
                wake = Some(t);
            }
        }
        let (to, back) = (link.peer, link.back);
        for chunk in asked {
            self.send(Msg::Request {
                to,
                link: back,
                chunk,
            });
        }
        if want_more {
            self.send(Msg::WantMore { to, link: back });
        }
        if let Some(t) = wake {
            self.timed.push(Reverse((t, WAKE, h, l)));
        }
    }

    /// `to`'s request for `chunk` on `link` was refused (busy) or declined: it is no longer
    /// asked there, and goes back to the scheduler. False if it was not asked there.
    pub(super) fn refused(&mut self, to: u32, link: u32, chunk: u32) -> bool {
        let host = &mut self.hosts[to as usize];
        let l = &mut host.links[link as usize];
        let Some(pos) = l.asked.iter().position(|c| *c == chunk) else {
            return false;
        };
        l.asked.remove(pos);
        l.pace.refused(!l.asked.is_empty());
        let peer = key(l.peer);
        if let Some(s) = &mut host.sched {
            s.release(peer, ChunkIndex(chunk));
        }
        true
    }

    /// The idle workers of `h` (nothing outstanding with their peer) look again, as the engine's
    /// `changed` signal wakes them; a worker with requests out looks again when its peer's next
    /// frame comes.
    pub(super) fn fill_all(&mut self, h: u32) {
        for k in 0..self.hosts[h as usize].links.len() as u32 {
            self.wake(h, k);
        }
    }

    /// The worker of `h` for link `l` looks again if it is idle: a timer (a busy pause over, a
    /// chunk late) wakes only a worker that waits with nothing outstanding.
    pub(super) fn wake(&mut self, h: u32, l: u32) {
        if self.hosts[h as usize].links[l as usize].asked.is_empty() {
            self.fill(h, l);
        }
    }

    /// `h` got `chunk` on link `got_on`: its other requests for it are withdrawn.
    pub(super) fn cancel_others(&mut self, h: u32, got_on: u32, chunk: u32) {
        let host = &mut self.hosts[h as usize];
        let mut cancels = Vec::new();
        for (k, link) in host.links.iter_mut().enumerate() {
            if k as u32 != got_on {
                if let Some(pos) = link.asked.iter().position(|c| *c == chunk) {
                    link.asked.remove(pos);
                    cancels.push((link.peer, link.back));
                }
            }
        }
        for (to, link) in cancels {
            self.send(Msg::Cancel { to, link, chunk });
        }
    }

    pub(super) fn receive(&mut self, h: u32, l: u32, chunk: u32) {
        let from = self.hosts[h as usize].links[l as usize].peer;
        let now = self.instant();
        let bytes = self.p.chunk_bytes as usize;
        let host = &mut self.hosts[h as usize];
        let link = &mut host.links[l as usize];
        let Some(pos) = link.asked.iter().position(|c| *c == chunk) else {
            // Cancelled, but the uploader had started sending it.
            self.out.wasted_chunks += 1;
            return;
        };
        link.asked.remove(pos);
        link.busy_wait = nanos(BUSY_WAIT.as_secs_f64());
        link.pace.arrived(bytes, !link.asked.is_empty(), now);
        let sched = host.sched.as_mut().expect("only leechers ask for chunks");
        sched.set_clock(Duration::from_nanos(self.now));
        sched.arrived(ChunkIndex(chunk));
        if sched.completed(key(from), ChunkIndex(chunk), 0) == Completion::Duplicate {
            self.out.wasted_chunks += 1;
        } else {
            let complete = sched.is_complete();
            if complete && host.finished.is_none() {
                let t = self.now as f64 / 1e9;
                host.finished = Some(t);
                self.out.finish.push(t);
            }
            if self.p.cancel {
                self.cancel_others(h, l, chunk);
            }
            for k in 0..self.hosts[h as usize].links.len() {
                let link = &self.hosts[h as usize].links[k];
                if link.live {
                    let (to, back) = (link.peer, link.back);
                    self.send(Msg::Have {
                        to,
                        link: back,
                        chunk,
                    });
                }
            }
        }
        // This worker asks again (a frame came); the idle ones wake on every completion (the
        // engine's `changed` signal): endgame may have begun.
        self.fill(h, l);
        self.fill_all(h);
    }
}
