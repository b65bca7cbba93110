//! Serves chunks of the files in a [`Library`] to other peers over TCP: complete files, and
//! downloads in progress (only their verified chunks, announced with `Have` as they come). A
//! complete file advertises what its reveal policy ([`crate::reveal`]) says.
//!
//! Every connection is bounded: admission (a cap in total and per source address, see
//! [`crate::admission`]), a small maximum frame size for what clients send (they only ever send
//! control frames), a cap on requests waiting to be served, a short deadline for the hello and
//! another for idleness that only work resets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use shoal_proto::peer::{self, Header, RejectReason, PROTOCOL_V1, PROTOCOL_VERSION};
use shoal_proto::ChunkIndex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::{Admission, Slot};
use crate::advert::Client;
use crate::conn::{self, next_frame, ConnError, FrameWriter};
use crate::rate::RateLimit;
use crate::store::{Library, ServeError, SharedFile};
use crate::uploads::{Turn, Uploads, PER_SOURCE, SLOTS, WAITING};

/// Most connections served at once; more are accepted and closed at once (or evict one, see
/// [`crate::admission`]), never left waiting in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// Most connections from one source address: a few addresses cannot fill the table.
pub const MAX_PER_SOURCE: usize = 8;
/// Largest frame a client may send us before the hello: control frames only (after it, a
/// Bitfield of the file's chunks too).
const MAX_CLIENT_FRAME: usize = 256;
/// Requests taken off a connection's socket at most, the one being answered included; the chunks
/// of the others are read ahead from the disk meanwhile.
const MAX_QUEUED: usize = 8;
/// ... and at most this many bytes of chunks queued, so that large chunks are not read so far
/// ahead (over up to [`MAX_CONNECTIONS`] connections) that the cache drops them before they go.
const QUEUED_BYTES: usize = 4 << 20;
/// The first frame must come this soon after the connection is accepted: an honest client sends
/// it at once, and a silent connection holds a slot no longer than this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// A client must take each answer (a chunk, the manifest) off our hands within this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// An idle client is sent `Have`s on their own at most this often: the chunks verified meanwhile
/// go together, in one packet, and the first news after a quiet spell goes at once. In a swarm
/// of 32 every chunk a leecher verifies is news for 31 clients, and a packet to each of them was
/// about 6 % of the bench's 2-vCPU machine's work (PERFORMANCE.md, round 9). A client being
/// served gets its news with the next answer, as before.
pub const HAVES_EVERY: Duration = Duration::from_millis(250);
/// A client that asks for nothing (no request, no manifest) for this long is disconnected; frames
/// that carry no work (Have, Bitfield, Cancel) do not count. Reconnecting is cheap for a client
/// that wants something again.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Accepts connections on `listener` until `cancel` fires, then waits for open ones to end.
/// `upload`: the process's `--max-upload-rate`, shared by every connection.
pub async fn serve(
    listener: TcpListener,
    library: Arc<Library>,
    upload: Option<Arc<RateLimit>>,
    cancel: CancellationToken,
) {
    let admission = Admission::new(MAX_CONNECTIONS, MAX_PER_SOURCE, IDLE_TIMEOUT);
    let uploads = Uploads::new(SLOTS, WAITING, PER_SOURCE);
    serve_admitting(listener, library, upload, cancel, admission, uploads).await;
}

/// [`serve`] with its admission table and upload slots given: tests use smaller caps and
/// deadlines.
async fn serve_admitting(
    listener: TcpListener,
    library: Arc<Library>,
    upload: Option<Arc<RateLimit>>,
    cancel: CancellationToken,
    admission: Arc<Admission>,
    uploads: Arc<Uploads>,
) {
    let tasks = TaskTracker::new();
    loop {
        // Accept eagerly, whatever the table holds: the excess is closed here at once instead of
        // waiting in the backlog in front of honest peers.
        let (stream, addr) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match admission.admit(addr.ip(), Instant::now()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(peer = %addr, "connection refused: {why}");
                refuse(&stream);
                continue;
            }
        };
        let (library, upload) = (library.clone(), upload.clone());
        let mut turn = uploads.turn(addr.ip());
        let cancel = cancel.child_token();
        tasks.spawn(
            async move {
                // Every await of a connection gives way to shutdown and to eviction.
                let mut tally = Tally::default();
                let served = tokio::select! {
                    _ = cancel.cancelled() => Ok(()),
                    _ = slot.evicted().cancelled() => Err(ConnError::Rejected(RejectReason::Busy)),
                    r = serve_conn(stream, &library, upload, &slot, &mut turn, &mut tally) => r,
                };
                // Who fetched what: one line per connection that asked for a file we have.
                if let Some(name) = tally.file {
                    let (chunks, bytes) = (tally.chunks, tally.bytes);
                    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    tracing::info!("served {name} to {addr}: {chunks} chunks, {bytes} bytes");
                }
                match served {
                    Ok(()) | Err(ConnError::Closed) => tracing::debug!("connection closed"),
                    Err(e) => tracing::debug!("connection ended: {e}"),
                }
            }
            .instrument(tracing::debug_span!("serve", peer = %addr)),
        );
    }
    tasks.close();
    tasks.wait().await;
}

/// Tells a connection we will not serve that we are busy, if its socket takes the frame at once
/// (never waits: the accept loop must not stall on a hostile peer), and closes it.
fn refuse(stream: &TcpStream) {
    // In a private swarm nothing goes out before the handshake: just close.
    if crate::private::keys().is_some() {
        return;
    }
    let mut frame = bytes::BytesMut::new();
    let busy = Header::Reject {
        index: None,
        reason: RejectReason::Busy,
    };
    peer::encode_head(&busy, 0, &mut frame);
    let _ = stream.try_write(&frame);
}

/// What one connection was served, for its closing log line.
#[derive(Default)]
struct Tally {
    /// The file's name, printable; `None` until the handshake found the file.
    file: Option<String>,
    chunks: u64,
    bytes: u64,
}

async fn serve_conn(
    stream: TcpStream,
    library: &Arc<Library>,
    upload: Option<Arc<RateLimit>>,
    slot: &Slot,
    turn: &mut Turn,
    tally: &mut Tally,
) -> Result<(), ConnError> {
    // In a private swarm the Noise handshake comes first, within the hello's deadline.
    let (mut reader, mut writer) =
        tokio::time::timeout(HELLO_TIMEOUT, conn::accept(stream, MAX_CLIENT_FRAME))
            .await
            .map_err(|_| ConnError::Timeout(HELLO_TIMEOUT))??;
    writer.set_limit(upload);
    let hello = tokio::time::timeout(HELLO_TIMEOUT, handshake(&mut reader, &mut writer, library));
    let Some(mut peer) = hello
        .await
        .map_err(|_| ConnError::Timeout(HELLO_TIMEOUT))??
    else {
        return Ok(());
    };
    let file = peer.file.clone();
    tally.file = Some(shoal_proto::names::printable(&file.name));
    // Requests are answered one at a time, in order. Requests the client has already pipelined
    // are taken off the socket as soon as they are there (a few, see MAX_QUEUED and
    // QUEUED_BYTES), so that their chunks can be read from the disk (prefetched) while earlier
    // ones are sent; the rest wait in the socket, so a client can never make us hold more than
    // that. A connection that ends, or sends something malformed, still has what it asked for
    // before answered. Each answer must be taken off our hands within WRITE_TIMEOUT: a client
    // that stops reading gives its connection slot back. Chunks the file gains meanwhile (a
    // download in progress) are announced with `Have` between answers, or when idle on their own
    // at most every HAVES_EVERY.
    let most = (QUEUED_BYTES / file.manifest.chunk_size() as usize).clamp(2, MAX_QUEUED);
    let mut queue = VecDeque::with_capacity(most);
    let mut ended = None;
    // When Haves last went out on their own, and when those held back since are due.
    let mut haves_sent: Option<tokio::time::Instant> = None;
    let mut haves_due: Option<tokio::time::Instant> = None;
    loop {
        while queue.is_empty() {
            if let Some(why) = ended {
                return Err(why);
            }
            // Only work moves the idle deadline: neither the client's Have nor our news does.
            tokio::select! {
                _ = tokio::time::sleep_until(slot.idle_deadline()) => {
                    return Err(ConnError::Timeout(slot.idle()));
                }
                frame = reader.next() => {
                    let frame = frame.ok_or(ConnError::Closed)??;
                    if let Header::Request { index } = frame.header {
                        peer.requested(index, &mut writer);
                    }
                    queue.push_back(frame);
                }
                _ = peer.news(), if haves_due.is_none() => {
                    let now = tokio::time::Instant::now();
                    match haves_sent {
                        Some(t) if now < t + HAVES_EVERY => haves_due = Some(t + HAVES_EVERY),
                        _ => haves_sent = Some(send_news(&mut peer, &mut writer).await?),
                    }
                }
                _ = tokio::time::sleep_until(haves_due.unwrap_or_else(tokio::time::Instant::now)), if haves_due.is_some() => {
                    haves_due = None;
                    haves_sent = Some(send_news(&mut peer, &mut writer).await?);
                }
            }
        }
        while ended.is_none() && queue.len() < most {
            match reader.next().now_or_never() {
                None => break,
                Some(None) => ended = Some(ConnError::Closed),
                Some(Some(Err(e))) => ended = Some(e),
                Some(Some(Ok(frame))) => {
                    if let Header::Request { index } = frame.header {
                        peer.requested(index, &mut writer);
                        if file.has(index) {
                            file.prefetch(index);
                        }
                    }
                    queue.push_back(frame);
                }
            }
        }
        // News held back goes with this answer.
        let held = haves_due.take().is_some();
        if held || peer.has_news() {
            peer.announce_news(&mut writer);
        }
        let frame = queue.pop_front().expect("the queue was filled above");
        let work = matches!(frame.header, Header::Request { .. } | Header::GetManifest);
        if work {
            slot.worked();
        }
        let answer = async {
            match frame.header {
                // In a seeder's first pass, a chunk sent already to a client that has it: the swarm
                // has it. A slot this connection holds is given back if nothing else is queued.
                Header::Request { index } if peer.declines(index, &mut writer) => {
                    turn.end(more_queued(&queue));
                    writer.send(&elsewhere(index)).await?
                }
                // Another client's turn: this one asks another peer, or again later.
                Header::Request { index } if !turn.begin().await => {
                    peer.refused(index);
                    let busy = Header::Reject {
                        index: Some(index),
                        reason: RejectReason::Busy,
                    };
                    writer.send(&busy).await?
                }
                Header::Request { index } => {
                    let more = more_queued(&queue);
                    // Or sent to another client while this one waited for its turn.
                    if peer.send_or_decline(index, &mut writer) {
                        turn.end(more);
                        writer.send(&elsewhere(index)).await?;
                    } else {
                        // A chunk that takes long (a slow reader) does not keep others waiting.
                        let sent = turn
                            .hold(send_chunk(&file, library, index, &mut writer))
                            .await;
                        turn.end(more);
                        if matches!(sent, Ok(true)) {
                            tally.chunks += 1;
                            tally.bytes += u64::from(file.manifest.chunk_len(index));
                            peer.served(index, &mut writer);
                        } else {
                            peer.not_sent();
                            sent?;
                        }
                    }
                }
                Header::GetManifest => {
                    writer
                        .send_payload(&Header::Manifest, &file.manifest_bytes)
                        .await?
                }
                Header::Have { index } => peer.client_have(index, &mut writer),
                Header::WantMore => peer.want_more(&mut writer),
                // The client's have-set is only advice for the reveal policy: a second Bitfield
                // and a Cancel (we answer in order, so it comes too late anyway) change nothing.
                Header::Cancel { .. } | Header::Bitfield => {}
                other => return Err(ConnError::Unexpected(other)),
            }
            // Haves a reveal queued go out now, not with the next answer; a client that stops
            // reading here does not keep its slot either.
            turn.hold(writer.flush()).await?;
            Ok::<(), ConnError>(())
        };
        tokio::time::timeout(WRITE_TIMEOUT, answer)
            .await
            .map_err(|_| ConnError::Timeout(WRITE_TIMEOUT))??;
        if work {
            // An answer that took long to send is not idleness either.
            slot.worked();
        }
    }
}

/// Sends the client the Haves of every chunk verified since it was last told; when they went.
async fn send_news(
    peer: &mut Client,
    writer: &mut FrameWriter,
) -> Result<tokio::time::Instant, ConnError> {
    peer.announce_news(writer);
    tokio::time::timeout(WRITE_TIMEOUT, writer.flush())
        .await
        .map_err(|_| ConnError::Timeout(WRITE_TIMEOUT))??;
    Ok(tokio::time::Instant::now())
}

/// Whether requests are queued behind the one being answered.
fn more_queued(queue: &VecDeque<peer::Frame>) -> bool {
    queue
        .iter()
        .any(|f| matches!(f.header, Header::Request { .. }))
}

/// The answer to a request a seeder declines in its first pass.
fn elsewhere(index: ChunkIndex) -> Header {
    Header::Reject {
        index: Some(index),
        reason: RejectReason::Elsewhere,
    }
}

/// Reads the hello and answers it, then trades Bitfields: the client of the file asked for, or
/// `None` after a reject.
async fn handshake(
    reader: &mut conn::FrameReader,
    writer: &mut FrameWriter,
    library: &Library,
) -> Result<Option<Client>, ConnError> {
    let reason = match next_frame(reader, HELLO_TIMEOUT).await?.header {
        // The only refusal a protocol 1 peer can read.
        Header::Hello { version, .. } if version == PROTOCOL_V1 => RejectReason::VersionMismatch,
        Header::Hello { version, .. } if version != PROTOCOL_VERSION => {
            RejectReason::WrongVersion {
                ours: PROTOCOL_VERSION,
            }
        }
        Header::Hello { file, .. } => match library.get(&file) {
            Some(f) => {
                tracing::debug!(file = %f.id.short(), "hello");
                // What the client is told here decides how we advertise to it (`Client::join`),
                // even if the file completes before its Bitfield comes.
                let complete = f.is_full();
                writer
                    .send(&Header::Welcome {
                        version: PROTOCOL_VERSION,
                        complete,
                    })
                    .await?;
                let n = f.manifest.num_chunks();
                reader
                    .decoder_mut()
                    .set_max_frame(MAX_CLIENT_FRAME + n.div_ceil(8) as usize);
                let frame = next_frame(reader, HELLO_TIMEOUT).await?;
                let Header::Bitfield = frame.header else {
                    return Err(ConnError::Unexpected(frame.header));
                };
                let client_has = peer::decode_bitfield(&frame.payload, n)
                    .ok_or(ConnError::Rejected(RejectReason::Protocol))?;
                let (client, ours) = Client::join(f, &client_has, complete);
                writer.send_payload(&Header::Bitfield, &ours).await?;
                return Ok(Some(client));
            }
            None => RejectReason::UnknownFile,
        },
        other => return Err(ConnError::Unexpected(other)),
    };
    writer
        .send(&Header::Reject {
            index: None,
            reason,
        })
        .await?;
    Ok(None)
}

/// Sends one chunk from the page cache, or a reject; whether the chunk went out. A chunk this
/// peer cannot vouch for (a download that has not verified it) is refused. The file's size and
/// modification time are checked before (reject) and after (drop the connection: what went out
/// may be wrong, and the client's hash check will throw it away); a change withdraws the file.
async fn send_chunk(
    file: &SharedFile,
    library: &Library,
    index: ChunkIndex,
    writer: &mut FrameWriter,
) -> Result<bool, ConnError> {
    let len = file.manifest.chunk_len(index);
    let reason = if len == 0 {
        Some(RejectReason::NoSuchChunk)
    } else if !file.has(index) {
        Some(RejectReason::NotHave)
    } else if file.check(index).is_err() {
        library.touch();
        Some(RejectReason::Unavailable)
    } else {
        None
    };
    if let Some(reason) = reason {
        writer
            .send(&Header::Reject {
                index: Some(index),
                reason,
            })
            .await?;
        return Ok(false);
    }
    // A folder's chunk is read from its own file (a single file is entry 0).
    let (source, span) = file.source(index)?;
    writer
        .send_file(&Header::Chunk { index }, &source, span.offset, len as usize)
        .await?;
    if file.check(index).is_err() {
        library.touch();
        return Err(ServeError::Changed.into());
    }
    file.count_upload();
    Ok(true)
}

/// Binds a TCP listener for serving on all interfaces: a dual-stack IPv6 socket (IPv4 peers
/// arrive as mapped addresses) where the host has IPv6, else IPv4 only; on `port` (0: the OS picks).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    match bind_dual_stack(port) {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await,
    }
}

fn bind_dual_stack(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v6()?;
    rustix::net::sockopt::set_ipv6_v6only(&socket, false)?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_haves;
