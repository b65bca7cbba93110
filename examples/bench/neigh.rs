//! Room in the kernel's neighbour (ARP) table for the benchmark's namespaces.
//!
//! Linux keeps one ARP table for all network namespaces, capped by
//! `net.ipv4.neigh.default.gc_thresh3` (1,024 by default), and garbage-collects it above
//! `gc_thresh2` (512). On a real LAN every machine has its own table; here the 34 hosts of the
//! N = 32 case, each talking to every other, need about 1,100 entries in the one table. Past the
//! cap the kernel says "neighbor table overflow" and drops packets to addresses it cannot
//! resolve, so a host that came late could reach neither the tracker nor its peers for 10–15 s
//! until old entries aged out: those were the N = 32 stragglers of rounds 6 and 7
//! (PERFORMANCE.md). The thresholds are raised for the run and put back afterwards, also when
//! the run is interrupted (Ctrl-C) or panics; only a SIGKILL leaves them raised.

use std::path::Path;

const DIR: &str = "/proc/sys/net/ipv4/neigh/default";

/// Raises the thresholds while it lives; puts the old values back when dropped.
pub struct NeighRoom {
    old: Vec<(String, u64)>,
}

impl NeighRoom {
    /// Room for `hosts` namespaces that each talk to all the others (and for what the machine
    /// holds already): thresholds that are lower than that are raised. A machine where they
    /// cannot be written (not root, no /proc/sys) is told so on stdout and left as it is.
    pub fn for_hosts(hosts: usize) -> NeighRoom {
        let need = (hosts * hosts) as u64 + 256;
        let mut old = Vec::new();
        // The highest first, so that no moment has a lower threshold above a higher one.
        for (name, want) in [
            ("gc_thresh3", 4 * need),
            ("gc_thresh2", 2 * need),
            ("gc_thresh1", need),
        ] {
            let path = Path::new(DIR).join(name);
            let Some(now) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            else {
                println!(
                    "    could not read {}: the ARP table may overflow",
                    path.display()
                );
                continue;
            };
            if now >= want {
                continue;
            }
            match std::fs::write(&path, want.to_string()) {
                Ok(()) => {
                    crate::procs::restore_on_abort(path, now.to_string());
                    old.push((name.to_string(), now));
                }
                Err(e) => println!(
                    "    could not raise {} from {now} to {want} ({e}): the ARP table may overflow",
                    path.display()
                ),
            }
        }
        if !old.is_empty() {
            println!(
                "    ARP table (one for all namespaces): raised for this run from {}; put back after",
                old.iter()
                    .map(|(n, v)| format!("{n} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        NeighRoom { old }
    }
}

impl Drop for NeighRoom {
    fn drop(&mut self) {
        // The lowest first, for the same reason.
        for (name, value) in self.old.iter().rev() {
            let path = Path::new(DIR).join(name);
            let _ = std::fs::write(&path, value.to_string());
            crate::procs::restored(&path);
        }
    }
}
