//! The peers handed out for a file: one sampler, Floyd's algorithm ([`Draw`]), picks a bounded,
//! uniformly random subset in O(wanted) rather than shuffling every peer of a popular file on
//! every request; the usual case is encoded straight from the file's table.

use std::net::{IpAddr, SocketAddr};

use shoal_proto::tracker::{encoded_len, Response, MAX_DATAGRAM};
use shoal_proto::{FileId, TransactionId};

use super::Registry;

impl Registry {
    /// What [`Registry::sample_peers`] does in the usual case, with the reply encoded into `out`
    /// straight from the file's own table. Declines (returns false, `out` to be overwritten) when
    /// the general way is needed: no more peers than fit in a list, a long list that could
    /// overflow a datagram, or a loopback peer drawn for a requester on another host.
    pub(super) fn encode_sampled_peers(
        &self,
        txn: TransactionId,
        file: &FileId,
        requester: IpAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        const MOST: usize = 64;
        let wanted = self.config.limits.peers_per_reply;
        let Some(record) = self.files.get(file) else {
            return false;
        };
        let n = record.peer_count();
        if n <= wanted || wanted > MOST || wanted * self.max_addr_len > MAX_DATAGRAM - 32 {
            return false;
        }
        let shown_as_is = requester.is_loopback();
        let mut picked = [0usize; MOST];
        for (slot, i) in picked.iter_mut().zip(Draw::new(n, wanted)) {
            if !shown_as_is && record.peer_at(i).ip().is_loopback() {
                return false;
            }
            *slot = i;
        }
        let peers = picked[..wanted].iter().map(|&i| record.peer_at(i));
        Response::encode_peers_into(txn, self.interval_secs(), peers, out);
        true
    }

    /// A bounded, shuffled subset of a file's peers. A loopback address is only handed to a
    /// requester on the same host; elsewhere that peer (which runs on the tracker's host) goes
    /// by this host's address as the requester sees it, when a [`super::HostAddress`] lookup is set.
    pub(super) fn sample_peers(&self, file: &FileId, requester: IpAddr) -> Vec<SocketAddr> {
        let Some(record) = self.files.get(file) else {
            return Vec::new();
        };
        let wanted = self.config.limits.peers_per_reply;
        // Looked up at most once per request, and only when a loopback peer is to be shown.
        let here = std::cell::OnceCell::new();
        let visible = |a: SocketAddr| -> Option<SocketAddr> {
            if !a.ip().is_loopback() || requester.is_loopback() {
                return Some(a);
            }
            let ip = here.get_or_init(|| {
                let lookup = self.host_address.as_ref()?;
                lookup(requester).filter(|ip: &IpAddr| !ip.is_loopback() && !ip.is_unspecified())
            });
            ip.map(|ip| SocketAddr::new(ip, a.port()))
        };
        let n = record.peer_count();
        let mut peers = Vec::with_capacity(wanted.min(n));
        if n > wanted {
            let shown_as_is = requester.is_loopback();
            for i in Draw::new(n, wanted) {
                let a = record.peer_at(i);
                if shown_as_is || !a.ip().is_loopback() {
                    // A copy of the whole address at once (as `push` would not).
                    peers.extend_from_slice(std::slice::from_ref(a));
                } else if let Some(a) = visible(*a) {
                    peers.push(a);
                }
            }
        }
        if peers.len() < wanted.min(n) {
            // Few peers, or some were hidden from this requester: take every visible one.
            peers = record.peer_addrs().filter_map(visible).collect();
            fastrand::shuffle(&mut peers);
            peers.truncate(wanted);
        }
        if here.get().is_some_and(|h| h.is_some()) {
            // A peer registered both over loopback and from outside would be listed twice.
            let mut seen = std::collections::HashSet::with_capacity(peers.len());
            peers.retain(|a| seen.insert(*a));
        }
        // Keep the reply within one datagram whatever the address family mix (measured only
        // when the longest addresses could overflow it).
        if peers.len() * self.max_addr_len > MAX_DATAGRAM - 32 {
            while encoded_len(&peers) > MAX_DATAGRAM - 32 {
                peers.pop();
            }
        }
        peers
    }
}

/// `k` distinct indices below `n`, a uniformly random subset in random order, drawn in O(k) by
/// Floyd's algorithm: for each `j` in `n - k..n`, take a random `t <= j`, or `j` itself if `t` was
/// taken already (`j` cannot have been). The one sampler of peers.
pub(super) struct Draw {
    taken: Taken,
    rng: fastrand::Rng,
    j: std::ops::Range<usize>,
}

impl Draw {
    /// Draws `k.min(n)` indices below `n`.
    pub(super) fn new(n: usize, k: usize) -> Draw {
        let k = k.min(n);
        Draw {
            taken: Taken::new(n, k),
            rng: fastrand::Rng::new(),
            j: n - k..n,
        }
    }
}

impl Iterator for Draw {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        let j = self.j.next()?;
        Some(self.taken.take(self.rng.usize(..=j), j))
    }
}

/// The indices a [`Draw`] has picked so far.
// Large on purpose: it lives on the stack for one request, where boxing the bitmap would cost the
// allocation it is there to avoid.
#[allow(clippy::large_enum_variant)]
enum Taken {
    /// Up to [`Taken::BITMAP`] candidates: a bitmap on the stack.
    Bits([u64; Taken::BITMAP / 64]),
    /// More: the list of those taken (at most `k`).
    List(Vec<usize>),
}

impl Taken {
    const BITMAP: usize = 4096;

    fn new(n: usize, k: usize) -> Taken {
        if n <= Taken::BITMAP {
            Taken::Bits([0; Taken::BITMAP / 64])
        } else {
            Taken::List(Vec::with_capacity(k))
        }
    }

    /// `t`, or `j` if `t` was taken already; either way, taken from now on.
    #[inline(always)]
    fn take(&mut self, t: usize, j: usize) -> usize {
        match self {
            Taken::Bits(bits) => {
                let i = if bits[t / 64] & (1 << (t % 64)) != 0 {
                    j
                } else {
                    t
                };
                bits[i / 64] |= 1 << (i % 64);
                i
            }
            Taken::List(list) => {
                let i = if list.contains(&t) { j } else { t };
                list.push(i);
                i
            }
        }
    }
}
