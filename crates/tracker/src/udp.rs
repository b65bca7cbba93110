//! Datagrams in batches: one `recvmmsg` takes up to [`BATCH`] waiting requests with their
//! sources, one `sendmmsg` sends the replies, each back to where its request came from.
//!
//! Under load most of a tracker's time goes to the kernel, per datagram; batching pays the
//! system call once per batch instead of twice per request. Linux only, like the rest of shoal.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

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
    /// Where each request came from, as the kernel gave it: also where its reply goes.
    names: [libc::sockaddr_storage; BATCH],
    name_lens: [libc::socklen_t; BATCH],
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
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (unspecified) address.
            names: unsafe { std::mem::zeroed() },
            name_lens: [0; BATCH],
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
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received = 0;
        self.to_send = 0;
        self.sent = 0;
        // SAFETY: iovec is plain data; all-zero is valid and is filled in below.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as for iovec, mmsghdr (null pointers, zero lengths).
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (buf, (iov, hdr))) in self
            .bufs
            .chunks_exact_mut(STRIDE)
            .zip(iovs.iter_mut().zip(hdrs.iter_mut()))
            .enumerate()
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = ROOM;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        }
        // SAFETY: each header points at its own iovec, which points at a buffer of ours of the
        // stated length, and at an address buffer of ours of the stated length; all of them
        // outlive the call. Non-blocking, no timeout.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = r as usize;
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = hdr.msg_len as usize;
            self.name_lens[i] = hdr.msg_hdr.msg_namelen;
        }
        self.received = n;
        Ok(n)
    }

    /// Calls `answer` with each received datagram's source, its bytes and a cleared buffer for
    /// the reply; a reply is sent where `answer` returns true.
    pub fn answer(&mut self, mut answer: impl FnMut(SocketAddr, &[u8], &mut Vec<u8>) -> bool) {
        for i in 0..self.received {
            let Some(src) = socket_addr(&self.names[i], self.name_lens[i]) else {
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
    pub fn send(&mut self, fd: RawFd) -> io::Result<()> {
        while self.sent < self.to_send {
            let pending = &self.answered[self.sent..self.to_send];
            // SAFETY: as in `recv`.
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: as in `recv`.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (k, &i) in pending.iter().enumerate() {
                let reply = &self.replies[i];
                iovs[k].iov_base = reply.as_ptr() as *mut libc::c_void;
                iovs[k].iov_len = reply.len();
                let hdr = &mut hdrs[k].msg_hdr;
                hdr.msg_iov = &mut iovs[k];
                hdr.msg_iovlen = 1;
                hdr.msg_name = (&self.names[i] as *const libc::sockaddr_storage)
                    .cast_mut()
                    .cast();
                hdr.msg_namelen = self.name_lens[i];
            }
            // SAFETY: the first `pending.len()` headers point at their iovecs, which point at
            // live reply buffers, and at the source addresses `recv` stored, with their lengths;
            // the kernel only reads them.
            let r =
                unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), pending.len() as libc::c_uint, 0) };
            if r > 0 {
                self.sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Err(e),
                io::ErrorKind::Interrupted => {}
                // The first pending reply cannot go: skip it.
                _ => self.sent += 1,
            }
        }
        Ok(())
    }
}

/// The address the kernel wrote into `name`, if it is an IP one.
fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match name.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in here (family and length say so), and
            // sockaddr_storage is large and aligned enough for any address.
            let sin =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

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
            got += batch.recv(v4.as_raw_fd()).unwrap();
            batch.answer(|src, bytes, reply| {
                seen.push((src, bytes.to_vec()));
                if bytes.ends_with(b"1") {
                    return false;
                }
                reply.extend_from_slice(b"pong ");
                reply.extend_from_slice(bytes);
                true
            });
            batch.send(v4.as_raw_fd()).unwrap();
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
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 1);
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
        let e = batch.recv(server.as_raw_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
