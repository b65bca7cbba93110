//! `--advertise`: a peer is handed out at an address of its own machine that it advertises (it
//! proves it receives there), and nobody can plant an address it does not receive at.

use serde_json::json;
use shoal_engine::tracker_client::TrackerError;
use shoal_proto::tracker::{Advertise, ErrorCode, PeerInfo, RequestBody};
use shoal_testkit::tracker::{get_json, swarm_with_page};

const BINS: shoal_testkit::Bins = shoal_testkit::bins!();

#[test]
fn a_seeder_advertises_its_own_other_address_and_nobody_plants_one() {
    let (swarm, http) = swarm_with_page(BINS, &[]);
    swarm.write("s/f.bin", b"some bytes");
    // 127.0.0.2 is this machine's too (all of 127/8 is), but not the source the tracker sees.
    let (_seeder, _lines) = swarm.seeder_in(
        &swarm.path("s"),
        &["--advertise", "127.0.0.2:7123", "f.bin"],
    );
    let peers = get_json(&http, "/api/peers");
    assert_eq!(peers["rows"][0]["addr"], json!("127.0.0.2:7123"), "{peers}");

    // A datagram that names an address without proof is refused, with a reason.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(async {
        let client = shoal_engine::tracker_client::TrackerClient::connect(
            &swarm.tracker_addr,
            Default::default(),
        )
        .await?;
        client
            .request(RequestBody::Announce {
                peer: PeerInfo {
                    port: 22,
                    advertise: Some(Advertise {
                        ip: [192, 0, 2, 7].into(),
                        proof: None,
                    }),
                },
                files: vec![],
            })
            .await
    });
    assert!(
        matches!(refused, Err(TrackerError::Refused(ErrorCode::BadAdvertise))),
        "{refused:?}"
    );
    assert_eq!(get_json(&http, "/api/peers")["total"], json!(1));
}
