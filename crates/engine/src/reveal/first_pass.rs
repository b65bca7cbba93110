//! The seeder's first pass, where it sends each chunk once before any twice: which requests it
//! declines (`Reject { reason: Elsewhere }`: the swarm has the chunk), and what a request it
//! refused as busy gives back. The rules are in `SCHEDULER.md`.

use shoal_proto::ChunkIndex;

use super::{ConnId, Reveal, State, MAX_REVEALED};

impl Reveal {
    /// The client's request for `index` has its turn to be sent: `None` if it is to be sent
    /// now (until [`Reveal::served`] or [`Reveal::not_sent`], another client's request for it
    /// is declined in the first pass as if it had been sent: without this, two slots could send
    /// the same chunk at once); or, as [`Reveal::declines`] says, what to reveal instead of it.
    pub fn send_or_decline(&mut self, conn: ConnId, index: ChunkIndex) -> Option<Vec<ChunkIndex>> {
        if let Some(more) = self.declines(conn, index) {
            return Some(more);
        }
        let client = self.clients.get_mut(&conn)?;
        if index.0 >= self.num_chunks {
            return None;
        }
        if let Some(i) = client.sending.replace(index.0) {
            self.in_send[i as usize] -= 1;
        }
        self.in_send[index.0 as usize] += 1;
        None
    }

    /// What [`Reveal::send_or_decline`] started was not sent (the chunk was unavailable, or the
    /// send failed).
    pub fn not_sent(&mut self, conn: ConnId) {
        if let Some(i) = self.clients.get_mut(&conn).and_then(|c| c.sending.take()) {
            self.in_send[i as usize] -= 1;
        }
    }

    /// We refused the client's request for `index` as busy (our upload slots are taken). A chunk
    /// never sent goes back to the first pass, to be shown to a client we are sending to now:
    /// otherwise a client refused again and again kept it from the swarm for seconds (5.4 s in
    /// one N = 32 round) while we served others. The client may still ask for it again, and is
    /// sent it if nobody was meanwhile (or declined, [`Reveal::declines`], if somebody was).
    pub fn refused(&mut self, conn: ConnId, index: ChunkIndex) {
        let i = index.0 as usize;
        if self.served.get(i) == Some(&0) {
            self.unreveal(conn, i);
        }
    }

    /// Whether we send each chunk once before any twice: some chunk was never sent, and more
    /// than one client lacks some.
    pub(super) fn first_pass(&self) -> bool {
        self.unserved > 0 && self.partial > 1
    }

    /// The client asked us for `index`: `None` to serve it; or, to decline it and tell the
    /// client to fetch it from the swarm (`Reject { reason: Elsewhere }`), what to reveal to it
    /// instead. In the first pass, a chunk we sent to a client that still has it, or are sending
    /// to another client, is on its way through the swarm, and a second copy from us would delay
    /// a chunk the swarm does not have at all. A declined chunk is no longer revealed to the
    /// client (it forgets that we have it). A client is declined a chunk once at most: its next
    /// request for it is served (it may be shown it again when it finds nothing else to ask for,
    /// or after the first pass), so a client that cannot reach the chunk's holders waits 2 s at
    /// most, and a seeder whose first pass never ends (clients that got their chunks from
    /// elsewhere) never declines anything for ever.
    pub fn declines(&mut self, conn: ConnId, index: ChunkIndex) -> Option<Vec<ChunkIndex>> {
        let i = index.0 as usize;
        if !self.first_pass() || i >= self.served.len() {
            return None;
        }
        let client = self.clients.get_mut(&conn)?;
        let others_sending = self.in_send[i] - u32::from(client.sending == Some(index.0));
        let in_swarm = self.served[i] > 0 && self.copies[i] > 0;
        if !in_swarm && others_sending == 0 {
            return None;
        }
        if client.state[i] == State::Got || !client.declined.insert(index.0) {
            return None;
        }
        self.unreveal(conn, i);
        tracing::debug!(chunk = i, conn, "declined: sent already");
        Some(self.top_up(conn, MAX_REVEALED))
    }
}
