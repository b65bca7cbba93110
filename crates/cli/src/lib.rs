//! What the three programs (`tracker`, `seeder`, `leecher`) share as programs, kept out of the
//! libraries they are built on: logging set-up, Ctrl-C and SIGTERM, allocator tuning, and the
//! flags more than one of them takes.
//!
//! - [`logging`]: log lines on stderr, filtered by `RUST_LOG`.
//! - [`signal`]: [`signal::shutdown_signal`], the first and second Ctrl-C.
//! - [`alloc`]: [`alloc::tune_allocator`], glibc's thresholds for chunk-sized buffers.
//! - [`flags`]: the flag groups the programs flatten into their own (`#[command(flatten)]`).

// One call in `alloc` (mallopt, which no safe crate wraps) is allowed where it stands.
#![deny(unsafe_code)]

pub mod alloc;
pub mod flags;
pub mod logging;
pub mod signal;

pub use alloc::tune_allocator;
pub use logging::{init_logging, init_logging_plain, init_logging_to};
pub use signal::shutdown_signal;
