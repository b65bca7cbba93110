//! The shoal peer engine on tokio: everything that does I/O.
//!
//! - [`store`]: hashing files into manifests, the chunks a peer can vouch for, the files a peer
//!   shares (complete or being downloaded), the `.part` file a download writes into.
//! - [`fsafe`]: the file-system checks that keep anything unverified or unintended from standing
//!   under a final name (`.part` names, what is written through, the final rename).
//! - [`conn`]: framed peer connections over TCP.
//! - [`transport`]: the stream under them: plain TCP, or Noise in a private swarm.
//! - [`discovery`]: choosing the tracker, and finding one on the LAN when none is configured.
//! - [`server`]: serves chunks of shared files to other peers.
//! - [`admission`]: which connections a server takes: caps in total and per source, idleness.
//! - [`rate`]: the token bucket behind `--max-upload-rate` and `--max-download-rate`.
//! - [`advert`]: what the server tells each client about the chunks it has.
//! - [`tracker_client`]: talks to the tracker over UDP (retries, connection ids, paging) and keeps
//!   a peer registered ([`tracker_client::Announcer`]).
//! - [`private`]: this process's private swarm keys, if any (`--secret-file`, `P2P_SECRET`).
//! - [`pool`]: the fixed set of chunk buffers a download reuses.
//! - [`scheduler`]: the sans-IO bookkeeping of which chunk is where during a download.
//! - [`reveal`]: super-seeding, the sans-IO choice of which chunks a complete peer advertises.
//! - [`download`]: the leecher's download: peers, workers, verification, resume.
//! - [`seeding`]: serving a library and keeping it registered.
//! - [`support`]: figures as people read them ([`support::human_bytes`]).

// Unsafe code only where no safe wrapper reaches, each place allowed where it stands (one:
// `store::part`'s sync_file_range).
#![deny(unsafe_code)]

pub mod admission;
pub mod advert;
pub mod conn;
pub mod discovery;
pub mod download;
pub mod fsafe;
pub mod pool;
pub mod private;
pub mod rate;
pub mod reveal;
pub mod scheduler;
pub mod seeding;
pub mod server;
pub mod store;
pub mod support;
pub mod tracker_client;
pub mod transport;
pub mod uploads;

/// Default tracker address when neither `--tracker` nor `P2P_TRACKER` says otherwise.
pub const DEFAULT_TRACKER: &str = "127.0.0.1:6969";
