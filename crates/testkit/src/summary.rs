//! The one parser of the leecher's summary line, `downloaded NAME: SIZE in T s (RATE/s); chunks
//! per peer: ADDR=N ...; from seeders: S chunks, from leechers: L chunks; uploaded U chunks while
//! downloading[; resumed N chunks, fetched M][; K chunks failed verification][; banned: ADDR ...]`
//! (crates/leecher/src/summary.rs writes it), for the tests, the demo and the benchmark.

use std::net::SocketAddr;

/// The leecher's summary line, taken apart. Parsing panics on a line of another shape: every
/// user is a test or a tool checking the leecher, for which that shape is part of the contract.
#[derive(Clone, Debug)]
pub struct Summary {
    pub line: String,
    pub name: String,
    /// The data phase's rate as printed, without `/s` (`12.5 MiB`).
    pub rate: String,
    /// Verified chunks delivered by each peer, in the line's order.
    pub per_peer: Vec<(SocketAddr, u32)>,
    pub from_seeders: u32,
    pub from_leechers: u32,
    /// Chunks this leecher uploaded while downloading.
    pub uploaded: u32,
    /// `resumed N chunks, fetched M`.
    pub resumed: Option<(u32, u32)>,
    /// `K chunks failed verification`.
    pub failed: u32,
    pub banned: Vec<SocketAddr>,
}

impl Summary {
    /// Whether `line` is a summary line.
    pub fn is_summary(line: &str) -> bool {
        line.starts_with("downloaded ") && line.contains("; chunks per peer: ")
    }

    /// The first summary line in `stderr`, parsed.
    pub fn from_stderr(stderr: &str) -> Summary {
        let line = stderr
            .lines()
            .find(|l| Summary::is_summary(l))
            .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
        Summary::parse(line)
    }

    /// Parses one summary line.
    pub fn parse(line: &str) -> Summary {
        let bad = |what: &str| -> ! { panic!("no {what} in summary line {line:?}") };
        // Split at the first fixed part, not at the first `; `, which a name may hold.
        let (head, per_peer) = line
            .split_once("; chunks per peer: ")
            .unwrap_or_else(|| bad("`; chunks per peer: `"));
        let tail = format!("chunks per peer: {per_peer}");
        let (name, rest) = head
            .strip_prefix("downloaded ")
            .and_then(|h| h.rsplit_once(": "))
            .unwrap_or_else(|| bad("`downloaded NAME: `"));
        let rate = rest
            .rsplit_once(" s (")
            .and_then(|(_, r)| r.strip_suffix("/s)"))
            .unwrap_or_else(|| bad("`(RATE/s)`"));
        let mut s = Summary {
            line: line.to_string(),
            name: name.to_string(),
            rate: rate.to_string(),
            per_peer: Vec::new(),
            from_seeders: 0,
            from_leechers: 0,
            uploaded: 0,
            resumed: None,
            failed: 0,
            banned: Vec::new(),
        };
        let number = |text: &str| -> u32 {
            text.parse()
                .unwrap_or_else(|_| panic!("{text:?} is no count in summary line {line:?}"))
        };
        let addr = |text: &str| -> SocketAddr {
            text.parse()
                .unwrap_or_else(|_| panic!("{text:?} is no address in summary line {line:?}"))
        };
        for part in tail.split("; ") {
            if let Some(list) = part.strip_prefix("chunks per peer: ") {
                for item in list.split(' ').filter(|i| *i != "none") {
                    let (a, n) = item.rsplit_once('=').unwrap_or_else(|| bad("`ADDR=N`"));
                    s.per_peer.push((addr(a), number(n)));
                }
            } else if let Some(r) = part.strip_prefix("from seeders: ") {
                let (seeders, leechers) = r
                    .strip_suffix(" chunks")
                    .and_then(|r| r.split_once(" chunks, from leechers: "))
                    .unwrap_or_else(|| bad("`from leechers: L chunks`"));
                s.from_seeders = number(seeders);
                s.from_leechers = number(leechers);
            } else if let Some(u) = part.strip_prefix("uploaded ") {
                let u = u
                    .strip_suffix(" chunks while downloading")
                    .unwrap_or_else(|| bad("`uploaded U chunks while downloading`"));
                s.uploaded = number(u);
            } else if let Some(r) = part.strip_prefix("resumed ") {
                let (n, m) = r
                    .split_once(" chunks, fetched ")
                    .unwrap_or_else(|| bad("`resumed N chunks, fetched M`"));
                s.resumed = Some((number(n), number(m)));
            } else if let Some(k) = part.strip_suffix(" chunks failed verification") {
                s.failed = number(k);
            } else if let Some(list) = part.strip_prefix("banned: ") {
                s.banned = list.split(' ').map(addr).collect();
            } else {
                panic!("unknown part {part:?} in summary line {line:?}");
            }
        }
        s
    }

    /// Chunks credited to `peer` (0 if it delivered none).
    pub fn chunks_from(&self, peer: SocketAddr) -> u32 {
        self.per_peer
            .iter()
            .filter(|(a, _)| *a == peer)
            .map(|(_, n)| n)
            .sum()
    }

    /// Chunks credited to all peers.
    pub fn total(&self) -> u32 {
        self.per_peer.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part() {
        let s = Summary::parse(
            "downloaded a b.bin: 1.0 MiB in 0.50 s (2.0 MiB/s); chunks per peer: 127.0.0.1:5=3 \
             [::1]:6=4; from seeders: 5 chunks, from leechers: 2 chunks; uploaded 1 chunks while \
             downloading; resumed 8 chunks, fetched 7; 2 chunks failed verification; banned: \
             127.0.0.1:9",
        );
        assert_eq!(s.name, "a b.bin");
        assert_eq!(s.rate, "2.0 MiB");
        assert_eq!(s.total(), 7);
        assert_eq!(s.chunks_from("[::1]:6".parse().unwrap()), 4);
        assert_eq!((s.from_seeders, s.from_leechers, s.uploaded), (5, 2, 1));
        assert_eq!((s.resumed, s.failed), (Some((8, 7)), 2));
        assert_eq!(s.banned, vec!["127.0.0.1:9".parse().unwrap()]);
    }

    #[test]
    fn no_peers_is_none() {
        let s = Summary::parse(
            "downloaded x: 0 B in 0.00 s (0 B/s); chunks per peer: none; from seeders: 0 chunks, \
             from leechers: 0 chunks; uploaded 0 chunks while downloading",
        );
        assert!(s.per_peer.is_empty() && s.resumed.is_none() && s.banned.is_empty());
    }
}
