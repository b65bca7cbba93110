//! Sans-IO wire formats and file identity for shoal.
//!
//! Nothing here touches a socket, a file or a clock: every function maps bytes to values and back,
//! so the whole protocol can be tested (and fuzzed) without a network. The engine crate owns the I/O.
//!
//! - [`manifest`]: how a file is cut into chunks, its manifest and its [`FileId`].
//! - [`tracker`]: the UDP datagrams between peers and the tracker.
//! - [`peer`]: the framed TCP messages between peers.
//! - [`names`]: turning a file name that came from the network into a safe local file name.

// Unsafe code only in `sha256` (the SHA-NI intrinsics).
#![deny(unsafe_code)]

pub mod id;
pub mod manifest;
pub mod names;
pub mod peer;
#[allow(unsafe_code)]
pub mod sha256;
pub mod tracker;

pub use id::{ChunkIndex, ConnectionId, FileId, IdPrefix, TransactionId};
pub use manifest::{Manifest, ManifestError};
