//! Issue 12, a folder as one share, end to end with the real programs: the tree arrives exact
//! (paths, sizes, contents, executable bits, empty files and folders), symbolic links and special
//! files stay behind with a note, `--only` and `--files`, `--each`, resume after a kill, an
//! existing destination, and hostile tree manifests refused before anything is written.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shoal_testkit::hostile::{HostilePeer, Mode, Served};
use shoal_testkit::*;

const BINS: Bins = bins!();

/// What a tree holds, by relative path: `None` for a folder, else the bytes and executable bit.
type Tree = BTreeMap<String, Option<(Vec<u8>, bool)>>;

/// Reads the tree under `root` (folders included, symbolic links and special files left out).
fn read_tree(root: &Path) -> Tree {
    fn walk(dir: &Path, prefix: &str, out: &mut Tree) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            let t = e.file_type().unwrap();
            if t.is_dir() {
                out.insert(rel.clone(), None);
                walk(&e.path(), &format!("{rel}/"), out);
            } else if t.is_file() {
                let exec = e.metadata().unwrap().permissions().mode() & 0o100 != 0;
                out.insert(rel, Some((std::fs::read(e.path()).unwrap(), exec)));
            }
        }
    }
    let mut out = Tree::new();
    walk(root, "", &mut out);
    out
}

/// A folder `photos` in the swarm's folder: files of awkward sizes around a 16 KiB chunk, an
/// empty file, an executable, an empty folder and a nested one; and a symbolic link and a FIFO,
/// which are not shared. Returns its path.
fn photos(swarm: &Swarm, name: &str) -> std::path::PathBuf {
    let root = swarm.folder(name);
    let k = 16 * 1024;
    for (i, (path, len)) in [
        ("raw/IMG_0001.cr2", 3 * k + 5),
        ("raw/IMG_0002.cr2", k),
        ("raw/sub/IMG_0003.cr2", 1),
        ("jpg/a.jpg", k - 1),
        ("jpg/b.jpg", 2 * k),
        ("notes.txt", 100),
        ("zero", 0),
    ]
    .into_iter()
    .enumerate()
    {
        swarm.write(&format!("{name}/{path}"), &pattern(len, i as u64 + 1));
    }
    let run = swarm.write(&format!("{name}/run.sh"), b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(root.join("empty/deeper")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("jpg/link")).unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a plain syscall with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    root
}

/// The tree a leecher must end with: the source without its link and FIFO.
fn expected(root: &Path) -> Tree {
    read_tree(root)
}

#[test]
fn a_folder_arrives_exact_and_is_one_share() {
    let swarm = Swarm::new(BINS);
    let src = photos(&swarm, "photos");
    let want = expected(&src);
    let total: usize = want.values().flatten().map(|(d, _)| d.len()).sum();
    let (seeder, lines) = swarm.seeder(&["--chunk-size", "16K", "photos"]);
    assert_eq!(lines.len(), 1, "{}", seeder.dump());
    let id = id_of(&lines[0]);
    assert_eq!(
        lines[0],
        format!("{id} {total} photos/"),
        "{}",
        seeder.dump()
    );
    seeder.wait_stderr("skipped the symbolic link");
    seeder.wait_stderr("fifo: not a regular file");
    let listed = swarm.list(None);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].name.as_str(), listed[0].size),
        ("photos/", total as u64)
    );

    let files = swarm.run_leecher(swarm.dir.path(), &["--files", "photos"]);
    files.assert_ok();
    let inside: Vec<&str> = files.stdout.lines().collect();
    assert!(
        inside.contains(&"49157 raw/IMG_0001.cr2"),
        "{}",
        files.dump()
    );
    assert!(inside.contains(&"- empty/deeper/"), "{}", files.dump());
    assert!(inside.contains(&"0 zero"), "{}", files.dump());
    assert_eq!(
        inside.len(),
        9,
        "eight files and one empty folder\n{}",
        files.dump()
    );

    let out = swarm.folder("out");
    let run = swarm.run_leecher(&out, &["--no-seed", "photos"]);
    run.assert_ok();
    assert_eq!(read_tree(&out.join("photos")), want, "{}", run.dump());
    assert_eq!(dir_names(&out), ["photos"], "leftovers\n{}", run.dump());
    assert!(
        run.summary()
            .is_some_and(|s| s.starts_with("downloaded photos: 8 files, ")),
        "{}",
        run.dump()
    );
    assert!(
        run.stdout.starts_with(&format!("{id} {total} ")),
        "{}",
        run.dump()
    );

    // Again: it is already there, every chunk verified.
    let again = swarm.run_leecher(&out, &["--no-seed", "photos"]);
    again.assert_ok();
    assert!(
        again.stderr.contains("already have photos"),
        "{}",
        again.dump()
    );

    // A tree that differs is not replaced without --force, and is replaced whole with it.
    std::fs::write(out.join("photos/notes.txt"), b"mine").unwrap();
    std::fs::write(out.join("photos/extra"), b"mine too").unwrap();
    swarm
        .run_leecher(&out, &["--no-seed", "photos"])
        .assert_fails_with("already exists; use --force");
    assert_eq!(
        std::fs::read(out.join("photos/extra")).unwrap(),
        b"mine too"
    );
    let forced = swarm.run_leecher(&out, &["--no-seed", "--force", "photos"]);
    forced.assert_ok();
    assert!(forced.stderr.contains("replacing "), "{}", forced.dump());
    assert_eq!(read_tree(&out.join("photos")), want, "{}", forced.dump());
    assert_eq!(dir_names(&out), ["photos"], "leftovers\n{}", forced.dump());
}

#[test]
fn only_fetches_the_files_its_globs_match() {
    let swarm = Swarm::new(BINS);
    let src = photos(&swarm, "photos");
    let (_seeder, _) = swarm.seeder(&["--chunk-size", "16K", "photos"]);
    let out = swarm.folder("out");
    let run = swarm.run_leecher(
        &out,
        &[
            "--no-seed",
            "--only",
            "raw/*.cr2",
            "--only",
            "**/b.jpg",
            "photos",
        ],
    );
    run.assert_ok();
    let got = read_tree(&out.join("photos"));
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "jpg",
            "jpg/b.jpg",
            "raw",
            "raw/IMG_0001.cr2",
            "raw/IMG_0002.cr2"
        ],
        "{}",
        run.dump()
    );
    let all = expected(&src);
    for (k, v) in &got {
        assert_eq!(Some(v), all.get(k), "{k}");
    }
    assert!(
        run.summary()
            .is_some_and(|s| s.starts_with("downloaded photos: 3 files, ")),
        "{}",
        run.dump()
    );
    swarm
        .run_leecher(&out, &["--no-seed", "--only", "nothing/*", "photos"])
        .assert_fails_with("already exists");
    // --force would put the part in place of the whole: refused, the folder left as it was.
    swarm
        .run_leecher(
            &out,
            &["--no-seed", "--force", "--only", "**/a.jpg", "photos"],
        )
        .assert_fails_with("--force with --only would replace all of it");
    assert_eq!(read_tree(&out.join("photos")), got);
    swarm
        .run_leecher(
            &swarm.folder("out2"),
            &["--no-seed", "--only", "nothing/*", "photos"],
        )
        .assert_fails_with("--only matches nothing in photos");
}

#[test]
fn each_shares_every_file_on_its_own() {
    let swarm = Swarm::new(BINS);
    photos(&swarm, "photos");
    let p = Proc::spawn(
        BINS.seeder,
        &["--each", "photos"],
        swarm.dir.path(),
        &swarm.env(),
    );
    p.wait_stderr("registered with the tracker");
    p.wait_stdout_count(8);
    p.wait_stderr("skipped the symbolic link");
    let names: Vec<String> = swarm.list(None).into_iter().map(|l| l.name).collect();
    assert_eq!(names.len(), 8, "{names:?}\n{}", p.dump());
    assert!(names.iter().all(|n| !n.ends_with('/')), "{names:?}");
}

#[test]
fn a_killed_folder_download_resumes_from_its_part_folder() {
    let swarm = Swarm::new(BINS);
    let src = swarm.folder("big");
    for i in 0..24 {
        swarm.write(
            &format!("big/d{}/f{i:02}", i % 3),
            &pattern(64 * 1024, 100 + i),
        );
    }
    let want = read_tree(&src);
    // Slow at first, so that the leecher is killed half way.
    let (mut slow, lines) = swarm.seeder(&["--max-upload-rate", "256K", "big"]);
    let id = id_of(&lines[0]);
    let out = swarm.folder("out");
    let mut first = swarm.leecher_in(&out, &["--no-seed", "big"]);
    let part = part_of(&out, "big", &id);
    // A few files complete in the `.part` folder: that is what the second run must keep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let done = want
            .iter()
            .filter(|(k, v)| {
                v.as_ref()
                    .is_some_and(|(d, _)| std::fs::read(part.join(k)).is_ok_and(|got| got == *d))
            })
            .count();
        if done >= 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress\n{}",
            first.dump()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    first.kill();
    slow.stop_cleanly();
    let (_fast, again) = swarm.seeder(&["big"]);
    assert_eq!(id_of(&again[0]), id);
    let run = swarm.run_leecher(&out, &["--no-seed", "big"]);
    run.assert_ok();
    assert!(
        run.stderr
            .contains("resuming: chunks already on disk and verified"),
        "{}",
        run.dump()
    );
    assert_eq!(read_tree(&out.join("big")), want, "{}", run.dump());
    assert_eq!(
        dir_names(&out),
        ["big"],
        "the .part folder is gone\n{}",
        run.dump()
    );
}

/// A tree manifest with unchecked paths, encoded by hand as postcard would: the magic, the chunk
/// size, the entries (path, then File { size, executable, hashes } or EmptyDir).
fn raw_tree(entries: &[(&str, Option<u64>)]) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let cs = 16 * 1024u64;
    let mut out = b"shoal-tree".to_vec();
    varint(cs, &mut out);
    varint(entries.len() as u64, &mut out);
    for (path, file) in entries {
        varint(path.len() as u64, &mut out);
        out.extend_from_slice(path.as_bytes());
        match file {
            Some(size) => {
                out.push(0);
                varint(*size, &mut out);
                out.push(0);
                let n = size.div_ceil(cs);
                varint(n, &mut out);
                for _ in 0..n {
                    out.extend_from_slice(&[7; 32]);
                }
            }
            None => out.push(1),
        }
    }
    out
}

#[test]
fn hostile_trees_are_refused_before_anything_is_written() {
    let swarm = Swarm::new(BINS);
    let deep = vec!["d"; 10_000].join("/");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "up/",
            raw_tree(&[("ok", Some(1)), ("a/../../b", Some(1))]),
            "has a . or .. component",
        ),
        ("abs/", raw_tree(&[("/tmp/x", Some(1))]), "is absolute"),
        (
            "bs/",
            raw_tree(&[("a\\..\\b", Some(1))]),
            "holds a backslash",
        ),
        (
            "drive/",
            raw_tree(&[("C:x", Some(1))]),
            "starts with a drive letter",
        ),
        (
            "ctl/",
            raw_tree(&[("a\u{1b}[2J", Some(1))]),
            "control character",
        ),
        (
            "case/",
            raw_tree(&[("A", Some(1)), ("a", Some(1))]),
            "differ only in case",
        ),
        (
            "dup/",
            raw_tree(&[("a", Some(1)), ("a", Some(1))]),
            "listed twice",
        ),
        (
            "both/",
            raw_tree(&[("a", Some(1)), ("a/b", Some(1))]),
            "is inside \"a\"",
        ),
        ("deep/", raw_tree(&[(&deep, Some(1))]), "is longer than"),
    ];
    let served: Vec<Served> = cases
        .iter()
        .map(|(name, bytes, _)| Served::with_manifest_bytes(name, 2, bytes.clone()))
        .collect();
    let _peer = HostilePeer::start(
        &swarm.tracker_addr,
        served,
        Mode::Honest,
        shoal_testkit::hostile::Gate::open(),
    );
    let before = dir_names(swarm.dir.path());
    for (name, _, why) in &cases {
        let out = swarm.folder(&format!("out-{}", name.trim_end_matches('/')));
        let run = swarm.run_leecher(&out, &["--no-seed", "--timeout", "20", name]);
        run.assert_fails_with(why);
        assert!(run.stderr.contains("nothing was written"), "{}", run.dump());
        assert_eq!(dir_names(&out), Vec::<String>::new(), "{}", run.dump());
    }
    let mut after = dir_names(swarm.dir.path());
    after.retain(|n| !n.starts_with("out-"));
    assert_eq!(after, before, "nothing appeared beside the output folders");
}

/// A leecher that fetched a folder seeds it: once the first seeder is gone, a second leecher gets
/// the whole tree from the first, read back from the files it wrote.
#[test]
fn a_downloaded_folder_is_seeded_again() {
    let swarm = Swarm::new(BINS);
    let src = photos(&swarm, "photos");
    let want = expected(&src);
    let (mut seeder, _) = swarm.seeder(&["--chunk-size", "16K", "photos"]);
    let first_out = swarm.folder("first");
    let mut first = swarm.seeding_leecher_in(&first_out, &["photos"]);
    assert_eq!(
        read_tree(&first_out.join("photos")),
        want,
        "{}",
        first.dump()
    );
    seeder.stop_cleanly();
    let second_out = swarm.folder("second");
    let run = swarm.run_leecher(&second_out, &["--no-seed", "photos"]);
    run.assert_ok();
    assert_eq!(
        read_tree(&second_out.join("photos")),
        want,
        "{}",
        run.dump()
    );
    assert_eq!(
        run.chunks_per_peer(),
        [(first.serving_addr(), 11)],
        "every chunk from the first leecher\n{}",
        run.dump()
    );
    first.stop_cleanly();
}

/// A file inside a shared folder changes after hashing: the seeder stops vouching for the whole
/// folder (says so, withdraws it), and the leecher gets the rest from another seeder.
#[test]
fn a_changed_file_inside_withdraws_the_folder() {
    let swarm = Swarm::new(BINS);
    let src = photos(&swarm, "a/photos");
    let want = expected(&src);
    let a_dir = swarm.path("a");
    let (a, lines) = swarm.seeder_in(&a_dir, &["--chunk-size", "16K", "photos"]);
    let id = id_of(&lines[0]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(src.join("notes.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"appended").unwrap();
    let out = swarm.folder("out");
    let mut leecher = swarm.leecher_in(&out, &["--no-seed", "photos"]);
    let why = a.wait_stderr("changed on disk");
    assert!(why.contains("notes.txt"), "{}", a.dump());
    a.wait_stderr("withdrawn from the tracker");
    // Another seeder of the same folder as it was.
    photos(&swarm, "b/photos");
    let (_b, again) = swarm.seeder_in(&swarm.path("b"), &["--chunk-size", "16K", "photos"]);
    assert_eq!(id_of(&again[0]), id);
    let run = finish(&mut leecher);
    run.assert_ok();
    assert_eq!(read_tree(&out.join("photos")), want, "{}", run.dump());
}
