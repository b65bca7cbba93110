//! Partial peers (downloads in progress) and peers of another protocol version.

use super::tests::{connect, send, src};
use super::*;
use shoal_proto::tracker::PROTOCOL_VERSION;
use shoal_proto::TransactionId;

fn entry(n: u8, have: Have) -> FileEntry {
    FileEntry {
        id: FileId([n; 32]),
        size: 1000,
        name: format!("file {n}"),
        have,
    }
}

fn peer(port: u16) -> PeerInfo {
    PeerInfo {
        port,
        advertise: None,
    }
}

fn listed(reg: &mut Registry, now: Instant, from: SocketAddr, conn: ConnectionId) -> ListEntry {
    match send(
        reg,
        now,
        from,
        conn,
        RequestBody::List {
            filter: Filter::All,
            cursor: 0,
        },
    ) {
        Some(ResponseBody::Files { mut entries, .. }) if entries.len() == 1 => entries.remove(0),
        other => panic!("{other:?}"),
    }
}

fn have_of(reg: &Registry, n: u8, port: u16) -> Option<Have> {
    reg.file(&FileId([n; 32]))?
        .have_of(&SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn downloaders_are_listed_apart_handed_out_and_promoted_when_complete() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let (seed, leech) = (src(1000), src(1001));
    let (cs, cl) = (connect(&mut reg, t0, seed), connect(&mut reg, t0, leech));
    let ack =
        |r: Option<ResponseBody>| assert!(matches!(r, Some(ResponseBody::Ack { .. })), "{r:?}");
    ack(send(
        &mut reg,
        t0,
        seed,
        cs,
        RequestBody::Announce {
            peer: peer(7000),
            files: vec![entry(1, Have::Complete)],
        },
    ));
    let partial = Have::Partial { bytes: 100 };
    ack(send(
        &mut reg,
        t0,
        leech,
        cl,
        RequestBody::Announce {
            peer: peer(7001),
            files: vec![entry(1, partial)],
        },
    ));
    reg.check_invariants();
    let e = listed(&mut reg, t0, leech, cl);
    assert_eq!((e.seeders, e.leechers), (1, 1));
    assert_eq!(
        reg.downloads(),
        Downloads {
            count: 1,
            bytes: 100,
            size: 1000
        }
    );

    // Peer lists carry both, so that downloaders find each other.
    match send(
        &mut reg,
        t0,
        seed,
        cs,
        RequestBody::GetPeers {
            file: FileId([1; 32]),
        },
    ) {
        Some(ResponseBody::Peers { mut peers, .. }) => {
            peers.sort();
            assert_eq!(
                peers,
                [
                    SocketAddr::from(([127, 0, 0, 1], 7000)),
                    SocketAddr::from(([127, 0, 0, 1], 7001))
                ]
            );
        }
        other => panic!("{other:?}"),
    }

    // Progress comes in heartbeats; a report for a file the peer did not register, or for
    // another peer's file, changes nothing; a complete peer stays complete.
    let beat = |files, progress| RequestBody::Heartbeat {
        peer: peer(7001),
        files,
        progress,
    };
    let report = vec![
        Progress {
            id: FileId([1; 32]),
            bytes: 600,
        },
        Progress {
            id: FileId([2; 32]),
            bytes: 5,
        },
    ];
    ack(send(&mut reg, t0, leech, cl, beat(1, report)));
    assert_eq!(have_of(&reg, 1, 7001), Some(Have::Partial { bytes: 600 }));
    assert!(reg.file(&FileId([2; 32])).is_none());
    let seed_beat = RequestBody::Heartbeat {
        peer: peer(7000),
        files: 1,
        progress: vec![Progress {
            id: FileId([1; 32]),
            bytes: 1,
        }],
    };
    ack(send(&mut reg, t0, seed, cs, seed_beat));
    assert_eq!(have_of(&reg, 1, 7000), Some(Have::Complete));
    // Progress past the size is held to the size.
    ack(send(
        &mut reg,
        t0,
        leech,
        cl,
        beat(
            1,
            vec![Progress {
                id: FileId([1; 32]),
                bytes: u64::MAX,
            }],
        ),
    ));
    assert_eq!(have_of(&reg, 1, 7001), Some(Have::Partial { bytes: 1000 }));

    // Finishing: the same entry again, complete. A heartbeat alone never promotes.
    let generation = reg.generation();
    ack(send(
        &mut reg,
        t0,
        leech,
        cl,
        RequestBody::Announce {
            peer: peer(7001),
            files: vec![entry(1, Have::Complete)],
        },
    ));
    assert!(
        reg.generation() > generation,
        "the page must see the new seeder"
    );
    let e = listed(&mut reg, t0, leech, cl);
    assert_eq!((e.seeders, e.leechers), (2, 0));
    assert_eq!(reg.gauges().registrations, 2);
    assert_eq!(reg.downloads(), Downloads::default());
    reg.check_invariants();
}

#[test]
fn another_version_is_told_ours_in_no_more_bytes_than_it_sent() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let connect = Request {
        txn: TransactionId(1),
        conn: ConnectionId(0),
        body: RequestBody::Connect {
            padding: [0; shoal_proto::tracker::CONNECT_PADDING],
        },
    }
    .encode();
    for version in [b'1', b'3', b'x'] {
        let mut old = connect.clone();
        old[3] = version;
        let reply = reg.handle(t0, src(2000), &old).expect("an answer");
        assert_eq!(reply, MAGIC);
        assert_eq!(reply[3], b'0' + PROTOCOL_VERSION);
        // The shortest datagram that names a version gets an answer no larger.
        assert_eq!(
            reg.handle(t0, src(2000), &old[..4]).map(|r| r.len()),
            Some(4)
        );
    }
    assert_eq!(reg.totals().other_version, 6);
    // Anything else without our magic is still dropped unanswered.
    assert_eq!(reg.handle(t0, src(2000), b"XYZ1hello"), None);
    assert_eq!(reg.handle(t0, src(2000), b"SH"), None);
}
