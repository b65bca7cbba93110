//! The worst-case memory stated on `Limits` holds: a registry filled to its caps in the most
//! expensive way (every registration with its own 255-byte name, sets grown then shrunk) holds no
//! more than `Limits::worst_case_bytes`, measured by a counting allocator.

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

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

#[test]
fn registry_at_its_caps_stays_within_the_stated_bound() {
    let limits = Limits {
        total_peers: 60,
        files_per_peer: 80,
        peers_per_file: 12,
        total_files: 900,
        registrations: 2_000,
        rate: 1_000_000,
        burst: 1_000_000,
        rate_table: 4096,
        ..Limits::default()
    };
    let config = Config {
        peer_timeout: Duration::from_secs(3600),
        limits: limits.clone(),
        ..Config::default()
    };
    let now = Instant::now();
    let before = held();
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
    let used = (held() - before) as u64;
    let bound = limits.worst_case_bytes();
    println!("registry at its caps: {used} bytes held, bound {bound} bytes");
    assert!(
        used <= bound,
        "{used} bytes held, over the bound of {bound}"
    );
    // And the bound is not so loose that it says nothing.
    assert!(used * 3 >= bound, "{used} bytes held, bound {bound}");
    drop(reg);
}
