//! Allocator tuning for processes that move chunks: the same on every program that serves or
//! downloads.

/// glibc serves allocations over its mmap threshold (128 KiB at first) with fresh mappings, and
/// gives freed heap back to the kernel eagerly; for a stream of 512 KiB chunk buffers that means
/// page faults and zeroing on every chunk. Keep such buffers on the heap and reuse them. Memory
/// stays bounded: the number of chunk buffers alive at once is bounded by the engine.
///
/// Call it first thing in `main`, before any other thread exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator parameters, and takes the allocator's own lock to
    // do it; no memory of ours is involved. No crate wraps it safely.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    }
}
