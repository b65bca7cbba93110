//! A private swarm's peer connections, end to end: a download goes over Noise, and recording
//! relays between the leecher and the seeder (TCP) and the leecher and its tracker (UDP) see
//! neither the file's bytes nor its name (in an open swarm they see both, which shows the check
//! can fail); a peer without the secret, or with another, gets the connection closed without a
//! byte.
//!
//! Why relays rather than a packet capture: they see exactly the bytes the programs exchange,
//! need no root, no namespace and no capture tool, and the leecher is sent through them the way
//! it finds anything (its tracker address; the peer address the tracker hands out).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use shoal_engine::tracker_client::{RetryPolicy, TrackerClient};
use shoal_proto::tracker::{FileEntry, Have, PeerInfo, RequestBody, ResponseBody};
use shoal_proto::FileId;
use shoal_secret::{Keys, Secret};
use shoal_testkit::*;

const BINS: Bins = bins!();

const NAME: &str = "Quarterly-Figures.xlsx";

/// A tracker on 127.0.0.1, private when `secret` is given.
fn tracker(secret: Option<&str>) -> (Swarm, Option<tempfile::TempDir>) {
    let Some(secret) = secret else {
        return (Swarm::new(BINS), None);
    };
    let keydir = tempfile::tempdir().unwrap();
    let file = keydir.path().join("swarm.secret");
    std::fs::write(&file, secret).unwrap();
    let swarm = Swarm::with_tracker_args(BINS, &["--secret-file", file.to_str().unwrap()]);
    (swarm, Some(keydir))
}

fn env<'a>(tracker: &'a Swarm, secret: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("P2P_TRACKER", tracker.tracker_addr.as_str())];
    env.extend(secret.map(|s| ("P2P_SECRET", s)));
    env
}

/// Forwards every connection it accepts to `to`, recording what passes either way.
fn relay(to: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, seen)
}

/// A UDP relay in front of the tracker at `to`, recording what passes either way; its address.
fn udp_relay(to: &str, record: Arc<Mutex<Vec<u8>>>) -> String {
    let front = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(to).unwrap();
    let addr = front.local_addr().unwrap().to_string();
    let client = Arc::new(Mutex::new(None));
    let (front2, back2, client2, record2) = (
        front.try_clone().unwrap(),
        back.try_clone().unwrap(),
        client.clone(),
        record.clone(),
    );
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = front2.recv_from(&mut buf) {
            *client2.lock().unwrap() = Some(from);
            record2.lock().unwrap().extend_from_slice(&buf[..n]);
            let _ = back2.send(&buf[..n]);
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let n = match back.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break,
            };
            record.lock().unwrap().extend_from_slice(&buf[..n]);
            if let Some(c) = *client.lock().unwrap() {
                let _ = front.send_to(&buf[..n], c);
            }
        }
    });
    addr
}

/// Downloads a file through recording relays and returns what they saw. The seeder registers
/// with one tracker; the leecher asks another (through the UDP relay), where only the TCP relay
/// is registered for the file, so every byte it fetches passes that relay.
fn download_through_relay(secret: Option<&str>, data: &[u8]) -> Vec<u8> {
    let (seeders, _k1) = tracker(secret);
    let (leechers, _k2) = tracker(secret);
    let path = seeders.write(&format!("seed/{NAME}"), data);
    let seeder = Proc::spawn(
        BINS.seeder,
        &[path.to_str().unwrap()],
        seeders.dir.path(),
        &env(&seeders, secret),
    );
    seeder.wait_stderr("registered with the tracker");
    seeder.wait_stdout_count(1);
    let id = FileId::from_hex(&id_of(&seeder.stdout()[0])).unwrap();
    let (relay_port, seen) = relay(seeder.serving_port());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(TrackerClient::connect(
            &leechers.tracker_addr,
            RetryPolicy::default(),
        ))
        .unwrap();
    let announced = rt
        .block_on(client.request(RequestBody::Announce {
            peer: PeerInfo {
                port: relay_port,
                advertise: None,
            },
            files: vec![FileEntry {
                id,
                size: data.len() as u64,
                name: NAME.into(),
                have: Have::Complete,
            }],
        }))
        .unwrap();
    assert!(
        matches!(announced, ResponseBody::Ack { .. }),
        "{announced:?}"
    );

    let out = leechers.folder("got");
    let tracker = udp_relay(&leechers.tracker_addr, seen.clone());
    let mut env = vec![("P2P_TRACKER", tracker.as_str())];
    env.extend(secret.map(|s| ("P2P_SECRET", s)));
    run(
        BINS.leecher,
        &[NAME, "--no-seed", "--out", out.to_str().unwrap()],
        leechers.dir.path(),
        &env,
    )
    .assert_ok();
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), data);
    let seen = seen.lock().unwrap().clone();
    seen
}

/// Whether any 32-byte block of `data` (at a multiple of 32) appears anywhere in `capture`.
fn holds_any_block(capture: &[u8], data: &[u8]) -> bool {
    let blocks: HashSet<&[u8]> = data.chunks_exact(32).collect();
    capture.windows(32).any(|w| blocks.contains(w))
}

#[test]
fn a_capture_of_a_private_download_holds_neither_bytes_nor_name() {
    let data = pattern(2 * 512 * 1024 + 777, 99);
    // The control: in an open swarm the relay sees the file and its name, so the check below
    // can fail. (Before the keys are installed in this process: the open client is plain.)
    let open = download_through_relay(None, &data);
    assert!(
        holds_any_block(&open, &data),
        "the open capture lacks the file"
    );
    assert!(open.windows(NAME.len()).any(|w| w == NAME.as_bytes()));

    let secret = Secret::generate().unwrap().to_text();
    // The test's own tracker client (announcing the relay) is of the swarm too.
    shoal_engine::private::install(Keys::derive(&Secret::parse(&secret).unwrap().0));
    let private = download_through_relay(Some(&secret), &data);
    assert!(
        private.len() > data.len(),
        "the relay saw {} bytes",
        private.len()
    );
    assert!(
        !holds_any_block(&private, &data),
        "file bytes in the capture"
    );
    assert!(!private.windows(NAME.len()).any(|w| w == NAME.as_bytes()));
}

#[test]
fn a_peer_without_the_secret_gets_nothing() {
    let secret = Secret::generate().unwrap().to_text();
    let (swarm, _k) = tracker(Some(&secret));
    let data = pattern(600_000, 5);
    let path = swarm.write(&format!("seed/{NAME}"), &data);
    let seeder = Proc::spawn(
        BINS.seeder,
        &[path.to_str().unwrap()],
        swarm.dir.path(),
        &env(&swarm, Some(&secret)),
    );
    seeder.wait_stdout_count(1);
    let id = FileId::from_hex(&id_of(&seeder.stdout()[0])).unwrap();
    let port = seeder.serving_port();

    // A plain client: its hello, then nothing comes back but the close.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hello = bytes::BytesMut::new();
    shoal_proto::peer::encode_head(
        &shoal_proto::peer::Header::Hello {
            version: shoal_proto::peer::PROTOCOL_VERSION,
            file: id,
        },
        0,
        &mut hello,
    );
    plain.write_all(&hello).unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(got.is_empty(), "a plain client got {} bytes", got.len());

    // A Noise client with another secret: refused, nothing sent after.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let other = Keys::derive(&Secret::generate().unwrap());
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let r =
            shoal_secret::noise::initiate(&mut s, &other.peer_psk, shoal_secret::noise::PATTERN)
                .await;
        assert!(r.is_err(), "the handshake succeeded with another secret");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    });
    // The seeder still serves its swarm.
    let out = swarm.folder("got");
    run(
        BINS.leecher,
        &[NAME, "--no-seed", "--out", out.to_str().unwrap()],
        swarm.dir.path(),
        &env(&swarm, Some(&secret)),
    )
    .assert_ok();
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), data);
}

/// Partial seeding over Noise: leechers started together serve each other the chunks they have
/// verified, and all finish after the only seeder dies once every chunk has reached one of them.
#[test]
fn private_leechers_finish_from_each_other_after_the_seeder_dies() {
    const CHUNKS: usize = 128;
    let secret = Secret::generate().unwrap().to_text();
    let (swarm, _k) = tracker(Some(&secret));
    let data = pattern(16 * 1024 * CHUNKS, 21);
    let path = swarm.write("seed/big.bin", &data);
    let mut env = env(&swarm, Some(&secret));
    let mut seeder = Proc::spawn(
        BINS.seeder,
        // 2 MiB at 1 MiB/s: about one copy has left when the seeder is killed, so the leechers
        // must trade (uncapped, all three could finish from the seeder before they met).
        &[
            "--chunk-size",
            "16K",
            "--max-upload-rate",
            "1M",
            path.to_str().unwrap(),
        ],
        swarm.dir.path(),
        &env,
    );
    seeder.wait_stdout_count(1);
    let id = id_of(&seeder.stdout()[0]);
    env.push(("RUST_LOG", "info,shoal_engine::download::verify=debug"));
    let mut leechers: Vec<Proc> = (0..3)
        .map(|i| {
            let out = swarm.folder(&format!("l{i}"));
            Proc::spawn(BINS.leecher, &["--window", "2", &id], &out, &env)
        })
        .collect();
    let deadline = std::time::Instant::now() + PATIENCE;
    while verified_chunks(&leechers).len() < CHUNKS {
        assert!(
            std::time::Instant::now() < deadline,
            "not every chunk reached a leecher\n{}",
            leechers.iter().map(Proc::dump).collect::<String>()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    seeder.kill();
    let summaries = wait_all_stderr(&mut leechers, "downloaded big.bin: ", PATIENCE);
    let mut from_leechers = 0;
    for (i, (mut p, summary)) in leechers.into_iter().zip(summaries).enumerate() {
        let got = std::fs::read(swarm.path(&format!("l{i}/big.bin"))).unwrap();
        assert!(got == data, "leecher {i}: bytes differ\n{}", p.dump());
        from_leechers += Summary::parse(&summary).from_leechers;
        p.stop_cleanly();
    }
    assert!(
        from_leechers > 0,
        "no chunk went from one leecher to another"
    );
}

/// A folder is one share in a private swarm too: its tree manifest and every file's chunks go
/// over Noise, and the tree arrives exact.
#[test]
fn a_folder_arrives_exact_in_a_private_swarm() {
    let secret = Secret::generate().unwrap().to_text();
    let (swarm, _k) = tracker(Some(&secret));
    let files = [
        ("album/a.bin", pattern(40_000, 31)),
        ("album/deep/er/b.bin", pattern(16 * 1024, 32)),
        ("album/empty.txt", Vec::new()),
    ];
    for (rel, data) in &files {
        swarm.write(rel, data);
    }
    let env = env(&swarm, Some(&secret));
    let seeder = Proc::spawn(
        BINS.seeder,
        &["--chunk-size", "16K", "album"],
        swarm.dir.path(),
        &env,
    );
    seeder.wait_stdout_count(1);
    let out = swarm.folder("out");
    let mut leecher = Proc::spawn(BINS.leecher, &["--no-seed", "album"], &out, &env);
    let run = finish(&mut leecher);
    run.assert_ok();
    for (rel, data) in &files {
        let got = std::fs::read(out.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(got == *data, "{rel} differs\n{}", leecher.dump());
    }
}
