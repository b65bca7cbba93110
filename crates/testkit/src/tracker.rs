//! Helpers for the tracker's end-to-end tests: a tracker with its status page on, a small HTTP
//! client for its JSON and metrics, and (in [`crate::chromium`]) a headless browser to look at the page.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::{Bins, Swarm};

/// A tracker (one-second heartbeats, as in every swarm test) with `--http 127.0.0.1:0`, and the
/// address its status page listens on.
pub fn swarm_with_page(bins: Bins, extra: &[&str]) -> (Swarm, String) {
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let swarm = Swarm::with_tracker_args(bins, &args);
    let line = swarm
        .tracker
        .wait_stdout("http listening on", |l| l.starts_with("http listening on "));
    let addr = line.rsplit(' ').next().unwrap().to_string();
    (swarm, addr)
}

/// A response: status code, headers (lowercased names) and body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// `GET path` over HTTP/1.0 (so the body is plain, never chunked).
pub fn http_get(addr: &str, path: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `GET path`, expecting 200 and JSON.
pub fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let r = http_get(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body))
}

/// The samples of `/metrics`, by name with labels (`name{label="x"}`).
pub fn metrics(addr: &str) -> HashMap<String, f64> {
    let r = http_get(addr, "/metrics");
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("name value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

/// The tracker's counters since start, from `/api/stats`.
pub fn totals(addr: &str) -> serde_json::Value {
    get_json(addr, "/api/stats")["totals"].clone()
}

/// Peak and current resident memory of a process, in KiB, from /proc.
pub fn memory_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}
