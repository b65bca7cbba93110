//! A connection flood against a chunk server, for the admission tests. Test support only.
//!
//! Many connections from several loopback source addresses (loopback owns all of 127.0.0.0/8),
//! each either silent from the start, or saying `Hello` for a real file and then nothing but a
//! `Have` now and then (no work: a server must not count it as activity). A connection the server
//! closes is opened again at once, as an attacker would, so the flood never lets up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shoal_proto::peer::{self, Header, PROTOCOL_VERSION};
use shoal_proto::{ChunkIndex, FileId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Connects and sends nothing.
    Silent,
    /// Says `Hello` for this file and sends an empty `Bitfield` (a client with nothing yet, as
    /// protocol 2 wants), then only a `Have` every second.
    HelloThenIdle(FileId),
}

/// What the flood achieved so far; tests wait on these counts.
#[derive(Default, Debug)]
pub struct Counts {
    /// TCP connections established (the kernel's handshake: not yet accepted by the server).
    pub connected: AtomicUsize,
    /// Connections open at this moment.
    pub open: AtomicUsize,
    /// Hellos the server welcomed.
    pub welcomed: AtomicUsize,
    /// Connections the server closed.
    pub closed: AtomicUsize,
}

pub struct Flood {
    pub counts: Arc<Counts>,
    cancel: CancellationToken,
    rt: Option<Runtime>,
}

/// The source addresses 127.0.0.2 onwards: never 127.0.0.1, which the honest peers use.
pub fn sources(n: u8) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
        .collect()
}

impl Flood {
    /// Starts `per_source` connections from each of `sources` to `target`, reopened when closed.
    pub fn start(target: SocketAddr, sources: &[IpAddr], per_source: usize, kind: Kind) -> Flood {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let counts = Arc::new(Counts::default());
        let cancel = CancellationToken::new();
        for &source in sources {
            for _ in 0..per_source {
                let (counts, cancel) = (counts.clone(), cancel.clone());
                rt.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = attacker(source, target, kind, &counts) => {}
                    }
                });
            }
        }
        Flood {
            counts,
            cancel,
            rt: Some(rt),
        }
    }

    /// Waits until `pred` holds for the counts (a real signal), or panics after `patience`.
    pub fn wait(&self, what: &str, patience: Duration, pred: impl Fn(&Counts) -> bool) {
        let start = Instant::now();
        while !pred(&self.counts) {
            assert!(
                start.elapsed() < patience,
                "flood never reached {what}: {:?}",
                self.counts
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn attacker(source: IpAddr, target: SocketAddr, kind: Kind, counts: &Counts) {
    loop {
        match connect_from(source, target).await {
            Ok(stream) => {
                counts.connected.fetch_add(1, Ordering::Relaxed);
                counts.open.fetch_add(1, Ordering::Relaxed);
                hold(stream, kind, counts).await;
                counts.open.fetch_sub(1, Ordering::Relaxed);
                counts.closed.fetch_add(1, Ordering::Relaxed);
            }
            // Out of ports or descriptors for a moment: try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        // Not a hot loop: the point is to occupy the server, not this machine's processors.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Keeps the connection open, as its kind says, until the server closes it.
async fn hold(mut stream: TcpStream, kind: Kind, counts: &Counts) {
    let mut buf = [0u8; 4096];
    let Kind::HelloThenIdle(file) = kind else {
        // Read until the server gives up on us; we never send a byte.
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        return;
    };
    let mut out = BytesMut::new();
    peer::encode_head(
        &Header::Hello {
            version: PROTOCOL_VERSION,
            file,
        },
        0,
        &mut out,
    );
    peer::encode_head(&Header::Bitfield, 0, &mut out);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    let mut welcomed = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(n) if n > 0 => {
                    // The first frame back is the Welcome (or a Reject); what follows is ignored.
                    if !welcomed {
                        welcomed = true;
                        let head = peer::decode_head(&buf[..n], buf.len());
                        if let Ok(Some(peer::Head { header: Header::Welcome { .. }, .. })) = head {
                            counts.welcomed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => return,
            },
            _ = tick.tick() => {
                out.clear();
                peer::encode_head(&Header::Have { index: ChunkIndex(0) }, 0, &mut out);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    }
}
