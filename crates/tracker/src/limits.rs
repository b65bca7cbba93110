//! Caps on everything a sender can make the tracker hold, and what they add up to in bytes.

use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use shoal_proto::tracker::{Have, MAX_NAME_LEN};
use shoal_proto::FileId;

use crate::registry::{FileRecord, Load, Peer};
use crate::{http, ratelimit};

/// Caps on what senders can make the tracker hold. Each is a command-line option.
///
/// # Worst-case memory
///
/// The registry's state is bounded by these caps alone, whatever arrives. With `P` =
/// [`total_peers`](Self::total_peers), `F` = [`total_files`](Self::total_files), `R` =
/// [`registrations`](Self::registrations) (one peer sharing one file), `N` =
/// [`name_len`](Self::name_len) and `T` = [`rate_table`](Self::rate_table), on a 64-bit machine:
///
/// ```text
/// bytes <= P * 600                    per peer: its slot in the peer table, its empty file set,
///                                     its source's slot in the table of what each source holds
///        + min(F, R) * 650            per file: its slot in the file table and the name index,
///                                     its peer, name and size lists
///        + R * (332 + N rounded up to 8)
///                                     per registration: a slot in the peer's file set, an entry in
///                                     the file's peer list (with the size the peer gives and how
///                                     much of the file it has) and size list and, if every peer
///                                     names every file differently, the name itself
///        + T * 32 + 8 KiB             the rate-limit table and the activity ring
/// ```
///
/// Every figure includes the slack of a hash table just after it doubled (7/8 load, so up to 16/7
/// slots per item), a `Vec` at twice its length, and 16 bytes of allocator overhead per
/// allocation; sets and lists shrink when they empty out, so a peer that registers and withdraws
/// ten thousand files keeps nothing of them. [`Limits::registry_bytes`] computes the sum, and
/// `crates/tracker/tests/memory.rs` fills a registry to its caps under a counting allocator and
/// checks the sum holds (it measures about 77% of it). With the defaults (P = 10,000,
/// F = R = 100,000, N = 255, T = 16,384) it is **130,332,480 bytes, about 124 MiB**, reached
/// only if a hundred thousand distinct files are registered with 255-byte names; a tracker for a
/// few machines sharing a few thousand files holds a few MiB.
/// While the largest table grows, its old copy lives on for a moment: add up to half of it
/// (about 12 MiB with the defaults).
///
/// The status page, when it is on, adds at most [`Limits::HTTP_BYTES`] (about 88 MiB):
/// [`crate::http::MAX_CONNECTIONS`] connections, each holding at most one answer of
/// [`crate::http::MAX_ANSWER`] bytes and hyper's buffers, plus the one answer being built and
/// the cached one. `worst_case_bytes` includes it, so with the defaults the sum is
/// **222,082,880 bytes, about 212 MiB**; `crates/tracker/tests/memory.rs` also fills every
/// connection with answers nobody reads and checks the sum holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Files one peer may register (`--max-files-per-peer`).
    pub files_per_peer: usize,
    /// Peers registered for one file (`--max-peers-per-file`).
    pub peers_per_file: usize,
    /// Distinct files in all (`--max-files`).
    pub total_files: usize,
    /// Peers in all (`--max-total-peers`).
    pub total_peers: usize,
    /// (peer, file) pairs in all (`--max-registrations`): what the state's size grows with.
    pub registrations: usize,
    /// Longest file name accepted, in bytes (`--max-name-len`, at most [`MAX_NAME_LEN`]).
    pub name_len: usize,
    /// Peers in one reply to "get peers" (`--max-peers`).
    pub peers_per_reply: usize,
    /// Requests per second each source IP may send, on average (`--rate-limit`; 0 turns the
    /// limit off).
    pub rate: u32,
    /// Requests a source IP may send at once after a quiet spell (`--rate-burst`).
    pub burst: u32,
    /// Source IPs whose rates are tracked at once (`--rate-table`); the least active give way.
    pub rate_table: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            files_per_peer: 10_000,
            peers_per_file: 1_000,
            total_files: 100_000,
            total_peers: 10_000,
            registrations: 100_000,
            name_len: MAX_NAME_LEN,
            peers_per_reply: 50,
            rate: 200,
            burst: 2_000,
            rate_table: 16_384,
        }
    }
}

/// Allocator bookkeeping per allocation (glibc's malloc uses 8 to 16 bytes).
const MALLOC: usize = 16;

/// Bytes per item of a hashbrown table of `T` at worst: at most 7/8 of the slots are used, and
/// right after doubling only 7/16, so 16/7 slots per item, each with a control byte.
const fn hash_slot<T>() -> usize {
    (size_of::<T>() + 1) * 16 / 7 + 1
}

/// Bytes per entry of a `BTreeMap` whose entries are `E` bytes at worst: nodes hold 5 to 11 of
/// them, internal nodes also 12 edge pointers, each node is one allocation.
const fn btree_entry(e: usize) -> usize {
    3 * e + 16 + MALLOC
}

/// A hashbrown set's smallest allocation: 4 slots plus 4 + 16 control bytes.
const fn smallest_set<T>() -> usize {
    4 * size_of::<T>() + 20 + MALLOC
}

impl Limits {
    /// Bytes per peer, whatever it shares.
    pub const PER_PEER: usize = hash_slot::<(SocketAddr, Peer)>()
        + smallest_set::<FileId>()
        // At most one source per peer in the fairness table.
        + hash_slot::<(IpAddr, Load)>();
    /// Bytes per distinct file.
    pub const PER_FILE: usize = hash_slot::<(FileId, FileRecord)>()
        + btree_entry(size_of::<(Arc<str>, FileId)>())
        // The peer, name and size lists start with room for one each.
        + size_of::<(SocketAddr, Arc<str>, Have, u64)>()
        + size_of::<(Arc<str>, u32)>()
        + size_of::<(u64, u32)>()
        + 3 * MALLOC;
    /// Bytes per registration, besides the name.
    pub const PER_REGISTRATION: usize = hash_slot::<FileId>()
        + 2 * size_of::<(SocketAddr, Arc<str>, Have, u64)>()
        + 2 * size_of::<(Arc<str>, u32)>()
        + 2 * size_of::<(u64, u32)>()
        // The name's own allocation: the reference counts, then the bytes.
        + 2 * size_of::<usize>()
        + MALLOC;
    /// The activity ring and other fixed state, rounded up.
    pub const FIXED: usize = 8 * 1024;
    /// One status page connection: the answer it holds until the client reads it, hyper's read
    /// and write buffers at their largest (8 KiB + 400 KiB each, `DEFAULT_MAX_BUFFER_SIZE`: a
    /// client may pipeline that many bytes of requests, and hyper may copy an answer into its
    /// write buffer), and the connection's task and state (24 KiB, rounded up).
    pub const PER_HTTP_CONNECTION: usize = http::MAX_ANSWER + 2 * 417_792 + 24 * 1024;
    /// The status page: every connection, plus the answer being built (its rows, at most one
    /// answer's budget twice over for a `Vec` that doubled, and its JSON, twice over, then copied
    /// once to shrink it: five answers) and the cached one.
    pub const HTTP_BYTES: usize =
        http::MAX_CONNECTIONS * Self::PER_HTTP_CONNECTION + 6 * http::MAX_ANSWER;

    /// The most bytes the tracker can hold with these caps, status page included (see the
    /// type's documentation).
    pub fn worst_case_bytes(&self) -> u64 {
        self.registry_bytes() + Self::HTTP_BYTES as u64
    }

    /// The most bytes the registry can hold with these caps.
    pub fn registry_bytes(&self) -> u64 {
        let name = self.name_len.min(MAX_NAME_LEN).div_ceil(8) * 8;
        let files = self.total_files.min(self.registrations) as u64;
        self.total_peers as u64 * Self::PER_PEER as u64
            + files * Self::PER_FILE as u64
            + self.registrations as u64 * (Self::PER_REGISTRATION + name) as u64
            + self.rate_table_bytes()
            + Self::FIXED as u64
    }

    fn rate_table_bytes(&self) -> u64 {
        if self.rate == 0 {
            0
        } else {
            (ratelimit::table_len(self.rate_table) * ratelimit::SLOT_BYTES) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figures in the documentation above are the ones the code computes.
    #[test]
    fn documented_figures() {
        assert_eq!(Limits::PER_PEER, 600);
        assert_eq!(Limits::PER_FILE, 650);
        assert_eq!(Limits::PER_REGISTRATION, 332);
        assert_eq!(ratelimit::SLOT_BYTES, 32);
        assert_eq!(Limits::default().registry_bytes(), 130_332_480);
        assert_eq!(Limits::HTTP_BYTES, 91_750_400);
        assert_eq!(Limits::default().worst_case_bytes(), 222_082_880);
    }
}
