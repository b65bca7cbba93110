//! A person's script against a tracker with its default limits: 200 runs of `leecher NAME`, one
//! after another, each a new process that registers, fetches and unregisters, are never turned
//! away by the tracker's rate limit; nor are the same 200 files named in one command.

use shoal_testkit::tracker::{metrics, swarm_with_page};

const BINS: shoal_testkit::Bins = shoal_testkit::bins!();

const FILES: usize = 200;
const REFUSED: &str = "shoal_tracker_dropped_total{reason=\"rate_limited\"}";

#[test]
fn a_script_over_200_files_is_not_refused_with_default_limits() {
    let (swarm, http) = swarm_with_page(BINS, &[]);
    let names: Vec<String> = (0..FILES).map(|n| format!("f{n}.txt")).collect();
    for (n, name) in names.iter().enumerate() {
        swarm.write(&format!("s/{name}"), format!("file number {n}").as_bytes());
    }
    let args: Vec<&str> = names.iter().map(String::as_str).collect();
    let (_seeder, lines) = swarm.seeder_in(&swarm.path("s"), &args);
    assert_eq!(lines.len(), FILES);

    let looped = swarm.folder("looped");
    for name in &args {
        swarm.run_leecher(&looped, &[name, "--no-seed"]).assert_ok();
    }
    let m = metrics(&http);
    assert_eq!(
        m[REFUSED], 0.0,
        "the tracker refused some of the script's requests"
    );
    // Every run registered the file it fetched: the requests a script sends went through.
    assert!(m["shoal_tracker_datagrams_received_total"] >= (4 * FILES) as f64);

    let at_once = swarm.folder("at_once");
    let mut one = args.clone();
    one.push("--no-seed");
    let run = swarm.run_leecher(&at_once, &one);
    run.assert_ok();
    assert_eq!(run.stdout.lines().count(), FILES, "{}", run.dump());
    assert_eq!(metrics(&http)[REFUSED], 0.0);
    for (n, name) in args.iter().enumerate() {
        let want = format!("file number {n}").into_bytes();
        assert_eq!(std::fs::read(looped.join(name)).unwrap(), want, "{name}");
        assert_eq!(std::fs::read(at_once.join(name)).unwrap(), want, "{name}");
    }
}
