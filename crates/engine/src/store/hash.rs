//! Hashing a file's chunks into the hashes of its manifest, on all cores.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use shoal_proto::manifest::{chunk_count, hash_chunk, ChunkHash};
use shoal_proto::sha256;

/// How much of each chunk [`hash_chunks`] reads at a time: two such pieces stay in a core's L2
/// cache between the read and the hash, and a hashing thread needs 128 KiB instead of two chunks
/// (no speed difference measurable here; a smaller peak RSS for the seeder).
const HASH_PIECE: usize = 64 * 1024;

/// A `stop` flag that is never set, for hashing that runs to the end.
pub static NEVER_STOP: AtomicBool = AtomicBool::new(false);

/// Hashes every chunk of `file` on all cores. `progress` grows by the bytes hashed so far. Setting
/// `stop` ends the work within one piece per thread, with an `Interrupted` error: a person who
/// presses Ctrl-C while 20 GiB already on disk are re-checked must not wait for the rest.
pub fn hash_chunks(
    file: &File,
    size: u64,
    chunk_size: u32,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<Vec<ChunkHash>> {
    let n = chunk_count(size, chunk_size)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n.div_ceil(2).max(1) as usize);
    let hashes: Vec<Mutex<Vec<(u32, ChunkHash)>>> =
        (0..threads).map(|_| Mutex::new(Vec::new())).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let out = &hashes[t];
                s.spawn(move || -> io::Result<()> {
                    let chunk = chunk_size as usize;
                    let piece = chunk.min(HASH_PIECE);
                    // Chunk sizes are powers of two of at least 16 KiB (`chunk_count` checked).
                    debug_assert_eq!((chunk % piece, piece % 64), (0, 0));
                    let mut pieces = vec![0u8; 2 * piece];
                    let mut whole = Vec::new();
                    let mut mine = Vec::new();
                    // Chunks go in pairs (hashing two at once is faster, see
                    // `shoal_proto::sha256`), and pairs are interleaved so the threads read the
                    // file front to back together.
                    for pair in (t as u32..n.div_ceil(2)).step_by(threads) {
                        if stop.load(Ordering::Relaxed) {
                            return Err(io::ErrorKind::Interrupted.into());
                        }
                        let first = 2 * pair;
                        let offset = u64::from(first) * u64::from(chunk_size);
                        let len = (size - offset).min(2 * u64::from(chunk_size)) as usize;
                        if len == 2 * chunk {
                            // Two whole chunks, read side by side in pieces small enough to stay
                            // in the CPU's cache between the read and the hash.
                            let (pa, pb) = pieces.split_at_mut(piece);
                            let mut hasher = sha256::PairHasher::new();
                            for at in (0..chunk).step_by(piece) {
                                if stop.load(Ordering::Relaxed) {
                                    return Err(io::ErrorKind::Interrupted.into());
                                }
                                let at = offset + at as u64;
                                file.read_exact_at(pa, at)?;
                                file.read_exact_at(pb, at + u64::from(chunk_size))?;
                                hasher.update(pa, pb);
                            }
                            let (a, b) = hasher.finish(&[], &[]);
                            mine.push((first, a));
                            mine.push((first + 1, b));
                        } else {
                            // The end of the file: one or two chunks, the last one short.
                            whole.resize(len, 0);
                            file.read_exact_at(&mut whole, offset)?;
                            for (i, data) in whole.chunks(chunk).enumerate() {
                                mine.push((first + i as u32, hash_chunk(data)));
                            }
                        }
                        progress.fetch_add(len as u64, Ordering::Relaxed);
                    }
                    *out.lock().unwrap() = mine;
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("hashing thread panicked"))
    })?;
    let mut all: Vec<(u32, ChunkHash)> = hashes
        .into_iter()
        .flat_map(|m| m.into_inner().unwrap())
        .collect();
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, h)| h).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ChunkIndex, Manifest};

    #[test]
    fn every_way_a_file_ends_hashes_right() {
        // Chunks are hashed in pairs, read in pieces: an even or odd number of chunks, a short or
        // whole last chunk, chunks smaller and larger than a piece.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        const K: usize = 16 * 1024;
        for (chunk, size) in [
            (K, 0),
            (K, 1),
            (K, K),
            (K, 2 * K),
            (K, 4 * K),
            (K, 7 * K + 5),
            (K, 8 * K - 1),
            (16 * K, 5 * 16 * K + 3),
            (16 * K, 6 * 16 * K),
        ] {
            let data: Vec<u8> = (0..size as u32).map(|i| (i * 13 % 241) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let progress = AtomicU64::new(0);
            let file = File::open(&path).unwrap();
            let hashes =
                hash_chunks(&file, size as u64, chunk as u32, &progress, &NEVER_STOP).unwrap();
            let expected = Manifest::of_bytes(&data, chunk as u32).unwrap();
            let expected: Vec<ChunkHash> = (0..expected.num_chunks())
                .map(|i| *expected.hash(ChunkIndex(i)).unwrap())
                .collect();
            assert_eq!(hashes, expected, "{size} bytes in {chunk}-byte chunks");
            assert_eq!(progress.load(Ordering::Relaxed), size as u64);
        }
    }

    /// A stop request ends the hashing with `Interrupted` instead of reading on.
    #[test]
    fn a_stop_request_ends_the_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, vec![5u8; 64 * 16 * 1024]).unwrap();
        let file = File::open(&path).unwrap();
        let (progress, stop) = (AtomicU64::new(0), AtomicBool::new(true));
        let err = hash_chunks(&file, 64 * 16 * 1024, 16 * 1024, &progress, &stop).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert_eq!(progress.load(Ordering::Relaxed), 0, "nothing was read");
    }
}
