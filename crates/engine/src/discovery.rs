//! Finding a tracker with nothing configured: `--tracker`, else `P2P_TRACKER`, else a tracker on
//! this machine (127.0.0.1:6969), else one that answers a broadcast probe on the local network.
//!
//! The probe is an ordinary connect request sent to the broadcast address of every IPv4 interface
//! that has one (not loopback), on the tracker's default port. Any tracker listening on that port on
//! all interfaces answers with its connection id, and the reply's source address is the tracker.
//! It is padded like every connect request, so the reply is never larger than the probe.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use shoal_proto::tracker::{
    Request, RequestBody, Response, ResponseBody, CONNECT_PADDING, MAX_DATAGRAM,
};
use shoal_proto::{ConnectionId, TransactionId};
use tokio::net::UdpSocket;

use crate::tracker_client::{RetryPolicy, TrackerClient, TrackerError};

/// The tracker's default port, where discovery probes go.
pub const DEFAULT_PORT: u16 = 6969;

/// Picks the tracker as the CLI contract says. `explicit` is `--tracker` or `P2P_TRACKER`.
pub async fn choose_tracker(
    explicit: Option<&str>,
    discovery: bool,
) -> Result<TrackerClient, TrackerError> {
    if let Some(addr) = explicit {
        return TrackerClient::connect(addr, RetryPolicy::default()).await;
    }
    let local = crate::DEFAULT_TRACKER;
    let quick = RetryPolicy {
        waits: [200, 400].map(Duration::from_millis).to_vec(),
    };
    let probe = TrackerClient::connect(local, quick).await?;
    if probe.ping().await.is_ok() {
        return TrackerClient::connect(local, RetryPolicy::default()).await;
    }
    if !discovery {
        return Err(TrackerError::Unreachable {
            addr: probe.addr(),
            attempts: 2,
        });
    }
    match discover(DEFAULT_PORT).await? {
        Some(found) => {
            tracing::info!("found a tracker at {found} on the local network");
            TrackerClient::connect(&found.to_string(), RetryPolicy::default()).await
        }
        None => Err(TrackerError::NotFound { addr: probe.addr() }),
    }
}

/// Broadcasts a probe on every IPv4 interface that can broadcast and returns the first tracker that
/// answers, trying three times with growing waits (under two seconds in all).
pub async fn discover(port: u16) -> io::Result<Option<SocketAddr>> {
    let targets = broadcast_addresses();
    if targets.is_empty() {
        return Ok(None);
    }
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.set_broadcast(true)?;
    let txn = TransactionId(fastrand::u32(..));
    let probe = Request {
        txn,
        conn: ConnectionId(0),
        body: RequestBody::Connect {
            padding: [0; CONNECT_PADDING],
        },
    }
    .encode();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    for wait in [250, 500, 1000].map(Duration::from_millis) {
        for t in &targets {
            if let Err(e) = socket.send_to(&probe, SocketAddrV4::new(*t, port)).await {
                tracing::debug!("discovery probe to {t} failed: {e}");
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            if let Ok(Response {
                txn: t,
                body: ResponseBody::Connected { .. },
            }) = Response::decode(&buf[..n])
            {
                if t == txn {
                    return Ok(Some(from));
                }
            }
        }
    }
    Ok(None)
}

/// The broadcast address of every interface that is up, can broadcast and is not loopback.
pub fn broadcast_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read, then free exactly once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            let flags = ifa.ifa_flags as libc::c_int;
            let wanted = flags & libc::IFF_UP != 0
                && flags & libc::IFF_BROADCAST != 0
                && flags & libc::IFF_LOOPBACK == 0;
            if wanted
                && !ifa.ifa_addr.is_null()
                && (*ifa.ifa_addr).sa_family as libc::c_int == libc::AF_INET
                && !ifa.ifa_ifu.is_null()
            {
                let b = &*(ifa.ifa_ifu as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(b.sin_addr.s_addr));
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}
