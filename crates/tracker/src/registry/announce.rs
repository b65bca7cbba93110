//! Registering a peer's files: the checks on names and advertised addresses, who owns an
//! address, and the caps (with fair room-making, see [`super::fair`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use shoal_proto::tracker::{ErrorCode, FileEntry, PeerInfo, ResponseBody, MAX_NAME_LEN};

use super::dispatch::peer_addr;
use super::{printable_name, source_of, FileRecord, Peer, Registry};

impl Registry {
    pub(super) fn announce(
        &mut self,
        now: Instant,
        src: SocketAddr,
        info: &PeerInfo,
        files: Vec<FileEntry>,
    ) -> ResponseBody {
        let max_name = self.config.limits.name_len.min(MAX_NAME_LEN);
        if files
            .iter()
            .any(|f| f.name.is_empty() || f.name.len() > max_name)
        {
            return ResponseBody::Error {
                code: ErrorCode::BadName,
            };
        }
        if files.iter().any(|f| !printable_name(&f.name)) {
            return ResponseBody::Error {
                code: ErrorCode::UnprintableName,
            };
        }
        let key = peer_addr(src, info);
        if key.ip() != src.ip() && !self.advertise_ok(now, info) {
            return ResponseBody::Error {
                code: ErrorCode::BadAdvertise,
            };
        }
        if let Some(p) = self.peers.get(&key) {
            if p.owner != src {
                // Another source registered this address. It keeps it while it heartbeats; once
                // it has missed one (a seeder restarted on a new socket), the address is free.
                let grace = self.config.interval + self.config.interval / 2;
                if now.saturating_duration_since(p.last_seen) <= grace {
                    self.count(now, |t| t.not_owner += 1);
                    return ResponseBody::Error {
                        code: ErrorCode::NotOwner,
                    };
                }
                self.remove_peer(key, "replaced by a new registration");
            }
        }
        let full = ResponseBody::Error {
            code: ErrorCode::Full,
        };
        let source = source_of(src.ip());
        if !self.peers.contains_key(&key) {
            if !self.room_for_peer(source) {
                return full;
            }
            self.adjust(source, |l| l.peers += 1);
            tracing::info!(peer = %key, "peer registered");
            self.peers.insert(
                key,
                Peer {
                    addr: key,
                    owner: src,
                    last_seen: now,
                    files: HashSet::new(),
                },
            );
            self.generation += 1;
            let due = now + self.config.peer_timeout;
            self.next_sweep = Some(self.next_sweep.map_or(due, |t| t.min(due)));
        }
        let (files_per_peer, total_files) = (
            self.config.limits.files_per_peer,
            self.config.limits.total_files,
        );
        let peer = self.peers.get_mut(&key).expect("inserted above");
        peer.last_seen = now;
        let mut added = 0;
        let mut result = self.ack();
        for f in files {
            let peer = self.peers.get(&key).expect("inserted above");
            let new_for_peer = !peer.files.contains(&f.id);
            if new_for_peer
                && (peer.files.len() >= files_per_peer
                    || !self.room_for_registration(source)
                    || !self.room_in_file(f.id, source))
            {
                result = full;
                break;
            }
            if !self.files.contains_key(&f.id) && !self.room_for_file(source) {
                result = full;
                break;
            }
            let known_files = self.files.len();
            let peer = self.peers.get_mut(&key).expect("inserted above");
            let record = match self.files.get_mut(&f.id) {
                Some(r) => r,
                None if known_files >= total_files => {
                    result = full;
                    break;
                }
                None => self.files.entry(f.id).or_insert(FileRecord::new(f.size)),
            };
            let change = record.set(key, &f.name, f.size, f.have);
            if change.added || change.completeness || change.old_display.is_some() {
                self.generation += 1;
            }
            if change.added {
                added += 1;
                self.registrations += 1;
                peer.files.insert(f.id);
                self.adjust(source, |l| l.registrations += 1);
                // `?`: a name is a peer's string; quoted and escaped, it cannot forge log lines
                // or send escape sequences to the operator's terminal.
                tracing::info!(peer = %key, file = %f.id.short(), name = ?f.name, "file registered");
            }
            self.reindex(f.id, change.old_display);
        }
        self.count(now, |t| t.registrations += added);
        result
    }
}
