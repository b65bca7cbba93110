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
    }
}
