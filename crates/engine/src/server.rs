//! Serves chunks of the files in a [`Library`] to other peers over TCP.
//!
//! Every connection is bounded: a cap on connections (a semaphore), a small maximum frame size for
//! what clients send (they only ever send control frames), a cap on requests waiting to be served,
//! and a deadline for the hello.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use shoal_proto::peer::{Header, RejectReason, PROTOCOL_VERSION};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::conn::{self, next_frame, ConnError};
use crate::store::{Library, ServeError, SharedFile};

/// Most connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest frame a client may send us: control frames only.
const MAX_CLIENT_FRAME: usize = 256;
/// Chunks read ahead per connection while earlier ones are being sent.
const READ_AHEAD: usize = 4;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that asks for nothing for this long is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Accepts connections on `listener` until `cancel` fires, then waits for open ones to end.
pub async fn serve(listener: TcpListener, library: Arc<Library>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tasks = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
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
        let library = library.clone();
        let cancel = cancel.child_token();
        tasks.spawn(
            async move {
                match serve_conn(stream, &library, &cancel).await {
                    Ok(()) | Err(ConnError::Closed) => tracing::debug!("connection closed"),
                    Err(e) => tracing::debug!("connection ended: {e}"),
                }
                drop(permit);
            }
            .instrument(tracing::debug_span!("serve", peer = %addr)),
        );
    }
    tasks.close();
    tasks.wait().await;
}

type Pending = JoinHandle<(Header, Option<bytes::Bytes>)>;

async fn serve_conn(
    stream: TcpStream,
    library: &Arc<Library>,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    let (mut reader, mut writer) = conn::split(stream, MAX_CLIENT_FRAME);
    let file = match next_frame(&mut reader, HELLO_TIMEOUT).await?.header {
        Header::Hello { version, .. } if version != PROTOCOL_VERSION => {
            writer
                .send(&Header::Reject {
                    index: None,
                    reason: RejectReason::VersionMismatch,
                })
                .await?;
            return Ok(());
        }
        Header::Hello { file, .. } => match library.get(&file) {
            Some(f) => f,
            None => {
                writer
                    .send(&Header::Reject {
                        index: None,
                        reason: RejectReason::UnknownFile,
                    })
                    .await?;
                return Ok(());
            }
        },
        other => return Err(ConnError::Unexpected(other)),
    };
    tracing::debug!(file = %file.id.short(), "hello");
    writer
        .send(&Header::Welcome {
            version: PROTOCOL_VERSION,
        })
        .await?;

    // Requests are answered in order. Reads run ahead on blocking threads while earlier chunks
    // are being written; we stop reading requests while READ_AHEAD are pending (TCP pushes back).
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut idle = Box::pin(tokio::time::sleep(IDLE_TIMEOUT));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            Some(done) = pending.next() => {
                let (header, payload) = done.map_err(|e| std::io::Error::other(e.to_string()))?;
                match payload {
                    Some(p) => writer.send_payload(&header, &p).await?,
                    None => writer.send(&header).await?,
                }
            }
            frame = reader.next(), if pending.len() < READ_AHEAD => {
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                let frame = match frame {
                    None => return Err(ConnError::Closed),
                    Some(f) => f?,
                };
                match frame.header {
                    Header::Request { index } => pending.push_back(read_chunk(file.clone(), library, index)),
                    Header::GetManifest => {
                        let bytes = file.manifest_bytes.clone();
                        pending.push_back(tokio::spawn(async move { (Header::Manifest, Some(bytes)) }));
                    }
                    // Reserved for partial seeding: nothing to do yet.
                    Header::Cancel { .. } | Header::Have { .. } | Header::Bitfield => {}
                    other => return Err(ConnError::Unexpected(other)),
                }
            }
            _ = &mut idle => return Err(ConnError::Timeout(IDLE_TIMEOUT)),
        }
    }
}

fn read_chunk(
    file: Arc<SharedFile>,
    library: &Arc<Library>,
    index: shoal_proto::ChunkIndex,
) -> Pending {
    let library = library.clone();
    tokio::task::spawn_blocking(move || match file.read_chunk(index) {
        Ok(data) => (Header::Chunk { index }, Some(data)),
        Err(e) => {
            let reason = match e {
                ServeError::NoSuchChunk => RejectReason::NoSuchChunk,
                ServeError::Changed | ServeError::Io(_) => {
                    // The file may just have been withdrawn: the announcer unregisters it.
                    library.touch();
                    RejectReason::Unavailable
                }
            };
            (
                Header::Reject {
                    index: Some(index),
                    reason,
                },
                None,
            )
        }
    })
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
    use std::os::fd::AsRawFd;
    let socket = tokio::net::TcpSocket::new_v6()?;
    let off: libc::c_int = 0;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))?;
    socket.listen(1024)
}
