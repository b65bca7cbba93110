//! The leecher against a hostile tracker or peer: `--timeout` bounds looking a file up, `--list`
//! and the manifest; a manifest frame longer than the listed size allows is refused; a slow
//! manifest source does not keep others from being asked; names the tracker sends are
//! neutralised before they reach the terminal or the file system. The hostile tracker is
//! `crates/testkit/src/hostile_tracker.rs`, the trickling peers `crates/testkit/src/hostile_manifest.rs`.

use shoal_proto::tracker::ListEntry;
use shoal_testkit::hostile::{test_file, Gate, HostilePeer, Mode, Served};
use shoal_testkit::hostile_manifest::Tricklers;
use shoal_testkit::hostile_tracker::{FakeTracker, Script};
use shoal_testkit::*;

const BINS: Bins = bins!();

const ENV: [(&str, &str); 1] = [("P2P_NO_DISCOVERY", "1")];

fn leecher(tracker: &FakeTracker, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker.arg();
    let mut all = vec!["--tracker", &t];
    all.extend_from_slice(args);
    run(BINS.leecher, &all, dir.path(), &ENV)
}

fn endless() -> FakeTracker {
    FakeTracker::start(Script {
        endless: Some(std::time::Duration::from_millis(100)),
        ..Script::default()
    })
}

#[test]
fn list_gives_up_at_timeout_on_a_tracker_that_always_offers_one_more_page() {
    let tracker = endless();
    let r = leecher(&tracker, &["--list", "--timeout", "2"]);
    r.assert_fails_with("listing the tracker's files took longer than 2 s (--timeout)");
    assert!(
        tracker.pages.load(std::sync::atomic::Ordering::SeqCst) > 1,
        "the listing was paged"
    );
}

#[test]
fn looking_a_file_up_gives_up_at_timeout_on_an_endless_listing() {
    let tracker = endless();
    let r = leecher(&tracker, &["some-name", "--no-upload", "--timeout", "2"]);
    r.assert_fails_with("looking the file up at the tracker took longer than 2 s (--timeout)");
}

/// A tracker listing `entry`, and handing out `peers`.
fn tracker_with(entry: ListEntry, peers: Vec<std::net::SocketAddr>) -> FakeTracker {
    FakeTracker::start(Script {
        entries: vec![entry],
        peers,
        ..Script::default()
    })
}

fn entry(served: &Served, size: u64, name: &str) -> ListEntry {
    ListEntry {
        id: served.id,
        size,
        seeders: 1,
        leechers: 0,
        name: name.to_string(),
    }
}

#[test]
fn a_manifest_longer_than_the_listed_size_allows_is_refused_at_once() {
    let served = Served::new("small.bin", &test_file(1), 16 * 1024);
    let bad = Tricklers::start(2, None);
    let tracker = tracker_with(entry(&served, 1000, "small.bin"), bad.addrs.clone());
    let id = served.id.to_string();
    let r = leecher(
        &tracker,
        &[&id, "--no-upload", "--timeout", "3", "--stall-timeout", "1"],
    );
    r.assert_fails_with("longer than its listed size of 1000 bytes allows");
}

#[test]
fn a_trickled_manifest_does_not_hold_the_download_past_timeout() {
    let served = Served::new("huge.bin", &test_file(2), 16 * 1024);
    let bad = Tricklers::start(3, None);
    // Listed as 256 GiB: a 16 MiB manifest is within what that size allows.
    let tracker = tracker_with(entry(&served, 1 << 38, "huge.bin"), bad.addrs.clone());
    let id = served.id.to_string();
    let r = leecher(
        &tracker,
        &[&id, "--no-upload", "--timeout", "3", "--stall-timeout", "1"],
    );
    r.assert_fails_with("no peer could provide huge.bin for 3 s");
}

#[test]
fn a_slow_manifest_source_does_not_keep_others_from_being_asked() {
    let data = test_file(3);
    let tracker = FakeTracker::start(Script::default());
    let honest = HostilePeer::start(
        &tracker.arg(),
        vec![Served::new("good.bin", &data, 16 * 1024)],
        Mode::Honest,
        Gate::open(),
    );
    // More slow sources than are asked at once, all sorting before the honest peer.
    let bad = Tricklers::start(10, Some(honest.addr.port()));
    let served = Served::new("good.bin", &data, 16 * 1024);
    drop(tracker);
    let tracker = tracker_with(entry(&served, data.len() as u64, "good.bin"), {
        let mut p = bad.addrs.clone();
        p.push(honest.addr);
        p
    });
    let dir = tempfile::tempdir().unwrap();
    let t = tracker.arg();
    let id = served.id.to_string();
    let r = run(
        BINS.leecher,
        &[
            "--tracker",
            &t,
            &id,
            "--no-upload",
            "--timeout",
            "30",
            "--stall-timeout",
            "1",
        ],
        dir.path(),
        &ENV,
    );
    r.assert_ok();
    hostile::assert_same_file(&dir.path().join("good.bin"), &data, &r);
}

/// Characters no name may put on a terminal or in a file name.
fn hostile_char(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[test]
fn names_from_a_hostile_tracker_are_neutralised_on_the_terminal_and_on_disk() {
    let data = test_file(4);
    let served = Served::new("plain.bin", &data, 16 * 1024);
    let tracker = FakeTracker::start(Script::default());
    let honest = HostilePeer::start(
        &tracker.arg(),
        vec![served.clone()],
        Mode::Honest,
        Gate::open(),
    );
    // The real tracker refuses this name at announce; a hostile one sends it anyway.
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}inv\u{202E}fdp.exe\u{2066}\nfake-line\r";
    let tracker = tracker_with(entry(&served, data.len() as u64, evil), vec![honest.addr]);

    let list = leecher(&tracker, &["--list"]);
    list.assert_ok();
    assert_eq!(
        list.stdout.lines().count(),
        1,
        "one line per file\n{}",
        list.dump()
    );
    assert!(
        list.stdout
            .contains("?[2J?]0;pwned?inv?fdp.exe??fake-line?"),
        "{}",
        list.dump()
    );

    let dir = tempfile::tempdir().unwrap();
    let t = tracker.arg();
    let id = served.id.to_string();
    let r = run(
        BINS.leecher,
        &["--tracker", &t, &id, "--no-upload", "--timeout", "30"],
        dir.path(),
        &ENV,
    );
    r.assert_ok();
    for out in [&list.stdout, &list.stderr, &r.stdout, &r.stderr] {
        assert!(
            !out.chars().any(hostile_char),
            "unneutralised output\n{}",
            r.dump()
        );
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["[2J]0;pwnedinvfdp.exefake-line".to_string()],
        "{}",
        r.dump()
    );
    hostile::assert_same_file(&dir.path().join(&names[0]), &data, &r);
}

use shoal_testkit::hostile;
