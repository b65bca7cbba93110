//! The benchmark's LAN: one network namespace per host, all on one bridge (a switch) in a
//! namespace of its own, every host's upload capped with `tc tbf`. The namespaces, and the room
//! made in the kernel's ARP table for them, go when the `Lan` is dropped (and on Ctrl-C).
//!
//! Every host runs the TCP congestion control it is given: the swarm case gives them Linux's
//! default (CUBIC), what the machines of a classroom or an office run, whatever this machine
//! was set to (see PERFORMANCE.md, round 9, for why it matters here).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::neigh::NeighRoom;
use crate::procs::{self, Opts, Proc, Stream};

/// The namespaces: `shoal-bench-PID-sw` holds the bridge, `...-hK` host K (from 1).
pub(crate) struct Lan {
    prefix: String,
    net: String,
    dir: PathBuf,
    made: Vec<String>,
    /// Room in the kernel's ARP table for every host's neighbours, while the namespaces live.
    _neigh: NeighRoom,
    /// The hosts' TCP congestion control, as printed (`cubic`, `bbr (this machine's)`).
    pub(crate) cc: String,
    /// A private swarm's secret, given to every program started from then on (`P2P_SECRET`).
    pub(crate) secret: Option<String>,
}

impl Lan {
    /// `hosts` namespaces on one bridge, each upload capped at `rate_bits`; `cc`: the TCP
    /// congestion control every host uses (`None`: this machine's own, whatever it is).
    pub(crate) fn new(hosts: usize, rate_bits: u64, cc: Option<&str>, dir: &Path) -> Result<Lan> {
        ensure!(hosts <= 250, "at most 248 leechers");
        let pid = std::process::id();
        let mut lan = Lan {
            prefix: format!("shoal-bench-{pid}"),
            // Only these namespaces see it; the pid keeps two benchmarks apart.
            net: format!("10.{}.{}", 20 + pid % 200, (pid / 200) % 250 + 1),
            dir: dir.to_path_buf(),
            made: Vec::new(),
            _neigh: NeighRoom::for_hosts(hosts),
            secret: None,
            cc: cc.unwrap_or_default().to_string(),
        };
        let sw = lan.ns_name(0);
        lan.add_ns(&sw)?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &sw,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        let rate = format!("{rate_bits}bit");
        for h in 1..=hosts {
            let n = lan.ns_name(h);
            lan.add_ns(&n)?;
            let port = format!("p{h}");
            let addr = format!("{}/24", lan.ip(h));
            ip(&["-n", &n, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &n,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &n, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &n, "link", "set", "eth0", "up"])?;
            // The host's upload only, as in the issue.
            tool(
                "tc",
                &[
                    "-n", &n, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate,
                ]
                .into_iter()
                .chain(["burst", "64kb", "latency", "50ms"])
                .collect::<Vec<_>>(),
            )?;
            if let Some(cc) = cc {
                set_congestion_control(&n, cc)?;
            }
            std::fs::create_dir_all(lan.home(h))?;
        }
        for h in 1..=hosts {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !tool("ip", &["-n", &lan.ns_name(h), "link", "show", "eth0"])?
                .contains("LOWER_UP")
            {
                ensure!(
                    Instant::now() < deadline,
                    "h{h}'s link did not come up within 5 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if cc.is_none() {
            // What a new namespace starts with: the machine's own (its first namespace's).
            let machine = ip(&["netns", "exec", &lan.ns_name(1), "cat", CONGESTION_CONTROL])?;
            lan.cc = format!("{} (this machine's)", machine.trim());
        }
        println!(
            "    {} hosts on {}.0/24 behind a bridge, every upload capped at {} Mbit/s (tc tbf), \
             TCP congestion control {}",
            hosts,
            lan.net,
            rate_bits / 1_000_000,
            lan.cc
        );
        Ok(lan)
    }

    fn ns_name(&self, h: usize) -> String {
        match h {
            0 => format!("{}-sw", self.prefix),
            h => format!("{}-h{h}", self.prefix),
        }
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        procs::delete_netns_on_abort(name);
        self.made.push(name.to_string());
        Ok(())
    }

    pub(crate) fn ip(&self, h: usize) -> String {
        format!("{}.{h}", self.net)
    }

    pub(crate) fn home(&self, h: usize) -> PathBuf {
        self.dir.join(format!("h{h}"))
    }

    /// Starts `prog ARGS` on host `h`, in its folder, with discovery off.
    pub(crate) fn spawn(&self, h: usize, label: &str, prog: &Path, args: &[&str]) -> Result<Proc> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_name(h)])
            .arg(prog)
            .args(args)
            .current_dir(self.home(h))
            .env("P2P_NO_DISCOVERY", "1")
            .env(
                "RUST_LOG",
                std::env::var("SHOAL_BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1");
        if let Some(secret) = &self.secret {
            cmd.env("P2P_SECRET", secret);
        }
        procs::spawn(label, &mut cmd, Opts::default())
    }

    /// A tracker on h1, listening on port 6969 of its address, once it says so.
    pub(crate) fn tracker(&self, bins: &Path) -> Result<Proc> {
        let tracker = self.spawn(
            1,
            "tracker",
            &bins.join("tracker"),
            &["--listen", "0.0.0.0:6969"],
        )?;
        tracker.wait_line(Stream::Out, "its address", Duration::from_secs(30), |l| {
            l.starts_with("tracker listening on ")
        })?;
        Ok(tracker)
    }

    /// Bytes host `h` has sent on its link, as its qdisc counts them (headers included).
    pub(crate) fn sent(&self, h: usize) -> Result<u64> {
        let out = tool(
            "tc",
            &["-n", &self.ns_name(h), "-s", "qdisc", "show", "dev", "eth0"],
        )?;
        out.split_whitespace()
            .skip_while(|w| *w != "Sent")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no 'Sent N bytes' in tc's output: {out}"))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting the switch takes the bridge and every veth pair with it.
        for n in self.made.iter().rev() {
            let _ = tool("ip", &["netns", "del", n]);
            procs::netns_deleted(n);
        }
    }
}

/// Where a network namespace's TCP congestion control is set (read from inside it).
const CONGESTION_CONTROL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Whether `cc` can be the name of a TCP congestion control (`cubic`, `bbr`, `dctcp`...).
pub(crate) fn is_congestion_control_name(cc: &str) -> bool {
    !cc.is_empty() && cc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Sets namespace `ns`'s TCP congestion control to `cc`, and checks that it took.
fn set_congestion_control(ns: &str, cc: &str) -> Result<()> {
    ensure!(
        is_congestion_control_name(cc),
        "{cc:?} is not the name of a TCP congestion control"
    );
    // The name goes in as an argument of the shell, not as part of its script.
    let script =
        format!("echo \"$1\" > {CONGESTION_CONTROL} 2>/dev/null; cat {CONGESTION_CONTROL}");
    let now = ip(&["netns", "exec", ns, "sh", "-c", &script, "sh", cc])?;
    if now.trim() != cc {
        let have = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
            .unwrap_or_default();
        bail!(
            "could not set TCP congestion control {cc:?} (loaded: {}; is tcp_{cc} built into \
             this kernel or loadable?)",
            have.trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<String> {
    tool("ip", args)
}

fn tool(prog: &str, args: &[&str]) -> Result<String> {
    let (_, out) = procs::run_tool(prog, Command::new(prog).args(args), Duration::from_secs(30))
        .with_context(|| format!("{prog} {}", args.join(" ")))?;
    Ok(out)
}
