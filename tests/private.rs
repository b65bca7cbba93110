//! A private swarm, end to end with the real programs: with the secret everything works; without
//! it, or with another, the tracker does not answer and the programs say why in one sentence; a
//! replayed, tampered or plain datagram gets no reply; the status page, its API and /metrics
//! answer only with the key the tracker printed.

use std::net::UdpSocket;
use std::time::{Duration, SystemTime};

use shoal_proto::tracker::{Request, RequestBody, Response, ResponseBody, CONNECT_PADDING};
use shoal_proto::{ConnectionId, TransactionId};
use shoal_secret::datagram::{unix_ms, Direction, OVERHEAD};
use shoal_secret::{Keys, Secret};
use shoal_testkit::*;

const BINS: Bins = bins!();

const SENTENCE: &str =
    "no tracker of this swarm answered; is P2P_SECRET the same on every machine?";

/// A fresh secret as `tracker --new-secret` prints it (its first line), checked for the advice.
fn new_secret(dir: &std::path::Path) -> String {
    let run = run(BINS.tracker, &["--new-secret"], dir, &[]);
    run.assert_ok();
    let secret = run.stdout.lines().next().unwrap().to_string();
    assert!(secret.starts_with(shoal_secret::PREFIX), "{}", run.dump());
    assert!(run.stdout.contains("P2P_SECRET=") && run.stdout.contains("--secret-file"));
    secret
}

/// A tracker of a private swarm, its secret given by file; and the secret.
fn private_swarm() -> (Swarm, String) {
    private_swarm_with(&[])
}

fn private_swarm_with(extra: &[&str]) -> (Swarm, String) {
    let keydir = tempfile::tempdir().unwrap();
    let secret = new_secret(keydir.path());
    let file = keydir.path().join("swarm.secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    set_mode(&file, 0o600);
    let mut args = vec!["--secret-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let swarm = Swarm::with_tracker_args(BINS, &args);
    (swarm, secret)
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A secret file others may read works, with a warning that says how to fix it.
#[test]
fn a_secret_file_others_can_read_is_warned_about() {
    let keydir = tempfile::tempdir().unwrap();
    let file = keydir.path().join("swarm.secret");
    std::fs::write(&file, format!("{}\n", new_secret(keydir.path()))).unwrap();
    set_mode(&file, 0o644);
    let swarm = Swarm::with_tracker_args(BINS, &["--secret-file", file.to_str().unwrap()]);
    let line = swarm.tracker.wait_stderr("can be read by other users");
    assert!(line.contains("chmod 600"), "{line}");
}

fn env<'a>(swarm: &'a Swarm, secret: &'a str) -> [(&'a str, &'a str); 2] {
    [
        ("P2P_TRACKER", swarm.tracker_addr.as_str()),
        ("P2P_SECRET", secret),
    ]
}

#[test]
fn with_the_secret_it_works_and_without_it_nothing_answers() {
    let (swarm, secret) = private_swarm();
    let data = pattern(3 * 512 * 1024 + 1000, 13);
    let path = swarm.write("seed/Plans.pdf", &data);
    let seeder = Proc::spawn(
        BINS.seeder,
        &[path.to_str().unwrap()],
        swarm.dir.path(),
        &env(&swarm, &secret),
    );
    seeder.wait_stderr("registered with the tracker");
    seeder.wait_stdout_count(1);
    let id = id_of(&seeder.stdout()[0]);

    let list = run(
        BINS.leecher,
        &["--list"],
        swarm.dir.path(),
        &env(&swarm, &secret),
    );
    list.assert_ok();
    assert!(
        list.stdout.contains(&id) && list.stdout.contains("Plans.pdf"),
        "{}",
        list.dump()
    );
    let out = swarm.folder("got");
    let got = run(
        BINS.leecher,
        &["Plans.pdf", "--no-seed", "--out", out.to_str().unwrap()],
        swarm.dir.path(),
        &env(&swarm, &secret),
    );
    got.assert_ok();
    assert_eq!(std::fs::read(out.join("Plans.pdf")).unwrap(), data);

    // Another secret: the sentence, from the listing and from a download.
    let other = Secret::generate().unwrap().to_text();
    for args in [&["--list"][..], &["Plans.pdf", "--no-seed"][..]] {
        let r = run(BINS.leecher, args, swarm.dir.path(), &env(&swarm, &other));
        r.assert_fails_with(SENTENCE);
        assert!(!r.stdout.contains("Plans"), "{}", r.dump());
    }
    // A passphrase is another secret too.
    run(
        BINS.leecher,
        &["--list"],
        swarm.dir.path(),
        &env(&swarm, "open sesame"),
    )
    .assert_fails_with(SENTENCE);
    // No secret: the open protocol, which this tracker does not answer.
    let r = run(BINS.leecher, &["--list"], swarm.dir.path(), &swarm.env());
    r.assert_fails_with("did not answer");
    assert!(!r.stdout.contains("Plans"), "{}", r.dump());
    // A damaged secret is refused at once, never taken for a passphrase.
    let damaged = &secret[..secret.len() - 2];
    run(
        BINS.leecher,
        &["--list"],
        swarm.dir.path(),
        &env(&swarm, damaged),
    )
    .assert_fails_with("is not 64 hexadecimal digits");
}

/// A test-owned client socket: sealed requests in, replies opened.
struct Client {
    socket: UdpSocket,
    keys: Keys,
}

impl Client {
    fn new(swarm: &Swarm, secret: &str) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(&swarm.tracker_addr).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        let (secret, _) = Secret::parse(secret).unwrap();
        Client {
            socket,
            keys: Keys::derive(&secret),
        }
    }

    fn connect_request(&self, txn: u32) -> Vec<u8> {
        let plain = Request {
            txn: TransactionId(txn),
            conn: ConnectionId(0),
            body: RequestBody::Connect {
                padding: [0; CONNECT_PADDING],
            },
        }
        .encode();
        let sealed = self
            .keys
            .datagrams
            .seal(Direction::Request, &plain, unix_ms(SystemTime::now()))
            .unwrap();
        assert_eq!(sealed.len(), plain.len() + OVERHEAD);
        sealed
    }

    /// The next reply, opened: its transaction id and size on the wire.
    fn reply(&self) -> (u32, usize) {
        let mut buf = [0u8; 2048];
        let n = self.socket.recv(&mut buf).expect("a reply");
        let plain = self
            .keys
            .datagrams
            .open(Direction::Reply, &buf[..n], unix_ms(SystemTime::now()))
            .expect("a reply that opens");
        let reply = Response::decode(&plain).unwrap();
        assert!(matches!(reply.body, ResponseBody::Connected { .. }));
        (reply.txn.0, n)
    }

    /// Sends `bytes`, then a fresh request: the tracker answers datagrams in order, so if the
    /// first reply to come is the fresh one's, `bytes` got none.
    fn assert_ignored(&self, bytes: &[u8], what: &str, txn: u32) {
        self.socket.send(bytes).unwrap();
        self.socket.send(&self.connect_request(txn)).unwrap();
        assert_eq!(self.reply().0, txn, "{what} was answered");
    }
}

#[test]
fn replayed_tampered_plain_and_foreign_datagrams_get_no_reply() {
    let (swarm, secret) = private_swarm();
    let client = Client::new(&swarm, &secret);
    let first = client.connect_request(1);
    client.socket.send(&first).unwrap();
    let (txn, size) = client.reply();
    assert_eq!(txn, 1);
    assert!(
        size <= first.len(),
        "reply {size} bytes, request {}",
        first.len()
    );

    client.assert_ignored(&first, "a replay", 2);
    let mut tampered = client.connect_request(3);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    client.assert_ignored(&tampered, "a tampered datagram", 4);
    let mut truncated = client.connect_request(5);
    truncated.truncate(truncated.len() - 1);
    client.assert_ignored(&truncated, "a truncated datagram", 6);
    let plain = Request {
        txn: TransactionId(7),
        conn: ConnectionId(0),
        body: RequestBody::Connect {
            padding: [0; CONNECT_PADDING],
        },
    }
    .encode();
    client.assert_ignored(&plain, "a plain request", 8);
    let foreign = Client::new(&swarm, &Secret::generate().unwrap().to_text());
    client.assert_ignored(&foreign.connect_request(9), "another swarm's request", 10);
    // A request an hour old, genuinely sealed: stale.
    let old = client
        .keys
        .datagrams
        .seal(
            Direction::Request,
            &plain,
            unix_ms(SystemTime::now() - Duration::from_secs(3600)),
        )
        .unwrap();
    client.assert_ignored(&old, "an hour-old request", 11);
}

/// `GET path` with an `Authorization` header; the status code.
fn get_with_bearer(addr: &str, path: &str, key: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_page_api_and_metrics_need_the_key_the_tracker_printed() {
    use shoal_testkit::tracker::http_get;
    let (swarm, secret) = private_swarm_with(&["--http", "127.0.0.1:0"]);
    let line = swarm.tracker.wait_stdout("the status page URL", |l| {
        l.starts_with("status page: http://")
    });
    let url = line.trim_start_matches("status page: http://");
    let (addr, query) = url.split_once('/').unwrap();
    let key = query.strip_prefix("?key=").unwrap();
    assert_eq!(
        key,
        Keys::derive(&Secret::parse(&secret).unwrap().0).page_token
    );

    // Without the key every path, the stylesheet, script and icon included, gets the same
    // generic answer, which names neither shoal nor a private swarm.
    let unknown = http_get(addr, "/no-such-path");
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (404, "not found\n")
    );
    for path in [
        "/",
        "/api/swarm",
        "/api/files",
        "/api/peers",
        "/api/stats",
        "/metrics",
        "/app.css",
        "/app.js",
        "/icon.svg",
    ] {
        let r = http_get(addr, path);
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, "not found\n"),
            "GET {path} without the key"
        );
        assert_eq!(
            r.headers.get("referrer-policy").map(String::as_str),
            Some("no-referrer"),
            "GET {path}"
        );
        let wrong = http_get(
            addr,
            &format!("{path}?key=0123456789abcdef0123456789abcdef"),
        );
        assert_eq!(wrong.status, 404, "GET {path} with another key");
        let sep = if path.contains('?') { '&' } else { '?' };
        let ok = http_get(addr, &format!("{path}{sep}key={key}"));
        assert_eq!(ok.status, 200, "GET {path} with the key: {}", ok.body);
        assert_eq!(
            ok.headers.get("referrer-policy").map(String::as_str),
            Some("no-referrer"),
            "GET {path} with the key"
        );
        assert_eq!(
            get_with_bearer(addr, path, key),
            200,
            "{path} with a bearer key"
        );
        assert_eq!(
            get_with_bearer(addr, path, "nope"),
            404,
            "{path} with a wrong bearer"
        );
    }
    // The page passes the key on in its links; the script asks the API with the key the page
    // was opened with.
    let page = http_get(addr, &format!("/?key={key}"));
    for link in ["/app.css", "/app.js", "/icon.svg", "/api/swarm", "/metrics"] {
        assert!(
            page.body.contains(&format!("\"{link}?key={key}\"")),
            "{link} without the key in the page"
        );
    }
    let js = http_get(addr, &format!("/app.js?key={key}"));
    assert_eq!(js.status, 200);
    assert!(js.body.contains("keyParam"));
}

/// A UDP relay in front of the tracker at `to` that drops the first `lose` replies, as a lossy
/// network would; its address.
fn lossy_relay(to: &str, lose: usize) -> String {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(to).unwrap();
    let addr = front.local_addr().unwrap().to_string();
    let client = std::sync::Arc::new(std::sync::Mutex::new(None));
    let (front2, back2, client2) = (
        front.try_clone().unwrap(),
        back.try_clone().unwrap(),
        client.clone(),
    );
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = front2.recv_from(&mut buf) {
            *client2.lock().unwrap() = Some(from);
            let _ = back2.send(&buf[..n]);
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut lost = 0;
        while let Ok(n) = back.recv(&mut buf) {
            if lost < lose {
                lost += 1;
                continue;
            }
            if let Some(c) = *client.lock().unwrap() {
                let _ = front.send_to(&buf[..n], c);
            }
        }
    });
    addr
}

/// A reply lost on the way: the client's next try is sealed anew, so the tracker does not take
/// it for a replay of the first, and answers.
#[test]
fn a_lost_reply_is_made_up_by_the_next_try() {
    let (swarm, secret) = private_swarm();
    let relay = lossy_relay(&swarm.tracker_addr, 2);
    let env = [
        ("P2P_TRACKER", relay.as_str()),
        ("P2P_SECRET", secret.as_str()),
    ];
    let r = run(BINS.leecher, &["--list"], swarm.dir.path(), &env);
    r.assert_ok();
}
