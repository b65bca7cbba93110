//! `/metrics`: the tracker's counters and gauges in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::time::Instant;

use crate::activity::Tally;
use crate::registry::{Gauges, Registry};

type Counter = fn(&Tally) -> u64;
type Gauge = fn(&Registry, &Gauges, Instant) -> u64;

/// Counters: name (after `shoal_tracker_`), help, and value; all end in `_total`.
const COUNTERS: &[(&str, &str, Counter)] = &[
    ("datagrams_received_total", "UDP datagrams received.", |t| {
        t.datagrams
    }),
    (
        "received_bytes_total",
        "Bytes of UDP datagrams received.",
        |t| t.bytes_in,
    ),
    ("replies_sent_total", "UDP replies sent.", |t| t.replies),
    ("sent_bytes_total", "Bytes of UDP replies sent.", |t| {
        t.bytes_out
    }),
    (
        "bad_connection_total",
        "Requests refused for a missing, forged or expired connection id.",
        |t| t.bad_connection,
    ),
    (
        "evictions_total",
        "Peers or registrations dropped to make room for a less represented source.",
        |t| t.evictions,
    ),
    (
        "not_owner_total",
        "Requests refused because another source registered the peer they name.",
        |t| t.not_owner,
    ),
    (
        "other_version_total",
        "Datagrams of another protocol version (answered with this tracker's version).",
        |t| t.other_version,
    ),
    (
        "registrations_total",
        "New (peer, file) registrations.",
        |t| t.registrations,
    ),
    ("heartbeats_total", "Heartbeats received.", |t| t.heartbeats),
    (
        "queries_total",
        "Peer lists and file listings served.",
        |t| t.queries,
    ),
    ("departures_total", "Peers that unregistered.", |t| {
        t.departures
    }),
    (
        "expirations_total",
        "Peers dropped after missing their heartbeats.",
        |t| t.expirations,
    ),
];

/// Why datagrams went unanswered, as labels of `dropped_total`.
const DROPS: &[(&str, Counter)] = &[
    ("malformed", |t| t.malformed),
    ("rate_limited", |t| t.rate_limited),
    ("suppressed", |t| t.suppressed),
    ("forged", |t| t.forged),
    ("stale", |t| t.stale),
    ("replayed", |t| t.replayed),
];

const GAUGES: &[(&str, &str, Gauge)] = &[
    ("peers", "Peers registered now.", |_, g, _| g.peers as u64),
    ("files", "Distinct files registered now.", |_, g, _| {
        g.files as u64
    }),
    (
        "registrations",
        "(peer, file) registrations now.",
        |_, g, _| g.registrations as u64,
    ),
    (
        "downloads",
        "(peer, file) registrations of peers still downloading the file.",
        |r, _, _| r.downloads().count,
    ),
    (
        "download_verified_bytes",
        "Bytes the downloading peers have verified, summed over their downloads.",
        |r, _, _| r.downloads().bytes,
    ),
    (
        "download_size_bytes",
        "Sizes of the files being downloaded, summed over the downloads.",
        |r, _, _| r.downloads().size,
    ),
    (
        "rate_limit_sources",
        "Source addresses the rate limiter is tracking.",
        |_, g, _| g.rate_sources as u64,
    ),
    (
        "uptime_seconds",
        "Seconds since the tracker started.",
        |r, _, now| now.saturating_duration_since(r.epoch()).as_secs(),
    ),
    (
        "memory_bound_bytes",
        "Most bytes the registry can hold with its configured caps.",
        |r, _, _| r.config().limits.worst_case_bytes(),
    ),
];

/// A HELP and a TYPE line per metric, then its samples.
pub fn render(reg: &Registry, now: Instant) -> String {
    let t = reg.totals();
    let g = reg.gauges();
    let mut out = String::new();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP shoal_tracker_{name} {help}");
        let _ = writeln!(out, "# TYPE shoal_tracker_{name} {kind}");
    };
    for (name, help, value) in COUNTERS {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "shoal_tracker_{name} {}", value(t));
    }
    head(
        &mut out,
        "dropped_total",
        "counter",
        "Datagrams that got no answer, by reason.",
    );
    for (reason, value) in DROPS {
        let _ = writeln!(
            out,
            "shoal_tracker_dropped_total{{reason=\"{reason}\"}} {}",
            value(t)
        );
    }
    for (name, help, value) in GAUGES {
        head(&mut out, name, "gauge", help);
        let _ = writeln!(out, "shoal_tracker_{name} {}", value(reg, &g, now));
    }
    out
}
