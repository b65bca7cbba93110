//! The worst-case memory stated on `Limits` holds: a registry filled to its caps in the most
//! expensive way (every registration with its own 255-byte name, sets grown then shrunk) holds no
//! more than `Limits::registry_bytes`, and with the status page's every connection holding an
//! answer nobody reads, no more than `Limits::worst_case_bytes`, measured by a counting
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use shoal_proto::tracker::{
    FileEntry, PeerInfo, Request, RequestBody, Response, ResponseBody, CONNECT_PADDING,
};
use shoal_proto::{ConnectionId, FileId, TransactionId};
use shoal_tracker::registry::{Config, Limits, Registry};

/// Counts live bytes and allocations.
struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicIsize = AtomicIsize::new(0);
/// The most [`held`] has been since it was last reset.
static PEAK: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// The same counts for this thread alone (const, so reading them never allocates): what the
    /// registry test builds on its own thread, whatever other threads free meanwhile (a runtime
    /// of the test before still winding down made the process-wide count fall mid-measurement).
    static MINE: std::cell::Cell<(isize, isize)> = const { std::cell::Cell::new((0, 0)) };
}

fn note_mine(bytes: isize, allocs: isize) {
    let _ = MINE.try_with(|m| {
        let (b, a) = m.get();
        m.set((b + bytes, a + allocs));
    });
}

/// [`held`] for this thread alone.
fn held_here() -> isize {
    let (b, a) = MINE.with(|m| m.get());
    b + 16 * a
}

fn note_peak() {
    PEAK.fetch_max(held(), Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        note_mine(layout.size() as isize, 1);
        note_peak();
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
        note_mine(-(layout.size() as isize), -1);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        note_mine(new_size as isize - layout.size() as isize, 0);
        note_peak();
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counts are the whole process's: one measuring test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What the process's allocator really holds for what is live: the bytes asked for plus its
/// bookkeeping, which `Limits` counts as 16 bytes per allocation.
fn held() -> isize {
    BYTES.load(Ordering::Relaxed) + 16 * ALLOCS.load(Ordering::Relaxed)
}

struct Client {
    src: SocketAddr,
    conn: ConnectionId,
    now: Instant,
}

impl Client {
    fn send(&self, reg: &mut Registry, body: RequestBody) -> ResponseBody {
        let bytes = Request {
            txn: TransactionId(1),
            conn: self.conn,
            body,
        }
        .encode();
        let reply = reg.handle(self.now, self.src, &bytes).expect("a reply");
        Response::decode(&reply).unwrap().body
    }
}

fn name(peer: u16, file: u32) -> String {
    let s = format!("peer {peer} file {file} ");
    format!("{s}{}", "x".repeat(255 - s.len()))
}

fn id(n: u32) -> FileId {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&n.to_be_bytes());
    FileId(id)
}

fn small_limits() -> Limits {
    Limits {
        total_peers: 60,
        files_per_peer: 80,
        peers_per_file: 12,
        total_files: 900,
        registrations: 2_000,
        rate: 1_000_000,
        burst: 1_000_000,
        rate_table: 4096,
        ..Limits::default()
    }
}

/// A registry filled to `limits` in the most expensive way.
fn filled(limits: &Limits) -> Registry {
    let config = Config {
        peer_timeout: Duration::from_secs(3600),
        limits: limits.clone(),
        ..Config::default()
    };
    let now = Instant::now();
    let mut reg = Registry::new(config, now);
    let src = SocketAddr::from(([10, 1, 2, 3], 4000));
    let mut client = Client {
        src,
        conn: ConnectionId(0),
        now,
    };
    match client.send(
        &mut reg,
        RequestBody::Connect {
            padding: [0; CONNECT_PADDING],
        },
    ) {
        ResponseBody::Connected { conn } => client.conn = conn,
        other => panic!("{other:?}"),
    }
    let peer = |port| PeerInfo {
        port,
        advertise: None,
    };
    let announce = |reg: &mut Registry, port: u16, files: &[u32]| {
        let files = files
            .iter()
            .map(|&f| FileEntry {
                id: id(f),
                size: 1,
                name: name(port, f),
                have: shoal_proto::tracker::Have::Complete,
            })
            .collect();
        client.send(
            reg,
            RequestBody::Announce {
                peer: peer(port),
                files,
            },
        )
    };
    // First every peer grows its set as far as it can, and withdraws most of it again: what a
    // set once held must not stay allocated.
    for port in 1..=60u16 {
        let base = u32::from(port) * 1000;
        for chunk in (0..80).collect::<Vec<u32>>().chunks(3) {
            let files: Vec<u32> = chunk.iter().map(|f| base + f).collect();
            announce(&mut reg, port, &files);
        }
        let gone: Vec<FileId> = (5..80).map(|f| id(base + f)).collect();
        for page in gone.chunks(30) {
            client.send(
                &mut reg,
                RequestBody::Unregister {
                    peer: peer(port),
                    files: Some(page.to_vec()),
                },
            );
        }
    }
    // Then fill to the caps: as many distinct files as allowed, then more peers for them, each
    // peer with its own name for each file.
    for port in 1..=60u16 {
        let mine: Vec<u32> = (0..600).filter(|f| f % 60 == u32::from(port) - 1).collect();
        for chunk in mine.chunks(3) {
            announce(&mut reg, port, chunk);
        }
    }
    let mut round = 0u32;
    while reg.gauges().registrations < limits.registrations && round < 100 {
        for port in 1..=60u16 {
            let files: Vec<u32> = (0..3)
                .map(|k| (u32::from(port) + round * 7 + k * 61) % 600)
                .collect();
            announce(&mut reg, port, &files);
        }
        round += 1;
    }
    let g = reg.gauges();
    assert_eq!(g.registrations, limits.registrations, "{g:?}");
    assert_eq!(g.peers, limits.total_peers);
    assert_eq!(g.files, limits.total_files, "{g:?}");
    reg
}

#[test]
fn registry_at_its_caps_stays_within_the_stated_bound() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let limits = small_limits();
    let before = held_here();
    let reg = filled(&limits);
    let used = (held_here() - before) as u64;
    let bound = limits.registry_bytes();
    println!("registry at its caps: {used} bytes held, bound {bound} bytes");
    assert!(
        used <= bound,
        "{used} bytes held, over the bound of {bound}"
    );
    // And the bound is not so loose that it says nothing.
    assert!(used * 3 >= bound, "{used} bytes held, bound {bound}");
    drop(reg);
}

/// Caps for the status page test: 2,000 files, each named differently by nine peers, so that a
/// page of 2,000 rows without a byte budget would be several MB.
fn wide_limits() -> Limits {
    Limits {
        total_peers: 16,
        files_per_peer: 2_000,
        peers_per_file: 12,
        total_files: 2_000,
        registrations: 18_000,
        rate: 1_000_000,
        burst: 1_000_000,
        rate_table: 4096,
        ..Limits::default()
    }
}

/// A registry at [`wide_limits`]: nine peers each share every file under a name of their own.
fn wide(limits: &Limits) -> Registry {
    let config = Config {
        peer_timeout: Duration::from_secs(3600),
        limits: limits.clone(),
        ..Config::default()
    };
    let now = Instant::now();
    let mut reg = Registry::new(config, now);
    let mut client = Client {
        src: SocketAddr::from(([10, 1, 2, 3], 4000)),
        conn: ConnectionId(0),
        now,
    };
    let padding = [0; CONNECT_PADDING];
    match client.send(&mut reg, RequestBody::Connect { padding }) {
        ResponseBody::Connected { conn } => client.conn = conn,
        other => panic!("{other:?}"),
    }
    let all: Vec<u32> = (0..2_000).collect();
    for port in 1..=9u16 {
        for chunk in all.chunks(3) {
            let files = chunk
                .iter()
                .map(|&f| FileEntry {
                    id: id(f),
                    size: 1,
                    name: name(port, f),
                    have: shoal_proto::tracker::Have::Complete,
                })
                .collect();
            let peer = PeerInfo {
                port,
                advertise: None,
            };
            client.send(&mut reg, RequestBody::Announce { peer, files });
        }
    }
    let g = reg.gauges();
    assert_eq!((g.files, g.registrations), (2_000, 18_000), "{g:?}");
    reg
}

/// Every status page connection (64: eight from each of eight loopback addresses) asks for the
/// largest answers there are, twenty of them pipelined with long headers, and reads no more than
/// the start of the first (its receive buffer is tiny). The most the tracker holds until the
/// page closes them as idle, registry included, is within `Limits::worst_case_bytes`.
#[test]
fn status_page_with_every_connection_holding_an_answer_stays_within_the_stated_bound() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let limits = wide_limits();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let before = held();
    let reg = Arc::new(Mutex::new(wide(&limits)));
    let status = Arc::new(shoal_tracker::http::Status::new(
        reg,
        SocketAddr::from(([127, 0, 0, 1], 6969)),
    ));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    rt.spawn(shoal_tracker::http::serve(listener, status, cancel.clone()));
    let before_http = held();
    PEAK.store(before_http, Ordering::Relaxed);
    let per_source = shoal_tracker::http::MAX_PER_SOURCE;
    let sources = shoal_tracker::http::MAX_CONNECTIONS / per_source;
    let mut conns = Vec::new();
    for s in 0..sources {
        for _ in 0..per_source {
            let ip = std::net::Ipv4Addr::new(127, 0, 0, 2 + s as u8);
            conns.push(rt.block_on(async {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.set_recv_buffer_size(4096).unwrap();
                sock.bind(SocketAddr::from((ip, 0)))
                    .unwrap_or_else(|e| panic!("cannot bind {ip}: {e} (127.0.0.0/8 is loopback)"));
                let mut c = sock.connect(addr).await.unwrap();
                // Not cacheable (an offset): each answer is built for its connection.
                let mut asks = String::new();
                for k in 1..=20 {
                    let path = ["/api/swarm", "/api/files", "/api/peers"][k % 3];
                    // Long headers too: hyper's read buffer grows to its largest.
                    asks += &format!(
                        "GET {path}?limit=2000&offset={k} HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
                        "p".repeat(16 * 1024)
                    );
                }
                c.write_all(asks.as_bytes()).await.unwrap();
                c
            }));
        }
    }
    for c in &mut conns {
        let mut b = [0u8; 12];
        rt.block_on(c.read_exact(&mut b)).unwrap();
        assert_eq!(&b, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&b));
    }
    // Every answer the page will build has been built once it gives up on these connections as
    // idle (they read nothing more): the signal is that their source is admitted again, where
    // meanwhile every new connection of it is closed at once, over the cap. Each try is a real
    // exchange; the pause between them only keeps the loop from spinning.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
            let mut c = sock.connect(addr).await.ok()?;
            c.write_all(b"GET /api/stats HTTP/1.0\r\nHost: t\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            c.read_to_end(&mut out).await.ok()?;
            Some(out)
        });
        if answer.is_some_and(|a| a.starts_with(b"HTTP/1.0 200")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never closed the idle connections"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let http = (PEAK.load(Ordering::Relaxed) - before_http) as u64;
    let used = (PEAK.load(Ordering::Relaxed) - before) as u64;
    let bound = limits.worst_case_bytes();
    println!(
        "status page with {} connections holding answers: {http} bytes (bound {}); in all {used} bytes, bound {bound}",
        conns.len(),
        Limits::HTTP_BYTES
    );
    assert!(
        http <= Limits::HTTP_BYTES as u64,
        "the status page holds {http} bytes, over its bound of {}",
        Limits::HTTP_BYTES
    );
    assert!(
        used <= bound,
        "{used} bytes held, over the bound of {bound}"
    );
    // The answers were built and held (one per connection).
    assert!(
        http >= 2_000_000,
        "only {http} bytes: the answers were not built"
    );
    cancel.cancel();
    drop(conns);
    rt.shutdown_background();
}
