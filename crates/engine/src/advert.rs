//! What a server tells each client about the chunks of its file: everything it has, announced
//! with `Have` as a download in progress verifies more; or, for a complete file, what the
//! super-seeding reveal policy ([`crate::reveal`]) picks for that client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::peer::{self, Header};
use shoal_proto::ChunkIndex;
use tokio::sync::watch;

use crate::conn::FrameWriter;
use crate::reveal::{ConnId, Reveal};
use crate::store::{Announced, SharedFile};

/// Numbers server connections for the reveal policy.
static NEXT_CONN: AtomicU64 = AtomicU64::new(0);

/// One client of one file, and what we tell it about the chunks we have: everything we have
/// (a download in progress), or what the file's reveal policy says (a complete file).
pub struct Client {
    pub file: Arc<SharedFile>,
    advert: Advert,
    /// Subscribed before the Bitfield was made: a chunk added after that is always announced.
    news: watch::Receiver<()>,
    /// When we last answered the client's `WantMore`, and whether we revealed anything since.
    want_more_at: Option<Instant>,
    told_since_want_more: bool,
}

/// A `WantMore` that comes sooner than this after the last one answered, with nothing revealed
/// since, is not answered: an honest client asks once per Have, or again after 2 s, and each
/// answer that finds nothing may have weighed every chunk of the file.
const WANT_MORE_EVERY: Duration = Duration::from_secs(1);

enum Advert {
    /// Every chunk we have; the ones already told.
    Everything(Announced),
    /// What the reveal policy says, for this connection.
    Reveal(ConnId),
}

impl Client {
    /// Starts advertising to a client that has `client_has`: our Bitfield for it. `complete`:
    /// what our `Welcome` told the client. Only a client told so is advertised to by the reveal
    /// policy (it asks for more with `WantMore` only then); a file that completed after the
    /// `Welcome` advertises everything to it, as a download in progress would.
    pub fn join(file: Arc<SharedFile>, client_has: &[bool], complete: bool) -> (Client, Vec<u8>) {
        let news = file.news();
        let n = file.manifest.num_chunks() as usize;
        let mut bits = vec![false; n];
        let advert = match file.reveal().filter(|_| complete) {
            Some(reveal) => {
                let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                for i in reveal.lock().unwrap().join(conn, client_has) {
                    bits[i.0 as usize] = true;
                }
                Advert::Reveal(conn)
            }
            None => {
                let mut told = Announced::new(file.have());
                for i in told.catch_up(file.have()) {
                    bits[i.0 as usize] = true;
                }
                Advert::Everything(told)
            }
        };
        let client = Client {
            file,
            advert,
            news,
            want_more_at: None,
            told_since_want_more: false,
        };
        (client, peer::encode_bitfield(&bits))
    }

    /// Resolves when the file has gained chunks to announce to this client; never for a file
    /// that advertises by its reveal policy.
    pub async fn news(&mut self) {
        if matches!(self.advert, Advert::Everything(_)) && self.news.changed().await.is_ok() {
            return;
        }
        std::future::pending().await
    }

    /// Whether [`Client::news`] would resolve at once.
    pub fn has_news(&self) -> bool {
        matches!(self.advert, Advert::Everything(_)) && self.news.has_changed().unwrap_or(false)
    }

    /// Queues a Have for every chunk the file gained since we last told the client.
    pub fn announce_news(&mut self, writer: &mut FrameWriter) {
        if let Advert::Everything(told) = &mut self.advert {
            self.news.borrow_and_update();
            for index in told.catch_up(self.file.have()) {
                writer.queue(&Header::Have { index });
            }
        }
    }

    pub fn client_have(&mut self, index: ChunkIndex, writer: &mut FrameWriter) {
        self.reveal_more(writer, |r, conn| r.client_have(conn, index));
    }

    /// The client asked to be shown more ([`Header::WantMore`]).
    pub fn want_more(&mut self, writer: &mut FrameWriter) {
        let now = Instant::now();
        let recent = self
            .want_more_at
            .is_some_and(|t| now.duration_since(t) < WANT_MORE_EVERY);
        if recent && !self.told_since_want_more {
            return;
        }
        self.want_more_at = Some(now);
        self.told_since_want_more = false;
        self.reveal_more(writer, |r, conn| r.want_more(conn));
    }

    /// The client asked for `index`, which we have not sent yet.
    pub fn requested(&mut self, index: ChunkIndex, writer: &mut FrameWriter) {
        self.reveal_more(writer, |r, conn| r.requested(conn, index));
    }

    /// Whether to decline the client's request for `index` (`Reject { reason: Elsewhere }`):
    /// the reveal policy's first pass sent it to another client already. If so, what the policy
    /// reveals instead is queued.
    pub fn declines(&mut self, index: ChunkIndex, writer: &mut FrameWriter) -> bool {
        self.decline_step(writer, |r, conn| r.declines(conn, index))
    }

    /// The client's request for `index` has its turn: whether to decline it after all (another
    /// client was sent it meanwhile; what the policy reveals instead is queued); if not, it is
    /// being sent until [`Client::served`] or [`Client::not_sent`].
    pub fn send_or_decline(&mut self, index: ChunkIndex, writer: &mut FrameWriter) -> bool {
        self.decline_step(writer, |r, conn| r.send_or_decline(conn, index))
    }

    /// What [`Client::send_or_decline`] started was not sent.
    pub fn not_sent(&mut self) {
        self.with_reveal(|r, conn| r.not_sent(conn));
    }

    /// We refused the client's request for `index` as busy.
    pub fn refused(&mut self, index: ChunkIndex) {
        self.with_reveal(|r, conn| r.refused(conn, index));
    }

    pub fn served(&mut self, index: ChunkIndex, writer: &mut FrameWriter) {
        self.reveal_more(writer, |r, conn| r.served(conn, index));
    }

    /// Runs `step` on the reveal policy, if this client is advertised to by it (a file that
    /// reveals stays complete, so it has the policy).
    fn with_reveal<T>(&self, step: impl FnOnce(&mut Reveal, ConnId) -> T) -> Option<T> {
        let Advert::Reveal(conn) = self.advert else {
            return None;
        };
        let reveal = self.file.reveal()?;
        let mut reveal = reveal.lock().unwrap();
        Some(step(&mut reveal, conn))
    }

    /// Runs a step that may decline a request (`Some`: what to reveal instead, queued here);
    /// whether it did.
    fn decline_step(
        &mut self,
        writer: &mut FrameWriter,
        step: impl FnOnce(&mut Reveal, ConnId) -> Option<Vec<ChunkIndex>>,
    ) -> bool {
        let mut declined = false;
        self.reveal_more(writer, |r, conn| {
            let more = step(r, conn);
            declined = more.is_some();
            more.unwrap_or_default()
        });
        declined
    }

    fn reveal_more(
        &mut self,
        writer: &mut FrameWriter,
        step: impl FnOnce(&mut Reveal, ConnId) -> Vec<ChunkIndex>,
    ) {
        for index in self.with_reveal(step).unwrap_or_default() {
            writer.queue(&Header::Have { index });
            self.told_since_want_more = true;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.with_reveal(|r, conn| r.leave(conn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::Manifest;

    /// A chunk a download verifies right after a client's Bitfield was made (before the
    /// connection waits for news) is still announced to it.
    #[test]
    fn a_chunk_added_after_the_bitfield_is_news() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let data = vec![7u8; 3 * 16 * 1024];
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(SharedFile::in_progress(
            &dir.path().join("f"),
            "f".into(),
            Manifest::of_bytes(&data, 16 * 1024).unwrap(),
            std::fs::File::open(&path).unwrap(),
            &[true, false, false],
        ));
        let (client, bits) = Client::join(file.clone(), &[], false);
        assert_eq!(bits, peer::encode_bitfield(&[true, false, false]));
        assert!(!client.has_news());
        file.add_verified(ChunkIndex(2));
        assert!(client.has_news());
    }

    /// A client whose `Welcome` said "not complete" (the file completed before its Bitfield
    /// came) is advertised everything, not by the reveal policy: it would never send `WantMore`,
    /// so a chunk the policy declined it could never be shown again.
    #[test]
    fn a_client_told_not_complete_is_advertised_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, vec![7u8; 3 * 16 * 1024]).unwrap();
        let counter = std::sync::atomic::AtomicU64::new(0);
        let file = Arc::new(SharedFile::hash(&path, 16 * 1024, &counter).unwrap());
        let (client, bits) = Client::join(file.clone(), &[], false);
        assert_eq!(bits, peer::encode_bitfield(&[true, true, true]));
        assert!(matches!(client.advert, Advert::Everything(_)));
        let (client, _) = Client::join(file, &[], true);
        assert!(matches!(client.advert, Advert::Reveal(_)));
    }
}
