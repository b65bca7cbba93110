//! The serving side of a simulated host: which queued request its uplink sends next, its upload
//! slots (`--no-slots` turns them off), and the seeder's first-pass declines.

use std::cmp::Reverse;

use shoal_proto::ChunkIndex;

use super::slots::Begin;
use super::{nanos, Msg, Sim, SEEDER, UPLINK_DONE};

impl Sim {
    /// A request arrived on `link` of `h`: it gets its turn, waits for one, or is refused; a
    /// turn starts the uplink if it was idle.
    pub(super) fn take_request(&mut self, h: u32, link: u32) {
        if self.p.slots {
            self.admit(h, link);
            if !self.hosts[h as usize].slots.holds(link) {
                return;
            }
        }
        self.kick(h, link);
    }

    /// `link` of `h` may send: the uplink starts on it if it is idle (with `fair_share`, if this
    /// link is not sending already).
    fn kick(&mut self, h: u32, link: u32) {
        if self.p.fair_share {
            if !self.hosts[h as usize].fair.sending_on(link) {
                self.hosts[h as usize].fair.advance(self.now, self.p.upload);
                self.fair_start(h, link);
                self.fair_schedule(h);
            }
        } else if self.hosts[h as usize].sending.is_none() {
            self.start_upload(h);
        }
    }

    /// The requests at the head of `link`'s queue, while it neither holds a slot nor waits for
    /// one, are taken in order as the server takes them: declined by a seeder in its first pass,
    /// refused as busy, or given a slot or a place in the line.
    fn admit(&mut self, h: u32, link: u32) {
        loop {
            let host = &mut self.hosts[h as usize];
            if host.slots.holds(link) || host.slots.waits(link) {
                return;
            }
            let Some(&chunk) = host.links[link as usize].queue.front() else {
                return;
            };
            if h == SEEDER && self.p.reveal && self.decline(link, chunk, false) {
                self.hosts[h as usize].links[link as usize]
                    .queue
                    .pop_front();
                continue;
            }
            let host = &mut self.hosts[h as usize];
            match host.slots.begin(link) {
                Begin::Go => return,
                Begin::Wait => {
                    let l = &mut host.links[link as usize];
                    l.line_more = Some(l.queue.len() > 1);
                    return;
                }
                Begin::Busy => {}
            }
            host.links[link as usize].queue.pop_front();
            let (to, back) = (
                host.links[link as usize].peer,
                host.links[link as usize].back,
            );
            self.out.busy += 1;
            if h == SEEDER && self.p.reveal {
                self.reveal.refused(u64::from(link), ChunkIndex(chunk));
            }
            self.send(Msg::Busy {
                to,
                link: back,
                chunk,
            });
        }
    }

    /// A chunk went out on `link` of `h`, or was declined: the slot is kept, or given to the
    /// first link waiting (returned), and if `link` lost it with requests still queued, those
    /// are taken again.
    fn end_turn(&mut self, h: u32, link: u32) -> Option<u32> {
        if !self.p.slots {
            return None;
        }
        let host = &mut self.hosts[h as usize];
        let more = host.links[link as usize].sent_more;
        let next = host.slots.end(link, more);
        if !self.hosts[h as usize].slots.holds(link) {
            self.admit(h, link);
        }
        next
    }

    /// The next queued request of `link` is taken to be sent (or declined), with whether more
    /// were queued behind it then: the engine reads that before the send, and while a
    /// connection waits for a slot it reads no further request.
    fn take(&mut self, h: u32, link: u32) -> u32 {
        let l = &mut self.hosts[h as usize].links[link as usize];
        let chunk = l.queue.pop_front().expect("a link with a queue");
        l.sent_more = l.line_more.take().unwrap_or(!l.queue.is_empty());
        chunk
    }

    /// A Cancel (`--cancel`) emptied `link`'s queue: a link that waited leaves the line, and one
    /// that holds a slot without sending on it gives the slot to the first waiting.
    pub(super) fn cancelled(&mut self, h: u32, link: u32) {
        let host = &mut self.hosts[h as usize];
        let sending = host.sending.is_some_and(|(l, _)| l == link) || host.fair.sending_on(link);
        if !self.p.slots || sending || !host.links[link as usize].queue.is_empty() {
            return;
        }
        host.links[link as usize].line_more = None;
        if let Some(next) = host.slots.leave(link) {
            self.kick(h, next);
        }
    }

    /// `--check`: every host's slot table holds, and no connection holds a slot, or waits for
    /// one, with nothing to send.
    pub(super) fn check_serving(&self) {
        for h in &self.hosts {
            h.slots.check_invariants();
            for (k, link) in h.links.iter().enumerate() {
                let k = k as u32;
                let sending = h.sending.is_some_and(|(l, _)| l == k) || h.fair.sending_on(k);
                assert!(
                    !h.slots.holds(k) || sending || !link.queue.is_empty(),
                    "a link holds a slot with nothing to send"
                );
                assert!(
                    !h.slots.waits(k) || !link.queue.is_empty(),
                    "a link waits for a slot with nothing to send"
                );
            }
        }
    }

    /// Whether `link` may be sent its queued chunks now.
    fn may_send(&self, h: u32, link: u32) -> bool {
        !self.p.slots || self.hosts[h as usize].slots.holds(link)
    }

    /// The uplink of `h` is free: send the next queued chunk, taking links in turn, as TCP
    /// connections sharing one uplink would (at chunk granularity).
    pub(super) fn start_upload(&mut self, h: u32) {
        loop {
            let n = self.hosts[h as usize].links.len();
            let first = self.hosts[h as usize].next_link;
            let Some(l) = (0..n).map(|k| (first + k) % n).find(|&l| {
                self.may_send(h, l as u32) && !self.hosts[h as usize].links[l].queue.is_empty()
            }) else {
                return;
            };
            let chunk = self.take(h, l as u32);
            self.hosts[h as usize].next_link = (l + 1) % n;
            if h == SEEDER && self.p.reveal && self.decline(l as u32, chunk, true) {
                self.end_turn(h, l as u32);
                continue;
            }
            self.hosts[h as usize].sending = Some((l as u32, chunk));
            let secs = self.p.chunk_bytes as f64 / self.p.upload;
            self.timed
                .push(Reverse((self.now + nanos(secs), UPLINK_DONE, h, l as u32)));
            return;
        }
    }

    /// Whether the seeder's first pass declines `chunk` on `link` (the client is told, and shown
    /// others): `Reveal::declines` when the request is taken, `Reveal::send_or_decline` when
    /// its turn to be sent comes (`sending`; if not declined, it is being sent).
    fn decline(&mut self, link: u32, chunk: u32, sending: bool) -> bool {
        let (conn, index) = (u64::from(link), ChunkIndex(chunk));
        let declined = if sending {
            self.reveal.send_or_decline(conn, index)
        } else {
            self.reveal.declines(conn, index)
        };
        let Some(more) = declined else {
            return false;
        };
        self.reveal_to(link, more);
        let l = &self.hosts[SEEDER as usize].links[link as usize];
        let (to, back) = (l.peer, l.back);
        self.send(Msg::Declined {
            to,
            link: back,
            chunk,
        });
        true
    }

    pub(super) fn uplink_done(&mut self, h: u32) {
        let (l, chunk) = self.hosts[h as usize]
            .sending
            .take()
            .expect("an uplink finished that was sending");
        self.sent(h, l, chunk);
        self.end_turn(h, l);
        self.start_upload(h);
    }

    /// With `fair_share`: starts the next chunk queued on `link` of `h`, if it may send and is
    /// not sending already.
    fn fair_start(&mut self, h: u32, link: u32) {
        let bytes = self.p.chunk_bytes as f64;
        while self.may_send(h, link) && !self.hosts[h as usize].fair.sending_on(link) {
            if self.hosts[h as usize].links[link as usize].queue.is_empty() {
                return;
            }
            let chunk = self.take(h, link);
            if h == SEEDER && self.p.reveal && self.decline(link, chunk, true) {
                if let Some(next) = self.end_turn(h, link) {
                    self.fair_start(h, next);
                }
                continue;
            }
            self.hosts[h as usize].fair.start(link, chunk, bytes);
        }
    }

    pub(super) fn fair_schedule(&mut self, h: u32) {
        let fair = &mut self.hosts[h as usize].fair;
        if let Some(at) = fair.next_done(self.p.upload) {
            let generation = fair.generation;
            self.timed.push(Reverse((at, UPLINK_DONE, h, generation)));
        }
    }

    /// With `fair_share`: chunks of `h` are done; each connection goes on with its next one, or
    /// gives its slot to a waiting one.
    pub(super) fn fair_done(&mut self, h: u32) {
        self.hosts[h as usize].fair.advance(self.now, self.p.upload);
        let done = self.hosts[h as usize].fair.take_finished();
        for &(l, chunk) in &done {
            self.sent(h, l, chunk);
        }
        for (l, _) in done {
            if let Some(next) = self.end_turn(h, l) {
                self.fair_start(h, next);
            }
            self.fair_start(h, l);
        }
        self.fair_schedule(h);
    }

    /// `h` has sent `chunk` on its link `l`: it goes on the wire to the peer.
    fn sent(&mut self, h: u32, l: u32, chunk: u32) {
        self.hosts[h as usize].uploaded += 1;
        let (to, back) = {
            let link = &self.hosts[h as usize].links[l as usize];
            (link.peer, link.back)
        };
        if h == SEEDER {
            self.seeder_sent[chunk as usize] = true;
            if self.out.all_out == 0.0 && self.seeder_sent.iter().all(|s| *s) {
                self.out.all_out = self.now as f64 / 1e9;
            }
        }
        if h == SEEDER && self.p.reveal {
            let more = self.reveal.served(u64::from(l), ChunkIndex(chunk));
            self.reveal_to(l, more);
        }
        self.send(Msg::Chunk {
            to,
            link: back,
            chunk,
        });
    }
}
