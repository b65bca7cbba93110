//! Liveness and scale as peers see them: `leecher --list [PATTERN]` fetches every page and
//! filters by name; a seeder with a thousand files registers in a few dozen datagrams and
//! heartbeats in one; a peer that dies silently is dropped after the peer timeout.

use std::time::{Duration, Instant};

use shoal_testkit::tracker::{metrics, swarm_with_page};
use shoal_testkit::*;

const BINS: Bins = bins!();

#[test]
fn list_fetches_every_page_and_filters_by_name() {
    let swarm = Swarm::new(BINS);
    // Long names: a listing of these needs several datagrams.
    let mut names = Vec::new();
    for n in 0..40 {
        let kind = if n % 4 == 0 { "Invoice" } else { "photo" };
        let name = format!("{kind}-{n:02}-{}.dat", "x".repeat(150));
        swarm.write(&format!("s/{name}"), format!("file {n}").as_bytes());
        names.push(name);
    }
    let args: Vec<&str> = names.iter().map(String::as_str).collect();
    let (_s, lines) = swarm.seeder_in(&swarm.path("s"), &args);
    assert_eq!(lines.len(), 40);

    let all = swarm.run_leecher(swarm.dir.path(), &["--list"]);
    all.assert_ok();
    let listed: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(listed.len(), 40, "{}", all.dump());
    let mut sorted = names.clone();
    sorted.sort();
    for (line, name) in listed.iter().zip(&sorted) {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        assert_eq!(parts[0].len(), 64);
        assert_eq!(parts[2], "1", "one seeder: {line}");
        assert_eq!(parts[3], name);
    }

    let invoices = swarm.run_leecher(swarm.dir.path(), &["--list", "iNvOiCe"]);
    invoices.assert_ok();
    assert_eq!(invoices.stdout.lines().count(), 10, "{}", invoices.dump());
    assert!(invoices.stdout.lines().all(|l| l.contains(" Invoice-")));
    let none = swarm.run_leecher(swarm.dir.path(), &["--list", "no such thing"]);
    none.assert_ok();
    assert_eq!(none.stdout, "");
}

#[test]
fn a_thousand_files_cost_a_few_dozen_datagrams_and_one_per_heartbeat() {
    let (swarm, http) = swarm_with_page(BINS, &[]);
    let names: Vec<String> = (0..1000).map(|n| format!("f{n:04}.txt")).collect();
    for (n, name) in names.iter().enumerate() {
        swarm.write(&format!("s/{name}"), format!("{n}").as_bytes());
    }
    let args: Vec<&str> = names.iter().map(String::as_str).collect();
    let (_s, lines) = swarm.seeder_in(&swarm.path("s"), &args);
    assert_eq!(lines.len(), 1000);
    let m = metrics(&http);
    assert_eq!(m["shoal_tracker_registrations"], 1000.0);
    let to_register = m["shoal_tracker_datagrams_received_total"];
    eprintln!("{to_register} datagrams to register 1000 files");
    assert!(
        to_register <= 60.0,
        "{to_register} datagrams to register 1000 files"
    );
    // Three more heartbeats (one a second): three more datagrams, give or take one in flight.
    let beats = m["shoal_tracker_heartbeats_total"];
    let deadline = Instant::now() + PATIENCE;
    let later = loop {
        let m = metrics(&http);
        if m["shoal_tracker_heartbeats_total"] >= beats + 3.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no heartbeats");
        std::thread::sleep(Duration::from_millis(50));
    };
    let beats_seen = later["shoal_tracker_heartbeats_total"] - beats;
    let datagrams = later["shoal_tracker_datagrams_received_total"] - to_register;
    assert!(
        datagrams <= beats_seen + 1.0,
        "{datagrams} datagrams for {beats_seen} heartbeats of 1000 files"
    );
    assert_eq!(later["shoal_tracker_registrations"], 1000.0);
}

#[test]
fn a_peer_that_dies_silently_is_dropped_after_the_timeout() {
    let (swarm, http) = swarm_with_page(BINS, &[]);
    swarm.write("s/gone.bin", b"soon gone");
    let (mut seeder, _) = swarm.seeder_in(&swarm.path("s"), &["gone.bin"]);
    // SIGKILL: no unregister, only silence.
    seeder.kill();
    let killed = Instant::now();
    let deadline = killed + PATIENCE;
    loop {
        let run = swarm.run_leecher(swarm.dir.path(), &["--list"]);
        run.assert_ok();
        if run.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still listed\n{}", run.dump());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Three one-second intervals of silence, then the next datagram or sweep drops it: never
    // much later, and never before (it heartbeated up to its death).
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(8), "dropped after {took:?}");
    let m = metrics(&http);
    assert_eq!(m["shoal_tracker_expirations_total"], 1.0);
    assert_eq!(m["shoal_tracker_peers"], 0.0);
}
