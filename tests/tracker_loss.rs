//! A leecher on a network that loses datagrams for a while: the tracker does not answer its
//! first round of retries (as when many hosts start at once on saturated links, issue 10's
//! N = 32 benchmark), and the download still goes ahead, within `--timeout`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_testkit::*;

const BINS: Bins = bins!();

/// Datagrams one round of the client's retries sends: four connect requests, and after the first
/// a protocol 1 probe beside each (see `tracker_client.rs`).
const FIRST_ROUND: usize = 7;

/// A UDP relay on 127.0.0.1 to `tracker` that drops the first `drop` datagrams it is sent and
/// relays everything after, both ways, for one client. Runs until `stop` is set.
fn lossy_relay(tracker: SocketAddr, drop: usize, stop: Arc<AtomicBool>) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(tracker).unwrap();
    let addr = front.local_addr().unwrap();
    // Short waits, so the threads notice `stop`.
    front
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    back.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (front2, back2, stop2) = (
        front.try_clone().unwrap(),
        back.try_clone().unwrap(),
        stop.clone(),
    );
    let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let client2 = client.clone();
    std::thread::spawn(move || {
        let (mut buf, mut seen) = ([0u8; 2048], 0);
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                seen += 1;
                *client.lock().unwrap() = Some(from);
                if seen > drop {
                    let _ = back.send(&buf[..n]);
                }
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok(n) = back2.recv(&mut buf) {
                if let Some(to) = *client2.lock().unwrap() {
                    let _ = front2.send_to(&buf[..n], to);
                }
            }
        }
    });
    addr
}

#[test]
fn a_tracker_silent_for_a_round_of_retries_is_asked_again() {
    let swarm = Swarm::new(BINS);
    let data = pattern(300_000, 7);
    swarm.write("src/f.bin", &data);
    let (_seeder, lines) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let id = id_of(&lines[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let relay = lossy_relay(
        swarm.tracker_addr.parse().unwrap(),
        FIRST_ROUND,
        stop.clone(),
    );
    let out = swarm.folder("out");
    // --no-upload: nothing but the look-up and the peer queries uses the tracker socket, so the
    // dropped datagrams are exactly the look-up's first round.
    let run = run(
        BINS.leecher,
        &[
            "--tracker",
            &relay.to_string(),
            "--timeout",
            "30",
            "--no-upload",
            &id,
        ],
        &out,
        &[],
    );
    stop.store(true, Ordering::Relaxed);
    run.assert_ok();
    assert!(
        run.stderr.contains("asking again until --timeout"),
        "the lost round is reported\n{}",
        run.dump()
    );
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), data);
}
