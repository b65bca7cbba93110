//! The `tracker` command: the meeting point where peers find each other.
//!
//! [`registry`] holds the state and answers datagrams without I/O; [`serve`] runs it on a UDP
//! socket; [`main`] is the command line.

pub mod registry;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use registry::{Config, Limits, Registry};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Runs the registry on `socket` until `cancel` fires. Peers that go silent are dropped once a
/// second.
pub async fn serve(socket: UdpSocket, registry: Arc<Mutex<Registry>>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 2048];
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sweep.tick() => registry.lock().unwrap().expire(std::time::Instant::now()),
            r = socket.recv_from(&mut buf) => {
                // Errors here are ICMP noise from earlier sends; nothing to do but go on.
                let Ok((n, src)) = r else { continue };
                let reply = registry.lock().unwrap().handle(std::time::Instant::now(), src, &buf[..n]);
                if let Some(reply) = reply {
                    let _ = socket.send_to(&reply, src).await;
                }
            }
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "tracker",
    version,
    about = "The shoal tracker: knows which peer has which file."
)]
struct Args {
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:6969")]
    listen: String,
    /// Seconds between peer heartbeats (told to peers).
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Drop a peer silent for this many seconds (default: three intervals).
    #[arg(long)]
    peer_timeout: Option<u64>,
    /// Most peers in one peer list.
    #[arg(long, default_value_t = Limits::default().peers_per_reply)]
    max_peers: usize,
    /// Most files one peer may register.
    #[arg(long, default_value_t = Limits::default().files_per_peer)]
    max_files_per_peer: usize,
    /// Most peers registered for one file.
    #[arg(long, default_value_t = Limits::default().peers_per_file)]
    max_peers_per_file: usize,
    /// Most files in all.
    #[arg(long, default_value_t = Limits::default().total_files)]
    max_files: usize,
    /// Most peers in all.
    #[arg(long, default_value_t = Limits::default().total_peers)]
    max_total_peers: usize,
}

/// The command line: parses flags, runs, maps errors to one sentence and exit code 1.
pub fn main() -> ExitCode {
    let args = Args::parse();
    shoal_engine::support::init_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.interval == 0 {
        anyhow::bail!("--interval must be at least 1 second");
    }
    let addr: SocketAddr = tokio::net::lookup_host(&args.listen)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| {
            format!(
                "cannot listen on {:?}: give an address as IP:PORT, e.g. 0.0.0.0:6969",
                args.listen
            )
        })?;
    let socket = UdpSocket::bind(addr).await.with_context(|| format!("cannot listen on UDP {addr} (is another tracker running? choose another with --listen)"))?;
    let local = socket.local_addr()?;
    let config = Config {
        interval: Duration::from_secs(args.interval),
        peer_timeout: Duration::from_secs(args.peer_timeout.unwrap_or(3 * args.interval)),
        limits: Limits {
            files_per_peer: args.max_files_per_peer,
            peers_per_file: args.max_peers_per_file,
            total_files: args.max_files,
            total_peers: args.max_total_peers,
            peers_per_reply: args.max_peers,
        },
    };
    let registry = Arc::new(Mutex::new(Registry::new(config, std::time::Instant::now())));
    println!("tracker listening on {local}");
    tracing::info!("tracker listening on udp {local}");
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve(socket, registry, cancel.clone()));
    shoal_engine::support::shutdown_signal().await;
    tracing::info!("shutting down");
    cancel.cancel();
    let _ = server.await;
    Ok(())
}
