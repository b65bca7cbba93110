//! [`Proxy`]: a frame-aware proxy in front of one real seeder, holding chunk frames back until
//! its [`Gate`] lets them go.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use shoal_proto::peer::{self, Header};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{Proc, Swarm};

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

pub(super) async fn proxy_accept(
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

pub(super) async fn proxy_conn(
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

/// A real seeder of `data` (as f.bin, 16 KiB chunks) in its own folder, behind a gate.
pub fn gated_seeder(swarm: &Swarm, dir: &str, data: &[u8], gate: Gate) -> (Proc, String, Proxy) {
    swarm.write(&format!("{dir}/f.bin"), data);
    let (p, lines, proxy) = seeder_behind_proxy(
        swarm,
        &swarm.path(dir),
        &["--chunk-size", "16K", "f.bin"],
        gate,
    );
    (p, crate::id_of(&lines[0]), proxy)
}
