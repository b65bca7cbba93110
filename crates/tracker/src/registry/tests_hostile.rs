//! A hostile LAN against the registry: registrations belong to their source, names are readable
//! text, connection ids are a keyed MAC.

use super::tests::{connect, send};
use super::*;
use shoal_proto::tracker::CONNECT_PADDING;

fn from(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn entry(n: u8, name: &str) -> FileEntry {
    FileEntry {
        id: FileId([n; 32]),
        size: 1000,
        name: name.into(),
        have: Have::Complete,
    }
}

fn serving(port: u16) -> PeerInfo {
    PeerInfo {
        port,
        advertise: None,
    }
}

fn refused(r: Option<ResponseBody>, code: ErrorCode) {
    assert_eq!(r, Some(ResponseBody::Error { code }));
}

#[test]
fn no_other_source_removes_refreshes_or_changes_a_registration() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    // Same host, another UDP socket: the same peer address (10.0.0.1:7000) as far as the datagram
    // can say, but another source.
    let (owner, other) = (from(40000), from(40001));
    let (co, cx) = (connect(&mut reg, t0, owner), connect(&mut reg, t0, other));
    let announce = |files| RequestBody::Announce {
        peer: serving(7000),
        files,
    };
    let r = send(&mut reg, t0, owner, co, announce(vec![entry(1, "mine")]));
    assert!(matches!(r, Some(ResponseBody::Ack { .. })), "{r:?}");

    let t1 = t0 + Duration::from_secs(5);
    let unregister = RequestBody::Unregister {
        peer: serving(7000),
        files: None,
    };
    refused(
        send(&mut reg, t1, other, cx, unregister.clone()),
        ErrorCode::NotOwner,
    );
    let some = RequestBody::Unregister {
        peer: serving(7000),
        files: Some(vec![FileId([1; 32])]),
    };
    refused(send(&mut reg, t1, other, cx, some), ErrorCode::NotOwner);
    refused(
        send(&mut reg, t1, other, cx, announce(vec![entry(1, "theirs")])),
        ErrorCode::NotOwner,
    );
    refused(
        send(&mut reg, t1, other, cx, announce(vec![entry(2, "planted")])),
        ErrorCode::NotOwner,
    );
    let beat = RequestBody::Heartbeat {
        peer: serving(7000),
        files: 1,
        progress: Vec::new(),
    };
    assert_eq!(
        send(&mut reg, t1, other, cx, beat.clone()),
        Some(ResponseBody::Unknown)
    );
    let peer = reg.peers().next().unwrap();
    assert_eq!(
        (peer.owner, peer.last_seen),
        (owner, t0),
        "not refreshed by another source"
    );
    let names: Vec<String> = reg
        .matching(&Filter::All)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["mine"]);
    assert_eq!(reg.totals().not_owner, 4);

    // The owner keeps it alive; once it has missed a heartbeat (a seeder that restarted on a
    // new socket), another source may take the address over.
    let r = send(&mut reg, t1, owner, co, beat);
    assert!(matches!(r, Some(ResponseBody::Ack { .. })), "{r:?}");
    let t2 = t1 + Duration::from_secs(16);
    let cx = connect(&mut reg, t2, other);
    let r = send(
        &mut reg,
        t2,
        other,
        cx,
        announce(vec![entry(2, "restarted")]),
    );
    assert!(matches!(r, Some(ResponseBody::Ack { .. })), "{r:?}");
    let names: Vec<String> = reg
        .matching(&Filter::All)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        ["restarted"],
        "the old registration went with its owner"
    );
    assert_eq!(reg.peers().next().unwrap().owner, other);
    reg.check_invariants();
    // And the old owner's leave no longer touches it.
    let co = connect(&mut reg, t2, owner);
    refused(
        send(&mut reg, t2, owner, co, unregister),
        ErrorCode::NotOwner,
    );
    assert_eq!(reg.peers().count(), 1);
}

#[test]
fn unreadable_names_are_refused_with_their_own_code() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let c = connect(&mut reg, t0, from(1));
    for bad in [
        "evil\u{202E}txt.exe",
        "a\u{2066}b",
        "a\u{2069}",
        "line\nbreak",
        "esc\u{1b}[31m",
        "nul\u{0}",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        let r = send(
            &mut reg,
            t0,
            from(1),
            c,
            RequestBody::Announce {
                peer: serving(7000),
                files: vec![entry(1, "fine"), entry(2, bad)],
            },
        );
        refused(r, ErrorCode::UnprintableName);
    }
    assert_eq!(
        reg.gauges().registrations,
        0,
        "nothing of a refused announce is kept"
    );
    for good in [
        "Ünïcødé ñame.iso",
        "日本語.txt",
        "\u{1F469}\u{200D}\u{1F4BB} (a joiner, as in emoji).png",
    ] {
        assert!(printable_name(good), "{good:?}");
    }
    assert!(!printable_name("a\u{200F}b (a bidi mark)"));
}

#[test]
fn connection_ids_are_siphash_2_4_under_a_key_from_the_os() {
    let t0 = Instant::now();
    let key: [u8; 16] = std::array::from_fn(|i| i as u8);
    let reg = Registry::with_key(Config::default(), t0, key);
    let src = SocketAddr::from(([192, 168, 1, 7], 40000));
    // The MAC's input, spelled out: family, IP octets, port, slot.
    let mut h = siphasher::sip::SipHasher24::new_with_key(&key);
    h.write_u8(4);
    h.write(&[192, 168, 1, 7]);
    h.write_u16(40000);
    h.write_u64(0);
    assert_eq!(reg.connection_id(src, 0), ConnectionId(h.finish()));
    assert_ne!(reg.connection_id(src, 0), reg.connection_id(src, 1));
    assert_ne!(
        reg.connection_id(src, 0),
        reg.connection_id(SocketAddr::from(([192, 168, 1, 7], 40001)), 0)
    );
    // Two trackers draw two keys: an id from one means nothing to the other.
    let (a, b) = (
        Registry::new(Config::default(), t0),
        Registry::new(Config::default(), t0),
    );
    assert_ne!(a.connection_id(src, 0), b.connection_id(src, 0));
    let mut a = a;
    let conn = match send(
        &mut a,
        t0,
        src,
        ConnectionId(0),
        RequestBody::Connect {
            padding: [0; CONNECT_PADDING],
        },
    ) {
        Some(ResponseBody::Connected { conn }) => conn,
        other => panic!("{other:?}"),
    };
    assert_eq!(conn, a.connection_id(src, a.slot(t0)));
}

fn small(peers_per_file: usize, total_peers: usize, registrations: usize) -> Config {
    Config {
        limits: Limits {
            peers_per_file,
            total_peers,
            registrations,
            rate: 0,
            ..Limits::default()
        },
        ..Config::default()
    }
}

/// Announces `files` for a peer serving on `port`, from `ip`'s UDP port `port`.
fn announce_from(
    reg: &mut Registry,
    now: Instant,
    ip: [u8; 4],
    port: u16,
    files: Vec<FileEntry>,
) -> Option<ResponseBody> {
    let src = SocketAddr::from((ip, port));
    let conn = connect(reg, now, src);
    send(
        reg,
        now,
        src,
        conn,
        RequestBody::Announce {
            peer: serving(port),
            files,
        },
    )
}

fn acked(r: Option<ResponseBody>) {
    assert!(matches!(r, Some(ResponseBody::Ack { .. })), "{r:?}");
}

#[test]
fn a_few_sources_cannot_fill_a_file_and_keep_an_honest_seeder_off_it() {
    let t0 = Instant::now();
    let mut reg = Registry::new(small(10, 1000, 1000), t0);
    // Two attacking hosts take every place on the file, five peers each.
    for port in 1..=10 {
        let ip = if port % 2 == 0 {
            [10, 6, 6, 6]
        } else {
            [10, 7, 7, 7]
        };
        acked(announce_from(
            &mut reg,
            t0,
            ip,
            port,
            vec![entry(1, "popular")],
        ));
    }
    // Today's tracker answers an eleventh peer with Full; an honest seeder gets in.
    acked(announce_from(
        &mut reg,
        t0,
        [10, 0, 0, 9],
        7000,
        vec![entry(1, "popular")],
    ));
    let record = reg.file(&FileId([1; 32])).unwrap();
    assert_eq!(record.peer_count(), 10);
    assert!(record.has(&SocketAddr::from(([10, 0, 0, 9], 7000))));
    assert_eq!(reg.totals().evictions, 1);
    // The attackers cannot push it out again: neither holds two more places than the other.
    for port in 11..=20 {
        let r = announce_from(&mut reg, t0, [10, 6, 6, 6], port, vec![entry(1, "popular")]);
        refused(r, ErrorCode::Full);
    }
    assert!(reg
        .file(&FileId([1; 32]))
        .unwrap()
        .has(&SocketAddr::from(([10, 0, 0, 9], 7000))));
    reg.check_invariants();
}

#[test]
fn one_source_cannot_fill_the_peer_or_registration_tables() {
    let t0 = Instant::now();
    let honest = |reg: &mut Registry| {
        acked(announce_from(
            reg,
            t0,
            [10, 0, 0, 9],
            7000,
            vec![entry(1, "honest")],
        ));
        assert_eq!(reg.matching(&Filter::NameIs("honest".into())).len(), 1);
        assert_eq!(reg.load(source_of([10, 0, 0, 9].into())).registrations, 1);
        reg.check_invariants();
    };
    // One host takes every place in the peer table. Today: Full. Now the honest seeder takes
    // the place of the host's least recently heard peer.
    let mut reg = Registry::new(small(1000, 20, 1000), t0);
    for port in 1..=20u16 {
        acked(announce_from(
            &mut reg,
            t0,
            [10, 6, 6, 6],
            port,
            vec![entry(100 + port as u8, "junk")],
        ));
    }
    assert_eq!(reg.gauges().peers, 20);
    honest(&mut reg);
    assert_eq!(reg.gauges().peers, 20);

    // One host takes every registration: the honest seeder takes the place of one of them.
    let mut reg = Registry::new(small(1000, 1000, 30), t0);
    for port in 1..=3u16 {
        let files = (0..10)
            .map(|n| entry(port as u8 * 10 + n, "junk"))
            .collect();
        acked(announce_from(&mut reg, t0, [10, 6, 6, 6], port, files));
    }
    assert_eq!(reg.gauges().registrations, 30);
    honest(&mut reg);
    assert_eq!(reg.gauges().registrations, 30);
    assert_eq!(reg.totals().evictions, 1);

    // One host registers made-up files until the table of distinct files is full: the honest
    // seeder's new file takes the place of one only that host shares. Today: Full.
    let mut reg = Registry::new(
        Config {
            limits: Limits {
                total_files: 12,
                rate: 0,
                ..Limits::default()
            },
            ..Config::default()
        },
        t0,
    );
    for port in 1..=3u16 {
        let files = (0..4).map(|n| entry(port as u8 * 10 + n, "junk")).collect();
        acked(announce_from(&mut reg, t0, [10, 6, 6, 6], port, files));
    }
    assert_eq!(reg.gauges().files, 12);
    honest(&mut reg);
    assert_eq!(reg.gauges().files, 12);
    assert_eq!(reg.totals().evictions, 1);
    // The host cannot push it out again: it is the most represented source itself, so a new
    // file of its own finds no place it may take.
    let r = announce_from(&mut reg, t0, [10, 6, 6, 6], 4, vec![entry(99, "junk")]);
    refused(r, ErrorCode::Full);
    assert_eq!(reg.matching(&Filter::NameIs("honest".into())).len(), 1);
    assert_eq!(reg.gauges().files, 12);
    reg.check_invariants();
}

#[test]
fn an_ipv6_host_is_one_source_whatever_address_of_its_64_it_uses() {
    let a: IpAddr = "fd00:1:2:3::1".parse().unwrap();
    let b: IpAddr = "fd00:1:2:3:ffff::9".parse().unwrap();
    let c: IpAddr = "fd00:1:2:4::1".parse().unwrap();
    assert_eq!(source_of(a), source_of(b));
    assert_ne!(source_of(a), source_of(c));
    let v4: IpAddr = "10.1.2.3".parse().unwrap();
    assert_eq!(source_of(v4), v4);
    assert_eq!(source_of("::ffff:10.1.2.3".parse().unwrap()), v4);
}

#[test]
fn an_honest_seeder_with_another_size_is_registered_not_skipped() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    // Today the first announcer fixes the size and the honest seeder is acknowledged but skipped.
    let liar = FileEntry {
        size: 1,
        ..entry(1, "big.iso")
    };
    acked(announce_from(&mut reg, t0, [10, 6, 6, 6], 1, vec![liar]));
    acked(announce_from(
        &mut reg,
        t0,
        [10, 0, 0, 9],
        7000,
        vec![entry(1, "big.iso")],
    ));
    let record = reg.file(&FileId([1; 32])).unwrap();
    assert!(record.has(&SocketAddr::from(([10, 0, 0, 9], 7000))));
    assert_eq!(record.peer_count(), 2);
    // One each: the tie goes to the smaller, until a second honest seeder comes.
    acked(announce_from(
        &mut reg,
        t0,
        [10, 0, 0, 8],
        7000,
        vec![entry(1, "big.iso")],
    ));
    assert_eq!(reg.file(&FileId([1; 32])).unwrap().size, 1000);
    reg.check_invariants();
}

#[test]
fn nobody_plants_an_address_it_does_not_receive_at() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let attacker = from(40000);
    let conn = connect(&mut reg, t0, attacker);
    let victim = IpAddr::from([10, 0, 0, 77]);
    let announce = |advertise| RequestBody::Announce {
        peer: PeerInfo {
            port: 22,
            advertise: Some(advertise),
        },
        files: vec![entry(1, "popular")],
    };
    // Today any address is taken as given.
    let bare = Advertise {
        ip: victim,
        proof: None,
    };
    refused(
        send(&mut reg, t0, attacker, conn, announce(bare)),
        ErrorCode::BadAdvertise,
    );
    // A proof made for another address, or a forged one, proves nothing.
    let elsewhere = super::tests::proved(&mut reg, t0, [10, 0, 0, 1], false);
    let stolen = Advertise {
        ip: victim,
        proof: elsewhere.proof,
    };
    refused(
        send(&mut reg, t0, attacker, conn, announce(stolen)),
        ErrorCode::BadAdvertise,
    );
    let forged = Advertise {
        ip: victim,
        proof: Some(shoal_proto::tracker::AddressProof {
            port: 5555,
            conn: ConnectionId(0x1234_5678),
        }),
    };
    refused(
        send(&mut reg, t0, attacker, conn, announce(forged)),
        ErrorCode::BadAdvertise,
    );
    assert_eq!(reg.peers().count(), 0);
    // Its own address needs no proof (a NAT's public address, as the tracker sees it), and a
    // proved one is taken.
    let own = Advertise {
        ip: attacker.ip(),
        proof: None,
    };
    acked(send(&mut reg, t0, attacker, conn, announce(own)));
    let other = from(40001);
    let c2 = connect(&mut reg, t0, other);
    let proved = super::tests::proved(&mut reg, t0, [10, 0, 0, 78], false);
    acked(send(&mut reg, t0, other, c2, announce(proved)));
    let mut peers: Vec<SocketAddr> = reg.peers().map(|p| p.addr).collect();
    peers.sort();
    assert_eq!(
        peers,
        [
            SocketAddr::from(([10, 0, 0, 1], 22)),
            SocketAddr::from(([10, 0, 0, 78], 22))
        ]
    );
}
