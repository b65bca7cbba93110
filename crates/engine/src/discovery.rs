//! Finding a tracker with nothing configured: `--tracker`, else `P2P_TRACKER`, else a tracker on
//! this machine (127.0.0.1:6969), else one that answers a broadcast probe on the local network.
//!
//! The probe is an ordinary connect request sent to the broadcast address of every IPv4 interface
//! that has one (not loopback), on the tracker's default port. Any tracker listening on that port on
//! all interfaces answers with its connection id, and the reply's source address is the tracker.
//! It is padded like every connect request, so the reply is never larger than the probe. In a
//! private swarm the probe is sealed like every request: only trackers of the swarm answer it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use shoal_proto::tracker::{Request, RequestBody, Response, ResponseBody, CONNECT_PADDING};
use shoal_proto::{ConnectionId, TransactionId};
use tokio::net::UdpSocket;

use crate::tracker_client::{RetryPolicy, TrackerClient, TrackerError};

/// The tracker's default port, where discovery probes go.
pub const DEFAULT_PORT: u16 = 6969;

/// `--tracker`, else `P2P_TRACKER` if set and not empty. Read here rather than by clap: clap
/// writes an option it took from the environment into its `Usage:` lines, as if it was typed.
pub fn tracker_setting(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("P2P_TRACKER").ok().filter(|v| !v.is_empty()))
}

/// Whether to look for a tracker on the LAN: not with `--no-discovery`, nor with
/// `P2P_NO_DISCOVERY` set to anything but nothing, `0`, `false`, `no` or `off`.
pub fn discovery_wanted(no_discovery_flag: bool) -> bool {
    let off = |v: String| {
        !matches!(
            v.to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    };
    !no_discovery_flag && !std::env::var("P2P_NO_DISCOVERY").is_ok_and(off)
}

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
        }
        .unanswered());
    }
    match discover(DEFAULT_PORT).await? {
        Some(found) => {
            tracing::info!("found a tracker at {found} on the local network");
            TrackerClient::connect(&found.to_string(), RetryPolicy::default()).await
        }
        None => Err(TrackerError::NotFound { addr: probe.addr() }.unanswered()),
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
    let mut buf = vec![0u8; crate::private::DATAGRAM_ROOM];
    for wait in [250, 500, 1000].map(Duration::from_millis) {
        // In a private swarm sealed (anew each round: a tracker drops a repeat as a replay), so
        // only trackers of the swarm can open it, and only their replies open here.
        let sealed = crate::private::outgoing(probe.clone());
        for t in &targets {
            if let Err(e) = socket.send_to(&sealed, SocketAddrV4::new(*t, port)).await {
                tracing::debug!("discovery probe to {t} failed: {e}");
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let Ok(opened) = crate::private::incoming(&buf[..n]) else {
                continue;
            };
            if let Ok(Response {
                txn: t,
                body: ResponseBody::Connected { .. },
            }) = Response::decode(&opened)
            {
                if t == txn {
                    return Ok(Some(from));
                }
            }
        }
    }
    Ok(None)
}

/// The broadcast address of every interface that is up, can broadcast and is not loopback. An
/// address configured without one (`ip addr add 10.0.0.5/24 dev eth0`, no `brd +`) still has a
/// directed broadcast address, worked out from its netmask: without this, such a host would only
/// probe itself.
pub fn broadcast_addresses() -> Vec<Ipv4Addr> {
    use nix::net::if_::InterfaceFlags;
    let mut out = Vec::new();
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    let ipv4_of = |sa: Option<nix::sys::socket::SockaddrStorage>| Some(sa?.as_sockaddr_in()?.ip());
    for ifa in interfaces {
        let wanted = ifa
            .flags
            .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_BROADCAST)
            && !ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        let found = match ipv4_of(ifa.address) {
            // Without a broadcast address, glibc puts the interface's own address there.
            Some(addr) if wanted => ipv4_of(ifa.broadcast)
                .filter(|b| !b.is_unspecified() && *b != addr)
                .or_else(|| broadcast_of(addr, ipv4_of(ifa.netmask)?)),
            _ => None,
        };
        if let Some(ip) = found {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The directed broadcast address of `addr`'s network; none for /31 and /32, which have none.
fn broadcast_of(addr: Ipv4Addr, mask: Ipv4Addr) -> Option<Ipv4Addr> {
    let host_bits = !u32::from(mask);
    (host_bits >= 3 && !addr.is_loopback() && !addr.is_unspecified())
        .then(|| Ipv4Addr::from(u32::from(addr) | host_bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_from_netmask() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            broadcast_of(ip("10.77.0.5"), ip("255.255.255.0")),
            Some(ip("10.77.0.255"))
        );
        assert_eq!(
            broadcast_of(ip("192.168.1.70"), ip("255.255.255.192")),
            Some(ip("192.168.1.127"))
        );
        assert_eq!(
            broadcast_of(ip("10.1.2.3"), ip("255.0.0.0")),
            Some(ip("10.255.255.255"))
        );
        assert_eq!(broadcast_of(ip("10.0.0.1"), ip("255.255.255.254")), None);
        assert_eq!(broadcast_of(ip("10.0.0.1"), ip("255.255.255.255")), None);
        assert_eq!(broadcast_of(ip("0.0.0.0"), ip("255.255.255.0")), None);
    }
}
