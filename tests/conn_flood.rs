//! Issue 11, "Peers serving chunks": a seeder under a connection flood from a few source
//! addresses (hundreds of connections that say Hello and then only Have, or thousands that say
//! nothing, all reopened as soon as they are closed) still serves an honest leecher.
//!
//! Each test downloads once without the flood and once under it, and prints both times (no
//! assertion on them: the machine is shared); the honest download must succeed within a
//! `--timeout` that the flood, before admission control, always outlasted.

use std::time::{Duration, Instant};

use std::sync::atomic::Ordering::Relaxed;

use shoal_testkit::flood::{Counts, Flood, Kind};
use shoal_testkit::hostile::{assert_same_file, seeder_addr};
use shoal_testkit::*;

const BINS: Bins = bins!();

/// How long the honest leecher may go without data before it gives up.
const HONEST_TIMEOUT: &str = "20";

/// Raises this process's descriptor limit (inherited by the seeder it starts) to hold `need`
/// sockets, or fails saying so.
fn ensure_descriptors(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < need && lim.rlim_max >= need {
            lim.rlim_cur = need;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= need,
        "this test needs {need} file descriptors and the hard limit is {}: raise `ulimit -Hn`",
        lim.rlim_max
    );
}

/// Seeds a 16 MiB file, downloads it once in peace, then starts the flood `kind` from `sources`
/// addresses with `per_source` connections each, waits until `ready` holds for it, and downloads
/// the file again; returns both times.
fn download_under(
    kind: impl Fn(&str) -> Kind,
    sources: u8,
    per_source: usize,
    ready: impl Fn(&Counts) -> bool,
) -> (Duration, Duration) {
    let total = sources as usize * per_source;
    ensure_descriptors(total as u64 + 1024);
    let swarm = Swarm::new(BINS);
    let data = pattern(16 << 20, 5);
    swarm.write("seed/f.bin", &data);
    let (seeder, lines) = swarm.seeder_in(&swarm.folder("seed"), &["f.bin"]);
    let id = id_of(&lines[0]);
    let addr = seeder_addr(&seeder);

    let download = |dir: &str| {
        let out = swarm.folder(dir);
        let start = Instant::now();
        let run = swarm.run_leecher(&out, &["--no-seed", "--timeout", HONEST_TIMEOUT, &id]);
        let took = start.elapsed();
        run.assert_ok();
        assert_same_file(&out.join("f.bin"), &data, &run);
        took
    };
    let calm = download("calm");

    let flood = Flood::start(addr, &flood::sources(sources), per_source, kind(&id));
    flood.wait("the flood at full strength", PATIENCE, ready);
    let flooded = download("flooded");
    let c = &flood.counts;
    eprintln!(
        "16 MiB: {calm:?} calm, {flooded:?} under {total} connections ({kind:?}); the flood \
         connected {} times, was welcomed {} times, closed {} times",
        c.connected.load(Relaxed),
        c.welcomed.load(Relaxed),
        c.closed.load(Relaxed),
        kind = kind(&id),
    );
    drop(seeder);
    (calm, flooded)
}

fn idle_hellos(id: &str) -> Kind {
    Kind::HelloThenIdle(shoal_proto::FileId::from_hex(id).expect("a file id"))
}

/// Half the attackers connected at least once: the old server left the rest in its backlog or
/// SYN queue, so waiting for all of them would wait for ever there.
fn half_connected(total: usize) -> impl Fn(&Counts) -> bool {
    move |c| c.connected.load(Relaxed) >= total / 2
}

#[test]
fn an_honest_leecher_gets_its_file_past_hundreds_of_idle_hellos() {
    download_under(idle_hellos, 4, 100, half_connected(400));
}

#[test]
fn an_honest_leecher_gets_its_file_past_thousands_of_silent_connections() {
    download_under(|_| Kind::Silent, 4, 750, half_connected(3000));
}

/// 40 addresses with 8 idle Hellos each want more than the 256 slots and get all of them: the
/// honest leecher's address (none yet) evicts one that has gone longest without work.
#[test]
fn an_honest_leecher_evicts_an_idle_hello_from_a_full_table() {
    download_under(idle_hellos, 40, 8, |c| c.welcomed.load(Relaxed) >= 256);
}
