//! Datagrams in batches: one `recvmmsg` takes up to [`BATCH`] waiting requests with their
//! sources, one `sendmmsg` sends the replies, each back to where its request came from.
//!
//! Under load most of a tracker's time goes to the kernel, per datagram; batching pays the
//! system call once per batch instead of twice per request. Linux only, like the rest of shoal.
//! The calls go through safe wrappers: nix's `recvmmsg`, rustix's `sendmmsg`.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

/// Datagrams per system call at most.
pub const BATCH: usize = 32;

/// Receive room per datagram: the largest UDP payload, so that the byte counters see what really
/// arrived. Pages of it are only touched by datagrams that large, so it costs address space, not
/// memory.
const ROOM: usize = 65_536;

/// Where one receive buffer starts after the previous: a little more than [`ROOM`], so that the
/// buffers' first bytes (all that a request fills) do not all fall in the same cache set, as they
/// would 64 KiB apart.
const STRIDE: usize = ROOM + 128;

/// Buffers for one batch: the requests received, their sources, and the replies to them.
pub struct Batch {
    /// [`BATCH`] receive buffers of [`ROOM`] bytes, [`STRIDE`] apart.
    bufs: Box<[u8]>,
    lens: [usize; BATCH],
    /// Where each request came from (none: not an IP address): also where its reply goes.
    sources: [Option<SocketAddr>; BATCH],
    received: usize,
    /// One reply buffer per request, reused from batch to batch.
    replies: Vec<Vec<u8>>,
    /// The requests that have a reply, in order, and how many of those went out already.
    answered: [usize; BATCH],
    to_send: usize,
    sent: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            bufs: vec![0u8; BATCH * STRIDE].into_boxed_slice(),
            lens: [0; BATCH],
            sources: [None; BATCH],
            received: 0,
            replies: (0..BATCH).map(|_| Vec::new()).collect(),
            answered: [0; BATCH],
            to_send: 0,
            sent: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams; returns how many. On a blocking socket it waits for the
    /// first (up to the socket's receive timeout, then `WouldBlock`), never for more than are
    /// there. Forgets the previous batch, so its replies must have gone out.
    pub fn recv(&mut self, socket: BorrowedFd<'_>) -> io::Result<usize> {
        self.received = 0;
        self.to_send = 0;
        self.sent = 0;
        // New headers for every call (two small allocations per batch): the kernel overwrites
        // each header's address length with that of the address it wrote, and nix does not set
        // it back, so a header used again would offer only as much room as its last source took.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut chunks = self.bufs.chunks_exact_mut(STRIDE);
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            let chunk = chunks.next().expect("BATCH buffers");
            [IoSliceMut::new(&mut chunk[..ROOM])]
        });
        let got = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        let mut n = 0;
        for (i, message) in got.enumerate() {
            self.lens[i] = message.bytes;
            self.sources[i] = message.address.as_ref().and_then(ip_address);
            n = i + 1;
        }
        self.received = n;
        Ok(n)
    }

    /// Calls `answer` with each received datagram's source, its bytes and a cleared buffer for
    /// the reply; a reply is sent where `answer` returns true.
    pub fn answer(&mut self, mut answer: impl FnMut(SocketAddr, &[u8], &mut Vec<u8>) -> bool) {
        for i in 0..self.received {
            let Some(src) = self.sources[i] else {
                continue;
            };
            let datagram = &self.bufs[i * STRIDE..i * STRIDE + self.lens[i].min(ROOM)];
            let reply = &mut self.replies[i];
            reply.clear();
            if answer(src, datagram, reply) && !reply.is_empty() {
                self.answered[self.to_send] = i;
                self.to_send += 1;
            }
        }
    }

    /// Sends the replies not sent yet. Should the socket's buffer be full, this waits as a send on
    /// the socket would (blocking, up to its send timeout) and returns `WouldBlock` if there is
    /// still no room: call it again. A reply the kernel refuses (no route, say) is dropped, as a
    /// lost datagram would be.
    pub fn send(&mut self, socket: BorrowedFd<'_>) -> io::Result<()> {
        while self.sent < self.to_send {
            let pending = &self.answered[self.sent..self.to_send];
            let to: Vec<SocketAddrAny> = pending
                .iter()
                .map(|&i| {
                    self.sources[i]
                        .expect("only IP sources are answered")
                        .into()
                })
                .collect();
            let iovs: Vec<[IoSlice<'_>; 1]> = pending
                .iter()
                .map(|&i| [IoSlice::new(&self.replies[i])])
                .collect();
            let mut control: Vec<SendAncillaryBuffer<'_, '_, '_>> =
                pending.iter().map(|_| Default::default()).collect();
            let mut messages: Vec<MMsgHdr<'_>> = to
                .iter()
                .zip(&iovs)
                .zip(&mut control)
                .map(|((to, iov), control)| MMsgHdr::new_with_addr(to, iov, control))
                .collect();
            match sendmmsg(socket, &mut messages, SendFlags::empty()) {
                Ok(n) if n > 0 => self.sent += n,
                Ok(_) => self.sent += 1,
                Err(e) => {
                    let e = io::Error::from(e);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Err(e),
                        io::ErrorKind::Interrupted => {}
                        // The first pending reply cannot go: skip it.
                        _ => self.sent += 1,
                    }
                }
            }
        }
        Ok(())
    }
}

/// The address the kernel gave as a datagram's source, if it is an IP one.
fn ip_address(name: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = name.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    name.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Requests from IPv4 and IPv6 sockets come in as one batch with the right sources, and each
    /// reply goes back to its own sender; a request without a reply gets none.
    #[test]
    fn a_batch_is_received_and_answered_in_kind() {
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = v4.local_addr().unwrap();
        let clients: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (k, c) in clients.iter().enumerate() {
            c.send_to(format!("ping {k}").as_bytes(), server).unwrap();
        }
        let mut batch = Batch::new();
        let mut got = 0;
        let mut seen = Vec::new();
        v4.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        while got < 3 {
            // Wait for something to be there, then take all that is.
            let mut peek = [0u8; 1];
            v4.peek_from(&mut peek).unwrap();
            got += batch.recv(v4.as_fd()).unwrap();
            batch.answer(|src, bytes, reply| {
                seen.push((src, bytes.to_vec()));
                if bytes.ends_with(b"1") {
                    return false;
                }
                reply.extend_from_slice(b"pong ");
                reply.extend_from_slice(bytes);
                true
            });
            batch.send(v4.as_fd()).unwrap();
        }
        seen.sort();
        let mut want: Vec<(SocketAddr, Vec<u8>)> = clients
            .iter()
            .enumerate()
            .map(|(k, c)| (c.local_addr().unwrap(), format!("ping {k}").into_bytes()))
            .collect();
        want.sort();
        assert_eq!(seen, want);
        let mut buf = [0u8; 64];
        for (k, c) in clients.iter().enumerate() {
            c.set_nonblocking(k == 1).unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            match c.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_ne!(k, 1, "no reply was asked for");
                    assert_eq!(from, server);
                    assert_eq!(&buf[..n], format!("pong ping {k}").as_bytes());
                }
                Err(e) => {
                    assert_eq!(k, 1, "{e}");
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                }
            }
        }
    }

    #[test]
    fn ipv6_sources_keep_their_address() {
        let server = std::net::UdpSocket::bind("[::1]:0").unwrap_or_else(|e| {
            panic!(
                "this test needs IPv6 on loopback and cannot bind [::1]:0 ({e}); enable it with \
                 `sysctl -w net.ipv6.conf.lo.disable_ipv6=0`"
            )
        });
        let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
        client
            .send_to(b"hello", server.local_addr().unwrap())
            .unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        server.peek_from(&mut [0u8; 1]).unwrap();
        let mut batch = Batch::new();
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 1);
        let mut from = None;
        batch.answer(|src, bytes, _| {
            assert_eq!(bytes, b"hello");
            from = Some(src);
            false
        });
        assert_eq!(from, Some(client.local_addr().unwrap()));
        // Nothing left: WouldBlock once the receive timeout is over.
        server
            .set_read_timeout(Some(std::time::Duration::from_millis(10)))
            .unwrap();
        let e = batch.recv(server.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
