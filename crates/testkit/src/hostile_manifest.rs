//! Hostile manifest sources: peers that welcome anyone, then answer `GetManifest` with the head
//! of a frame as long as the largest valid manifest and trickle its body, fast enough never to
//! trip a 1 s stall timeout and slow enough to take minutes. Test support only.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shoal_proto::manifest::MAX_ENCODED_LEN;
use shoal_proto::peer::{self, Header, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Bytes sent per step, and the time between steps: 128 KiB/s, so 16 MiB take two minutes,
/// while every 1 s window carries far more than the 16 KiB a stall timeout asks for.
const STEP: usize = 32 * 1024;
const EVERY: Duration = Duration::from_millis(250);

/// Trickling manifest sources on 127.0.0.1, one listener each. Dropping them closes everything.
pub struct Tricklers {
    pub addrs: Vec<SocketAddr>,
    /// `GetManifest` requests received, over all of them.
    pub asked: Arc<AtomicU32>,
    rt: Option<Runtime>,
}

impl Tricklers {
    /// `n` of them; with `below`, only listeners whose port is lower than its (so that a
    /// leecher that sorts its peers by address asks them first), binding until `n` are found.
    pub fn start(n: usize, below: Option<u16>) -> Tricklers {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let asked = Arc::new(AtomicU32::new(0));
        let mut addrs = Vec::new();
        let mut tries = 0;
        while addrs.len() < n {
            tries += 1;
            assert!(
                tries < 5000,
                "found only {} free ports below {below:?}",
                addrs.len()
            );
            let listener = rt
                .block_on(TcpListener::bind("127.0.0.1:0"))
                .expect("bind 127.0.0.1:0");
            let addr = listener.local_addr().unwrap();
            if below.is_some_and(|b| addr.port() >= b) {
                continue;
            }
            addrs.push(addr);
            rt.spawn(accept(listener, asked.clone()));
        }
        Tricklers {
            addrs,
            asked,
            rt: Some(rt),
        }
    }
}

impl Drop for Tricklers {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, asked: Arc<AtomicU32>) {
    while let Ok((s, _)) = listener.accept().await {
        tokio::spawn(trickle(s, asked.clone()));
    }
}

async fn trickle(mut s: TcpStream, asked: Arc<AtomicU32>) -> io::Result<()> {
    let (mut rd, mut wr) = s.split();
    loop {
        let header = read_header(&mut rd).await?;
        match header {
            Header::Hello { .. } => {
                let welcome = Header::Welcome {
                    version: PROTOCOL_VERSION,
                    complete: true,
                };
                send(&mut wr, &welcome, 0).await?;
            }
            Header::Bitfield => send(&mut wr, &Header::Bitfield, 0).await?,
            Header::GetManifest => {
                asked.fetch_add(1, Ordering::SeqCst);
                send(&mut wr, &Header::Manifest, MAX_ENCODED_LEN).await?;
                let step = vec![0u8; STEP];
                for _ in 0..MAX_ENCODED_LEN / STEP {
                    tokio::time::sleep(EVERY).await;
                    wr.write_all(&step).await?;
                }
                // Never the last bytes: the frame stays unfinished.
                std::future::pending::<()>().await;
            }
            _ => {}
        }
    }
}

/// Sends a frame head announcing `payload_len` bytes (and, for a Bitfield, no payload at all).
async fn send(
    wr: &mut (impl AsyncWriteExt + Unpin),
    header: &Header,
    payload_len: usize,
) -> io::Result<()> {
    let mut out = BytesMut::new();
    peer::encode_head(header, payload_len, &mut out);
    wr.write_all(&out).await
}

async fn read_header(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Header> {
    let mut prefix = [0u8; peer::LENGTH_PREFIX];
    r.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > 1 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    peer::decode_frame(Bytes::from(body))
        .map(|f| f.header)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
