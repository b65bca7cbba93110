//! Peak memory of decoding the largest tree manifests a peer may send: a million entries (the
//! most a tree may list) and a 16 MiB encoding (the most a peer frame carries). Prints the
//! peak RSS (VmHWM) of a process that reads the encoding and decodes it.
//!
//! `cargo run --release --example tree_memory -- entries` (or `-- bytes`): one case per run, so
//! that one case's peak does not hide the other's.

use shoal_proto::relpath::RelPath;
use shoal_proto::tree::{Entry, EntryKind, TreeManifest, MAX_ENTRIES};

fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn main() {
    let case = std::env::args().nth(1).unwrap_or_else(|| "entries".into());
    if case == "decode" {
        return decode(&std::env::args().nth(2).expect("a file"));
    }
    let entries: Vec<Entry> = match case.as_str() {
        // A million empty files, each in a folder of its own (the shortest unique paths).
        "entries" => (0..MAX_ENTRIES)
            .map(|i| Entry {
                path: RelPath::new(format!("{i:07}")).unwrap(),
                kind: EntryKind::File {
                    size: 0,
                    executable: false,
                    hashes: vec![],
                },
            })
            .collect(),
        // Fewer entries, long paths, up to the frame bound.
        "bytes" => (0..9_400)
            .map(|i| Entry {
                path: RelPath::new(format!(
                    "{i:07}{}",
                    format!("/{}", "p".repeat(250)).repeat(7)
                ))
                .unwrap(),
                kind: EntryKind::EmptyDir,
            })
            .collect(),
        other => panic!("unknown case {other:?}: entries or bytes"),
    };
    let bytes = TreeManifest::new(16 * 1024, entries).unwrap().encode();
    // Decoded in a fresh process of its own, so that building the tree here does not count.
    let file = std::env::temp_dir().join(format!("shoal-tree-memory-{}", std::process::id()));
    std::fs::write(&file, &bytes).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("decode")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    print!("{case}: {}", String::from_utf8_lossy(&out.stdout));
}

fn decode(path: &str) {
    let bytes = std::fs::read(path).unwrap();
    let before = peak_kib();
    let start = std::time::Instant::now();
    let tree = TreeManifest::decode(&bytes).expect("a valid tree");
    let took = start.elapsed();
    let after = peak_kib();
    // What a download then holds besides: the tree in the store, the scheduler and the summary
    // (clones, which share one copy), and the encoding it serves to other peers.
    let held = (tree.clone(), tree.clone(), tree.clone(), tree.encode());
    let download = peak_kib();
    println!(
        "{} entries, {} bytes encoded; decoding took {:.2} s; peak RSS {} MiB with the bytes read, {} MiB after decoding, {} MiB holding it as a download does",
        tree.entries().len(),
        bytes.len(),
        took.as_secs_f64(),
        before / 1024,
        after / 1024,
        download / 1024
    );
    drop(held);
}
