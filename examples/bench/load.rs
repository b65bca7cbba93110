//! The tracker load generator, shared by `examples/tracker_load.rs` and the benchmark.
//!
//! It registers a few hundred fake peers for one made-up file, so that every reply carries a full
//! peer list (50 by default), then asks for that file's peers from several UDP sockets in a tight
//! loop, one thread, with a bounded number of requests in flight per socket, sending and receiving
//! in batches (`sendmmsg`, `recvmmsg`) and spinning rather than sleeping. Only peer lists count:
//! one reply in 16 is decoded in full, the others are checked by their prefix and size. It can
//! pin itself to one CPU, so that on a two-core machine the tracker, pinned to the other, has a
//! core of its own.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use shoal_proto::tracker::{
    ErrorCode, FileEntry, PeerInfo, Request, RequestBody, Response, ResponseBody, CONNECT_PADDING,
    MAGIC, MAX_DATAGRAM,
};
use shoal_proto::{ConnectionId, FileId, TransactionId};
use shoal_secret::datagram::{self, Direction, Sealer};

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub tracker: SocketAddr,
    /// How long to measure, after the warm-up.
    pub duration: Duration,
    pub warmup: Duration,
    /// UDP sockets (distinct source ports) sending at once.
    pub sockets: usize,
    /// Requests in flight per socket.
    pub in_flight: usize,
    /// Fake peers registered for the file before the load starts.
    pub peers: usize,
    /// Pin the generator's thread to this CPU.
    pub cpu: Option<usize>,
    /// A private swarm's tracker: requests sealed, replies opened with this.
    pub sealer: Option<Arc<Sealer>>,
}

/// Largest datagram either way, sealed or not.
const ROOM: usize = MAX_DATAGRAM + datagram::OVERHEAD + 1;

fn now_ms() -> u64 {
    datagram::unix_ms(std::time::SystemTime::now())
}

/// A request as it goes out: sealed for a private swarm.
fn outgoing(sealer: Option<&Sealer>, plain: Vec<u8>) -> Vec<u8> {
    match sealer {
        Some(s) => s
            .seal(Direction::Request, &plain, now_ms())
            .expect("the OS has randomness"),
        None => plain,
    }
}

/// A reply as it came, opened for a private swarm (`None`: it does not open).
fn incoming(sealer: Option<&Sealer>, buf: &[u8]) -> Option<Vec<u8>> {
    match sealer {
        Some(s) => s.open(Direction::Reply, buf, now_ms()).ok(),
        None => Some(buf.to_vec()),
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            tracker: SocketAddr::from(([127, 0, 0, 1], 6969)),
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(500),
            sockets: 8,
            in_flight: 64,
            peers: 300,
            cpu: None,
            sealer: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Peer-list replies received in the measured window.
    pub replies: u64,
    pub elapsed: Duration,
    pub sent: u64,
    /// Requests given up on (no reply within [`LOST_AFTER`]).
    pub lost: u64,
    /// Replies that were errors or not peer lists.
    pub errors: u64,
    pub rate_limited: bool,
    /// Peers per reply, on average.
    pub peers_per_reply: f64,
    /// Share of the generator's polls that found no reply waiting: it spins on a core of its
    /// own, so near 0 means it had no time to spare and may have been the limit, not the tracker.
    pub generator_idle: f64,
}

impl LoadReport {
    pub fn per_sec(&self) -> f64 {
        self.replies as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A socket with no reply for this long has lost whatever it had in flight.
const LOST_AFTER: Duration = Duration::from_millis(200);

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot pin the load generator to CPU {cpu}"));
        }
    }
    Ok(())
}

/// Where the measured window is, for [`run_with`]'s callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Start,
    End,
}

/// Registers the fake peers, warms up, then measures; calls `mark` right at the start and the end
/// of the measured window (so a caller can read the tracker's CPU time over exactly that window).
pub fn run_with(opts: &LoadOptions, mut mark: impl FnMut(Mark)) -> Result<LoadReport> {
    if let Some(cpu) = opts.cpu {
        pin_current_thread(cpu)?;
    }
    let mut txn = 0u32;
    let sealer = opts.sealer.as_deref();
    let file = FileId(std::array::from_fn(|_| fastrand::u8(..)));

    // Register the fake peers, one announce each, each from a socket of its own: the tracker
    // binds a registration to the source that made it. The sockets stay open for the run.
    let mut fakes = Vec::with_capacity(opts.peers);
    // Ports of a run of their own: the previous run's fake peers still own theirs at the
    // tracker until their registrations time out.
    let base = fastrand::u16(10_000..=u16::MAX - opts.peers.min(5_000) as u16);
    for i in 0..opts.peers {
        let reg = blocking_socket(opts.tracker)?;
        let conn = connect(&reg, sealer, &mut txn)?;
        let body = RequestBody::Announce {
            peer: PeerInfo {
                port: base.wrapping_add(i as u16),
                advertise: None,
            },
            files: vec![FileEntry {
                id: file,
                size: 1 << 30,
                name: "tracker-load.bin".to_string(),
                have: shoal_proto::tracker::Have::Complete,
            }],
        };
        match call(&reg, sealer, &mut txn, conn, body)? {
            ResponseBody::Ack { .. } => {}
            other => bail!("the tracker refused fake peer {i}: {other:?}"),
        }
        fakes.push(reg);
    }
    let reg = blocking_socket(opts.tracker)?;
    let conn = connect(&reg, sealer, &mut txn)?;
    let expected = match call(&reg, sealer, &mut txn, conn, RequestBody::GetPeers { file })? {
        ResponseBody::Peers { peers, .. } if !peers.is_empty() || opts.peers == 0 => peers.len(),
        other => bail!("unexpected answer to a peer-list request: {other:?}"),
    };

    let mut socks = Vec::with_capacity(opts.sockets);
    for _ in 0..opts.sockets.max(1) {
        let sock = blocking_socket(opts.tracker)?;
        let conn = connect(&sock, sealer, &mut txn)?;
        sock.set_nonblocking(true)?;
        socks.push(Sock {
            sock,
            conn,
            in_flight: 0,
            last_progress: Instant::now(),
        });
    }
    let mut gen = Generator {
        socks,
        sealer: opts.sealer.clone(),
        file,
        window: opts.in_flight.max(1),
        txn,
        counts: LoadReport::default(),
        peers_seen: 0,
        full_peers: expected,
        min_full_len: usize::MAX,
        received: 0,
        polls: [0; 2],
    };
    gen.drive(Instant::now() + opts.warmup)?;
    gen.counts = LoadReport::default();
    gen.peers_seen = 0;
    gen.polls = [0; 2];
    mark(Mark::Start);
    let start = Instant::now();
    gen.drive(start + opts.duration)?;
    let elapsed = start.elapsed();
    mark(Mark::End);
    let mut report = gen.counts;
    report.elapsed = elapsed;
    report.generator_idle = gen.polls[0] as f64 / (gen.polls[0] + gen.polls[1]).max(1) as f64;
    report.peers_per_reply = gen.peers_seen as f64 / report.replies.max(1) as f64;
    if report.replies > 0 && (report.peers_per_reply.round() as usize) < expected {
        bail!(
            "replies carried {:.1} peers on average, expected {expected}",
            report.peers_per_reply
        );
    }
    Ok(report)
}

fn blocking_socket(tracker: SocketAddr) -> Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    sock.connect(tracker)
        .with_context(|| format!("cannot reach the tracker at {tracker}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    Ok(sock)
}

/// One request, answered (with retries: UDP may drop).
fn call(
    sock: &UdpSocket,
    sealer: Option<&Sealer>,
    txn: &mut u32,
    conn: ConnectionId,
    body: RequestBody,
) -> Result<ResponseBody> {
    *txn = txn.wrapping_add(1);
    let plain = Request {
        txn: TransactionId(*txn),
        conn,
        body,
    }
    .encode();
    let mut buf = [0u8; ROOM];
    for _ in 0..10 {
        // Sealed anew each try: a private tracker drops a repeated datagram as a replay.
        sock.send(&outgoing(sealer, plain.clone()))?;
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e).context("no answer from the tracker"),
            };
            let Some(opened) = incoming(sealer, &buf[..n]) else {
                continue;
            };
            match Response::decode(&opened) {
                Ok(r) if r.txn == TransactionId(*txn) => {
                    if let ResponseBody::Error {
                        code: ErrorCode::RateLimited,
                    } = r.body
                    {
                        bail!("the tracker rate-limits the load generator: start it with --rate-limit 0");
                    }
                    return Ok(r.body);
                }
                _ => continue,
            }
        }
    }
    Err(anyhow!(
        "no answer from the tracker at {}",
        sock.peer_addr()?
    ))
}

fn connect(sock: &UdpSocket, sealer: Option<&Sealer>, txn: &mut u32) -> Result<ConnectionId> {
    let body = RequestBody::Connect {
        padding: [0; CONNECT_PADDING],
    };
    match call(sock, sealer, txn, ConnectionId(0), body)? {
        ResponseBody::Connected { conn } => Ok(conn),
        other => bail!("unexpected answer to connect: {other:?}"),
    }
}

struct Sock {
    sock: UdpSocket,
    conn: ConnectionId,
    in_flight: usize,
    last_progress: Instant,
}

struct Generator {
    socks: Vec<Sock>,
    sealer: Option<Arc<Sealer>>,
    file: FileId,
    window: usize,
    txn: u32,
    counts: LoadReport,
    peers_seen: u64,
    /// Peers in a full reply (known from the set-up).
    full_peers: usize,
    /// Shortest length a full peer list can have (its transaction id varies in length), once
    /// one was decoded.
    min_full_len: usize,
    received: u64,
    /// Polls that found no reply waiting, and polls that found some.
    polls: [u64; 2],
}

/// Datagrams per `sendmmsg`/`recvmmsg` call at most.
const BATCH: usize = 16;

impl Generator {
    /// Keeps every socket's window full until `until`, counting replies. Requests go out and
    /// replies come in in batches (`sendmmsg`, `recvmmsg`), so that the generator spends its
    /// core on the datagrams rather than on system calls, and `poll` says which sockets have
    /// replies waiting.
    fn drive(&mut self, until: Instant) -> Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut io = BatchIo::new();
        let mut requests: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            for s in &mut self.socks {
                let room = self.window.saturating_sub(s.in_flight).min(BATCH);
                if room == 0 {
                    continue;
                }
                requests.clear();
                for _ in 0..room {
                    self.txn = self.txn.wrapping_add(1);
                    requests.push(outgoing(
                        self.sealer.as_deref(),
                        Request {
                            txn: TransactionId(self.txn),
                            conn: s.conn,
                            body: RequestBody::GetPeers { file: self.file },
                        }
                        .encode(),
                    ));
                }
                // ICMP "port unreachable" from an earlier send means the tracker is gone.
                let sent = io
                    .send(&s.sock, &requests)
                    .context("sending to the tracker")?;
                s.in_flight += sent;
                self.counts.sent += sent as u64;
            }
            // Which sockets have replies? Without waiting: the generator has a core of its own
            // and spins, so the tracker never pays for waking it up.
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
            self.polls[(ready > 0) as usize] += 1;
            for (s, fd) in self.socks.iter_mut().zip(&fds) {
                if ready > 0 && fd.revents != 0 {
                    loop {
                        let n = io.recv(&s.sock).context("receiving from the tracker")?;
                        if n > 0 {
                            s.in_flight = s.in_flight.saturating_sub(n);
                            s.last_progress = now;
                        }
                        for k in 0..n {
                            count_reply(
                                self.sealer.as_deref(),
                                io.received(k),
                                &mut self.counts,
                                &mut self.received,
                                &mut self.peers_seen,
                                &mut self.min_full_len,
                                self.full_peers,
                            );
                        }
                        if n < BATCH {
                            break;
                        }
                    }
                }
                if s.in_flight > 0 && now.duration_since(s.last_progress) > LOST_AFTER {
                    self.counts.lost += s.in_flight as u64;
                    s.in_flight = 0;
                    s.last_progress = now;
                }
            }
        }
    }
}

/// Counts one reply. Decoding 50 addresses costs the generator more than the tracker spends on
/// the request; so one reply in 16 is decoded, and so is anything shorter than a full list, and
/// the rest count as full lists.
fn count_reply(
    sealer: Option<&Sealer>,
    buf: &[u8],
    counts: &mut LoadReport,
    received: &mut u64,
    peers_seen: &mut u64,
    min_full_len: &mut usize,
    full_peers: usize,
) {
    *received += 1;
    let magic: &[u8] = if sealer.is_some() {
        &datagram::MAGIC
    } else {
        &MAGIC
    };
    if buf.len() >= *min_full_len && buf.starts_with(magic) && !received.is_multiple_of(16) {
        counts.replies += 1;
        *peers_seen += full_peers as u64;
        return;
    }
    let Some(opened) = incoming(sealer, buf) else {
        counts.errors += 1;
        return;
    };
    match Response::decode(&opened).map(|r| r.body) {
        Ok(ResponseBody::Peers { peers, .. }) => {
            counts.replies += 1;
            *peers_seen += peers.len() as u64;
            if peers.len() == full_peers {
                // The transaction id is a varint of 1 to 5 bytes, the rest is fixed; a list
                // one peer shorter is at least 6 bytes shorter.
                *min_full_len = (*min_full_len).min(buf.len().saturating_sub(4));
            }
        }
        Ok(ResponseBody::Error {
            code: ErrorCode::RateLimited,
        }) => {
            counts.errors += 1;
            counts.rate_limited = true;
        }
        _ => counts.errors += 1,
    }
}

/// Buffers for `sendmmsg` and `recvmmsg` on connected, non-blocking UDP sockets.
struct BatchIo {
    bufs: Vec<[u8; ROOM]>,
    lens: [usize; BATCH],
}

impl BatchIo {
    fn new() -> BatchIo {
        BatchIo {
            bufs: vec![[0u8; ROOM]; BATCH],
            lens: [0; BATCH],
        }
    }

    /// Sends as many of `datagrams` as the socket takes now; returns how many.
    fn send(&mut self, sock: &UdpSocket, datagrams: &[Vec<u8>]) -> std::io::Result<usize> {
        let n = datagrams.len().min(BATCH);
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: datagrams[i].as_ptr() as *mut libc::c_void,
                iov_len: datagrams[i].len(),
            };
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs[..n]` point at `iovs[..n]`, which point at live buffers; the kernel
        // only reads them (the socket is connected, so no address is needed).
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        datagrams_done(r)
    }

    /// Receives up to [`BATCH`] waiting datagrams without blocking; returns how many.
    fn recv(&mut self, sock: &UdpSocket) -> std::io::Result<usize> {
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            iovs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at its own iovec, which points at a buffer of ours of
        // the stated length; no timeout.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = datagrams_done(r)?;
        for (len, hdr) in self.lens.iter_mut().zip(&hdrs).take(n) {
            *len = hdr.msg_len as usize;
        }
        Ok(n)
    }

    /// The `k`th datagram of the last [`BatchIo::recv`].
    fn received(&self, k: usize) -> &[u8] {
        &self.bufs[k][..self.lens[k]]
    }
}

/// What `sendmmsg` or `recvmmsg` returned, as datagrams done: none when the socket would block.
fn datagrams_done(r: libc::c_int) -> std::io::Result<usize> {
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(0)
    } else {
        Err(e)
    }
}
