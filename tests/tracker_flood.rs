//! The running tracker under a flood of hostile datagrams: 100,000 of them, malformed, truncated,
//! oversized, random, replayed and with forged connection ids, from 516 sockets on 513 loopback
//! addresses. Afterwards it must still list and serve a real seeder, its memory must have stayed
//! within a stated bound, and it must have sent back no more bytes than it received, to each
//! socket that never proved its address and in all.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use shoal_proto::tracker::{
    FileEntry, Filter, PeerInfo, Request, RequestBody, Response, ResponseBody, CONNECT_PADDING,
    MAGIC,
};
use shoal_proto::{ConnectionId, FileId, IdPrefix, TransactionId};
use shoal_testkit::tracker::{memory_kib, metrics, swarm_with_page, totals};
use shoal_testkit::*;

const BINS: Bins = bins!();

const DATAGRAMS: usize = 100_000;
/// Source addresses of the flood: 127.0.1.0 to 127.0.2.255, one socket each.
const FLOOD_SOURCES: usize = 512;
/// Extra sockets on one more address that sends in bursts, to be rate limited.
const HOT_SOCKETS: usize = 4;
const HOT_BURST: usize = 120;
const HOT_DATAGRAMS: usize = 6_000;
/// What the tracker may have in its socket queue at once: under the kernel's default receive
/// buffer (212,992 bytes), counting a kilobyte of overhead per datagram, so that next to nothing
/// is lost to a full queue and the datagrams reach the tracker's code.
const QUEUE_BUDGET: usize = 100_000;
/// The whole flood must be over by then.
const FLOOD_DEADLINE: Duration = Duration::from_secs(240);
/// Resident memory the tracker may reach, flood included. The state's own worst case with the
/// default caps is 103 MiB, but a flood that registers nothing adds next to nothing: the bound
/// checks that hostile datagrams cost no memory that stays (the tracker idles at about 10 MiB).
const MAX_RSS_KIB: u64 = 48 * 1024;
/// And the flood may add at most this much to what it used before (buffers, the rate-limit
/// table's pages as they are first touched).
const MAX_GROWTH_KIB: u64 = 8 * 1024;

/// A socket and the bytes that went each way through it.
struct Source {
    socket: UdpSocket,
    sent: u64,
    received: u64,
    datagrams: u64,
    replies: u64,
}

impl Source {
    fn bind(ip: Ipv4Addr) -> Source {
        let socket = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| {
            panic!("cannot bind {ip}: {e} (all of 127.0.0.0/8 is loopback on Linux)")
        });
        socket.set_nonblocking(true).unwrap();
        Source {
            socket,
            sent: 0,
            received: 0,
            datagrams: 0,
            replies: 0,
        }
    }

    /// Sends one datagram; `false` if the kernel had no room for it just now.
    fn send(&mut self, to: SocketAddr, bytes: &[u8]) -> bool {
        match self.socket.send_to(bytes, to) {
            Ok(_) => {
                self.sent += bytes.len() as u64;
                self.datagrams += 1;
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            // ENOBUFS and friends: the datagram is gone, as on a real network.
            Err(_) => false,
        }
    }

    /// Reads every reply waiting; returns the decodable ones.
    fn drain(&mut self) -> Vec<Response> {
        let mut buf = [0u8; 2048];
        let mut out = Vec::new();
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    self.received += n as u64;
                    self.replies += 1;
                    if let Ok(r) = Response::decode(&buf[..n]) {
                        out.push(r);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return out,
                // An ICMP error from an earlier send; keep reading.
                Err(_) => continue,
            }
        }
    }
}

fn connect_request(txn: u32) -> Vec<u8> {
    Request {
        txn: TransactionId(txn),
        conn: ConnectionId(0),
        body: RequestBody::Connect {
            padding: [0; CONNECT_PADDING],
        },
    }
    .encode()
}

/// A well-formed request body of any kind, with junk in it.
fn random_body(rng: &mut fastrand::Rng, real: FileId) -> RequestBody {
    let peer = PeerInfo {
        port: rng.u16(..),
        advertise: rng.bool().then(|| shoal_proto::tracker::Advertise {
            ip: Ipv4Addr::from(rng.u32(..)).into(),
            proof: None,
        }),
    };
    let name = |rng: &mut fastrand::Rng| {
        let n = rng.usize(0..300);
        (0..n).map(|_| rng.alphanumeric()).collect::<String>()
    };
    let mut id = [0u8; 32];
    rng.fill(&mut id);
    match rng.u8(0..6) {
        0 => RequestBody::Announce {
            files: (0..rng.usize(0..4))
                .map(|_| FileEntry {
                    id: FileId(id),
                    size: rng.u64(..),
                    name: name(rng),
                    have: shoal_proto::tracker::Have::Complete,
                })
                .collect(),
            peer,
        },
        1 => RequestBody::Heartbeat {
            peer,
            files: rng.u32(..),
            progress: Vec::new(),
        },
        2 => RequestBody::Unregister {
            peer,
            files: rng.bool().then(|| vec![real, FileId(id)]),
        },
        3 => RequestBody::GetPeers { file: real },
        4 => RequestBody::List {
            filter: match rng.u8(0..4) {
                0 => Filter::All,
                1 => Filter::NameContains(name(rng)),
                2 => Filter::NameIs(name(rng)),
                _ => Filter::IdPrefix(IdPrefix::parse(&real.to_hex()[..8]).unwrap()),
            },
            cursor: rng.u32(..),
        },
        _ => RequestBody::Connect {
            padding: [rng.u8(..); CONNECT_PADDING],
        },
    }
}

/// One hostile datagram.
fn hostile(rng: &mut fastrand::Rng, real: FileId, honest: &[Vec<u8>]) -> Vec<u8> {
    let random = |rng: &mut fastrand::Rng, n: usize| {
        let mut v = vec![0u8; n];
        rng.fill(&mut v);
        v
    };
    let valid = |rng: &mut fastrand::Rng| {
        Request {
            txn: TransactionId(rng.u32(..)),
            conn: ConnectionId(rng.u64(..)),
            body: random_body(rng, real),
        }
        .encode()
    };
    match rng.u8(0..100) {
        // Random bytes.
        0..=14 => {
            let n = rng.usize(0..1400);
            random(rng, n)
        }
        // The right magic, then random bytes.
        15..=24 => {
            let mut v = MAGIC.to_vec();
            let n = rng.usize(0..1200);
            v.extend(random(rng, n));
            v
        }
        // A valid request cut short.
        25..=34 => {
            let mut v = valid(rng);
            let n = v.len();
            v.truncate(rng.usize(0..n));
            v
        }
        // Oversized, now and then as large as UDP allows.
        35..=42 => {
            let n = if rng.u8(0..100) == 0 {
                65_000
            } else {
                rng.usize(1201..3000)
            };
            let mut v = MAGIC.to_vec();
            v.extend(random(rng, n));
            v
        }
        // Well-formed, with a forged connection id.
        43..=57 => valid(rng),
        // Another source's valid datagrams, replayed from here.
        58..=72 => honest[rng.usize(0..honest.len())].clone(),
        // The same, with a few bits flipped.
        73..=82 => {
            let mut v = honest[rng.usize(0..honest.len())].clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(0..v.len());
                v[i] ^= 1 << rng.u8(0..8);
            }
            v
        }
        // Connect requests: answered, and never larger than they are.
        83..=89 => connect_request(rng.u32(..)),
        // A connect request that is too short to deserve its reply.
        90..=94 => {
            let mut v = connect_request(rng.u32(..));
            v.truncate(v.len() - rng.usize(1..CONNECT_PADDING));
            v
        }
        _ => Vec::new(),
    }
}

/// The tracker's count of datagrams received.
fn seen(http: &str) -> u64 {
    totals(http)["datagrams"].as_u64().unwrap()
}

/// CPU time a process has used, user and system, in seconds.
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[0] + f[1]) as f64 / ticks
}

#[test]
fn tracker_survives_a_flood() {
    let (mut swarm, http) = swarm_with_page(BINS, &["--rate-limit", "100", "--rate-burst", "50"]);
    let tracker: SocketAddr = swarm.tracker_addr.parse().unwrap();
    let pid = swarm.tracker.pid();

    // The real seeder, on 127.0.0.1, which the flood does not use.
    let data = pattern(700_000, 11);
    swarm.write("real/real.bin", &data);
    let (_seeder, lines) = swarm.seeder_in(&swarm.path("real"), &["real.bin"]);
    let real_hex = id_of(&lines[0]);
    let real = FileId::from_hex(&real_hex).unwrap();

    // One honest source: it connects, registers a few files, and its valid datagrams are what
    // the flood replays from elsewhere.
    let mut honest = Source::bind(Ipv4Addr::new(127, 0, 3, 2));
    honest.socket.set_nonblocking(false).unwrap();
    honest
        .socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(honest.send(tracker, &connect_request(1)));
    let mut buf = [0u8; 2048];
    let n = honest
        .socket
        .recv(&mut buf)
        .expect("the tracker answers a connect");
    honest.received += n as u64;
    let conn = match Response::decode(&buf[..n]).unwrap().body {
        ResponseBody::Connected { conn } => conn,
        other => panic!("{other:?}"),
    };
    honest.socket.set_nonblocking(true).unwrap();
    let peer = PeerInfo {
        port: 9,
        advertise: None,
    };
    let honest_bodies = vec![
        RequestBody::Announce {
            peer: peer.clone(),
            files: (0..3u8)
                .map(|n| FileEntry {
                    id: FileId([n; 32]),
                    size: 1000,
                    name: format!("honest-{n}"),
                    have: shoal_proto::tracker::Have::Complete,
                })
                .collect(),
        },
        RequestBody::Heartbeat {
            peer,
            files: 3,
            progress: Vec::new(),
        },
        RequestBody::List {
            filter: Filter::All,
            cursor: 0,
        },
        RequestBody::List {
            filter: Filter::NameContains("real".into()),
            cursor: 0,
        },
        RequestBody::GetPeers { file: real },
    ];
    let honest_datagrams: Vec<Vec<u8>> = honest_bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            Request {
                txn: TransactionId(100 + i as u32),
                conn,
                body,
            }
            .encode()
        })
        .collect();

    let mut flood: Vec<Source> = (0..FLOOD_SOURCES)
        .map(|i| Source::bind(Ipv4Addr::new(127, 0, 1 + (i / 256) as u8, (i % 256) as u8)))
        .collect();
    flood.extend((0..HOT_SOCKETS).map(|_| Source::bind(Ipv4Addr::new(127, 0, 3, 1))));

    let (hwm_before, rss_before) = memory_kib(pid);
    let cpu_before = cpu_secs(pid);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let start = Instant::now();
    let mut sent = 0usize;
    let mut sent_bytes = 0u64;
    let mut hot_sent = 0usize;
    let mut lost = 0u64;
    let mut next = 0usize;
    let mut carry: Option<Vec<u8>> = None;
    let mut round = 0usize;
    while sent < DATAGRAMS {
        assert!(
            start.elapsed() < FLOOD_DEADLINE,
            "the flood took over {FLOOD_DEADLINE:?}"
        );
        round += 1;
        if round.is_multiple_of(25) && hot_sent < HOT_DATAGRAMS {
            // A burst of small datagrams from one address, far over its rate.
            for k in 0..HOT_BURST.min(DATAGRAMS - sent) {
                let d = connect_request(rng.u32(..));
                if flood[FLOOD_SOURCES + k % HOT_SOCKETS].send(tracker, &d) {
                    sent += 1;
                    hot_sent += 1;
                    sent_bytes += d.len() as u64;
                }
            }
        } else {
            // A batch that fits the queue budget, round-robin over the flood's addresses.
            let mut budget = QUEUE_BUDGET;
            while sent < DATAGRAMS {
                let d = carry
                    .take()
                    .unwrap_or_else(|| hostile(&mut rng, real, &honest_datagrams));
                let cost = d.len() + 1024;
                if cost > budget && budget < QUEUE_BUDGET {
                    carry = Some(d);
                    break;
                }
                budget = budget.saturating_sub(cost);
                if flood[next].send(tracker, &d) {
                    sent += 1;
                    sent_bytes += d.len() as u64;
                }
                next = (next + 1) % FLOOD_SOURCES;
            }
        }
        // Now and then the honest source replays its own valid requests, which it may.
        if round.is_multiple_of(10) {
            let d = &honest_datagrams[round / 10 % honest_datagrams.len()];
            honest.send(tracker, d);
        }
        // Replies are few and small: reading them now and then keeps every queue short.
        if round.is_multiple_of(16) {
            for s in flood.iter_mut() {
                s.drain();
            }
        }
        honest.drain();
        // Wait for the tracker to work through its queue (a count it reports, not a guess at
        // a time). What never arrives was lost to a full queue: counted, and allowed for.
        let ours = sent as u64 + honest.datagrams;
        let mut last = (Instant::now(), 0);
        loop {
            let s = seen(&http);
            let behind = ours.saturating_sub(lost + s);
            if behind == 0 {
                break;
            }
            if s != last.1 {
                last = (Instant::now(), s);
            } else if last.0.elapsed() > Duration::from_millis(500) {
                lost += behind;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let flood_time = start.elapsed();
    let rounds = round;

    let seen_after_flood = seen(&http);
    let cpu_after_flood = cpu_secs(pid);

    // A last connect from every flood socket: its answer is the last thing the tracker sends
    // there, so once it is in, every earlier reply is too. A few sockets at a time, so the
    // tracker's queue does not overflow.
    let mut pending: Vec<usize> = (0..flood.len()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} sockets got no answer to a connect",
            pending.len()
        );
        let batch: Vec<usize> = pending.iter().copied().take(64).collect();
        for &i in &batch {
            flood[i].send(tracker, &connect_request(0xC0DE_0000 + i as u32));
        }
        let resend_at = Instant::now() + Duration::from_millis(300);
        let mut answered = Vec::new();
        while Instant::now() < resend_at && answered.len() < batch.len() {
            for &i in &batch {
                let want = TransactionId(0xC0DE_0000 + i as u32);
                if flood[i]
                    .drain()
                    .iter()
                    .any(|r| r.txn == want && matches!(r.body, ResponseBody::Connected { .. }))
                {
                    answered.push(i);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        pending.retain(|i| !answered.contains(i));
    }
    honest.drain();

    // Still alive, and still doing its job.
    assert!(
        swarm.tracker.child.try_wait().unwrap().is_none(),
        "the tracker died\n{}",
        swarm.tracker.dump()
    );
    let listed = (0..50)
        .find_map(|_| {
            let run = swarm.run_leecher(swarm.dir.path(), &["--list", "real"]);
            run.assert_ok();
            run.stdout
                .lines()
                .any(|l| l.starts_with(&real_hex))
                .then_some(run.stdout)
        })
        .expect("the real seeder is listed after the flood");
    assert!(listed.contains(" real.bin"), "{listed}");
    let out = swarm.folder("out");
    swarm
        .run_leecher(&out, &["--no-seed", &real_hex])
        .assert_ok();
    assert_eq!(std::fs::read(out.join("real.bin")).unwrap(), data);

    // Memory.
    let (hwm, rss) = memory_kib(pid);
    // No amplification, per socket that never proved its address, and in all.
    for (i, s) in flood.iter().enumerate() {
        assert!(
            s.received <= s.sent,
            "socket {i} sent {} bytes and got {} back",
            s.sent,
            s.received
        );
    }
    let ours_sent: u64 = flood.iter().map(|s| s.sent).sum::<u64>() + honest.sent;
    let ours_received: u64 = flood.iter().map(|s| s.received).sum::<u64>() + honest.received;
    let m = metrics(&http);
    let metric = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no metric {k}"));
    let t_in = metric("shoal_tracker_received_bytes_total");
    let t_out = metric("shoal_tracker_sent_bytes_total");
    let t_datagrams = metric("shoal_tracker_datagrams_received_total");
    let malformed = metric("shoal_tracker_dropped_total{reason=\"malformed\"}");
    let limited = metric("shoal_tracker_dropped_total{reason=\"rate_limited\"}");
    let bad_conn = metric("shoal_tracker_bad_connection_total");
    let cpu = cpu_after_flood - cpu_before;
    eprintln!(
        "flood: {sent} hostile datagrams ({:.1} MB) in {:.2} s = {:.0} datagrams/s; \
         {lost} lost to a full socket queue; the tracker used {cpu:.2} s of CPU for them and \
         for the status requests pacing {rounds} rounds = {:.0} datagrams per CPU second\n\
         our sockets: {ours_sent} bytes sent, {ours_received} bytes received (ratio {:.4})\n\
         tracker: {t_datagrams} datagrams, {t_in} bytes in, {t_out} bytes out (ratio {:.4}); \
         {malformed} malformed, {limited} rate limited, {bad_conn} with bad connection ids\n\
         tracker memory: VmRSS {rss_before} KiB before, VmHWM {hwm} KiB peak \
         (was {hwm_before}), VmRSS {rss} KiB after",
        sent_bytes as f64 / 1e6,
        flood_time.as_secs_f64(),
        sent as f64 / flood_time.as_secs_f64(),
        sent as f64 / cpu.max(0.01),
        ours_received as f64 / ours_sent as f64,
        t_out / t_in,
    );
    assert!(ours_received <= ours_sent);
    assert!(t_out <= t_in, "the tracker sent {t_out} bytes for {t_in}");
    assert!(
        seen_after_flood + lost >= sent as u64,
        "the tracker saw {seen_after_flood} datagrams of {sent}"
    );
    assert!(lost * 100 <= sent as u64, "more than 1% lost: {lost}");
    assert!(malformed >= 30_000.0, "{malformed} malformed");
    assert!(bad_conn >= 10_000.0, "{bad_conn} bad connection ids");
    assert!(limited >= 1_000.0, "{limited} rate limited");
    assert!(
        hwm <= MAX_RSS_KIB,
        "the tracker's resident memory peaked at {hwm} KiB, over {MAX_RSS_KIB} KiB"
    );
    assert!(
        hwm <= rss_before + MAX_GROWTH_KIB,
        "the flood grew the tracker from {rss_before} KiB to {hwm} KiB"
    );
}
