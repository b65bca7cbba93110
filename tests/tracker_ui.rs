//! The tracker's status page in a real browser. Headless Chromium loads the page once; without a
//! reload it shows seeders as they start and drops them as they stop. Screenshots, light and
//! dark, go to `target/tracker-ui.png` and `target/tracker-ui-dark.png` for a person to look at.
//!
//! Needs Debian's `chromium` package (or `CHROMIUM=/path/to/chrome`); fails, loudly, without it.

use std::path::PathBuf;

use serde_json::{json, Value};
use shoal_testkit::chromium::{self, Browser};
use shoal_testkit::*;

const BINS: Bins = bins!();

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 860;

/// The ids of the file rows the page shows, in order.
const FILE_ROWS: &str =
    "[...document.querySelectorAll('#files tbody tr')].map(r => r.dataset.fileId)";
/// The addresses of the peer rows.
const PEER_ROWS: &str =
    "[...document.querySelectorAll('#peers tbody tr')].map(r => r.dataset.peer)";

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .to_path_buf()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

fn seeders_shown(browser: &mut Browser, id: &str) -> Value {
    browser.eval(&format!(
        "(document.querySelector('#files tr[data-file-id=\"{id}\"] .seeders') || {{}}).textContent || null"
    ))
}

#[test]
fn the_page_follows_the_swarm_live() {
    // Before anything else, so a missing browser is the first thing the failure says.
    chromium::find();
    let (swarm, http) = shoal_testkit::tracker::swarm_with_page(BINS, &[]);
    let mut browser = Browser::start(WIDTH, HEIGHT);
    browser.open_tab(WIDTH, HEIGHT);
    browser.navigate(&format!("http://{http}/"));

    // The empty tracker: the page has drawn at least one snapshot and says there is nothing.
    browser.wait_for("a first snapshot", "window.shoal.updates", |v| {
        v.as_u64() >= Some(1)
    });
    assert_eq!(browser.eval(FILE_ROWS), json!([]));
    assert_eq!(
        browser.eval("document.getElementById('files-empty').hidden"),
        json!(false)
    );
    assert_eq!(
        browser.eval("document.getElementById('live').dataset.state"),
        json!("live")
    );
    // Marks this very document: a reload would lose it.
    browser.eval("window.sameDocument = 'yes'");

    // Two seeders: one with a video and a report, one with the same video and some notes.
    swarm.write("a/holiday.mp4", &pattern(1_500_000, 1));
    swarm.write("a/quarterly-report.pdf", &pattern(420_000, 2));
    swarm.write("b/holiday.mp4", &pattern(1_500_000, 1));
    swarm.write("b/notes.txt", &pattern(12_345, 3));
    let (_a, a_lines) = swarm.seeder_in(&swarm.path("a"), &["holiday.mp4", "quarterly-report.pdf"]);
    let a_ids: Vec<String> = a_lines.iter().map(|l| id_of(l)).collect();
    let shown = browser.wait_for("seeder a's files", FILE_ROWS, |v| {
        a_ids.iter().all(|id| strings(v).contains(id))
    });
    assert_eq!(strings(&shown).len(), 2, "{shown}");
    let (mut b, b_lines) = swarm.seeder_in(&swarm.path("b"), &["holiday.mp4", "notes.txt"]);
    let b_ids: Vec<String> = b_lines.iter().map(|l| id_of(l)).collect();
    assert_eq!(b_ids[0], a_ids[0], "same bytes, same id");
    let notes = b_ids[1].clone();
    browser.wait_for("seeder b's notes", FILE_ROWS, |v| {
        strings(v).contains(&notes)
    });
    browser.wait_for("two peers", PEER_ROWS, |v| strings(v).len() == 2);
    browser.wait_for(
        "two seeders of the video",
        &format!(
        "(document.querySelector('#files tr[data-file-id=\"{}\"] .seeders') || {{}}).textContent",
        a_ids[0]
    ),
        |v| v == &json!("2"),
    );
    // Rows are in name order, and the names are what the seeders called the files.
    let names =
        browser.eval("[...document.querySelectorAll('#files .fname')].map(e => e.textContent)");
    assert_eq!(
        names,
        json!(["holiday.mp4", "notes.txt", "quarterly-report.pdf"])
    );
    // The activity chart has seen the registrations.
    browser.wait_for(
        "registrations in the activity chart",
        "[...document.querySelectorAll('#series .sum')][0].textContent",
        |v| v.as_str().and_then(|s| s.parse::<u32>().ok()) >= Some(4),
    );

    // New rows flash once; let them settle so the pictures show the page as it usually is.
    browser.wait_for(
        "new rows to stop flashing",
        "document.getAnimations().filter(a => a.animationName === 'fresh').length",
        |v| v == &json!(0),
    );
    let light = target_dir().join("tracker-ui.png");
    browser.screenshot(&light);
    browser.color_scheme("dark");
    let bg = browser.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(bg, json!("rgb(13, 17, 23)"), "dark colours apply");
    let dark = target_dir().join("tracker-ui-dark.png");
    browser.screenshot(&dark);
    browser.color_scheme("light");
    eprintln!(
        "screenshots of the status page: {} and {}",
        light.display(),
        dark.display()
    );

    // Seeder b stops: its notes and its peer row go, the video is down to one seeder.
    b.interrupt();
    assert!(b.wait_exit().success(), "{}", b.dump());
    browser.wait_for("the notes to disappear", FILE_ROWS, |v| {
        !strings(v).contains(&notes)
    });
    browser.wait_for("one peer left", PEER_ROWS, |v| strings(v).len() == 1);
    assert_eq!(seeders_shown(&mut browser, &a_ids[0]), json!("1"));
    assert_eq!(strings(&browser.eval(FILE_ROWS)).len(), 2);

    // A downloader of the video, 40% of the way: shown beside the file and in its peer row.
    let downloader = Downloader::start(&swarm.tracker_addr, &a_ids[0], 1_500_000, 600_000);
    browser.wait_for(
        "a downloader beside the video",
        &format!(
            "(document.querySelector('#files tr[data-file-id=\"{}\"] .leechers') || {{}}).textContent",
            a_ids[0]
        ),
        |v| v == &json!("+1 downloading"),
    );
    assert_eq!(seeders_shown(&mut browser, &a_ids[0]), json!("1"));
    browser.wait_for(
        "its progress in its peer row",
        "(document.querySelector('#peers tr[data-peer=\"127.0.0.1:7999\"] small') || {}).textContent",
        |v| v == &json!("holiday.mp4 · downloading holiday.mp4 40%"),
    );
    drop(downloader);

    // All of it in the document loaded at the start.
    assert_eq!(browser.eval("window.sameDocument"), json!("yes"));
    let updates = browser.eval("window.shoal.updates").as_u64().unwrap();
    assert!(updates >= 3, "{updates} updates");
}

/// A peer downloading one file, registered as partial with a given progress and kept alive by
/// heartbeats until dropped.
struct Downloader {
    /// Runs the heartbeats; dropped (and so stopped) with the downloader.
    _rt: tokio::runtime::Runtime,
    cancel: tokio_util::sync::CancellationToken,
}

impl Downloader {
    fn start(tracker: &str, id: &str, size: u64, bytes: u64) -> Downloader {
        use shoal_engine::tracker_client::{RetryPolicy, TrackerClient};
        use shoal_proto::tracker::{FileEntry, Have, PeerInfo, RequestBody};
        // A worker thread of its own, so the heartbeats go out while the test waits on the page.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let peer = PeerInfo {
            port: 7999,
            advertise: None,
        };
        let client = rt
            .block_on(TrackerClient::connect(tracker, RetryPolicy::default()))
            .unwrap();
        let entry = FileEntry {
            id: shoal_proto::FileId::from_hex(id).unwrap(),
            size,
            name: "holiday.mp4".into(),
            have: Have::Partial { bytes },
        };
        rt.block_on(client.request(RequestBody::Announce {
            peer: peer.clone(),
            files: vec![entry],
        }))
        .unwrap();
        let stop = cancel.clone();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
                let beat = RequestBody::Heartbeat {
                    peer: peer.clone(),
                    files: 1,
                    progress: Vec::new(),
                };
                let _ = client.request(beat).await;
            }
        });
        Downloader { _rt: rt, cancel }
    }
}

impl Drop for Downloader {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
