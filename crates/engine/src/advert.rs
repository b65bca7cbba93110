//! What a server tells each client about the chunks of its file: everything it has, announced
//! with `Have` as a download in progress verifies more; or, for a complete file, what the
//! super-seeding reveal policy ([`crate::reveal`]) picks for that client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shoal_proto::peer::{self, Header};
use shoal_proto::ChunkIndex;

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
}

enum Advert {
    /// Every chunk we have; the ones already told.
    Everything(Announced),
    /// What the reveal policy says, for this connection.
    Reveal(ConnId),
}

impl Client {
    /// Starts advertising to a client that has `client_has`: our Bitfield for it.
    pub fn join(file: Arc<SharedFile>, client_has: &[bool]) -> (Client, Vec<u8>) {
        let n = file.manifest.num_chunks() as usize;
        let mut bits = vec![false; n];
        let advert = match file.reveal() {
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
        (Client { file, advert }, peer::encode_bitfield(&bits))
    }

    pub fn follows_news(&self) -> bool {
        matches!(self.advert, Advert::Everything(_))
    }

    /// Queues a Have for every chunk the file gained since we last told the client.
    pub fn announce_news(&mut self, writer: &mut FrameWriter) {
        if let Advert::Everything(told) = &mut self.advert {
            for index in told.catch_up(self.file.have()) {
                writer.queue(&Header::Have { index });
            }
        }
    }

    pub fn client_have(&mut self, index: ChunkIndex, writer: &mut FrameWriter) {
        self.reveal_more(writer, |r, conn| r.client_have(conn, index));
    }

    pub fn served(&mut self, index: ChunkIndex, writer: &mut FrameWriter) {
        self.reveal_more(writer, |r, conn| r.served(conn, index));
    }

    fn reveal_more(
        &mut self,
        writer: &mut FrameWriter,
        step: impl FnOnce(&mut Reveal, ConnId) -> Vec<ChunkIndex>,
    ) {
        let Advert::Reveal(conn) = self.advert else {
            return;
        };
        let reveal = self.file.reveal().expect("a revealing file stays complete");
        for index in step(&mut reveal.lock().unwrap(), conn) {
            writer.queue(&Header::Have { index });
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let (Advert::Reveal(conn), Some(reveal)) = (&self.advert, self.file.reveal()) {
            reveal.lock().unwrap().leave(*conn);
        }
    }
}
