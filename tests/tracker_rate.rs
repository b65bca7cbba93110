//! The tracker's rate limit against a person's scripts: with the default limits, a script that
//! looks up 200 files one after another (each run a new process: a new socket, a connect, a
//! lookup and a peer list) is never turned away; and past a limit, clients wait and try again
//! instead of failing.

use shoal_engine::tracker_client::{resolve, RetryPolicy, TrackerClient};
use shoal_proto::FileId;
use shoal_testkit::tracker::{metrics, swarm_with_page};
use shoal_testkit::*;

const BINS: Bins = bins!();

/// What one `leecher NAME` asks the tracker, from a socket of its own: resolve the name, then
/// the peers.
async fn look_up(tracker: &str, name: &str) -> Result<usize, String> {
    let client = TrackerClient::connect(tracker, RetryPolicy::default())
        .await
        .map_err(|e| e.to_string())?;
    let entry = resolve(&client, name).await.map_err(|e| e.to_string())?;
    let peers = client.peers(entry.id).await.map_err(|e| e.to_string())?;
    Ok(peers.len())
}

#[test]
fn a_script_over_200_files_is_never_rate_limited_by_default() {
    let (swarm, http) = swarm_with_page(BINS, &[]);
    swarm.write("s/f.bin", b"one file");
    let (_seeder, _lines) = swarm.seeder_in(&swarm.path("s"), &["f.bin"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = metrics(&http)["shoal_tracker_datagrams_received_total"];
    for n in 0..200 {
        let found = rt.block_on(look_up(&swarm.tracker_addr, "f.bin"));
        assert_eq!(found, Ok(1), "lookup {n}");
    }
    let m = metrics(&http);
    assert!(m["shoal_tracker_datagrams_received_total"] - before >= 600.0);
    assert_eq!(
        m["shoal_tracker_dropped_total{reason=\"rate_limited\"}"],
        0.0
    );
}

#[test]
fn past_the_limit_clients_wait_and_try_again() {
    // Five requests a second: thirty listings take several seconds, and every one succeeds.
    let swarm = Swarm::with_tracker_args(BINS, &["--rate-limit", "5", "--rate-burst", "5"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(TrackerClient::connect(
            &swarm.tracker_addr,
            RetryPolicy::default(),
        ))
        .unwrap();
    for n in 0..30 {
        let peers = rt.block_on(client.peers(FileId([n; 32])));
        assert_eq!(
            peers.map_err(|e| e.to_string()),
            Ok(Vec::new()),
            "request {n}"
        );
    }
}
