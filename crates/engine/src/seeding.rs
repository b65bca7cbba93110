//! Sharing a [`Library`]: a chunk server on a TCP port plus an [`Announcer`] that keeps the files
//! registered with the tracker. Used by the seeder, and by the leecher from the moment its
//! download's manifest is verified (partial seeding).

use std::net::IpAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::rate::RateLimit;
use crate::store::Library;
use crate::tracker_client::{peer_info, Announcer, Registration, TrackerClient};

pub struct Seeding {
    /// The TCP port chunks are served on.
    pub port: u16,
    cancel: CancellationToken,
    server: JoinHandle<()>,
    announcer: JoinHandle<()>,
    registration: tokio::sync::watch::Receiver<Registration>,
}

impl Seeding {
    /// Starts serving on `listener` (from [`crate::server::bind`], bound early so a busy port is
    /// reported before any long work) and registering with the tracker, as the tracker sees us
    /// or as `advertise` (an address, and optionally a port, for NAT and multi-homed hosts) says;
    /// `upload` is the process's `--max-upload-rate`.
    pub fn start(
        library: Arc<Library>,
        client: Arc<TrackerClient>,
        listener: tokio::net::TcpListener,
        advertise: Option<(IpAddr, Option<u16>)>,
        upload: Option<Arc<RateLimit>>,
    ) -> std::io::Result<Seeding> {
        let port = listener.local_addr()?.port();
        let cancel = CancellationToken::new();
        let server = tokio::spawn(crate::server::serve(
            listener,
            library.clone(),
            upload,
            cancel.child_token(),
        ));
        let (ip, advertised_port) = advertise.map_or((None, None), |(ip, p)| (Some(ip), p));
        let (registration, registered) = tokio::sync::watch::channel(Registration::default());
        let announcer = Announcer {
            client,
            library: library.clone(),
            peer: peer_info(advertised_port.unwrap_or(port), ip),
            registration,
        };
        let stop = cancel.child_token();
        let announcer = tokio::spawn(async move {
            // A leecher's library is empty until its manifest is verified: nothing to register
            // (or heartbeat) before.
            loop {
                let changed = library.changed();
                if !library.entries().is_empty() {
                    break;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = changed => {}
                }
            }
            announcer.run(stop).await
        });
        Ok(Seeding {
            port,
            cancel,
            server,
            announcer,
            registration: registered,
        })
    }

    /// What the tracker has registered so far, as it changes.
    pub fn registration(&self) -> tokio::sync::watch::Receiver<Registration> {
        self.registration.clone()
    }

    /// Unregisters from the tracker and stops serving.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.announcer.await;
        let _ = self.server.await;
    }
}

/// Why [`prepare`] could not get seeding ready: each one sentence naming the flag to change.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot serve on TCP port {port} ({source}); choose another with --port")]
    Bind { port: u16, source: std::io::Error },
    #[error("bad port in --advertise {0:?}")]
    AdvertisePort(String),
    #[error("cannot resolve --advertise host {0:?}")]
    AdvertiseHost(String),
}

/// What seeding needs from the command line, checked before any long work (hashing, a
/// download): the TCP port bound (0 lets the OS pick) and `--advertise HOST[:PORT]` resolved.
pub async fn prepare(
    port: u16,
    advertise: Option<&str>,
) -> Result<(tokio::net::TcpListener, Option<(IpAddr, Option<u16>)>), PrepareError> {
    let listener = crate::server::bind(port)
        .await
        .map_err(|source| PrepareError::Bind { port, source })?;
    let advertise = match advertise {
        Some(a) => Some(parse_advertise(a).await?),
        None => None,
    };
    Ok((listener, advertise))
}

/// Parses `--advertise HOST[:PORT]`, resolving a host name.
pub async fn parse_advertise(s: &str) -> Result<(IpAddr, Option<u16>), PrepareError> {
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok((ip, None));
    }
    if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
        return Ok((addr.ip(), Some(addr.port())));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|_| PrepareError::AdvertisePort(s.to_string()))?,
            ),
        ),
        None => (s, None),
    };
    let ip = tokio::net::lookup_host((host, 0))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| PrepareError::AdvertiseHost(host.to_string()))?;
    Ok((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_and_a_bad_advertise_port_are_named() {
        let taken = crate::server::bind(0).await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = prepare(port, None).await.unwrap_err();
        assert!(
            matches!(e, PrepareError::Bind { port: p, .. } if p == port),
            "{e}"
        );
        assert!(e.to_string().ends_with("choose another with --port"), "{e}");
        let e = prepare(0, Some("peer.lan:99999")).await.unwrap_err();
        assert_eq!(e.to_string(), r#"bad port in --advertise "peer.lan:99999""#);
        let (ip, port) = parse_advertise("[::1]:7000").await.unwrap();
        assert_eq!((ip.to_string(), port), ("::1".to_string(), Some(7000)));
    }
}
