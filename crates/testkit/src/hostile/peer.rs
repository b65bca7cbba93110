//! [`HostilePeer`]: a peer that registers real files with the real tracker, then misbehaves as
//! its [`Mode`] says. Its connections are served in `serve`, its registration kept in `register`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use shoal_proto::tracker::FileEntry;
use shoal_proto::{ChunkIndex, FileId, Manifest};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::Swarm;

/// A file a hostile peer knows, under the name it registers.
#[derive(Clone)]
pub struct Served {
    pub name: String,
    pub data: Bytes,
    pub manifest: Manifest,
    pub manifest_bytes: Bytes,
    pub id: FileId,
}

impl Served {
    pub fn new(name: &str, data: &[u8], chunk_size: u32) -> Served {
        let manifest = Manifest::of_bytes(data, chunk_size).expect("a valid test file");
        let manifest_bytes = Bytes::from(manifest.encode());
        Served {
            name: name.to_string(),
            data: Bytes::copy_from_slice(data),
            id: manifest.id(),
            manifest,
            manifest_bytes,
        }
    }

    /// A share whose manifest is `manifest_bytes` as they are (a hostile tree manifest, say),
    /// registered under `name` at `size` bytes; its id is their hash. It has no chunks to serve.
    pub fn with_manifest_bytes(name: &str, size: u64, manifest_bytes: Vec<u8>) -> Served {
        let id = shoal_proto::manifest::id_of_encoding(&manifest_bytes);
        Served {
            name: name.to_string(),
            data: Bytes::from(vec![0u8; size as usize]),
            manifest: Manifest::of_bytes(&[], shoal_proto::manifest::MIN_CHUNK_SIZE)
                .expect("an empty manifest"),
            manifest_bytes: Bytes::from(manifest_bytes),
            id,
        }
    }

    pub fn entry(&self) -> FileEntry {
        FileEntry {
            id: self.id,
            size: self.data.len() as u64,
            name: self.name.clone(),
            have: shoal_proto::tracker::Have::Complete,
        }
    }

    pub fn num_chunks(&self) -> u32 {
        self.manifest.num_chunks()
    }

    pub(super) fn chunk(&self, index: ChunkIndex) -> Option<Bytes> {
        let len = self.manifest.chunk_len(index) as usize;
        if len == 0 {
            return None;
        }
        let start = self.manifest.offset(index) as usize;
        Some(self.data.slice(start..start + len))
    }
}

/// The ways a peer can send garbage in answer to a chunk request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbage {
    /// A length prefix of `u32::MAX`, and then a few bytes: nobody may allocate for that.
    OverMax,
    /// A well-formed chunk frame one byte over the limit that the manifest's chunk size sets.
    OverChunkMax,
    /// The head and half the body of a chunk frame, then the connection is closed.
    Truncated,
    /// A frame whose header is no message at all.
    UnknownMessage,
    /// The right data of another chunk, labelled as that other chunk.
    WrongIndex,
    /// The requested index with only half its bytes.
    WrongLength,
}

/// How a [`HostilePeer`] behaves once it has said welcome.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Serves every chunk correctly (through its gate): a counting, controllable honest peer.
    Honest,
    /// Serves wrong bytes (of the right length) for every chunk.
    LieAll,
    /// Serves wrong bytes for these chunks, the right ones for the others.
    LieOn(BTreeSet<u32>),
    /// Says welcome, then nothing at all, not even the manifest.
    Silent,
    /// Serves the manifest, then never answers a chunk request.
    StallChunks,
    /// Serves the manifest, then sends chunk frames four bytes every half second.
    Trickle,
    /// Serves the manifest, then answers the first chunk request with garbage.
    Garbage(Garbage),
    /// Serves this many chunks in all (through its gate), then on the next request closes every
    /// connection and stops listening, as a killed process would.
    DieAfter(u32),
    /// Plays a peer that is still downloading and has the first this many chunks (its Welcome and
    /// Bitfield say so), and serves wrong bytes for them.
    PartialLiar(u32),
    /// Refuses every chunk request as busy (its upload slots taken), for ever.
    AlwaysBusy,
    /// Declines every chunk request as sent to another peer already (`Elsewhere`), as a seeder
    /// in its first pass does.
    DeclinesAll,
    /// Declines every chunk request as `Elsewhere`, then shows the chunk again with a `Have`,
    /// so that a client that took it at its word would ask for it in a loop.
    DeclinesAgain,
    /// Speaks protocol 1: refuses every other version's hello as protocol 1 did (a bare
    /// `VersionMismatch`), and counts the refusal as garbage.
    ProtocolV1,
}

pub(super) struct PeerState {
    pub(super) files: HashMap<FileId, Served>,
    pub(super) mode: Mode,
    pub(super) gate: Gate,
    pub(super) events: Arc<Events>,
    pub(super) cancel: CancellationToken,
}

pub(super) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A hostile peer. Dropping it closes everything, without unregistering (as a crash would).
pub struct HostilePeer {
    /// The address it serves on and registered with the tracker.
    pub addr: SocketAddr,
    pub events: Arc<Events>,
    pub gate: Gate,
    background: Background,
}

impl HostilePeer {
    /// Starts serving `files` and registers them with the tracker at `tracker` (returns once the
    /// tracker acknowledged them); then heartbeats, and registers again if the tracker forgets it.
    pub fn start(tracker: &str, files: Vec<Served>, mode: Mode, gate: Gate) -> HostilePeer {
        let rt = runtime();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let events = Events::new();
        let cancel = CancellationToken::new();
        let entries: Vec<FileEntry> = files.iter().map(Served::entry).collect();
        let state = Arc::new(PeerState {
            files: files.into_iter().map(|f| (f.id, f)).collect(),
            mode,
            gate: gate.clone(),
            events: events.clone(),
            cancel: cancel.clone(),
        });
        rt.spawn(accept_loop(listener, state));
        let (client, interval) = rt
            .block_on(register(tracker, addr.port(), &entries))
            .unwrap_or_else(|e| panic!("hostile peer {addr} could not register: {e}"));
        rt.spawn(keep_registered(
            client,
            addr.port(),
            entries,
            interval,
            cancel.clone(),
        ));
        HostilePeer {
            addr,
            events,
            gate,
            background: Background::new(rt, cancel),
        }
    }

    /// One file, registered under `name`.
    pub fn one(swarm: &Swarm, name: &str, data: &[u8], chunk: u32, mode: Mode) -> HostilePeer {
        let gate = Gate::open();
        HostilePeer::start(
            &swarm.tracker_addr,
            vec![Served::new(name, data, chunk)],
            mode,
            gate,
        )
    }

    /// Closes every connection and the listener at once, and stops heartbeating.
    pub fn kill(&self) {
        self.background.cancel.cancel();
    }
}

/// The runtime a test peer's tasks run on and the token that stops them: cancelled, and the
/// runtime shut down without waiting, when the peer is dropped.
pub(super) struct Background {
    pub(super) rt: Option<Runtime>,
    pub(super) cancel: CancellationToken,
}

impl Background {
    pub(super) fn new(rt: Runtime, cancel: CancellationToken) -> Background {
        Background {
            rt: Some(rt),
            cancel,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
