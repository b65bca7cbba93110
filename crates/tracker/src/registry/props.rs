//! Property tests of [`Registry::handle`] against hostile input: arbitrary bytes, well-formed
//! requests with forged connection ids, mutated valid datagrams and replays, from many sources,
//! with time jumping about. Whatever arrives: no panic, replies fit a datagram and decode, the
//! indexes stay consistent and within the caps, dropped peers are gone, and a source that has not
//! proved it receives never gets a reply larger than its request.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use shoal_proto::TransactionId;
use shoal_testkit::strategies::Leaves;

use super::*;

/// The small domain (see [`Leaves::small`]): files and peers collide across requests.
fn body() -> impl Strategy<Value = RequestBody> {
    Leaves::small().request_body()
}

/// How a datagram is made.
#[derive(Clone, Debug)]
enum Conn {
    /// The id the tracker gave this source (or 0 if it has none yet).
    Own,
    /// The id another source was given.
    Stolen(usize),
    Forged(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Request {
        src: usize,
        txn: u32,
        conn: Conn,
        body: RequestBody,
    },
    /// A request, then some bytes flipped, cut off or appended.
    Mutated {
        src: usize,
        body: RequestBody,
        flips: Vec<(usize, u8)>,
        cut: Option<usize>,
        tail: Vec<u8>,
    },
    Raw {
        src: usize,
        bytes: Vec<u8>,
    },
    /// The last datagram sent, again, from any source.
    Replay {
        src: usize,
    },
    Advance {
        ms: u64,
    },
}

const SOURCES: usize = 6;

fn op() -> impl Strategy<Value = Op> {
    let src = 0..SOURCES;
    let conn = prop_oneof![
        6 => Just(Conn::Own),
        1 => (0..SOURCES).prop_map(Conn::Stolen),
        1 => any::<u64>().prop_map(Conn::Forged),
    ];
    prop_oneof![
        8 => (src.clone(), any::<u32>(), conn, body())
            .prop_map(|(src, txn, conn, body)| Op::Request { src, txn, conn, body }),
        2 => (
            src.clone(),
            body(),
            vec((any::<usize>(), any::<u8>()), 0..4),
            option::of(any::<usize>()),
            vec(any::<u8>(), 0..8),
        )
            .prop_map(|(src, body, flips, cut, tail)| Op::Mutated { src, body, flips, cut, tail }),
        1 => (src.clone(), raw_bytes()).prop_map(|(src, bytes)| Op::Raw { src, bytes }),
        1 => src.prop_map(|src| Op::Replay { src }),
        1 => prop_oneof![0u64..2_000, 0u64..200_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

/// Arbitrary bytes, often behind the right magic so they reach the decoder's body.
fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), vec(any::<u8>(), 0..1400)).prop_map(|(magic, rest)| {
        if magic {
            let mut v = shoal_proto::tracker::MAGIC.to_vec();
            v.extend(rest);
            v
        } else {
            rest
        }
    })
}

fn small_config() -> Config {
    Config {
        interval: Duration::from_secs(10),
        peer_timeout: Duration::from_secs(30),
        limits: Limits {
            files_per_peer: 4,
            peers_per_file: 3,
            total_files: 8,
            total_peers: 5,
            registrations: 10,
            name_len: 20,
            peers_per_reply: 2,
            rate: 20,
            burst: 8,
            rate_table: 4,
        },
    }
}

fn source(i: usize) -> SocketAddr {
    if i % 3 == 2 {
        SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, i as u16], 6000))
    } else {
        SocketAddr::from(([10, 0, 0, i as u8], 6000 + i as u16))
    }
}

/// Whether the registry would treat `datagram` from `src` as coming from a proved address.
fn verified(reg: &Registry, now: Instant, src: SocketAddr, datagram: &[u8]) -> bool {
    match Request::decode(datagram) {
        Ok(req) => {
            !matches!(req.body, RequestBody::Connect { .. })
                && reg.connection_ok(src, req.conn, now)
        }
        Err(_) => false,
    }
}

/// Sends one datagram and checks everything that must hold of the answer and the state after.
fn exchange(
    reg: &mut Registry,
    now: Instant,
    src: SocketAddr,
    datagram: &[u8],
) -> Option<Response> {
    let proved = verified(reg, now, src, datagram);
    let request = Request::decode(datagram).ok();
    let reply = reg.handle(now, src, datagram);
    reg.check_invariants();
    let timeout = reg.config.peer_timeout;
    assert!(reg
        .peers()
        .all(|p| now.saturating_duration_since(p.last_seen) <= timeout));
    let reply = reply?;
    assert!(reply.len() <= MAX_DATAGRAM);
    if !proved {
        assert!(
            reply.len() <= datagram.len(),
            "amplification: {} bytes in, {} out",
            datagram.len(),
            reply.len()
        );
    }
    if reply == MAGIC {
        // The answer to another version: only ever to a datagram under another version's magic.
        assert!(matches!(
            Request::decode(datagram),
            Err(DecodeError::OtherVersion(_))
        ));
        return None;
    }
    let resp = Response::decode(&reply).expect("replies decode");
    let req = request.expect("only decodable requests are answered");
    assert_eq!(resp.txn, req.txn);
    Some(resp)
}

fn run(ops: Vec<Op>) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut reg = Registry::new(small_config(), t0);
    let mut conns = [ConnectionId(0); SOURCES];
    let mut last: Vec<u8> = Vec::new();
    for op in ops {
        let (src, datagram) = match op {
            Op::Advance { ms } => {
                now += Duration::from_millis(ms);
                reg.expire_due(now);
                continue;
            }
            Op::Request {
                src,
                txn,
                conn,
                body,
            } => {
                let conn = match conn {
                    Conn::Own => conns[src],
                    Conn::Stolen(other) => conns[other],
                    Conn::Forged(c) => ConnectionId(c),
                };
                let txn = TransactionId(txn);
                (src, Request { txn, conn, body }.encode())
            }
            Op::Mutated {
                src,
                body,
                flips,
                cut,
                tail,
            } => {
                let txn = TransactionId(7);
                let conn = conns[src];
                let mut bytes = Request { txn, conn, body }.encode();
                for (at, x) in flips {
                    let n = bytes.len();
                    bytes[at % n] ^= x;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut % (bytes.len() + 1));
                }
                bytes.extend(tail);
                (src, bytes)
            }
            Op::Raw { src, bytes } => (src, bytes),
            Op::Replay { src } => (src, last.clone()),
        };
        if let Some(Response {
            body: ResponseBody::Connected { conn },
            ..
        }) = exchange(&mut reg, now, source(src), &datagram)
        {
            conns[src] = conn;
        }
        last = datagram;
    }
    let t = reg.totals();
    assert_eq!(
        t.datagrams,
        t.replies + t.dropped(),
        "every datagram is answered or counted as dropped: {t:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Sequences of requests, forgeries, mutations, replays and garbage from several sources.
    #[test]
    fn hostile_sequences(ops in vec(op(), 1..80)) {
        run(ops);
    }

    /// Any bytes at all, from a source that has not connected: dropped or a short error.
    #[test]
    fn arbitrary_datagrams_never_panic_or_amplify(bytes in raw_bytes(), port in any::<u16>()) {
        let t0 = Instant::now();
        let mut reg = Registry::new(Config::default(), t0);
        let src = SocketAddr::from(([192, 0, 2, 1], port));
        if let Some(reply) = exchange(&mut reg, t0, src, &bytes) {
            // Only a connect is answered with anything but an error.
            match reply.body {
                ResponseBody::Connected { .. } | ResponseBody::Error { .. } => {}
                other => panic!("unverified source got {other:?}"),
            }
        }
    }

    /// Well-formed requests with forged ids against a full registry (where honest answers are
    /// long): unverified sources still get nothing larger than they sent.
    #[test]
    fn forged_ids_never_amplify(body in body(), forged in any::<u64>(), txn in any::<u32>()) {
        let t0 = Instant::now();
        let mut reg = Registry::new(Config::default(), t0);
        let honest = SocketAddr::from(([10, 0, 0, 1], 1));
        let conn = reg.connection_id(honest, 0);
        for n in 0..40u8 {
            let files = vec![FileEntry { id: FileId([n; 32]), size: 1, name: format!("{n:0>40}"), have: Have::Complete }];
            let peer = PeerInfo { port: 7, advertise: None };
            let req = Request { txn: TransactionId(1), conn, body: RequestBody::Announce { peer, files } };
            reg.handle(t0, honest, &req.encode()).unwrap();
        }
        let spoofer = SocketAddr::from(([10, 0, 0, 2], 2));
        for conn in [ConnectionId(forged), conn, ConnectionId(0)] {
            let bytes = Request { txn: TransactionId(txn), conn, body: body.clone() }.encode();
            exchange(&mut reg, t0, spoofer, &bytes);
        }
    }
}
