//! The tracker of a private swarm: every datagram is opened with the swarm's key before the
//! registry sees it, and every reply sealed. What does not open, is stale or is replayed gets no
//! reply at all, so an outsider cannot even tell that a tracker is there.
//!
//! The no-amplification rule still holds: sealing adds the same overhead to a request and to its
//! reply, and the registry compares the plain lengths.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use shoal_secret::datagram::{unix_ms, Direction, Sealer};

use crate::registry::Registry;

/// Opens requests and seals replies with buffers kept from one datagram to the next.
pub struct Sealed<'a> {
    sealer: &'a Sealer,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl<'a> Sealed<'a> {
    pub fn new(sealer: &'a Sealer) -> Sealed<'a> {
        Sealed {
            sealer,
            request: Vec::new(),
            reply: Vec::new(),
        }
    }

    /// [`Registry::handle_into`] for a sealed `datagram`: on `true`, `out` holds the sealed reply.
    pub fn answer(
        &mut self,
        registry: &mut Registry,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        let now_ms = unix_ms(SystemTime::now());
        if let Err(why) =
            self.sealer
                .open_into(Direction::Request, datagram, now_ms, &mut self.request)
        {
            tracing::debug!("dropped a datagram from {src}: {why}");
            registry.count_unopened(now, datagram.len(), why);
            return false;
        }
        if !registry.handle_into(now, src, &self.request, &mut self.reply) {
            return false;
        }
        self.sealer
            .seal_into(Direction::Reply, &self.reply, now_ms, out)
            .map_err(|e| tracing::warn!("{e}"))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::tracker::{Request, RequestBody, Response, ResponseBody, CONNECT_PADDING};
    use shoal_proto::{ConnectionId, TransactionId};

    fn registry() -> Registry {
        Registry::new(crate::registry::Config::default(), Instant::now())
    }

    fn connect(txn: u32) -> Vec<u8> {
        Request {
            txn: TransactionId(txn),
            conn: ConnectionId(0),
            body: RequestBody::Connect {
                padding: [0; CONNECT_PADDING],
            },
        }
        .encode()
    }

    /// A sealed connect is answered, sealed, no larger than it; the same bytes again, a plain
    /// request and one sealed under another key get nothing.
    #[test]
    fn only_fresh_datagrams_of_the_swarm_are_answered_and_never_larger() {
        let key = [3u8; 32];
        let (tracker, client) = (Sealer::new(&key), Sealer::new(&key));
        let mut sealed = Sealed::new(&tracker);
        let mut reg = registry();
        let src: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let now = Instant::now();
        let ms = unix_ms(SystemTime::now());
        let request = client.seal(Direction::Request, &connect(9), ms).unwrap();
        let mut out = Vec::new();
        assert!(sealed.answer(&mut reg, now, src, &request, &mut out));
        assert!(
            out.len() <= request.len(),
            "{} > {}",
            out.len(),
            request.len()
        );
        let plain = client.open(Direction::Reply, &out, ms).unwrap();
        let reply = Response::decode(&plain).unwrap();
        assert_eq!(reply.txn, TransactionId(9));
        assert!(matches!(reply.body, ResponseBody::Connected { .. }));
        assert!(
            !sealed.answer(&mut reg, now, src, &request, &mut out),
            "replay"
        );
        assert!(out.is_empty());
        assert!(
            !sealed.answer(&mut reg, now, src, &connect(10), &mut out),
            "plain"
        );
        let other = Sealer::new(&[4u8; 32]);
        let foreign = other.seal(Direction::Request, &connect(11), ms).unwrap();
        assert!(
            !sealed.answer(&mut reg, now, src, &foreign, &mut out),
            "other key"
        );
        let mut tampered = client.seal(Direction::Request, &connect(12), ms).unwrap();
        tampered[40] ^= 1;
        assert!(
            !sealed.answer(&mut reg, now, src, &tampered, &mut out),
            "tampered"
        );
        let stale = client.seal(Direction::Request, &connect(13), 1).unwrap();
        assert!(
            !sealed.answer(&mut reg, now, src, &stale, &mut out),
            "stale"
        );
        let mut long = vec![0u8; 60_000];
        long[..4].copy_from_slice(&shoal_secret::datagram::MAGIC);
        assert!(!sealed.answer(&mut reg, now, src, &long, &mut out), "long");
        // What an operator sees in /metrics.
        let t = reg.totals();
        assert_eq!(
            (t.forged, t.stale, t.replayed, t.malformed, t.datagrams),
            (2, 1, 1, 2, 7)
        );
        let text = crate::metrics::render(&reg, now);
        for line in [
            "shoal_tracker_dropped_total{reason=\"forged\"} 2",
            "shoal_tracker_dropped_total{reason=\"stale\"} 1",
            "shoal_tracker_dropped_total{reason=\"replayed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn the_sealed_bound_is_the_protocols() {
        use shoal_secret::datagram::MAX_PLAIN;
        assert_eq!(MAX_PLAIN, shoal_proto::tracker::MAX_DATAGRAM);
    }
}
