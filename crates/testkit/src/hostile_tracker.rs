//! A hostile tracker built from [`shoal_proto::tracker`]: it lists whatever the test tells it to
//! (names the real tracker refuses, sizes that lie), can offer one more page forever, slowly, and
//! hands out the peers that announced to it plus any the test adds. Test support only.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use shoal_proto::tracker::{
    Filter, ListEntry, Request, RequestBody, Response, ResponseBody, MAX_DATAGRAM,
};
use shoal_proto::{ConnectionId, FileId};

/// What the fake tracker says.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// Listed (filtered as the real tracker does), all on one page.
    pub entries: Vec<ListEntry>,
    /// Instead: every page holds one made-up entry and names a next page, each answered after
    /// this delay.
    pub endless: Option<Duration>,
    /// Handed out for every file, besides the peers that announced.
    pub peers: Vec<SocketAddr>,
}

/// A fake tracker on 127.0.0.1:0, answering on a thread of its own until dropped.
pub struct FakeTracker {
    pub addr: SocketAddr,
    /// Pages of a listing answered so far.
    pub pages: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeTracker {
    pub fn start(script: Script) -> FakeTracker {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let pages = Arc::new(AtomicU32::new(0));
        let state = Arc::new(Mutex::new(script));
        let thread = {
            let (stop, pages) = (stop.clone(), pages.clone());
            std::thread::spawn(move || serve(socket, state, stop, pages))
        };
        FakeTracker {
            addr,
            pages,
            stop,
            thread: Some(thread),
        }
    }

    /// `--tracker` for the programs.
    pub fn arg(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the thread out of its receive.
        if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
            let _ = s.send_to(b"stop", self.addr);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    socket: UdpSocket,
    state: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    pages: Arc<AtomicU32>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut announced: Vec<SocketAddr> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, src)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(req) = Request::decode(&buf[..n]) else {
            continue;
        };
        let script = state.lock().unwrap().clone();
        let body = match req.body {
            RequestBody::Connect { .. } => ResponseBody::Connected {
                conn: ConnectionId(7),
            },
            RequestBody::Announce { peer, .. } => {
                let a = SocketAddr::new(src.ip(), peer.port);
                if !announced.contains(&a) {
                    announced.push(a);
                }
                ResponseBody::Ack { interval_secs: 60 }
            }
            RequestBody::Heartbeat { .. } | RequestBody::Unregister { .. } => {
                ResponseBody::Ack { interval_secs: 60 }
            }
            RequestBody::GetPeers { .. } => ResponseBody::Peers {
                interval_secs: 60,
                peers: script.peers.iter().chain(&announced).copied().collect(),
            },
            RequestBody::List { filter, cursor } => {
                pages.fetch_add(1, Ordering::SeqCst);
                match script.endless {
                    Some(delay) => {
                        // The hostility under test: slow, and never the last page.
                        std::thread::sleep(delay);
                        let mut id = [0u8; 32];
                        id[..4].copy_from_slice(&cursor.to_be_bytes());
                        ResponseBody::Files {
                            entries: vec![ListEntry {
                                id: FileId(id),
                                size: 1,
                                seeders: 1,
                                leechers: 0,
                                name: format!("page-{cursor}"),
                            }],
                            next: Some(cursor + 1),
                        }
                    }
                    None => ResponseBody::Files {
                        entries: script
                            .entries
                            .iter()
                            .filter(|e| matches(&filter, e))
                            .cloned()
                            .collect(),
                        next: None,
                    },
                }
            }
        };
        let reply = Response { txn: req.txn, body };
        let _ = socket.send_to(&reply.encode(), src);
    }
}

fn matches(filter: &Filter, e: &ListEntry) -> bool {
    match filter {
        Filter::All => true,
        Filter::NameContains(s) => e.name.to_lowercase().contains(&s.to_lowercase()),
        Filter::NameIs(s) => &e.name == s,
        Filter::IdPrefix(p) => p.matches(&e.id),
    }
}
