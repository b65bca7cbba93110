//! The client's pure parts: default ports, suggestions, address choice, what the announcer sends.

use super::announcer::{pages, progress_report, to_announce, Registered};
use super::resolve::closest_name;
use super::*;
use shoal_proto::tracker::{FileEntry, Have, Progress, MAX_DATAGRAM};
use shoal_proto::FileId;

#[test]
fn a_host_without_port_means_the_default_port() {
    assert_eq!(with_default_port("10.0.0.5"), "10.0.0.5:6969");
    assert_eq!(with_default_port("10.0.0.5:7000"), "10.0.0.5:7000");
    assert_eq!(with_default_port("nas.local"), "nas.local:6969");
    assert_eq!(with_default_port("nas.local:7000"), "nas.local:7000");
    assert_eq!(with_default_port("::1"), "[::1]:6969");
    assert_eq!(with_default_port("[fd00::5]"), "[fd00::5]:6969");
    assert_eq!(with_default_port("[fd00::5]:7000"), "[fd00::5]:7000");
}

#[test]
fn a_near_name_is_suggested() {
    let names = ["Big.iso", "notes.txt", "big-old.iso", "Song.mp3"];
    let best = |q| closest_name(q, names.iter().copied());
    assert_eq!(best("big.iso"), Some("Big.iso"));
    assert_eq!(best("BIG.ISO"), Some("Big.iso"));
    assert_eq!(best("Bgi.iso"), Some("Big.iso"));
    assert_eq!(best("note.txt"), Some("notes.txt"));
    assert_eq!(best("holiday.jpg"), None);
    assert_eq!(best("ab"), None);
}

#[test]
fn names_resolve_to_ipv4_first() {
    let v6: SocketAddr = "[::1]:6969".parse().unwrap();
    let v4: SocketAddr = "127.0.0.1:6969".parse().unwrap();
    let other: SocketAddr = "[fd77::1]:6969".parse().unwrap();
    assert_eq!(prefer_ipv4([v6, v4]), Some(v4));
    assert_eq!(prefer_ipv4([v4, v6]), Some(v4));
    assert_eq!(prefer_ipv4([v6, other]), Some(v6));
    assert_eq!(prefer_ipv4([]), None);
}

fn entry(n: u8, have: Have) -> FileEntry {
    FileEntry {
        id: FileId([n; 32]),
        size: 1000,
        name: format!("f{n}"),
        have,
    }
}

#[test]
fn downloads_register_and_register_again_when_complete() {
    let p = |bytes| Have::Partial { bytes };
    let live = vec![
        entry(1, p(10)),
        entry(2, Have::Complete),
        entry(3, p(20)),
        entry(4, Have::Complete),
    ];
    let registered: Registered = [(FileId([2; 32]), Have::Complete), (FileId([3; 32]), p(5))]
        .into_iter()
        .chain([(FileId([4; 32]), p(900))])
        .collect();
    let ids: Vec<u8> = to_announce(live.clone(), &registered)
        .iter()
        .map(|e| e.id.0[0])
        .collect();
    // 1 is new, 4 finished; 3's progress goes in a heartbeat, not an announcement.
    assert_eq!(ids, [1, 4]);
    assert_eq!(
        progress_report(&live, &registered),
        [Progress {
            id: FileId([3; 32]),
            bytes: 20
        }]
    );
}

#[test]
fn progress_reports_fit_a_heartbeat() {
    let live: Vec<FileEntry> = (0..=255)
        .map(|n| entry(n, Have::Partial { bytes: u64::MAX }))
        .collect();
    let registered: Registered = live
        .iter()
        .map(|e| (e.id, Have::Partial { bytes: 0 }))
        .collect();
    let progress = progress_report(&live, &registered);
    assert!(progress.len() > 10);
    let beat = Request {
        txn: TransactionId(u32::MAX),
        conn: ConnectionId(u64::MAX),
        body: RequestBody::Heartbeat {
            peer: peer_info(u16::MAX, Some("ffff::1".parse().unwrap())),
            files: u32::MAX,
            progress,
        },
    };
    assert!(beat.encode().len() <= MAX_DATAGRAM);
}

#[test]
fn pages_fit_a_datagram() {
    let items: Vec<usize> = vec![100; 50];
    let p = pages(&items, |n| *n);
    assert!(p.len() > 1);
    assert!(p
        .iter()
        .all(|page| page.iter().sum::<usize>() <= MAX_DATAGRAM - 64));
    assert_eq!(p.iter().map(|page| page.len()).sum::<usize>(), 50);
    assert!(pages(&[] as &[usize], |n| *n).is_empty());
}
