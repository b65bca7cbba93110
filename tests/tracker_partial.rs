//! Downloaders on the tracker: a peer registered with part of a file is handed out with the
//! seeders, shown on the page, the JSON API and /metrics with its progress, left out of
//! `leecher --list`'s seeder count, and counted as a seeder once it registers again as complete.

use serde_json::json;
use shoal_engine::tracker_client::{RetryPolicy, TrackerClient};
use shoal_proto::tracker::{FileEntry, Have, PeerInfo, Progress, RequestBody, ResponseBody};
use shoal_proto::FileId;
use shoal_testkit::tracker::{get_json, metrics, swarm_with_page};
use shoal_testkit::*;

const BINS: Bins = bins!();

#[test]
fn downloaders_show_with_their_progress_and_become_seeders() {
    // A long peer timeout: the downloader below heartbeats only when the test says so.
    let (swarm, http) = swarm_with_page(BINS, &["--peer-timeout", "600"]);
    swarm.write("s/Alpha.bin", &pattern(5000, 1));
    let (_seeder, lines) = swarm.seeder_in(&swarm.path("s"), &["Alpha.bin"]);
    let alpha = id_of(&lines[0]);
    let id = FileId::from_hex(&alpha).unwrap();

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
    let peer = PeerInfo {
        port: 7777,
        advertise: None,
    };
    let entry = |have| FileEntry {
        id,
        size: 5000,
        name: "Alpha.bin".into(),
        have,
    };
    let ask = |body| rt.block_on(client.request(body)).unwrap();
    let announce = |have| {
        let r = ask(RequestBody::Announce {
            peer: peer.clone(),
            files: vec![entry(have)],
        });
        assert!(matches!(r, ResponseBody::Ack { .. }), "{r:?}");
    };
    announce(Have::Partial { bytes: 1000 });
    let r = ask(RequestBody::Heartbeat {
        peer: peer.clone(),
        files: 1,
        progress: vec![Progress { id, bytes: 2500 }],
    });
    assert!(matches!(r, ResponseBody::Ack { .. }), "{r:?}");

    // `--list` keeps its contract: the seeder count is of complete peers only.
    let listed = swarm.list(None);
    assert_eq!((listed.len(), listed[0].seeders), (1, 1));
    let peers = rt.block_on(client.peers(id)).unwrap();
    assert!(peers.iter().any(|a| a.port() == 7777), "{peers:?}");
    assert_eq!(peers.len(), 2, "{peers:?}");

    let files = get_json(&http, "/api/files");
    let row = &files["rows"][0];
    assert_eq!(
        (row["seeders"].clone(), row["leechers"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        row["downloaders"],
        json!([{ "addr": "127.0.0.1:7777", "bytes": 2500 }])
    );
    let peers = get_json(&http, "/api/peers");
    let row = peers["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == json!("127.0.0.1:7777"))
        .unwrap()
        .clone();
    assert_eq!(row["partial"], json!(1));
    assert_eq!(
        row["downloading"],
        json!([{ "id": alpha, "name": "Alpha.bin", "size": 5000, "bytes": 2500 }])
    );
    let m = metrics(&http);
    assert_eq!(m["shoal_tracker_downloads"], 1.0);
    assert_eq!(m["shoal_tracker_download_verified_bytes"], 2500.0);
    assert_eq!(m["shoal_tracker_download_size_bytes"], 5000.0);

    // Done: the same entry again, complete.
    announce(Have::Complete);
    assert_eq!(swarm.list(None)[0].seeders, 2);
    assert_eq!(
        get_json(&http, "/api/files")["rows"][0]["leechers"],
        json!(0)
    );
    assert_eq!(metrics(&http)["shoal_tracker_downloads"], 0.0);
}
