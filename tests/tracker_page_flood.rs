//! The status page against connections that say nothing: they cannot take it down. Over the
//! per-source cap they are closed at once, so another source is served while they wait; and every
//! idle one is closed after the idle timeout, so the source itself is served again.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use shoal_testkit::tracker::{http_get, swarm_with_page};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINS: shoal_testkit::Bins = shoal_testkit::bins!();

/// `GET /api/stats` from a socket bound to `from`, with the whole answer read.
async fn get_from(from: &str, to: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(from.parse().unwrap()).unwrap();
    let mut s = socket.connect(to.parse().unwrap()).await.unwrap();
    s.write_all(format!("GET /api/stats HTTP/1.0\r\nHost: {to}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[test]
fn idle_connections_do_not_take_the_page_down() {
    let (_swarm, http) = swarm_with_page(BINS, &[]);
    // More than the page serves at once (64), all from one source, all silent.
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&http).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Another source is served at once (today it waits behind them forever).
    let answer = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), get_from("127.0.0.2:0", &http)).await
    });
    let answer = answer.expect("the page answers another source while one floods it");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    // Each silent connection is closed by the page: over the cap at once, the rest once idle.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0; 64];
        match c.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent connection was kept open: {other:?}"),
        }
    }
    // And the source itself is served again.
    assert_eq!(http_get(&http, "/api/stats").status, 200);
}

#[test]
fn answers_are_bounded_names_per_row_and_rows_per_page() {
    use serde_json::json;
    use shoal_proto::tracker::{FileEntry, Have};
    use shoal_proto::FileId;
    use shoal_testkit::tracker::get_json;

    let (swarm, http) = swarm_with_page(BINS, &["--peer-timeout", "600"]);
    // Sixty peers give one file sixty long names; today every one of them is in its row.
    for n in 0..60u16 {
        let entry = FileEntry {
            id: FileId([1; 32]),
            size: 1,
            name: format!("{n:02}-{}", "n".repeat(200)),
            have: Have::Complete,
        };
        shoal_testkit::hostile::announce(&swarm.tracker_addr, 9000 + n, entry).unwrap();
    }
    let files = get_json(&http, "/api/files");
    let row = &files["rows"][0];
    assert_eq!(row["aliases"].as_array().unwrap().len(), 8, "{row}");
    assert_eq!(row["alias_count"], json!(59));
    // Peers page by offset: 60 in all, 25 at a time, none twice.
    let mut seen = std::collections::BTreeSet::new();
    for offset in [0, 25, 50] {
        let page = get_json(&http, &format!("/api/peers?limit=25&offset={offset}"));
        assert_eq!(page["total"], json!(60));
        for p in page["rows"].as_array().unwrap() {
            assert!(seen.insert(p["addr"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(seen.len(), 60);
}
