use super::*;
use shoal_proto::tracker::CONNECT_PADDING;
use shoal_proto::TransactionId;

pub(super) fn src(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(super) fn send(
    reg: &mut Registry,
    now: Instant,
    from: SocketAddr,
    conn: ConnectionId,
    body: RequestBody,
) -> Option<ResponseBody> {
    let bytes = Request {
        txn: TransactionId(9),
        conn,
        body,
    }
    .encode();
    reg.handle(now, from, &bytes)
        .map(|r| Response::decode(&r).unwrap())
        .map(|r| {
            assert_eq!(r.txn, TransactionId(9));
            r.body
        })
}

pub(super) fn connect(reg: &mut Registry, now: Instant, from: SocketAddr) -> ConnectionId {
    match send(
        reg,
        now,
        from,
        ConnectionId(0),
        RequestBody::Connect {
            padding: [0; CONNECT_PADDING],
        },
    ) {
        Some(ResponseBody::Connected { conn }) => conn,
        other => panic!("{other:?}"),
    }
}

fn entry(n: u8, name: &str) -> FileEntry {
    FileEntry {
        id: FileId([n; 32]),
        size: 100 + u64::from(n),
        name: name.into(),
        have: shoal_proto::tracker::Have::Complete,
    }
}

#[test]
fn register_list_heartbeat_and_expire() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let a = src(1000);
    let conn = connect(&mut reg, t0, a);
    let peer = PeerInfo {
        port: 7000,
        advertise: None,
    };
    let files = vec![entry(1, "one"), entry(2, "two")];
    assert!(matches!(
        send(
            &mut reg,
            t0,
            a,
            conn,
            RequestBody::Announce {
                peer: peer.clone(),
                files
            }
        ),
        Some(ResponseBody::Ack { interval_secs: 10 })
    ));
    match send(
        &mut reg,
        t0,
        a,
        conn,
        RequestBody::List {
            filter: Filter::All,
            cursor: 0,
        },
    ) {
        Some(ResponseBody::Files {
            entries,
            next: None,
        }) => {
            assert_eq!(
                entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
                ["one", "two"]
            );
            assert!(entries.iter().all(|e| e.seeders == 1));
        }
        other => panic!("{other:?}"),
    }
    match send(
        &mut reg,
        t0,
        a,
        conn,
        RequestBody::GetPeers {
            file: FileId([1; 32]),
        },
    ) {
        Some(ResponseBody::Peers { peers, .. }) => {
            assert_eq!(peers, vec![SocketAddr::from(([127, 0, 0, 1], 7000))])
        }
        other => panic!("{other:?}"),
    }
    let t1 = t0 + Duration::from_secs(20);
    assert!(matches!(
        send(
            &mut reg,
            t1,
            a,
            conn,
            RequestBody::Heartbeat {
                peer: peer.clone(),
                files: 2,
                progress: Vec::new(),
            }
        ),
        Some(ResponseBody::Ack { .. })
    ));
    assert!(matches!(
        send(
            &mut reg,
            t1,
            a,
            conn,
            RequestBody::Heartbeat {
                peer: peer.clone(),
                files: 3,
                progress: Vec::new(),
            }
        ),
        Some(ResponseBody::Unknown)
    ));
    reg.expire(t1 + Duration::from_secs(29));
    assert_eq!(reg.peers().count(), 1);
    reg.expire(t1 + Duration::from_secs(31));
    assert_eq!(reg.peers().count(), 0);
    assert!(reg.matching(&Filter::All).is_empty());
    assert!(matches!(
        send(
            &mut reg,
            t1 + Duration::from_secs(40),
            a,
            conn,
            RequestBody::Heartbeat {
                peer,
                files: 2,
                progress: Vec::new()
            }
        ),
        Some(ResponseBody::Unknown)
    ));
}

#[test]
fn forged_connection_ids_get_a_small_error() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let conn = connect(&mut reg, t0, src(1));
    // Another source cannot use that id.
    let reply = send(
        &mut reg,
        t0,
        src(2),
        conn,
        RequestBody::List {
            filter: Filter::All,
            cursor: 0,
        },
    );
    assert_eq!(
        reply,
        Some(ResponseBody::Error {
            code: ErrorCode::BadConnection
        })
    );
    // Ids expire after two slots.
    let later = t0 + Duration::from_secs(121);
    let reply = send(
        &mut reg,
        later,
        src(1),
        conn,
        RequestBody::List {
            filter: Filter::All,
            cursor: 0,
        },
    );
    assert_eq!(
        reply,
        Some(ResponseBody::Error {
            code: ErrorCode::BadConnection
        })
    );
}

#[test]
fn long_listings_are_paged_and_fit_a_datagram() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let a = src(1);
    let conn = connect(&mut reg, t0, a);
    let peer = PeerInfo {
        port: 1,
        advertise: None,
    };
    for n in 0..200u8 {
        let f = FileEntry {
            id: FileId([n; 32]),
            size: 1,
            name: format!("file-{n:03}-{}", "x".repeat(40)),
            have: shoal_proto::tracker::Have::Complete,
        };
        send(
            &mut reg,
            t0,
            a,
            conn,
            RequestBody::Announce {
                peer: peer.clone(),
                files: vec![f],
            },
        );
    }
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let bytes = reg
            .handle(
                t0,
                a,
                &Request {
                    txn: TransactionId(1),
                    conn,
                    body: RequestBody::List {
                        filter: Filter::All,
                        cursor,
                    },
                }
                .encode(),
            )
            .unwrap();
        assert!(bytes.len() <= MAX_DATAGRAM);
        match Response::decode(&bytes).unwrap().body {
            ResponseBody::Files { entries, next } => {
                seen.extend(entries.into_iter().map(|e| e.name));
                match next {
                    Some(n) => cursor = n,
                    None => break,
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen.len(), 200);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn loopback_peers_are_not_handed_to_other_hosts() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let local = src(1);
    let conn = connect(&mut reg, t0, local);
    send(
        &mut reg,
        t0,
        local,
        conn,
        RequestBody::Announce {
            peer: PeerInfo {
                port: 5,
                advertise: None,
            },
            files: vec![entry(1, "f")],
        },
    );
    let remote = SocketAddr::from(([10, 0, 0, 2], 4000));
    let rconn = connect(&mut reg, t0, remote);
    match send(
        &mut reg,
        t0,
        remote,
        rconn,
        RequestBody::GetPeers {
            file: FileId([1; 32]),
        },
    ) {
        Some(ResponseBody::Peers { peers, .. }) => assert!(peers.is_empty()),
        other => panic!("{other:?}"),
    }
}

fn peers_for(reg: &mut Registry, now: Instant, from: SocketAddr, n: u8) -> Vec<SocketAddr> {
    let conn = connect(reg, now, from);
    match send(
        reg,
        now,
        from,
        conn,
        RequestBody::GetPeers {
            file: FileId([n; 32]),
        },
    ) {
        Some(ResponseBody::Peers { mut peers, .. }) => {
            peers.sort();
            peers
        }
        other => panic!("{other:?}"),
    }
}

fn mapped(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(std::net::Ipv4Addr::from(ip).to_ipv6_mapped().into(), port)
}

/// What a tracker on `[::]` sees: IPv4 senders as ::ffff:a.b.c.d.
#[test]
fn v4_mapped_senders_are_plain_ipv4_and_mapped_loopback_is_loopback() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    announce(
        &mut reg,
        t0,
        mapped([10, 0, 0, 3], 40000),
        7003,
        vec![entry(1, "f")],
    );
    announce(
        &mut reg,
        t0,
        mapped([127, 0, 0, 1], 40001),
        7001,
        vec![entry(1, "f")],
    );
    let v6 = SocketAddr::from(([0xfd77, 0, 0, 0, 0, 0, 0, 2], 40002));
    announce(&mut reg, t0, v6, 7002, vec![entry(1, "f")]);
    let from_v6 = SocketAddr::from(([0xfd77, 0, 0, 0, 0, 0, 0, 4], 5000));
    let want = vec![
        SocketAddr::from(([10, 0, 0, 3], 7003)),
        SocketAddr::from(([0xfd77, 0, 0, 0, 0, 0, 0, 2], 7002)),
    ];
    assert_eq!(peers_for(&mut reg, t0, from_v6, 1), want);
    assert_eq!(
        peers_for(&mut reg, t0, mapped([10, 0, 0, 5], 5000), 1),
        want
    );
    // A sender keeps one identity whichever form its address arrives in.
    let conn = connect(&mut reg, t0, mapped([10, 0, 0, 3], 40000));
    let heartbeat = RequestBody::Heartbeat {
        peer: PeerInfo {
            port: 7003,
            advertise: None,
        },
        files: 1,
        progress: Vec::new(),
    };
    let plain = SocketAddr::from(([10, 0, 0, 3], 40000));
    assert!(matches!(
        send(&mut reg, t0, plain, conn, heartbeat),
        Some(ResponseBody::Ack { .. })
    ));
    assert_eq!(reg.gauges().peers, 3);
    // On the tracker's own host, loopback peers are fine, in either form.
    let local = peers_for(&mut reg, t0, mapped([127, 0, 0, 1], 5000), 1);
    assert!(
        local.contains(&SocketAddr::from(([127, 0, 0, 1], 7001))),
        "{local:?}"
    );
    reg.check_invariants();
}

#[test]
fn loopback_peers_go_by_the_address_the_requester_sees() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    reg.set_host_address(Box::new(|to| {
        Some(match to {
            IpAddr::V4(_) => IpAddr::from([10, 0, 0, 1]),
            IpAddr::V6(_) => IpAddr::from([0xfd77, 0, 0, 0, 0, 0, 0, 1]),
        })
    }));
    announce(&mut reg, t0, src(40000), 7001, vec![entry(1, "f")]);
    announce(
        &mut reg,
        t0,
        SocketAddr::from(([10, 0, 0, 2], 1)),
        7002,
        vec![entry(1, "f")],
    );
    assert_eq!(
        peers_for(&mut reg, t0, SocketAddr::from(([10, 0, 0, 9], 1)), 1),
        vec![
            SocketAddr::from(([10, 0, 0, 1], 7001)),
            SocketAddr::from(([10, 0, 0, 2], 7002)),
        ]
    );
    assert_eq!(
        peers_for(
            &mut reg,
            t0,
            SocketAddr::from(([0xfd77, 0, 0, 0, 0, 0, 0, 9], 1)),
            1
        ),
        vec![
            SocketAddr::from(([10, 0, 0, 2], 7002)),
            SocketAddr::from(([0xfd77, 0, 0, 0, 0, 0, 0, 1], 7001)),
        ]
    );
    assert_eq!(
        peers_for(&mut reg, t0, src(1), 1),
        vec![
            SocketAddr::from(([10, 0, 0, 2], 7002)),
            SocketAddr::from(([127, 0, 0, 1], 7001)),
        ]
    );
    // A lookup that finds nothing (or only loopback) hides the peer, as without one.
    reg.set_host_address(Box::new(|_| Some(IpAddr::from([127, 0, 0, 1]))));
    assert_eq!(
        peers_for(&mut reg, t0, SocketAddr::from(([10, 0, 0, 9], 1)), 1),
        vec![SocketAddr::from(([10, 0, 0, 2], 7002))]
    );
}

/// An advertised address with its proof: a connection id the registry gave a socket there (as
/// an IPv4-mapped IPv6 address if `mapped`).
pub(super) fn proved(reg: &mut Registry, now: Instant, ip: [u8; 4], mapped: bool) -> Advertise {
    let at = SocketAddr::from((ip, 5555));
    let conn = connect(reg, now, at);
    let v4 = std::net::Ipv4Addr::from(ip);
    Advertise {
        ip: if mapped {
            v4.to_ipv6_mapped().into()
        } else {
            v4.into()
        },
        proof: Some(shoal_proto::tracker::AddressProof { port: 5555, conn }),
    }
}

#[test]
fn advertised_addresses_that_cannot_be_served_on_are_ignored() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    let remote = SocketAddr::from(([10, 0, 0, 6], 40000));
    for (i, ad) in [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0, 0, 0, 0]),
        IpAddr::from([224, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]
    .into_iter()
    .enumerate()
    {
        let conn = connect(&mut reg, t0, remote);
        let peer = PeerInfo {
            port: 7000 + i as u16,
            advertise: Some(Advertise {
                ip: ad,
                proof: None,
            }),
        };
        let files = vec![entry(1, "f")];
        let reply = send(
            &mut reg,
            t0,
            remote,
            conn,
            RequestBody::Announce { peer, files },
        );
        assert!(matches!(reply, Some(ResponseBody::Ack { .. })), "{reply:?}");
    }
    // A real one is taken once proved, mapped or not.
    let conn = connect(&mut reg, t0, remote);
    let peer = PeerInfo {
        port: 7066,
        advertise: Some(proved(&mut reg, t0, [10, 0, 0, 66], true)),
    };
    let files = vec![entry(1, "f")];
    send(
        &mut reg,
        t0,
        remote,
        conn,
        RequestBody::Announce { peer, files },
    );
    let got = peers_for(&mut reg, t0, SocketAddr::from(([10, 0, 0, 9], 1)), 1);
    let want: Vec<SocketAddr> = (7000..7004)
        .map(|p| SocketAddr::from(([10, 0, 0, 6], p)))
        .chain([SocketAddr::from(([10, 0, 0, 66], 7066))])
        .collect();
    let mut want = want;
    want.sort();
    assert_eq!(got, want);
    // Advertising loopback from loopback is what a peer on the tracker's host may do.
    let conn = connect(&mut reg, t0, src(2));
    let peer = PeerInfo {
        port: 7100,
        advertise: Some(proved(&mut reg, t0, [127, 0, 0, 2], false)),
    };
    let files = vec![entry(2, "g")];
    send(
        &mut reg,
        t0,
        src(2),
        conn,
        RequestBody::Announce { peer, files },
    );
    assert_eq!(
        peers_for(&mut reg, t0, src(3), 2),
        vec![SocketAddr::from(([127, 0, 0, 2], 7100))]
    );
}

#[test]
fn caps_are_enforced() {
    let t0 = Instant::now();
    let limits = Limits {
        files_per_peer: 2,
        peers_per_file: 1,
        total_files: 3,
        total_peers: 2,
        ..Limits::default()
    };
    let mut reg = Registry::new(
        Config {
            limits,
            ..Config::default()
        },
        t0,
    );
    let a = src(1);
    let conn = connect(&mut reg, t0, a);
    let p = |port| PeerInfo {
        port,
        advertise: None,
    };
    let full = Some(ResponseBody::Error {
        code: ErrorCode::Full,
    });
    assert_eq!(
        send(
            &mut reg,
            t0,
            a,
            conn,
            RequestBody::Announce {
                peer: p(1),
                files: vec![entry(1, "a"), entry(2, "b"), entry(3, "c")]
            }
        ),
        full
    );
    assert_eq!(
        send(
            &mut reg,
            t0,
            a,
            conn,
            RequestBody::Announce {
                peer: p(2),
                files: vec![entry(1, "a")]
            }
        ),
        full
    );
    assert!(matches!(
        send(
            &mut reg,
            t0,
            a,
            conn,
            RequestBody::Announce {
                peer: p(2),
                files: vec![entry(3, "c")]
            }
        ),
        Some(ResponseBody::Ack { .. })
    ));
    assert_eq!(
        send(
            &mut reg,
            t0,
            a,
            conn,
            RequestBody::Announce {
                peer: p(3),
                files: vec![entry(4, "d")]
            }
        ),
        full
    );
    let bad = FileEntry {
        id: FileId([9; 32]),
        size: 1,
        name: "n".repeat(MAX_NAME_LEN + 1),
        have: shoal_proto::tracker::Have::Complete,
    };
    assert_eq!(
        send(
            &mut reg,
            t0,
            a,
            conn,
            RequestBody::Announce {
                peer: p(1),
                files: vec![bad]
            }
        ),
        Some(ResponseBody::Error {
            code: ErrorCode::BadName
        })
    );
}

/// The defaults without rate limiting, for tests that send many requests at one instant.
fn unlimited() -> Config {
    let mut c = Config::default();
    c.limits.rate = 0;
    c
}

fn list_all(reg: &mut Registry, now: Instant, from: SocketAddr, filter: Filter) -> Vec<ListEntry> {
    let conn = connect(reg, now, from);
    let mut cursor = 0;
    let mut out = Vec::new();
    loop {
        let body = RequestBody::List {
            filter: filter.clone(),
            cursor,
        };
        match send(reg, now, from, conn, body) {
            Some(ResponseBody::Files { entries, next }) => {
                out.extend(entries);
                match next {
                    Some(n) => {
                        assert!(n > cursor);
                        cursor = n;
                    }
                    None => return out,
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

fn announce(reg: &mut Registry, now: Instant, from: SocketAddr, port: u16, files: Vec<FileEntry>) {
    let conn = connect(reg, now, from);
    let peer = PeerInfo {
        port,
        advertise: None,
    };
    let reply = send(reg, now, from, conn, RequestBody::Announce { peer, files });
    assert!(matches!(reply, Some(ResponseBody::Ack { .. })), "{reply:?}");
}

#[test]
fn filtered_listings_page_in_name_order() {
    let t0 = Instant::now();
    let mut reg = Registry::new(unlimited(), t0);
    let a = src(1);
    for n in 0..150u8 {
        let kind = if n % 3 == 0 { "Report" } else { "photo" };
        let f = FileEntry {
            id: FileId([n; 32]),
            size: 1,
            name: format!("{kind}-{:03}-{}", 200 - u32::from(n), "y".repeat(30)),
            have: shoal_proto::tracker::Have::Complete,
        };
        announce(&mut reg, t0, a, 1, vec![f]);
    }
    let reports = list_all(&mut reg, t0, a, Filter::NameContains("rEpOrT".into()));
    assert_eq!(reports.len(), 50);
    assert!(reports.windows(2).all(|w| w[0].name < w[1].name));
    assert!(reports.iter().all(|e| e.name.starts_with("Report-")));
    assert_eq!(list_all(&mut reg, t0, a, Filter::All).len(), 150);
    assert_eq!(
        list_all(&mut reg, t0, a, Filter::NameContains(String::new())).len(),
        150
    );
    let id = FileId([42; 32]);
    let prefix = IdPrefix::parse(&id.to_hex()[..10]).unwrap();
    let found = list_all(&mut reg, t0, a, Filter::IdPrefix(prefix));
    assert_eq!(found.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
    reg.check_invariants();
}

#[test]
fn names_are_labels_the_majority_shows_and_any_finds() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    for (port, name) in [(1, "holiday.mp4"), (2, "holiday.mp4"), (3, "clip.mp4")] {
        announce(&mut reg, t0, src(port), port, vec![entry(7, name)]);
    }
    let all = reg.matching(&Filter::All);
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].name.as_str(), all[0].seeders), ("holiday.mp4", 3));
    // The minority name still finds the file.
    assert_eq!(reg.matching(&Filter::NameIs("clip.mp4".into())).len(), 1);
    assert_eq!(reg.matching(&Filter::NameContains("CLIP".into())).len(), 1);
    assert!(reg.matching(&Filter::NameIs("clip".into())).is_empty());
    reg.check_invariants();
}

#[test]
fn silent_peers_vanish_from_replies_before_any_sweep() {
    let t0 = Instant::now();
    let mut reg = Registry::new(Config::default(), t0);
    announce(&mut reg, t0, src(1), 1, vec![entry(1, "f")]);
    // No call to `expire`: the next datagram after the timeout must not see the peer.
    let later = t0 + Duration::from_secs(31);
    assert!(list_all(&mut reg, later, src(2), Filter::All).is_empty());
    assert_eq!(reg.totals().expirations, 1);
    let g = reg.gauges();
    assert_eq!((g.peers, g.files, g.registrations), (0, 0, 0));
}

#[test]
fn a_busy_source_is_told_once_then_dropped_and_others_are_not_affected() {
    let t0 = Instant::now();
    let mut config = Config::default();
    config.limits.rate = 10;
    config.limits.burst = 5;
    let mut reg = Registry::new(config, t0);
    let busy = src(1);
    let conn = connect(&mut reg, t0, busy);
    let list = || RequestBody::List {
        filter: Filter::All,
        cursor: 0,
    };
    for _ in 0..4 {
        assert!(matches!(
            send(&mut reg, t0, busy, conn, list()),
            Some(ResponseBody::Files { .. })
        ));
    }
    assert_eq!(
        send(&mut reg, t0, busy, conn, list()),
        Some(ResponseBody::Error {
            code: ErrorCode::RateLimited
        })
    );
    for _ in 0..100 {
        assert_eq!(send(&mut reg, t0, busy, conn, list()), None);
    }
    assert_eq!(reg.totals().rate_limited, 100);
    // Same IP, other port: same source. Other IP: its own budget.
    let other = SocketAddr::from(([127, 0, 0, 2], 1));
    let oconn = connect(&mut reg, t0, other);
    assert!(matches!(
        send(&mut reg, t0, other, oconn, list()),
        Some(ResponseBody::Files { .. })
    ));
    // A tenth of a second later the busy source has one request again.
    let t1 = t0 + Duration::from_millis(100);
    assert!(matches!(
        send(&mut reg, t1, busy, conn, list()),
        Some(ResponseBody::Files { .. })
    ));
}

#[test]
fn withdrawn_files_give_back_their_room() {
    let t0 = Instant::now();
    let mut reg = Registry::new(unlimited(), t0);
    let a = src(1);
    let conn = connect(&mut reg, t0, a);
    let peer = PeerInfo {
        port: 1,
        advertise: None,
    };
    for n in 0..250u8 {
        announce(&mut reg, t0, a, 1, vec![entry(n, "f")]);
    }
    let ids: Vec<FileId> = (1..250u8).map(|n| FileId([n; 32])).collect();
    for page in ids.chunks(30) {
        let body = RequestBody::Unregister {
            peer: peer.clone(),
            files: Some(page.to_vec()),
        };
        assert!(matches!(
            send(&mut reg, t0, a, conn, body),
            Some(ResponseBody::Ack { .. })
        ));
    }
    let p = reg.peers().next().unwrap();
    assert_eq!(p.files.len(), 1);
    assert!(p.files.capacity() <= 5, "{}", p.files.capacity());
    assert_eq!(reg.gauges().registrations, 1);
    reg.check_invariants();
}

#[test]
fn prefixes_match_without_hex_strings() {
    let id = FileId([0xab; 32]);
    assert!(prefix_matches("abab", &id));
    assert!(prefix_matches("ABAB", &id));
    assert!(prefix_matches("", &id));
    assert!(prefix_matches(&id.to_hex(), &id));
    assert!(!prefix_matches(&format!("{}a", id.to_hex()), &id));
    assert!(!prefix_matches("abac", &id));
    assert!(!prefix_matches("abzz", &id));
    assert!(!prefix_matches("ab\u{e9}", &id));
}

#[test]
fn peer_lists_are_distinct_random_subsets() {
    let t0 = Instant::now();
    let mut reg = Registry::new(unlimited(), t0);
    for port in 1..=300 {
        announce(&mut reg, t0, src(port), port, vec![entry(1, "f")]);
    }
    let asker = src(9999);
    let conn = connect(&mut reg, t0, asker);
    let mut seen = HashSet::new();
    for _ in 0..20 {
        match send(
            &mut reg,
            t0,
            asker,
            conn,
            RequestBody::GetPeers {
                file: FileId([1; 32]),
            },
        ) {
            Some(ResponseBody::Peers { peers, .. }) => {
                let distinct: HashSet<_> = peers.iter().collect();
                assert_eq!(peers.len(), 50);
                assert_eq!(distinct.len(), 50, "no peer twice");
                assert!(peers.iter().all(|p| (1..=300).contains(&p.port())));
                seen.extend(peers);
            }
            other => panic!("{other:?}"),
        }
    }
    // 20 draws of 50 from 300 cover far more than one fixed window would.
    assert!(seen.len() > 200, "only {} distinct peers seen", seen.len());
}

/// Floyd's draws, with the bitmap (few candidates) and with the list (many): `k` distinct indices
/// below `n`, every index about equally likely.
#[test]
fn floyd_draws_distinct_indices_uniformly() {
    for (n, k, rounds) in [(300, 50, 3000), (10, 10, 10), (20_000, 50, 2000)] {
        let mut hits = vec![0u32; n];
        for _ in 0..rounds {
            let mut drawn = HashSet::new();
            for i in Draw::new(n, k) {
                assert!(i < n && drawn.insert(i), "{i} drawn twice or out of range");
            }
            for i in drawn {
                hits[i] += 1;
            }
        }
        // Each index is drawn rounds * k / n times on average; buckets of a tenth of the range
        // all get their share to within 20%.
        let expected = (rounds * k / 10) as f64;
        for bucket in hits.chunks(n.div_ceil(10)) {
            let got: u32 = bucket.iter().sum();
            let share = got as f64 / (expected * bucket.len() as f64 / n.div_ceil(10) as f64);
            assert!(
                (0.8..1.2).contains(&share),
                "n {n}: a tenth got {share:.2} of its share"
            );
        }
    }
}

/// Lists longer than a reply, drawn the fast way or (when a loopback peer is drawn for a requester
/// on another host) the general way: full, distinct, and without loopback peers for other hosts.
#[test]
fn long_lists_hide_loopback_peers_from_other_hosts() {
    let t0 = Instant::now();
    let mut reg = Registry::new(unlimited(), t0);
    for port in 1..=120 {
        let from = if port % 2 == 0 {
            src(port)
        } else {
            SocketAddr::from(([10, 0, 0, 9], port))
        };
        announce(&mut reg, t0, from, port, vec![entry(1, "f")]);
    }
    let wanted = Limits::default().peers_per_reply;
    let remote = SocketAddr::from(([10, 0, 0, 2], 4000));
    for (from, loopback_allowed) in [(remote, false), (src(9999), true)] {
        let mut loopback_seen = false;
        for _ in 0..20 {
            let peers = peers_for(&mut reg, t0, from, 1);
            let distinct: HashSet<_> = peers.iter().collect();
            assert_eq!((peers.len(), distinct.len()), (wanted, wanted));
            loopback_seen |= peers.iter().any(|p| p.ip().is_loopback());
        }
        assert_eq!(loopback_seen, loopback_allowed);
    }
}
