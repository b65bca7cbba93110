//! Tracker protocol versions: a peer and a tracker of different versions say so in one sentence
//! instead of going silent.

use std::net::UdpSocket;
use std::time::Duration;

use shoal_proto::tracker::{Request, RequestBody, CONNECT_PADDING, MAGIC};
use shoal_proto::{ConnectionId, TransactionId};
use shoal_testkit::*;

const BINS: Bins = bins!();

/// A version 1 tracker as far as a client can tell: it drops what is not `SHT1` and answers what
/// is with a `SHT1` datagram. Runs until the test ends (the thread is detached).
fn old_tracker() -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if buf[..n].starts_with(b"SHT1") {
                // Version 1's `Connected`: the echoed transaction id and a connection id, which
                // this client never gets to decode.
                let mut reply = b"SHT1".to_vec();
                reply.extend_from_slice(&buf[4..n.min(9)]);
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    addr
}

#[test]
fn a_client_names_an_old_trackers_version() {
    let tracker = old_tracker();
    let dir = tempfile::tempdir().unwrap();
    let run = run(
        BINS.leecher,
        &["--tracker", &tracker, "--list"],
        dir.path(),
        &[("P2P_NO_DISCOVERY", "1")],
    );
    run.assert_fails_with(&format!(
        "the tracker at {tracker} speaks protocol 1, this client speaks 2"
    ));
}

#[test]
fn the_tracker_tells_another_version_which_one_it_speaks() {
    let swarm = Swarm::new(BINS);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    socket.connect(&swarm.tracker_addr).unwrap();
    let mut old = Request {
        txn: TransactionId(7),
        conn: ConnectionId(0),
        body: RequestBody::Connect {
            padding: [0; CONNECT_PADDING],
        },
    }
    .encode();
    old[3] = b'1';
    socket.send(&old).unwrap();
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).expect("an answer to version 1");
    assert_eq!(&buf[..n], &MAGIC);
    assert_eq!(&buf[..n], b"SHT2");
}
