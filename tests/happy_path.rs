//! The happy path, end to end with the real binaries: several seeders to one leecher, a second
//! leecher served only by the first, files of awkward sizes, and every way of naming a file.

use std::collections::BTreeSet;
use std::path::Path;

use shoal_testkit::hostile::{seeder_behind_proxy, Gate};
use shoal_testkit::*;

const BINS: Bins = bins!();

const KIB: usize = 1024;
const CHUNK: usize = 512 * KIB;

/// Starts `n` seeders of `name` in `dir` with extra `args`; returns them, their serving
/// addresses, and the id they printed (all the same).
fn seeders(
    swarm: &Swarm,
    dir: &Path,
    n: usize,
    args: &[&str],
    name: &str,
) -> (Vec<Proc>, BTreeSet<String>, String) {
    let mut procs = Vec::new();
    let mut addrs = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for _ in 0..n {
        let mut a = args.to_vec();
        a.push(name);
        let (p, lines) = swarm.seeder_in(dir, &a);
        assert_eq!(lines.len(), 1, "{}", p.dump());
        ids.insert(id_of(&lines[0]));
        addrs.insert(p.serving_addr());
        procs.push(p);
    }
    assert_eq!(ids.len(), 1, "seeders of the same bytes disagree on the id");
    assert_eq!(addrs.len(), n, "two seeders on one port");
    (procs, addrs, ids.into_iter().next().unwrap())
}

/// Downloads `query` with `--no-seed` into a fresh folder and checks the bytes, the stdout line
/// and the summary; returns the run.
fn fetch(
    swarm: &Swarm,
    out: &str,
    extra: &[&str],
    query: &str,
    expect_name: &str,
    data: &[u8],
) -> Run {
    let out = swarm.folder(out);
    let mut args = vec!["--no-seed"];
    args.extend_from_slice(extra);
    args.push(query);
    let run = swarm.run_leecher(&out, &args);
    check_fetched(&run, &out, expect_name, data);
    run
}

/// Checks a finished `--no-seed` download into `out`: the bytes, nothing else left in `out`, the
/// stdout line and the summary.
fn check_fetched(run: &Run, out: &Path, expect_name: &str, data: &[u8]) {
    run.assert_ok();
    let got = std::fs::read(out.join(expect_name))
        .unwrap_or_else(|e| panic!("no {expect_name}: {e}\n{}", run.dump()));
    assert!(got == data, "downloaded bytes differ\n{}", run.dump());
    assert_eq!(
        dir_names(out),
        vec![expect_name.to_string()],
        "leftovers\n{}",
        run.dump()
    );
    // stdout: `<id> <size> <path>`.
    let fields: Vec<&str> = run.stdout.trim().splitn(3, ' ').collect();
    assert_eq!(fields.len(), 3, "{}", run.dump());
    assert_eq!(fields[1], data.len().to_string(), "{}", run.dump());
    assert!(fields[2].ends_with(expect_name), "{}", run.dump());
    assert!(
        run.summary()
            .is_some_and(|s| s.starts_with(&format!("downloaded {expect_name}: "))),
        "{}",
        run.dump()
    );
}

/// Downloads `name` from three real seeders behind closed gates (so that no seeder can deliver
/// everything before the others are connected, however fast it is), with `extra` leecher
/// arguments. Every seeder must be asked for a chunk while none has delivered any; then each in
/// turn delivers one, and only then do the gates open. Returns the run and the addresses the
/// leecher knows the seeders by.
fn fetch_from_three_gated(
    swarm: &Swarm,
    seeder_args: &[&str],
    extra: &[&str],
    name: &str,
    data: &[u8],
) -> (Run, BTreeSet<String>) {
    swarm.write(&format!("src/{name}"), data);
    let mut args = seeder_args.to_vec();
    args.push(name);
    let mut ids = BTreeSet::new();
    let mut seeders = Vec::new();
    for _ in 0..3 {
        let (p, lines, proxy) =
            seeder_behind_proxy(swarm, &swarm.path("src"), &args, Gate::closed());
        ids.insert(id_of(&lines[0]));
        seeders.push((p, proxy));
    }
    assert_eq!(ids.len(), 1, "seeders of the same bytes disagree on the id");
    let out = swarm.folder("out");
    let mut leecher_args = vec!["--no-seed"];
    leecher_args.extend_from_slice(extra);
    leecher_args.push(name);
    let mut leecher = swarm.leecher_in(&out, &leecher_args);
    for (_, proxy) in &seeders {
        proxy
            .events
            .wait("a request to every seeder", |c| c.requests >= 1);
    }
    for (_, proxy) in &seeders {
        proxy.gate.allow(1);
        proxy
            .events
            .wait("one chunk from this seeder", |c| c.served >= 1);
    }
    for (_, proxy) in &seeders {
        proxy.gate.open_all();
    }
    let run = finish(&mut leecher);
    check_fetched(&run, &out, name, data);
    let id = ids.first().unwrap();
    assert!(run.stdout.starts_with(id.as_str()), "{}", run.dump());
    let addrs = seeders.iter().map(|(_, p)| p.addr.to_string()).collect();
    (run, addrs)
}

/// Asserts that the chunks per peer add up to `chunks` and that every one of `seeders`, and
/// no one else, delivered some.
fn check_spread(run: &Run, seeders: &BTreeSet<String>, chunks: usize) {
    let per_peer = run.chunks_per_peer();
    let total: u32 = per_peer.iter().map(|(_, n)| n).sum();
    assert_eq!(total as usize, chunks, "{}", run.dump());
    let delivered: BTreeSet<String> = per_peer
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(addr, _)| addr.clone())
        .collect();
    assert_eq!(&delivered, seeders, "{}", run.dump());
}

#[test]
fn three_seeders_one_leecher_odd_tail() {
    let swarm = Swarm::new(BINS);
    // 9 chunks, the last one 777 bytes. One request in flight per peer: with the default window
    // the first two peers would hold all nine requests and the third would never be asked.
    let data = pattern(8 * CHUNK + 777, 1);
    let (run, addrs) = fetch_from_three_gated(&swarm, &[], &["--window", "1"], "f.bin", &data);
    check_spread(&run, &addrs, 9);
}

#[test]
fn three_seeders_small_chunks() {
    let swarm = Swarm::new(BINS);
    // 16 KiB chunks: 129 of them, the last one 12,345 bytes; the default window.
    let data = pattern(128 * 16 * KIB + 12_345, 2);
    let (run, addrs) =
        fetch_from_three_gated(&swarm, &["--chunk-size", "16K"], &[], "many.bin", &data);
    check_spread(&run, &addrs, 129);
}

#[test]
fn second_leecher_is_served_by_the_first_alone() {
    let swarm = Swarm::new(BINS);
    let data = pattern(3 * CHUNK + 1001, 3);
    swarm.write("src/f.bin", &data);
    let (seeders, seeder_addrs, id) = seeders(&swarm, &swarm.path("src"), 3, &[], "f.bin");

    // Leecher A downloads, then keeps seeding.
    let a_dir = swarm.folder("a");
    let a = swarm.seeding_leecher_in(&a_dir, &["f.bin"]);
    assert_eq!(std::fs::read(a_dir.join("f.bin")).unwrap(), data);
    let a_addr = a.serving_addr();
    assert!(!seeder_addrs.contains(&a_addr));
    assert_eq!(swarm.seeders_of(&id), 4, "{}", a.dump());

    // Every original seeder leaves.
    for mut s in seeders {
        s.stop_cleanly();
    }
    assert_eq!(swarm.seeders_of(&id), 1);

    // Leecher B can only get it from A.
    let run = fetch(&swarm, "b", &[], &id, "f.bin", &data);
    let per_peer = run.chunks_per_peer();
    assert_eq!(per_peer, vec![(a_addr, 4)], "{}", run.dump());
    drop(a);
}

#[test]
fn awkward_sizes() {
    let swarm = Swarm::new(BINS);
    let files: [(&str, Vec<u8>); 4] = [
        ("empty.bin", Vec::new()),
        ("one.bin", vec![0x5a]),
        ("exact.bin", pattern(CHUNK, 4)),
        ("just-over.bin", pattern(CHUNK + 1, 5)),
    ];
    for (name, data) in &files {
        swarm.write(&format!("src/{name}"), data);
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    let (_s, lines) = swarm.seeder_in(&swarm.path("src"), &names);
    assert_eq!(lines.len(), files.len(), "one line per file");
    for ((name, data), line) in files.iter().zip(&lines) {
        // `<id> <size> <name>`.
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line:?}");
        assert_eq!(f[0].len(), 64, "{line:?}");
        assert!(f[0].bytes().all(|c| c.is_ascii_hexdigit()), "{line:?}");
        assert_eq!(f[1], data.len().to_string(), "{line:?}");
        assert_eq!(f[2], *name, "{line:?}");
    }
    for (name, data) in &files {
        let run = fetch(&swarm, &format!("out-{name}"), &[], name, name, data);
        let chunks = data.len().div_ceil(CHUNK);
        let per_peer = run.chunks_per_peer();
        assert_eq!(
            per_peer.iter().map(|(_, n)| *n as usize).sum::<usize>(),
            chunks,
            "{}",
            run.dump()
        );
    }
}

#[test]
fn same_bytes_under_two_names_are_one_id() {
    let swarm = Swarm::new(BINS);
    let data = pattern(CHUNK + 3, 6);
    swarm.write("one/a.bin", &data);
    swarm.write("one/b.bin", &data);
    swarm.write("two/b.bin", &data);
    // One seeder, two names: both lines carry the same id.
    let (_s1, lines) = swarm.seeder_in(&swarm.path("one"), &["a.bin", "b.bin"]);
    assert_eq!(lines.len(), 2);
    let id = id_of(&lines[0]);
    assert_eq!(id_of(&lines[1]), id);
    // A second seeder calls it b.bin: still one file, now with two seeders.
    let (_s2, lines2) = swarm.seeder_in(&swarm.path("two"), &["b.bin"]);
    assert_eq!(id_of(&lines2[0]), id);
    let listed = swarm.list(None);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].seeders, 2);
    // Either name finds it, and the file is written under the name asked for.
    fetch(&swarm, "out-a", &[], "a.bin", "a.bin", &data);
    fetch(&swarm, "out-b", &[], "b.bin", "b.bin", &data);
}

#[test]
fn resolves_by_full_id_prefix_and_name() {
    let swarm = Swarm::new(BINS);
    let data = pattern(2 * CHUNK + 99, 7);
    let other = pattern(1000, 8);
    swarm.write("src/f.bin", &data);
    swarm.write("src/g.bin", &other);
    let (_s, lines) = swarm.seeder_in(&swarm.path("src"), &["f.bin", "g.bin"]);
    let id = id_of(&lines[0]);
    let prefix = &id[..8];
    fetch(&swarm, "by-id", &[], &id, "f.bin", &data);
    fetch(
        &swarm,
        "by-upper-id",
        &[],
        &id.to_uppercase(),
        "f.bin",
        &data,
    );
    fetch(&swarm, "by-prefix", &[], prefix, "f.bin", &data);
    fetch(&swarm, "by-longer-prefix", &[], &id[..20], "f.bin", &data);
    fetch(&swarm, "by-name", &[], "f.bin", "f.bin", &data);
    fetch(
        &swarm,
        "other-by-prefix",
        &[],
        &id_of(&lines[1])[..8],
        "g.bin",
        &other,
    );
}

#[test]
fn downloads_into_out_dir() {
    let swarm = Swarm::new(BINS);
    let data = pattern(CHUNK / 2 + 1, 9);
    swarm.write("src/f.bin", &data);
    let (_s, _) = swarm.seeder_in(&swarm.path("src"), &["f.bin"]);
    let cwd = swarm.folder("cwd");
    let out = swarm.folder("elsewhere");
    let run = swarm.run_leecher(
        &cwd,
        &["--no-seed", "--out", out.to_str().unwrap(), "f.bin"],
    );
    run.assert_ok();
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), data);
    assert!(dir_names(&cwd).is_empty(), "{}", run.dump());
}
