//! How fast a private swarm's peer stream is on loopback, beside plain TCP: one connection, one
//! direction (sender and receiver on two threads), 64 KiB writes, 2 GiB (or `NOISE_SPEED_MIB` MiB) per case, each suite in turn.
//!
//! `cargo run --release --example noise_speed`

use std::time::Instant;

use shoal_secret::noise::{self, NoiseReader, NoiseWriter, PATTERN, PATTERN_CHACHA};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PSK: [u8; 32] = [42; 32];

async fn pump(
    mut w: impl AsyncWrite + Unpin + Send + 'static,
    mut r: impl AsyncRead + Unpin,
    total: usize,
) -> std::io::Result<f64> {
    let block = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    // The sender on a task of its own, so that it gets the other core, as a seeder would.
    let send = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            w.write_all(&block).await?;
            sent += block.len();
        }
        w.flush().await?;
        w.shutdown().await
    });
    let recv = async {
        let mut buf = vec![0u8; 512 * 1024];
        let mut got = 0;
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<usize, std::io::Error>(got);
            }
            got += n;
        }
    };
    let (s, got) = tokio::join!(send, recv);
    s.map_err(std::io::Error::other)??;
    assert_eq!(got?, total);
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

async fn case(pattern: Option<&str>, total: usize) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (mut client, (mut server, _)) = (client?, server?);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    match pattern {
        None => {
            let (_, w) = client.into_split();
            let (r, _) = server.into_split();
            pump(w, r, total).await
        }
        Some(p) => {
            let (i, s) = tokio::join!(
                noise::initiate(&mut client, &PSK, p),
                noise::respond(&mut server, &PSK, p)
            );
            let (i, s) = (
                i.map_err(std::io::Error::other)?,
                s.map_err(std::io::Error::other)?,
            );
            let (_, w) = client.into_split();
            let (r, _) = server.into_split();
            pump(NoiseWriter::new(w, i), NoiseReader::new(r, s), total).await
        }
    }
}

/// CPU time of the calling thread, in seconds: on a busy machine, what the work cost rather than
/// how long it waited.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// The cipher alone, in memory: seal then open 64 KiB messages on one thread; MB/s of that
/// thread's CPU time.
async fn cipher_only(pattern: &str, total: usize) -> std::io::Result<f64> {
    let (mut x, mut y) = tokio::io::duplex(1 << 16);
    let (i, r) = tokio::join!(
        noise::initiate(&mut x, &PSK, pattern),
        noise::respond(&mut y, &PSK, pattern)
    );
    let (i, r) = (
        i.map_err(std::io::Error::other)?,
        r.map_err(std::io::Error::other)?,
    );
    let plain = vec![0x5au8; noise::MAX_PLAIN];
    let mut wire = vec![0u8; noise::MAX_MESSAGE];
    let mut back = vec![0u8; noise::MAX_PLAIN];
    let start = thread_cpu();
    let mut done = 0;
    let mut nonce = 0;
    while done < total {
        let n = i
            .write_message(nonce, &plain, &mut wire)
            .map_err(std::io::Error::other)?;
        r.read_message(nonce, &wire[..n], &mut back)
            .map_err(std::io::Error::other)?;
        nonce += 1;
        done += plain.len();
    }
    Ok(total as f64 / (thread_cpu() - start) / 1e6)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mib: usize = std::env::var("NOISE_SPEED_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let total = mib << 20;
    println!("{mib} MiB over loopback, one connection, 64 KiB writes");
    for (name, pattern) in [
        ("plain TCP", None),
        (PATTERN, Some(PATTERN)),
        (PATTERN_CHACHA, Some(PATTERN_CHACHA)),
    ] {
        let rate = case(pattern, total).await?;
        println!("{name:40} {rate:8.0} MB/s");
    }
    for pattern in [PATTERN, PATTERN_CHACHA] {
        let rate = cipher_only(pattern, total / 4).await?;
        println!("{pattern:40} {rate:8.0} MB/s sealed and opened in memory, per CPU second");
    }
    Ok(())
}
