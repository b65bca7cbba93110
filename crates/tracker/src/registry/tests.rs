use super::*;
use shoal_proto::tracker::CONNECT_PADDING;
use shoal_proto::TransactionId;

fn src(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn send(
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

fn connect(reg: &mut Registry, now: Instant, from: SocketAddr) -> ConnectionId {
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
                files: 2
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
                files: 3
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
            RequestBody::Heartbeat { peer, files: 2 }
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

#[test]
fn caps_are_enforced() {
    let t0 = Instant::now();
    let limits = Limits {
        files_per_peer: 2,
        peers_per_file: 1,
        total_files: 3,
        total_peers: 2,
        peers_per_reply: 50,
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
