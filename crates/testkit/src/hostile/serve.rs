//! A hostile peer's connections: the peer protocol answered honestly up to the manifest, then
//! as the peer's [`Mode`] says.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shoal_proto::peer::{self, Frame, Header, RejectReason, PROTOCOL_VERSION};
use shoal_proto::ChunkIndex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

pub(super) async fn accept_loop(listener: TcpListener, st: Arc<PeerState>) {
    loop {
        let stream = tokio::select! {
            _ = st.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        st.events.update(|c| c.connections += 1);
        tokio::spawn(serve_conn(stream, st.clone()));
    }
}

/// Reads client frames on one side and answers them on the other, so that the client closing
/// the connection is noticed at once, even while an answer waits at the gate.
pub(super) async fn serve_conn(stream: TcpStream, st: Arc<PeerState>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Header>();
    let events = st.events.clone();
    let reader = async move {
        while let Ok(Some((_, frame))) = read_frame(&mut rd, 1024).await {
            if tx.send(frame.header).is_err() {
                return;
            }
        }
        events.update(|c| c.closed_by_client += 1);
    };
    tokio::select! {
        _ = st.cancel.cancelled() => {}
        _ = reader => {}
        _ = answer(&mut wr, &mut rx, &st) => {}
    }
    st.events.update(|c| c.ended += 1);
}

pub(super) async fn answer(
    wr: &mut (impl AsyncWrite + Unpin),
    rx: &mut mpsc::UnboundedReceiver<Header>,
    st: &PeerState,
) -> io::Result<()> {
    let file = match rx.recv().await {
        Some(Header::Hello { version, .. })
            if matches!(st.mode, Mode::ProtocolV1) && version != 1 =>
        {
            st.events.update(|c| c.garbage += 1);
            let reject = Header::Reject {
                index: None,
                reason: RejectReason::VersionMismatch,
            };
            return send(wr, &reject, &[]).await;
        }
        Some(Header::Hello { file, .. }) => match st.files.get(&file) {
            Some(f) => f.clone(),
            None => {
                let reject = Header::Reject {
                    index: None,
                    reason: RejectReason::UnknownFile,
                };
                return send(wr, &reject, &[]).await;
            }
        },
        _ => return Ok(()),
    };
    let has = match st.mode {
        Mode::PartialLiar(n) => n.min(file.manifest.num_chunks()),
        _ => file.manifest.num_chunks(),
    };
    let welcome = Header::Welcome {
        version: PROTOCOL_VERSION,
        complete: has == file.manifest.num_chunks(),
    };
    send(wr, &welcome, &[]).await?;
    // Protocol 2: the client's Bitfield, then ours (every chunk, but for a partial peer).
    match rx.recv().await {
        Some(Header::Bitfield) => {}
        _ => return Ok(()),
    }
    let bits: Vec<bool> = (0..file.manifest.num_chunks()).map(|i| i < has).collect();
    send(wr, &Header::Bitfield, &peer::encode_bitfield(&bits)).await?;
    while let Some(header) = rx.recv().await {
        let index = match header {
            Header::GetManifest if !matches!(st.mode, Mode::Silent) => {
                send(wr, &Header::Manifest, &file.manifest_bytes).await?;
                continue;
            }
            Header::Request { index } => index,
            _ => continue,
        };
        st.events.update(|c| c.requests += 1);
        match &st.mode {
            Mode::Silent | Mode::StallChunks | Mode::ProtocolV1 => {}
            Mode::AlwaysBusy | Mode::DeclinesAll | Mode::DeclinesAgain => {
                let reason = if matches!(st.mode, Mode::AlwaysBusy) {
                    RejectReason::Busy
                } else {
                    RejectReason::Elsewhere
                };
                let reject = Header::Reject {
                    index: Some(index),
                    reason,
                };
                send(wr, &reject, &[]).await?;
                if matches!(st.mode, Mode::DeclinesAgain) {
                    send(wr, &Header::Have { index }, &[]).await?;
                }
            }
            Mode::Honest => {
                st.gate.pass().await;
                serve_chunk(wr, &file, index, false, st).await?;
            }
            Mode::LieAll | Mode::PartialLiar(_) => {
                st.gate.pass().await;
                serve_chunk(wr, &file, index, true, st).await?;
            }
            Mode::LieOn(lies) => {
                st.gate.pass().await;
                serve_chunk(wr, &file, index, lies.contains(&index.0), st).await?;
            }
            Mode::DieAfter(n) => {
                st.gate.pass().await;
                if st.events.now().served >= *n {
                    st.cancel.cancel();
                    return Ok(());
                }
                serve_chunk(wr, &file, index, false, st).await?;
            }
            Mode::Trickle => {
                let mut frame = BytesMut::new();
                let data = file.chunk(index).unwrap_or_default();
                peer::encode_head(&Header::Chunk { index }, data.len(), &mut frame);
                frame.extend_from_slice(&data);
                for piece in frame.chunks(4) {
                    wr.write_all(piece).await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Mode::Garbage(kind) => {
                st.events.update(|c| c.garbage += 1);
                send_garbage(wr, *kind, &file, index).await?;
                if *kind == Garbage::Truncated {
                    return Ok(());
                }
                // Keep the connection open: it is the leecher's job to drop it.
                std::future::pending::<()>().await;
            }
        }
    }
    Ok(())
}

pub(super) async fn serve_chunk(
    wr: &mut (impl AsyncWrite + Unpin),
    file: &Served,
    index: ChunkIndex,
    lie: bool,
    st: &PeerState,
) -> io::Result<()> {
    let Some(data) = file.chunk(index) else {
        let reject = Header::Reject {
            index: Some(index),
            reason: RejectReason::NoSuchChunk,
        };
        return send(wr, &reject, &[]).await;
    };
    // Counted before sending, so that whatever the leecher has seen is already counted.
    if lie {
        let wrong: Vec<u8> = data.iter().map(|b| !b).collect();
        st.events.update(|c| c.lies += 1);
        send(wr, &Header::Chunk { index }, &wrong).await
    } else {
        st.events.update(|c| {
            c.served += 1;
            c.served_indices.push(index.0);
        });
        send(wr, &Header::Chunk { index }, &data).await
    }
}

pub(super) async fn send_garbage(
    wr: &mut (impl AsyncWrite + Unpin),
    kind: Garbage,
    file: &Served,
    index: ChunkIndex,
) -> io::Result<()> {
    let data = file.chunk(index).unwrap_or_default();
    let mut out = BytesMut::new();
    match kind {
        Garbage::OverMax => {
            out.extend_from_slice(&u32::MAX.to_be_bytes());
            out.extend_from_slice(&[0x55; 64]);
        }
        Garbage::OverChunkMax => {
            let limit = peer::max_frame_for_chunk_size(file.manifest.chunk_size());
            let head_len = {
                let mut h = BytesMut::new();
                peer::encode_head(&Header::Chunk { index }, 0, &mut h);
                h.len() - peer::LENGTH_PREFIX
            };
            let payload = vec![0xAA; limit + 1 - head_len];
            peer::encode_head(&Header::Chunk { index }, payload.len(), &mut out);
            out.extend_from_slice(&payload);
        }
        Garbage::Truncated => {
            peer::encode_head(&Header::Chunk { index }, data.len(), &mut out);
            out.extend_from_slice(&data[..data.len() / 2]);
        }
        Garbage::UnknownMessage => {
            // Variant 127 of a ten-variant enum: no header at all.
            let body = [0x7f, 0, 0, 0];
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
        }
        Garbage::WrongIndex => {
            let other = ChunkIndex((index.0 + 1) % file.num_chunks());
            let other_data = file.chunk(other).unwrap_or_default();
            peer::encode_head(&Header::Chunk { index: other }, other_data.len(), &mut out);
            out.extend_from_slice(&other_data);
        }
        Garbage::WrongLength => {
            let half = &data[..data.len() / 2];
            peer::encode_head(&Header::Chunk { index }, half.len(), &mut out);
            out.extend_from_slice(half);
        }
    }
    wr.write_all(&out).await
}

pub(super) async fn send(
    wr: &mut (impl AsyncWrite + Unpin),
    header: &Header,
    payload: &[u8],
) -> io::Result<()> {
    let mut out = BytesMut::new();
    peer::encode_head(header, payload.len(), &mut out);
    out.extend_from_slice(payload);
    wr.write_all(&out).await
}

/// Reads one frame no longer than `max`: its raw bytes (prefix included) and its decoding.
/// `None` at a clean end of stream.
pub(super) async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> io::Result<Option<(Bytes, Frame)>> {
    let mut prefix = [0u8; peer::LENGTH_PREFIX];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut raw = BytesMut::zeroed(peer::LENGTH_PREFIX + len);
    raw[..peer::LENGTH_PREFIX].copy_from_slice(&prefix);
    r.read_exact(&mut raw[peer::LENGTH_PREFIX..]).await?;
    let raw = raw.freeze();
    let frame = peer::decode_frame(raw.slice(peer::LENGTH_PREFIX..))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((raw, frame)))
}
