//! Hostile peers, and a gate in front of real seeders, for the fault tests. Test support only:
//! nothing here is a switch in the shipped binaries.
//!
//! - [`HostilePeer`]: a TCP server on 127.0.0.1:0 that speaks the peer protocol of
//!   [`shoal_proto::peer`] and registers itself with the real tracker (so a real leecher finds
//!   it). It serves a correct manifest (it knows the real file), then misbehaves as its [`Mode`]
//!   says: lies, stalls, trickles, sends garbage, dies.
//! - [`Proxy`]: sits in front of a real seeder, which advertises the proxy's port with
//!   `--advertise`. It passes everything through but holds chunk frames back until its [`Gate`]
//!   lets them go, so a test decides who delivers what, and when, without racing a fast seeder.
//!
//! Both count what they do in [`Events`]; tests wait on those counts (real signals), never on
//! sleeps.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shoal_engine::tracker_client::{RetryPolicy, TrackerClient, TrackerError};
use shoal_proto::peer::{self, Frame, Header, RejectReason, PROTOCOL_VERSION};
use shoal_proto::tracker::{FileEntry, PeerInfo, RequestBody, ResponseBody};
use shoal_proto::{ChunkIndex, FileId, Manifest};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Proc, Run, Swarm, PATIENCE};

/// What a hostile peer or proxy has done so far.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Connections accepted.
    pub connections: u32,
    /// Chunk requests received (for a proxy: passed on to the seeder).
    pub requests: u32,
    /// Correct chunks sent, and their indices in the order sent (counted just before sending, so
    /// that anything the leecher has received is already counted; likewise `lies`, `garbage`).
    pub served: u32,
    pub served_indices: Vec<u32>,
    /// Chunks sent with wrong bytes of the right length.
    pub lies: u32,
    /// Garbage frames sent.
    pub garbage: u32,
    /// Connections the other side closed (or reset).
    pub closed_by_client: u32,
    /// Connections that ended, for whatever reason.
    pub ended: u32,
    /// Proxy only: connections on which the seeder went away.
    pub upstream_lost: u32,
}

/// [`Counts`] behind a lock, with a condition variable to wait on.
pub struct Events {
    counts: Mutex<Counts>,
    cv: Condvar,
}

impl Events {
    fn new() -> Arc<Events> {
        Arc::new(Events {
            counts: Mutex::new(Counts::default()),
            cv: Condvar::new(),
        })
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap());
        self.cv.notify_all();
    }

    /// The counts now.
    pub fn now(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// Waits until `pred` holds (panics after [`PATIENCE`]) and returns the counts then.
    pub fn wait(&self, what: &str, pred: impl Fn(&Counts) -> bool) -> Counts {
        let deadline = Instant::now() + PATIENCE;
        let mut c = self.counts.lock().unwrap();
        loop {
            if pred(&c) {
                return c.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "gave up waiting for {what}; counts: {c:?}");
            c = self.cv.wait_timeout(c, deadline - now).unwrap().0;
        }
    }
}

/// Lets chunk frames through: none, some, or all. Shared by clones.
#[derive(Clone)]
pub struct Gate {
    sem: Arc<Semaphore>,
    opened: Arc<AtomicBool>,
}

impl Gate {
    /// Lets nothing through until told.
    pub fn closed() -> Gate {
        Gate {
            sem: Arc::new(Semaphore::new(0)),
            opened: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Lets everything through.
    pub fn open() -> Gate {
        let g = Gate::closed();
        g.open_all();
        g
    }

    /// Lets `n` more chunks through.
    pub fn allow(&self, n: usize) {
        self.sem.add_permits(n);
    }

    /// Lets everything through from now on.
    pub fn open_all(&self) {
        if !self.opened.swap(true, Ordering::SeqCst) {
            self.sem.add_permits(1 << 40);
        }
    }

    async fn pass(&self) {
        self.sem.acquire().await.expect("never closed").forget();
    }
}

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

    fn chunk(&self, index: ChunkIndex) -> Option<Bytes> {
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
    /// Speaks protocol 1: refuses every other version's hello as protocol 1 did (a bare
    /// `VersionMismatch`), and counts the refusal as garbage.
    ProtocolV1,
}

struct PeerState {
    files: HashMap<FileId, Served>,
    mode: Mode,
    gate: Gate,
    events: Arc<Events>,
    cancel: CancellationToken,
}

fn runtime() -> Runtime {
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
struct Background {
    rt: Option<Runtime>,
    cancel: CancellationToken,
}

impl Background {
    fn new(rt: Runtime, cancel: CancellationToken) -> Background {
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

/// Registers `files` for a peer serving on `port`, one request per file; returns the client and
/// the heartbeat interval the tracker asked for.
async fn register(
    tracker: &str,
    port: u16,
    files: &[FileEntry],
) -> Result<(TrackerClient, Duration), TrackerError> {
    let client = TrackerClient::connect(tracker, RetryPolicy::default()).await?;
    let mut interval = Duration::from_secs(1);
    for f in files {
        interval = announce_with(&client, port, f.clone()).await?;
    }
    Ok((client, interval))
}

async fn announce_with(
    client: &TrackerClient,
    port: u16,
    file: FileEntry,
) -> Result<Duration, TrackerError> {
    let peer = PeerInfo {
        port,
        advertise: None,
    };
    match client
        .request(RequestBody::Announce {
            peer,
            files: vec![file],
        })
        .await?
    {
        ResponseBody::Ack { interval_secs } => Ok(Duration::from_secs(interval_secs.max(1).into())),
        _ => Err(TrackerError::Protocol),
    }
}

async fn keep_registered(
    client: TrackerClient,
    port: u16,
    files: Vec<FileEntry>,
    mut interval: Duration,
    cancel: CancellationToken,
) {
    let peer = PeerInfo {
        port,
        advertise: None,
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let beat = client.request(RequestBody::Heartbeat {
            peer: peer.clone(),
            files: files.len() as u32,
            progress: Vec::new(),
        });
        match beat.await {
            Ok(ResponseBody::Ack { interval_secs }) => {
                interval = Duration::from_secs(interval_secs.max(1).into())
            }
            Ok(ResponseBody::Unknown) => {
                for f in &files {
                    let _ = announce_with(&client, port, f.clone()).await;
                }
            }
            _ => {}
        }
    }
}

/// Asks the tracker at `tracker` to register one file for a peer serving on `port`: what a
/// hostile seeder would send. Returns the refusal, if any.
pub fn announce(tracker: &str, port: u16, file: FileEntry) -> Result<(), TrackerError> {
    runtime().block_on(async {
        let client = TrackerClient::connect(tracker, RetryPolicy::default()).await?;
        announce_with(&client, port, file).await.map(|_| ())
    })
}

async fn accept_loop(listener: TcpListener, st: Arc<PeerState>) {
    loop {
        let stream = tokio::select! {
            _ = st.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        st.events.update(|c| c.connections += 1);
        tokio::spawn(serve_conn(stream, st.clone()));
    }
}

/// Reads client frames on one side and answers them on the other, so that the client closing
/// the connection is noticed at once, even while an answer waits at the gate.
async fn serve_conn(stream: TcpStream, st: Arc<PeerState>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Header>();
    let events = st.events.clone();
    let reader = async move {
        while let Ok(Some((_, frame))) = read_frame(&mut rd, 1024).await {
            if tx.send(frame.header).is_err() {
                return;
            }
        }
        events.update(|c| c.closed_by_client += 1);
    };
    tokio::select! {
        _ = st.cancel.cancelled() => {}
        _ = reader => {}
        _ = answer(&mut wr, &mut rx, &st) => {}
    }
    st.events.update(|c| c.ended += 1);
}

async fn answer(
    wr: &mut (impl AsyncWrite + Unpin),
    rx: &mut mpsc::UnboundedReceiver<Header>,
    st: &PeerState,
) -> io::Result<()> {
    let file = match rx.recv().await {
        Some(Header::Hello { version, .. })
            if matches!(st.mode, Mode::ProtocolV1) && version != 1 =>
        {
            st.events.update(|c| c.garbage += 1);
            let reject = Header::Reject {
                index: None,
                reason: RejectReason::VersionMismatch,
            };
            return send(wr, &reject, &[]).await;
        }
        Some(Header::Hello { file, .. }) => match st.files.get(&file) {
            Some(f) => f.clone(),
            None => {
                let reject = Header::Reject {
                    index: None,
                    reason: RejectReason::UnknownFile,
                };
                return send(wr, &reject, &[]).await;
            }
        },
        _ => return Ok(()),
    };
    let has = match st.mode {
        Mode::PartialLiar(n) => n.min(file.manifest.num_chunks()),
        _ => file.manifest.num_chunks(),
    };
    let welcome = Header::Welcome {
        version: PROTOCOL_VERSION,
        complete: has == file.manifest.num_chunks(),
    };
    send(wr, &welcome, &[]).await?;
    // Protocol 2: the client's Bitfield, then ours (every chunk, but for a partial peer).
    match rx.recv().await {
        Some(Header::Bitfield) => {}
        _ => return Ok(()),
    }
    let bits: Vec<bool> = (0..file.manifest.num_chunks()).map(|i| i < has).collect();
    send(wr, &Header::Bitfield, &peer::encode_bitfield(&bits)).await?;
    while let Some(header) = rx.recv().await {
        let index = match header {
            Header::GetManifest if !matches!(st.mode, Mode::Silent) => {
                send(wr, &Header::Manifest, &file.manifest_bytes).await?;
                continue;
            }
            Header::Request { index } => index,
            _ => continue,
        };
        st.events.update(|c| c.requests += 1);
        match &st.mode {
            Mode::Silent | Mode::StallChunks | Mode::ProtocolV1 => {}
            Mode::Honest => {
                st.gate.pass().await;
                serve_chunk(wr, &file, index, false, st).await?;
            }
            Mode::LieAll | Mode::PartialLiar(_) => {
                st.gate.pass().await;
                serve_chunk(wr, &file, index, true, st).await?;
            }
            Mode::LieOn(lies) => {
                st.gate.pass().await;
                serve_chunk(wr, &file, index, lies.contains(&index.0), st).await?;
            }
            Mode::DieAfter(n) => {
                st.gate.pass().await;
                if st.events.now().served >= *n {
                    st.cancel.cancel();
                    return Ok(());
                }
                serve_chunk(wr, &file, index, false, st).await?;
            }
            Mode::Trickle => {
                let mut frame = BytesMut::new();
                let data = file.chunk(index).unwrap_or_default();
                peer::encode_head(&Header::Chunk { index }, data.len(), &mut frame);
                frame.extend_from_slice(&data);
                for piece in frame.chunks(4) {
                    wr.write_all(piece).await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Mode::Garbage(kind) => {
                st.events.update(|c| c.garbage += 1);
                send_garbage(wr, *kind, &file, index).await?;
                if *kind == Garbage::Truncated {
                    return Ok(());
                }
                // Keep the connection open: it is the leecher's job to drop it.
                std::future::pending::<()>().await;
            }
        }
    }
    Ok(())
}

async fn serve_chunk(
    wr: &mut (impl AsyncWrite + Unpin),
    file: &Served,
    index: ChunkIndex,
    lie: bool,
    st: &PeerState,
) -> io::Result<()> {
    let Some(data) = file.chunk(index) else {
        let reject = Header::Reject {
            index: Some(index),
            reason: RejectReason::NoSuchChunk,
        };
        return send(wr, &reject, &[]).await;
    };
    // Counted before sending, so that whatever the leecher has seen is already counted.
    if lie {
        let wrong: Vec<u8> = data.iter().map(|b| !b).collect();
        st.events.update(|c| c.lies += 1);
        send(wr, &Header::Chunk { index }, &wrong).await
    } else {
        st.events.update(|c| {
            c.served += 1;
            c.served_indices.push(index.0);
        });
        send(wr, &Header::Chunk { index }, &data).await
    }
}

async fn send_garbage(
    wr: &mut (impl AsyncWrite + Unpin),
    kind: Garbage,
    file: &Served,
    index: ChunkIndex,
) -> io::Result<()> {
    let data = file.chunk(index).unwrap_or_default();
    let mut out = BytesMut::new();
    match kind {
        Garbage::OverMax => {
            out.extend_from_slice(&u32::MAX.to_be_bytes());
            out.extend_from_slice(&[0x55; 64]);
        }
        Garbage::OverChunkMax => {
            let limit = peer::max_frame_for_chunk_size(file.manifest.chunk_size());
            let head_len = {
                let mut h = BytesMut::new();
                peer::encode_head(&Header::Chunk { index }, 0, &mut h);
                h.len() - peer::LENGTH_PREFIX
            };
            let payload = vec![0xAA; limit + 1 - head_len];
            peer::encode_head(&Header::Chunk { index }, payload.len(), &mut out);
            out.extend_from_slice(&payload);
        }
        Garbage::Truncated => {
            peer::encode_head(&Header::Chunk { index }, data.len(), &mut out);
            out.extend_from_slice(&data[..data.len() / 2]);
        }
        Garbage::UnknownMessage => {
            // Variant 127 of a ten-variant enum: no header at all.
            let body = [0x7f, 0, 0, 0];
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
        }
        Garbage::WrongIndex => {
            let other = ChunkIndex((index.0 + 1) % file.num_chunks());
            let other_data = file.chunk(other).unwrap_or_default();
            peer::encode_head(&Header::Chunk { index: other }, other_data.len(), &mut out);
            out.extend_from_slice(&other_data);
        }
        Garbage::WrongLength => {
            let half = &data[..data.len() / 2];
            peer::encode_head(&Header::Chunk { index }, half.len(), &mut out);
            out.extend_from_slice(half);
        }
    }
    wr.write_all(&out).await
}

async fn send(
    wr: &mut (impl AsyncWrite + Unpin),
    header: &Header,
    payload: &[u8],
) -> io::Result<()> {
    let mut out = BytesMut::new();
    peer::encode_head(header, payload.len(), &mut out);
    out.extend_from_slice(payload);
    wr.write_all(&out).await
}

/// Reads one frame no longer than `max`: its raw bytes (prefix included) and its decoding.
/// `None` at a clean end of stream.
async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> io::Result<Option<(Bytes, Frame)>> {
    let mut prefix = [0u8; peer::LENGTH_PREFIX];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut raw = BytesMut::zeroed(peer::LENGTH_PREFIX + len);
    raw[..peer::LENGTH_PREFIX].copy_from_slice(&prefix);
    r.read_exact(&mut raw[peer::LENGTH_PREFIX..]).await?;
    let raw = raw.freeze();
    let frame = peer::decode_frame(raw.slice(peer::LENGTH_PREFIX..))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((raw, frame)))
}

/// A frame-aware TCP proxy in front of one real seeder: requests pass at once, chunk frames wait
/// for the [`Gate`]. When the seeder goes away, the proxy drops the leecher's connection at once
/// (frames it still held are lost, as in-flight data is when a process dies).
pub struct Proxy {
    pub addr: SocketAddr,
    pub events: Arc<Events>,
    pub gate: Gate,
    upstream: watch::Sender<Option<SocketAddr>>,
    background: Background,
}

impl Proxy {
    pub fn start(gate: Gate) -> Proxy {
        let rt = runtime();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let events = Events::new();
        let cancel = CancellationToken::new();
        let (upstream, rx) = watch::channel(None);
        rt.spawn(proxy_accept(
            listener,
            rx,
            gate.clone(),
            events.clone(),
            cancel.clone(),
        ));
        Proxy {
            addr,
            events,
            gate,
            upstream,
            background: Background::new(rt, cancel),
        }
    }

    /// Where to forward connections; they wait until this is known.
    pub fn set_upstream(&self, addr: SocketAddr) {
        self.upstream.send_replace(Some(addr));
    }

    /// Closes every connection and the listening socket.
    pub fn shutdown(&self) {
        self.background.cancel.cancel();
    }
}

async fn proxy_accept(
    listener: TcpListener,
    upstream: watch::Receiver<Option<SocketAddr>>,
    gate: Gate,
    events: Arc<Events>,
    cancel: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        events.update(|c| c.connections += 1);
        let (upstream, gate, events, cancel) = (
            upstream.clone(),
            gate.clone(),
            events.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = proxy_conn(client, upstream, gate, events.clone()) => {}
            }
            events.update(|c| c.ended += 1);
        });
    }
}

async fn proxy_conn(
    client: TcpStream,
    mut upstream: watch::Receiver<Option<SocketAddr>>,
    gate: Gate,
    events: Arc<Events>,
) {
    let Ok(addr) = upstream.wait_for(Option::is_some).await.map(|a| a.unwrap()) else {
        return;
    };
    let Ok(server) = TcpStream::connect(addr).await else {
        events.update(|c| c.upstream_lost += 1);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut crd, mut cwr) = client.into_split();
    let (mut srd, mut swr) = server.into_split();
    let ev = events.clone();
    let requests = async move {
        while let Ok(Some((raw, frame))) = read_frame(&mut crd, 1024).await {
            if matches!(frame.header, Header::Request { .. }) {
                ev.update(|c| c.requests += 1);
            }
            if swr.write_all(&raw).await.is_err() {
                return;
            }
        }
        ev.update(|c| c.closed_by_client += 1);
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(Bytes, Header)>();
    let ev = events.clone();
    let from_server = async move {
        while let Ok(Some((raw, frame))) = read_frame(&mut srd, peer::MAX_FRAME_LEN).await {
            if tx.send((raw, frame.header)).is_err() {
                return;
            }
        }
        ev.update(|c| c.upstream_lost += 1);
    };
    let ev = events.clone();
    let to_client = async move {
        while let Some((raw, header)) = rx.recv().await {
            if let Header::Chunk { index } = header {
                gate.pass().await;
                // Counted before sending: whatever the leecher has seen is already counted.
                ev.update(|c| {
                    c.served += 1;
                    c.served_indices.push(index.0);
                });
            }
            if cwr.write_all(&raw).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = from_server => {}
        _ = to_client => {}
    }
}

/// Starts a real seeder in `cwd` behind a [`Proxy`] with `gate`: the seeder advertises the
/// proxy's address, so leechers only reach it through the proxy. Returns once it registered.
pub fn seeder_behind_proxy(
    swarm: &Swarm,
    cwd: &Path,
    args: &[&str],
    gate: Gate,
) -> (Proc, Vec<String>, Proxy) {
    let proxy = Proxy::start(gate);
    let advertise = proxy.addr.to_string();
    let mut all = vec!["--advertise", advertise.as_str()];
    all.extend_from_slice(args);
    let (seeder, out) = swarm.seeder_in(cwd, &all);
    proxy.set_upstream(seeder_addr(&seeder));
    (seeder, out, proxy)
}

/// The chunk size of the fault tests' file.
pub const CHUNK: usize = 16 * 1024;

/// The fault tests' file: 65 chunks of 16 KiB, the last one short.
pub fn test_file(seed: u64) -> Vec<u8> {
    super::pattern(64 * CHUNK + 1000, seed)
}

pub fn chunks_in(data: &[u8]) -> u32 {
    data.len().div_ceil(CHUNK) as u32
}

/// A real seeder of `data` (as f.bin, 16 KiB chunks) in its own folder, behind a gate.
pub fn gated_seeder(swarm: &Swarm, dir: &str, data: &[u8], gate: Gate) -> (Proc, String, Proxy) {
    swarm.write(&format!("{dir}/f.bin"), data);
    let (p, lines, proxy) = seeder_behind_proxy(
        swarm,
        &swarm.path(dir),
        &["--chunk-size", "16K", "f.bin"],
        gate,
    );
    (p, super::id_of(&lines[0]), proxy)
}

/// Whether `line` is the leecher's log of dropping its connection to `peer`.
pub fn dropped(line: &str, peer: SocketAddr) -> bool {
    line.contains(&format!("peer{{addr={peer}}}")) && line.contains("peer dropped")
}

/// Asserts that the file at `path` holds exactly `data`.
pub fn assert_same_file(path: &Path, data: &[u8], run: &Run) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{e}\n{}", run.dump()));
    assert!(got == data, "{} differs\n{}", path.display(), run.dump());
}

/// The value of `name=value` in a log line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
}

/// The leecher's summary line, taken apart.
#[derive(Debug)]
pub struct Summary {
    pub line: String,
    /// Verified chunks delivered by each peer.
    pub per_peer: HashMap<SocketAddr, u32>,
    /// `resumed N chunks, fetched M`.
    pub resumed: Option<(u32, u32)>,
    /// `K chunks failed verification`.
    pub failed: u32,
    pub banned: Vec<SocketAddr>,
}

impl Summary {
    pub fn from_stderr(stderr: &str) -> Summary {
        let line = stderr
            .lines()
            .find(|l| l.starts_with("downloaded "))
            .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"))
            .to_string();
        let mut s = Summary {
            line: line.clone(),
            per_peer: HashMap::new(),
            resumed: None,
            failed: 0,
            banned: Vec::new(),
        };
        let tail = &line[line.find("; chunks per peer: ").expect("per-peer part")..];
        for part in tail.split("; ").filter(|p| !p.is_empty()) {
            if let Some(list) = part.strip_prefix("chunks per peer: ") {
                for item in list.split(' ').filter(|i| *i != "none") {
                    let (a, n) = item.rsplit_once('=').expect("ADDR=N");
                    s.per_peer
                        .insert(a.parse().expect("an address"), n.parse().unwrap());
                }
            } else if let Some(r) = part.strip_prefix("resumed ") {
                let (n, m) = r
                    .split_once(" chunks, fetched ")
                    .expect("resumed N, fetched M");
                s.resumed = Some((n.parse().unwrap(), m.parse().unwrap()));
            } else if let Some(k) = part.strip_suffix(" chunks failed verification") {
                s.failed = k.parse().unwrap();
            } else if let Some(list) = part.strip_prefix("banned: ") {
                s.banned = list.split(' ').map(|a| a.parse().unwrap()).collect();
            }
        }
        s
    }

    /// Chunks credited to `peer` (0 if it delivered none).
    pub fn chunks_from(&self, peer: SocketAddr) -> u32 {
        self.per_peer.get(&peer).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u32 {
        self.per_peer.values().sum()
    }
}

/// Waits until the file at `path` holds chunk `i` of `data` for every `i` in `indices`: the
/// leecher has verified and written them. Polls the file (a real signal), with a deadline.
pub fn wait_part_chunks(path: &Path, data: &[u8], chunk: usize, indices: &[u32]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(on_disk) = std::fs::read(path) {
            let all = indices.iter().all(|&i| {
                let r = i as usize * chunk..((i as usize + 1) * chunk).min(data.len());
                on_disk.get(r.clone()) == Some(&data[r])
            });
            if all {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never held chunks {indices:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every path under `dir` (files and folders), relative to it.
pub fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The peers the tracker at `tracker` lists for `id` now.
pub fn tracker_peers(tracker: &str, id: FileId) -> Result<Vec<SocketAddr>, TrackerError> {
    runtime().block_on(async {
        let client = TrackerClient::connect(tracker, RetryPolicy::default()).await?;
        client.peers(id).await
    })
}

/// Asks the tracker every 50 ms until it lists exactly `want` (in any order) for `id`; returns
/// how long that took. Panics after [`PATIENCE`].
pub fn wait_tracker_peers(tracker: &str, id: FileId, want: &[SocketAddr]) -> Duration {
    let start = Instant::now();
    let mut want = want.to_vec();
    want.sort();
    loop {
        let mut got = tracker_peers(tracker, id).unwrap_or_default();
        got.sort();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the tracker lists {got:?} for {}, not {want:?}",
            id.short()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILLs the swarm's tracker and starts a new one on the same address (its port is free
/// again at once: UDP has no TIME_WAIT). Returns once the new one listens.
pub fn restart_tracker(swarm: &mut Swarm) {
    swarm.tracker.kill();
    let addr = swarm.tracker_addr.clone();
    let tracker = Proc::spawn(
        "tracker",
        &["--listen", &addr, "--interval", "1"],
        swarm.dir.path(),
        &[],
    );
    let want = format!("tracker listening on {addr}");
    tracker.wait_stdout(&want, |l| l == want);
    swarm.tracker = tracker;
}

/// The address a real seeder serves on, from its `serving; ... port=N` log line.
pub fn seeder_addr(seeder: &Proc) -> SocketAddr {
    let line = seeder.wait_stderr("serving; Ctrl-C to stop");
    let port: u16 = field(&line, "port")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}
