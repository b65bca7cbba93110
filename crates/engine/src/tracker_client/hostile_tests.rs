//! The client against trackers that misbehave: one that offers pages forever, one that rate
//! limits, one that rate limits forever. Each is a UDP socket on loopback answering as told.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::store::Library;

/// A tracker that answers each request with `answer(request)`, until the test ends.
async fn fake(answer: impl Fn(&Request) -> Option<ResponseBody> + Send + 'static) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut buf = vec![0; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(req) = Request::decode(&buf[..n]) else {
                continue;
            };
            let body = match req.body {
                RequestBody::Connect { .. } => Some(ResponseBody::Connected {
                    conn: ConnectionId(1),
                }),
                _ => answer(&req),
            };
            if let Some(body) = body {
                let reply = Response { txn: req.txn, body }.encode();
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    addr
}

fn entry(n: u32) -> ListEntry {
    ListEntry {
        id: FileId([n as u8; 32]),
        size: 1,
        seeders: 1,
        leechers: 0,
        name: format!("f{n}"),
    }
}

/// An announcer over `library`, against the fake tracker at `addr`, and its registrations.
async fn announcer(
    addr: &str,
    library: Arc<Library>,
) -> (Announcer, tokio::sync::watch::Receiver<Registration>) {
    let client = TrackerClient::connect(addr, RetryPolicy::default())
        .await
        .unwrap();
    let (registration, watch) = tokio::sync::watch::channel(Registration::default());
    let announcer = Announcer {
        client: Arc::new(client),
        library,
        peer: peer_info(7000, None),
        registration,
    };
    (announcer, watch)
}

#[tokio::test]
async fn registrations_and_refusals_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.bin");
    std::fs::write(&path, b"some bytes").unwrap();
    let hashed = || {
        let done = std::sync::atomic::AtomicU64::new(0);
        crate::store::SharedFile::hash(&path, 16 * 1024, &done).unwrap()
    };
    // Every request is acknowledged, except announcements when told to refuse them.
    for (answer, accepted) in [(None, true), (Some(ErrorCode::BadName), false)] {
        let addr = fake(move |req| match (answer, &req.body) {
            (Some(code), RequestBody::Announce { .. }) => Some(ResponseBody::Error { code }),
            _ => Some(ResponseBody::Ack { interval_secs: 60 }),
        })
        .await;
        let library = Library::new();
        let id = library.add(hashed()).id;
        let (announcer, mut watch) = announcer(&addr, library).await;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(announcer.run(cancel.clone()));
        let now = watch
            .wait_for(|r| r.files.contains(&id) || r.failure.is_some())
            .await
            .unwrap()
            .clone();
        assert_eq!(now.files.contains(&id), accepted, "{now:?}");
        match answer {
            None => assert_eq!(now.failure, None),
            Some(_) => assert_eq!(
                now.failure.as_deref(),
                Some(
                    TrackerError::Refused(ErrorCode::BadName)
                        .to_string()
                        .as_str()
                )
            ),
        }
        cancel.cancel();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_listing_that_never_ends_is_cut_off_with_one_sentence() {
    let addr = fake(|req| match &req.body {
        RequestBody::List { cursor, .. } => Some(ResponseBody::Files {
            entries: vec![entry(*cursor)],
            next: Some(cursor + 1),
        }),
        _ => None,
    })
    .await;
    let client = TrackerClient::connect(&addr, RetryPolicy::default())
        .await
        .unwrap();
    let err = client
        .list_bounded(Filter::All, 50, 1000)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TrackerError::EndlessListing {
                entries: 51,
                pages: 51,
                ..
            }
        ),
        "{err}"
    );
    let err = client
        .list_bounded(Filter::All, 1000, 20)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TrackerError::EndlessListing {
                entries: 20,
                pages: 20,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("the tracker at {addr} kept offering more pages (20 pages, 20 files so far); it is misbehaving")
    );
}

#[tokio::test]
async fn rate_limit_answers_are_waited_out_then_named() {
    // Refuses the first three requests for peers, then answers.
    let refused = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = refused.clone();
    let addr = fake(move |req| match req.body {
        RequestBody::GetPeers { .. } => {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(if n < 3 {
                ResponseBody::Error {
                    code: ErrorCode::RateLimited,
                }
            } else {
                ResponseBody::Peers {
                    interval_secs: 1,
                    peers: vec![SocketAddr::from(([127, 0, 0, 1], 7000))],
                }
            })
        }
        _ => None,
    })
    .await;
    let client = TrackerClient::connect(&addr, RetryPolicy::default())
        .await
        .unwrap();
    let peers = client.peers(FileId([1; 32])).await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 4);

    // One that never stops: its own error, after the patience it was given.
    let addr = fake(|_| {
        Some(ResponseBody::Error {
            code: ErrorCode::RateLimited,
        })
    })
    .await;
    let client = TrackerClient::connect(&addr, RetryPolicy::default())
        .await
        .unwrap()
        .with_rate_limit_patience(Duration::from_secs(1));
    let err = client.peers(FileId([1; 32])).await.unwrap_err();
    assert!(matches!(err, TrackerError::RateLimited { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "the tracker at {addr} kept rate limiting this machine"
        )),
        "{err}"
    );
}
