//! The registry's answer to one datagram: decoding, connection ids (who has proved it receives
//! at its address), rate limiting, the dispatch to each request, and the amplification check on
//! every reply.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shoal_proto::tracker::{
    Advertise, DecodeError, ErrorCode, PeerInfo, Progress, Request, RequestBody, Response,
    ResponseBody, MAGIC, MAX_DATAGRAM,
};
use shoal_proto::ConnectionId;

use super::Registry;
use crate::ratelimit::Verdict;

/// Connection ids are good for the minute they are issued in and the next.
const CONNECTION_SLOT: Duration = Duration::from_secs(60);

/// A listing that tests a filter against this many files costs its sender one more request's
/// worth of rate limit, so scans of a large tracker cannot eat its CPU.
const FILES_PER_TOKEN: usize = 5_000;

impl Registry {
    /// SipHash-2-4 of the source and the time slot under the tracker's key: only the tracker can
    /// make one, so a sender that shows one received it at that source.
    pub fn connection_id(&self, src: SocketAddr, slot: u64) -> ConnectionId {
        ConnectionId(connection_mac(&self.key, src, slot))
    }

    pub fn slot(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_secs()) / CONNECTION_SLOT.as_secs()
    }

    pub(super) fn connection_ok(&self, src: SocketAddr, conn: ConnectionId, now: Instant) -> bool {
        let slot = self.slot(now);
        conn == self.connection_id(src, slot)
            || (slot > 0 && conn == self.connection_id(src, slot - 1))
    }

    /// Whether a peer may be handed out at the address it advertises (not its source IP): it
    /// proved it receives there, with a connection id this tracker gave a socket at that address.
    /// So a sender cannot point leechers at a host it does not run on.
    pub(super) fn advertise_ok(&self, now: Instant, info: &PeerInfo) -> bool {
        let Some(Advertise {
            ip,
            proof: Some(proof),
        }) = info.advertise
        else {
            return false;
        };
        self.connection_ok(
            SocketAddr::new(ip.to_canonical(), proof.port),
            proof.conn,
            now,
        )
    }

    /// Answers one datagram. `None` means send nothing: malformed, rate limited, or a reply
    /// would be larger than the request from an address that has not proved it can receive.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.handle_into(now, src, datagram, &mut out)
            .then_some(out)
    }

    /// [`Registry::handle`] into a buffer the caller keeps: on `true`, `out` holds the reply to
    /// send; on `false` send nothing (`out` is then empty).
    pub fn handle_into(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        // A socket on [::] sees IPv4 senders as ::ffff:a.b.c.d. Keyed, rate limited and handed
        // out as plain IPv4, so one sender has one identity whichever socket it reached, peer
        // lists never carry mapped addresses, and ::ffff:127.0.0.1 counts as loopback.
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        let len = datagram.len() as u64;
        self.count(now, |t| {
            t.datagrams += 1;
            t.bytes_in += len;
        });
        self.expire_due(now);
        if let Verdict::Deny { first } = self.limiter.check(now, src.ip()) {
            // Tell an honest client once why it hears nothing; drop the rest unread.
            let txn = match Request::decode(datagram) {
                Ok(req) if first => req.txn,
                _ => {
                    self.count(now, |t| t.rate_limited += 1);
                    return false;
                }
            };
            let code = ErrorCode::RateLimited;
            let reply = Response {
                txn,
                body: ResponseBody::Error { code },
            };
            return self.reply(now, datagram.len(), false, &reply, out);
        }
        let req = match Request::decode(datagram) {
            Ok(req) => req,
            Err(DecodeError::OtherVersion(_)) => {
                // A peer of another version: the bare magic tells it which one we speak, and is
                // never larger than its request (which starts with a magic of its own).
                self.count(now, |t| t.other_version += 1);
                out.extend_from_slice(&MAGIC);
                return self.checked(now, datagram.len(), false, out);
            }
            Err(_) => {
                self.count(now, |t| t.malformed += 1);
                return false;
            }
        };
        let verified = !matches!(req.body, RequestBody::Connect { .. })
            && self.connection_ok(src, req.conn, now);
        let body = match req.body {
            RequestBody::Connect { .. } => ResponseBody::Connected {
                conn: self.connection_id(src, self.slot(now)),
            },
            _ if !verified => {
                self.count(now, |t| t.bad_connection += 1);
                ResponseBody::Error {
                    code: ErrorCode::BadConnection,
                }
            }
            RequestBody::Announce { peer, files } => self.announce(now, src, &peer, files),
            RequestBody::Heartbeat {
                peer,
                files,
                progress,
            } => {
                self.count(now, |t| t.heartbeats += 1);
                let key = peer_addr(src, &peer);
                match self.peers.get_mut(&key) {
                    // Another source's registration is not this sender's to keep alive.
                    Some(p) if p.owner == src && p.files.len() == files as usize => {
                        p.last_seen = now;
                        for Progress { id, bytes } in progress {
                            // Only files this peer registered: `p.files` is the peer's own set.
                            if p.files.contains(&id) {
                                if let Some(r) = self.files.get_mut(&id) {
                                    r.set_progress(&key, bytes);
                                }
                            }
                        }
                        self.ack()
                    }
                    _ => ResponseBody::Unknown,
                }
            }
            RequestBody::Unregister { peer, files } => {
                let key = peer_addr(src, &peer);
                if self.peers.get(&key).is_some_and(|p| p.owner != src) {
                    self.count(now, |t| t.not_owner += 1);
                    let reply = Response {
                        txn: req.txn,
                        body: ResponseBody::Error {
                            code: ErrorCode::NotOwner,
                        },
                    };
                    return self.reply(now, datagram.len(), verified, &reply, out);
                }
                match files {
                    None => {
                        if self.remove_peer(key, "left") {
                            self.count(now, |t| t.departures += 1);
                        }
                    }
                    Some(ids) => {
                        for id in ids {
                            self.remove_file_of(key, id);
                        }
                    }
                }
                self.ack()
            }
            RequestBody::GetPeers { file } => {
                self.count(now, |t| t.queries += 1);
                if self.encode_sampled_peers(req.txn, &file, src.ip(), out) {
                    return self.checked(now, datagram.len(), verified, out);
                }
                ResponseBody::Peers {
                    interval_secs: self.interval_secs(),
                    peers: self.sample_peers(&file, src.ip()),
                }
            }
            RequestBody::List { filter, cursor } => {
                self.count(now, |t| t.queries += 1);
                let (body, tested) = self.list(&filter, cursor);
                let cost = (tested / FILES_PER_TOKEN) as f32;
                if cost > 0.0 {
                    self.limiter.charge(now, src.ip(), cost);
                }
                body
            }
        };
        let reply = Response { txn: req.txn, body };
        self.reply(now, datagram.len(), verified, &reply, out)
    }

    /// Encodes a reply into `out` unless it is too large to send, or larger than the request of
    /// a source that has not proved it receives (which could be spoofed: amplification).
    fn reply(
        &mut self,
        now: Instant,
        request_len: usize,
        verified: bool,
        reply: &Response,
        out: &mut Vec<u8>,
    ) -> bool {
        reply.encode_into(out);
        self.checked(now, request_len, verified, out)
    }

    /// Whether the reply encoded in `out` may go: not if it is too large to send, or larger than
    /// the request of a source that has not proved it receives (which could be spoofed:
    /// amplification). Counts it either way, and empties `out` if it may not.
    fn checked(
        &mut self,
        now: Instant,
        request_len: usize,
        verified: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        if out.len() > MAX_DATAGRAM || (!verified && out.len() > request_len) {
            out.clear();
            self.count(now, |t| t.suppressed += 1);
            return false;
        }
        let n = out.len() as u64;
        self.count(now, |t| {
            t.replies += 1;
            t.bytes_out += n;
        });
        true
    }

    pub(super) fn interval_secs(&self) -> u32 {
        self.config.interval.as_secs().clamp(1, u32::MAX.into()) as u32
    }

    pub(super) fn ack(&self) -> ResponseBody {
        ResponseBody::Ack {
            interval_secs: self.interval_secs(),
        }
    }
}

/// SipHash-2-4 under `key` of a source address (family, IP, port) and a time slot.
fn connection_mac(key: &[u8; 16], src: SocketAddr, slot: u64) -> u64 {
    let mut h = siphasher::sip::SipHasher24::new_with_key(key);
    match src.ip() {
        IpAddr::V4(ip) => {
            h.write_u8(4);
            h.write(&ip.octets());
        }
        IpAddr::V6(ip) => {
            h.write_u8(6);
            h.write(&ip.octets());
        }
    }
    h.write_u16(src.port());
    h.write_u64(slot);
    h.finish()
}

/// The address a peer serves on: the datagram's source IP (canonical, see [`Registry::handle`])
/// unless it asked to advertise another. An advertised address that cannot be where the peer
/// serves is ignored: unspecified or multicast, or loopback from a sender that is not on this
/// host (a loopback peer is taken to run on the tracker's host, and is handed out as such).
/// Whether any other advertised address is one the peer may use is [`Registry::advertise_ok`]'s
/// question, asked at announce: later requests only name the registration.
pub(super) fn peer_addr(src: SocketAddr, info: &PeerInfo) -> SocketAddr {
    let ip = match info.advertise.map(|a| a.ip.to_canonical()) {
        Some(a) if a.is_unspecified() || a.is_multicast() => src.ip(),
        Some(a) if a.is_loopback() && !src.ip().is_loopback() => src.ip(),
        Some(a) => a,
        None => src.ip(),
    };
    SocketAddr::new(ip, info.port)
}
