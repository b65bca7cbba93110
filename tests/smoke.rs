//! The happy path in one test: a tracker, two seeders, a leecher.

mod support;
use support::*;

#[test]
fn two_seeders_one_leecher() {
    let swarm = Swarm::new();
    let data = pattern(3 * 512 * 1024 + 77, 1);
    swarm.write("src/f.bin", &data);
    let src = swarm.path("src");
    let (_a, lines) = swarm.seeder_in(&src, &["f.bin"]);
    let (_b, _) = swarm.seeder_in(&src, &["f.bin"]);
    assert_eq!(lines.len(), 1);
    let out = swarm.folder("out");
    let run = swarm.run_leecher(&out, &["--no-seed", "f.bin"]);
    run.assert_ok();
    assert_eq!(
        std::fs::read(out.join("f.bin")).unwrap(),
        data,
        "{}",
        run.dump()
    );
}
