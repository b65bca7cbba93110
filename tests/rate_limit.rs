//! Issue 10, item 5: `--max-upload-rate` (seeder, leecher) and `--max-download-rate` (leecher).
//!
//! A limited transfer must not be faster than the limit allows: F bytes need at least the time
//! in which the bucket lets F bytes through (one burst, then the rate). That is a lower bound, so
//! a slow, shared machine cannot make it fail; how close to the limit the rate comes is measured
//! (PERFORMANCE.md), not asserted.

use std::time::{Duration, Instant};

use shoal_engine::rate::{Rate, RateLimit};
use shoal_testkit::hostile::assert_same_file;
use shoal_testkit::*;

const BINS: Bins = bins!();

const SIZE: usize = 3 << 20;

/// Seeds a 3 MiB file with `seeder_args`, downloads it with `leecher_args`; asserts the copy and
/// that it took at least what `limit` allows. Returns the time the download took.
fn limited_download(seeder_args: &[&str], leecher_args: &[&str], limit: &str) -> Duration {
    let swarm = Swarm::new(BINS);
    let data = pattern(SIZE, 9);
    swarm.write("seed/f.bin", &data);
    let mut args = vec!["--chunk-size", "64K"];
    args.extend_from_slice(seeder_args);
    args.push("f.bin");
    let (_seeder, lines) = swarm.seeder_in(&swarm.folder("seed"), &args);
    let id = id_of(&lines[0]);
    let out = swarm.folder("out");
    let mut args = vec!["--no-seed"];
    args.extend_from_slice(leecher_args);
    args.push(&id);
    let start = Instant::now();
    let run = swarm.run_leecher(&out, &args);
    let took = start.elapsed();
    run.assert_ok();
    assert_same_file(&out.join("f.bin"), &data, &run);
    let bucket = RateLimit::new(limit.parse::<Rate>().unwrap());
    assert!(
        bucket.most_in(took) >= SIZE as f64,
        "{SIZE} bytes in {took:?} is faster than {limit}/s allows\n{}",
        run.dump()
    );
    eprintln!("{SIZE} bytes under a {limit}/s limit: {took:?}");
    took
}

#[test]
fn the_seeder_uploads_no_faster_than_its_limit() {
    limited_download(&["--max-upload-rate", "1M"], &[], "1M");
}

#[test]
fn the_leecher_downloads_no_faster_than_its_limit() {
    limited_download(&[], &["--max-download-rate", "1M"], "1M");
}

#[test]
fn a_bad_rate_gets_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), b"x").unwrap();
    for (bin, flag) in [
        (BINS.seeder, "--max-upload-rate"),
        (BINS.leecher, "--max-upload-rate"),
        (BINS.leecher, "--max-download-rate"),
    ] {
        for bad in ["0", "fast", "-1M", "10X"] {
            // `--flag=-1M`: a value that starts with '-' is not taken for another flag.
            let value = format!("{flag}={bad}");
            let target = if bin == BINS.seeder {
                "f.bin"
            } else {
                "abcdef12"
            };
            let args = [value.as_str(), target];
            run(bin, &args, dir.path(), &[("P2P_TRACKER", "127.0.0.1:9")])
                .assert_fails_with("is not a rate like 500K, 10M or 1G");
        }
    }
}
