//! The `tracker` command: the meeting point where peers find each other.
//!
//! [`registry`] holds the state and answers datagrams without I/O; [`serve`] runs it on a UDP
//! socket; [`http`] is the optional status page (with [`metrics`]); [`main`] is the command
//! line.

#![forbid(unsafe_code)]

pub mod activity;
pub mod http;
pub mod http_conn;
mod http_cost;
mod http_key;
pub mod limits;
pub mod metrics;
pub mod private;
pub mod ratelimit;
pub mod registry;
pub mod udp;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use registry::{Config, Limits, Registry};
use shoal_proto::tracker::MAX_NAME_LEN;
use tokio_util::sync::CancellationToken;

/// How long the server waits for a datagram before it looks at the clock and `cancel` again.
const TICK: Duration = Duration::from_millis(100);

/// Runs the registry on `socket` until `cancel` fires, on the calling thread. Peers that go
/// silent are dropped once a second (and before any reply that could mention them).
///
/// Requests are taken a batch at a time ([`udp::Batch`]: one system call receives all that are
/// waiting, one sends their replies), each batch answered under one lock and one reading of the
/// clock.
pub fn serve(
    socket: UdpSocket,
    registry: Arc<Mutex<Registry>>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    serve_sealed(socket, registry, None, cancel)
}

/// [`serve`] for a private swarm when `sealer` is given: only datagrams sealed with its key are
/// answered, and replies are sealed ([`private`]).
pub fn serve_sealed(
    socket: UdpSocket,
    registry: Arc<Mutex<Registry>>,
    sealer: Option<&shoal_secret::datagram::Sealer>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let mut sealed = sealer.map(private::Sealed::new);
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(TICK))?;
    socket.set_write_timeout(Some(TICK))?;
    let fd = socket.as_fd();
    let mut batch = udp::Batch::new();
    let lock = || registry.lock().unwrap_or_else(|e| e.into_inner());
    let mut next_sweep = std::time::Instant::now() + Duration::from_secs(1);
    while !cancel.is_cancelled() {
        let now = std::time::Instant::now();
        if now >= next_sweep {
            lock().expire(now);
            next_sweep = now + Duration::from_secs(1);
        }
        // Errors are a timeout or ICMP noise from earlier sends: nothing to do but go on.
        if batch.recv(fd).is_err() {
            continue;
        }
        {
            let mut registry = lock();
            let now = std::time::Instant::now();
            batch.answer(|src, datagram, reply| match &mut sealed {
                Some(sealed) => sealed.answer(&mut registry, now, src, datagram, reply),
                None => registry.handle_into(now, src, datagram, reply),
            });
        }
        // Waits (a tick at a time) only while the socket buffer is full.
        while batch.send(fd).is_err() && !cancel.is_cancelled() {}
    }
    Ok(())
}

#[derive(Parser, Debug)]
#[command(
    name = "tracker",
    version,
    about = "The shoal tracker: knows which peer has which file."
)]
struct Args {
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:6969", value_name = "ADDR")]
    listen: String,
    /// Seconds between peer heartbeats (told to peers).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    interval: u64,
    /// Drop a peer silent for this many seconds (default: three intervals).
    #[arg(long, value_name = "SECS")]
    peer_timeout: Option<u64>,
    /// Serve a live status page, JSON under /api/ and Prometheus /metrics on this TCP address,
    /// e.g. 127.0.0.1:8080 (0.0.0.0:8080 for the whole LAN). Off unless given.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Most peers in one peer list.
    #[arg(long, default_value_t = Limits::default().peers_per_reply, value_name = "N")]
    max_peers: usize,
    /// Most files one peer may register.
    #[arg(long, default_value_t = Limits::default().files_per_peer, value_name = "N")]
    max_files_per_peer: usize,
    /// Most peers registered for one file.
    #[arg(long, default_value_t = Limits::default().peers_per_file, value_name = "N")]
    max_peers_per_file: usize,
    /// Most distinct files in all.
    #[arg(long, default_value_t = Limits::default().total_files, value_name = "N")]
    max_files: usize,
    /// Most peers in all.
    #[arg(long, default_value_t = Limits::default().total_peers, value_name = "N")]
    max_total_peers: usize,
    /// Most (peer, file) registrations in all: what the tracker's memory grows with.
    #[arg(long, default_value_t = Limits::default().registrations, value_name = "N")]
    max_registrations: usize,
    /// Longest file name accepted, in bytes (at most 255).
    #[arg(long, default_value_t = Limits::default().name_len, value_name = "BYTES")]
    max_name_len: usize,
    /// Requests per second each source IP may send on average; 0 turns rate limiting off.
    #[arg(long, default_value_t = Limits::default().rate, value_name = "N")]
    rate_limit: u32,
    /// Requests a source IP may send in a burst after a quiet spell.
    #[arg(long, default_value_t = Limits::default().burst, value_name = "N")]
    rate_burst: u32,
    /// Source IPs the rate limiter keeps track of at once (fixed memory, 32 bytes each).
    #[arg(long, default_value_t = Limits::default().rate_table, value_name = "N")]
    rate_table: usize,
    /// A private swarm: read its secret from this file (else from P2P_SECRET, if set).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<std::path::PathBuf>,
    /// Print a fresh secret for a private swarm, and how to use it, then exit.
    #[arg(long)]
    new_secret: bool,
}

/// `--new-secret`: the secret alone on the first line (for scripts), then how to use it. A reader
/// that stops after the first line (`| head -n 1`) is no error.
fn print_new_secret() -> anyhow::Result<()> {
    use std::io::Write;
    let text = shoal_secret::Secret::generate()?.to_text();
    let mut out = std::io::stdout().lock();
    let printed = writeln!(out, "{text}\n").and_then(|()| {
        writeln!(
            out,
            "Give every machine of the swarm (tracker, seeders, leechers) this secret, either\n\
             in the environment:        export P2P_SECRET={text}\n\
             or in a file only you can read, passed as --secret-file FILE to every program.\n\
             Without it a program of this swarm gets no answer from the tracker and no byte\n\
             from a peer. Keep it like a password."
        )
    });
    match printed {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The command line: parses flags, runs, maps errors to one sentence and exit code 1.
pub fn main() -> ExitCode {
    let args = Args::parse();
    shoal_cli::tune_allocator();
    shoal_cli::init_logging();
    if args.new_secret {
        return match print_new_secret() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tracker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match run(&rt, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This host's address on the way to `peer`, as the routing table picks it (a UDP socket is
/// connected, nothing is sent): how `peer` reaches a peer that registered from this host over
/// loopback.
fn address_towards(peer: std::net::IpAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr = match peer {
        std::net::IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        std::net::IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect((peer, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

async fn resolve(addr: &str, what: &str, example: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| {
            format!(
                "cannot listen on {addr:?} for {what}: give an address as IP:PORT, e.g. {example}"
            )
        })
}

fn config(args: &Args) -> anyhow::Result<Config> {
    if args.interval == 0 {
        anyhow::bail!("--interval must be at least 1 second");
    }
    if !(1..=MAX_NAME_LEN).contains(&args.max_name_len) {
        anyhow::bail!("--max-name-len must be between 1 and {MAX_NAME_LEN}");
    }
    if args.rate_limit > 0 && (args.rate_burst == 0 || args.rate_table == 0) {
        anyhow::bail!("--rate-burst and --rate-table must be at least 1 (or turn the limit off with --rate-limit 0)");
    }
    Ok(Config {
        interval: Duration::from_secs(args.interval),
        peer_timeout: Duration::from_secs(args.peer_timeout.unwrap_or(3 * args.interval)),
        limits: Limits {
            files_per_peer: args.max_files_per_peer,
            peers_per_file: args.max_peers_per_file,
            total_files: args.max_files,
            total_peers: args.max_total_peers,
            registrations: args.max_registrations,
            name_len: args.max_name_len,
            peers_per_reply: args.max_peers,
            rate: args.rate_limit,
            burst: args.rate_burst,
            rate_table: args.rate_table,
        },
    })
}

/// What [`set_up`] made: the bound sockets, the state, the signal handlers.
struct Ready {
    socket: UdpSocket,
    /// A private swarm's keys.
    keys: Option<shoal_secret::Keys>,
    registry: Arc<Mutex<Registry>>,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    page: Option<(tokio::net::TcpListener, Arc<http::Status>)>,
}

/// Sets up on the runtime, then answers datagrams on this thread (which is all the tracker's work
/// under load) while another drives the runtime: signals and the status page.
fn run(rt: &tokio::runtime::Runtime, args: Args) -> anyhow::Result<()> {
    let Ready {
        socket,
        keys,
        registry,
        shutdown,
        page,
    } = rt.block_on(set_up(&args))?;
    let cancel = CancellationToken::new();
    std::thread::scope(|s| {
        let runtime = s.spawn(|| {
            rt.block_on(async {
                let page = page.map(|(listener, status)| {
                    tokio::spawn(http::serve(listener, status, cancel.clone()))
                });
                tokio::select! {
                    _ = shutdown => tracing::info!("shutting down"),
                    // The server stopped on its own (an error).
                    _ = cancel.cancelled() => {}
                }
                cancel.cancel();
                if let Some(page) = page {
                    // Browsers may hold connections open; do not wait on them for long.
                    let _ = tokio::time::timeout(Duration::from_secs(1), page).await;
                }
            })
        });
        let sealer = keys.as_ref().map(|k| &k.datagrams);
        let served = serve_sealed(socket, registry, sealer, cancel.clone());
        cancel.cancel();
        let _ = runtime.join();
        served.context("serving UDP")
    })
}

async fn set_up(args: &Args) -> anyhow::Result<Ready> {
    let config = config(args)?;
    let keys = match shoal_secret::load(args.secret_file.as_deref())? {
        Some(loaded) => {
            for warning in loaded.warnings() {
                tracing::warn!("{warning}");
            }
            Some(shoal_secret::Keys::derive(&loaded.secret))
        }
        None => None,
    };
    let addr = resolve(&args.listen, "the tracker", "0.0.0.0:6969").await?;
    let socket = UdpSocket::bind(addr).with_context(|| {
        format!("cannot listen on UDP {addr} (is another tracker running? choose another with --listen)")
    })?;
    let local = socket.local_addr()?;
    let http = match &args.http {
        Some(h) => {
            let addr = resolve(h, "--http", "127.0.0.1:8080").await?;
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen on TCP {addr} for the status page (choose another with --http)"
                )
            })?;
            Some(listener)
        }
        None => None,
    };
    tracing::info!(
        "memory bound with these caps: {} MiB",
        config.limits.worst_case_bytes() / (1024 * 1024)
    );
    let mut registry = Registry::new(config, std::time::Instant::now());
    registry.set_host_address(Box::new(address_towards));
    let registry = Arc::new(Mutex::new(registry));
    // Before saying we listen, so that a Ctrl-C from then on shuts down cleanly.
    let shutdown = Box::pin(shoal_cli::shutdown_signal());
    println!("tracker listening on {local}");
    tracing::info!("tracker listening on udp {local}");
    if keys.is_some() {
        tracing::info!("private swarm: only programs with the same secret get an answer");
    }
    let page = match http {
        Some(listener) => {
            let at = listener.local_addr()?;
            println!("http listening on {at}");
            let mut status = http::Status::new(registry.clone(), local);
            match &keys {
                Some(k) => {
                    // Only the URL with the key shows anything: print it where the operator
                    // looks.
                    println!("status page: http://{at}/?key={}", k.page_token);
                    if let Some(warning) = http_key::in_clear(at) {
                        tracing::warn!("{warning}");
                    }
                    status = status.with_key(&k.page_token);
                }
                None => tracing::info!("status page at http://{at}/"),
            }
            let status = Arc::new(status);
            Some((listener, status))
        }
        None => None,
    };
    Ok(Ready {
        socket,
        keys,
        registry,
        shutdown,
        page,
    })
}
