//! The tracker's optional HTTP side: off unless asked for, and when on, JSON under /api/ and
//! Prometheus text under /metrics that follow the swarm.

use serde_json::json;
use shoal_testkit::tracker::{get_json, http_get, metrics, swarm_with_page};
use shoal_testkit::*;

const BINS: Bins = bins!();

#[test]
fn http_is_off_by_default_and_udp_needs_none_of_it() {
    let swarm = Swarm::new(BINS);
    swarm.write("f.txt", b"hello");
    let (_s, lines) = swarm.seeder(&["f.txt"]);
    let run = swarm.run_leecher(swarm.dir.path(), &["--list"]);
    run.assert_ok();
    assert!(run.stdout.starts_with(&id_of(&lines[0])), "{}", run.dump());
    assert_eq!(swarm.tracker.stdout().len(), 1, "{}", swarm.tracker.dump());
}

#[test]
fn json_and_metrics_follow_the_swarm() {
    let (swarm, http) = swarm_with_page(BINS, &[]);
    let empty = get_json(&http, "/api/swarm");
    assert_eq!(empty["files"], json!({ "total": 0, "rows": [] }));
    assert_eq!(empty["peers"]["total"], json!(0));
    assert_eq!(empty["tracker"]["udp"], json!(swarm.tracker_addr));
    assert_eq!(empty["tracker"]["interval_secs"], json!(1));
    assert_eq!(empty["tracker"]["peer_timeout_secs"], json!(3));
    assert_eq!(empty["activity"]["queries"].as_array().unwrap().len(), 60);

    swarm.write("s/Alpha.bin", &pattern(5000, 1));
    swarm.write("s/beta.bin", &pattern(7000, 2));
    let (mut seeder, lines) = swarm.seeder_in(&swarm.path("s"), &["Alpha.bin", "beta.bin"]);
    let alpha = id_of(&lines[0]);
    let all = get_json(&http, "/api/swarm");
    assert_eq!(all["gauges"]["files"], json!(2));
    assert_eq!(all["gauges"]["peers"], json!(1));
    assert_eq!(all["gauges"]["registrations"], json!(2));
    assert_eq!(all["totals"]["registrations"], json!(2));
    let files = all["files"]["rows"].as_array().unwrap();
    assert_eq!(files[0]["name"], json!("Alpha.bin"));
    assert_eq!(files[0]["id"], json!(alpha));
    assert_eq!(files[0]["size"], json!(5000));
    assert_eq!(files[0]["seeders"], json!(1));
    assert_eq!(files[1]["name"], json!("beta.bin"));
    let peer = &all["peers"]["rows"][0];
    assert!(peer["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(peer["files"], json!(2));
    assert_eq!(peer["names"], json!(["Alpha.bin", "beta.bin"]));
    assert!(peer["idle_secs"].as_f64().unwrap() < 3.0);

    // Filters: a name, case-insensitively, or an id prefix; and a row limit.
    let q = get_json(&http, "/api/files?q=ALPHA");
    assert_eq!(q["total"], json!(1));
    let q = get_json(&http, &format!("/api/files?q={}", &alpha[..10]));
    assert_eq!(q["rows"][0]["id"], json!(alpha));
    let q = get_json(&http, "/api/files?limit=1");
    assert_eq!(
        (q["total"].clone(), q["rows"].as_array().unwrap().len()),
        (json!(2), 1)
    );
    assert_eq!(get_json(&http, "/api/peers")["total"], json!(1));
    assert!(
        get_json(&http, "/api/stats")["totals"]["datagrams"]
            .as_u64()
            .unwrap()
            >= 2
    );

    // Prometheus text: every sample has HELP and TYPE lines; counters end in _total.
    let text = http_get(&http, "/metrics");
    assert!(text.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let mut typed = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    for line in text.body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            typed.insert(name.to_string(), kind.to_string());
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let kind = typed
                .get(name)
                .unwrap_or_else(|| panic!("no TYPE for {line}"));
            assert!(helped.contains(name), "no HELP for {line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
    }
    assert!(typed.values().any(|k| k == "gauge"));
    let m = metrics(&http);
    assert_eq!(m["shoal_tracker_files"], 2.0);
    assert_eq!(m["shoal_tracker_peers"], 1.0);
    assert_eq!(m["shoal_tracker_registrations_total"], 2.0);
    assert!(m["shoal_tracker_sent_bytes_total"] <= m["shoal_tracker_received_bytes_total"]);

    // The seeder leaves: so do its files.
    seeder.interrupt();
    assert!(seeder.wait_exit().success());
    let after = get_json(&http, "/api/swarm");
    assert_eq!(after["gauges"]["files"], json!(0), "{after}");
    assert_eq!(after["totals"]["departures"], json!(1));
    assert_eq!(metrics(&http)["shoal_tracker_departures_total"], 1.0);
}

#[test]
fn the_page_is_self_contained() {
    let (_swarm, http) = swarm_with_page(BINS, &[]);
    let page = http_get(&http, "/");
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.headers["content-security-policy"].contains("default-src 'self'"));
    for asset in ["/", "/app.css", "/app.js", "/icon.svg"] {
        let r = http_get(&http, asset);
        assert_eq!(r.status, 200, "{asset}");
        // Nothing from elsewhere: no absolute URLs but the SVG namespace.
        let external = r
            .body
            .replace("http://www.w3.org/2000/svg", "")
            .contains("://");
        assert!(!external, "{asset} refers to another site");
    }
    assert_eq!(http_get(&http, "/nope").status, 404);
}

#[test]
fn a_bad_http_address_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = run(
        BINS.tracker,
        &["--listen", "127.0.0.1:0", "--http", "not an address"],
        dir.path(),
        &[],
    );
    run.assert_fails_with("tracker: cannot listen on \"not an address\" for --http");
}
