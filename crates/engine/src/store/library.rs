//! The files a peer shares, by id, and the signal that tells the announcer to look again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use shoal_proto::tracker::FileEntry;
use shoal_proto::FileId;
use tokio::sync::Notify;

use super::SharedFile;

/// The files a peer shares, by id. Several names for the same bytes are one entry.
#[derive(Default)]
pub struct Library {
    files: RwLock<HashMap<FileId, Arc<SharedFile>>>,
    changed: Notify,
}

impl Library {
    pub fn new() -> Arc<Library> {
        Arc::new(Library::default())
    }

    pub fn add(&self, file: SharedFile) -> Arc<SharedFile> {
        let file = Arc::new(file);
        self.files
            .write()
            .unwrap()
            .entry(file.id)
            .or_insert_with(|| file.clone());
        self.changed.notify_waiters();
        file
    }

    pub fn get(&self, id: &FileId) -> Option<Arc<SharedFile>> {
        self.files
            .read()
            .unwrap()
            .get(id)
            .filter(|f| !f.is_withdrawn())
            .cloned()
    }

    /// What should be registered with the tracker now: every file not withdrawn.
    pub fn entries(&self) -> Vec<FileEntry> {
        let mut v: Vec<FileEntry> = self
            .files
            .read()
            .unwrap()
            .values()
            .filter(|f| !f.is_withdrawn())
            .map(|f| f.entry())
            .collect();
        v.sort_by_key(|e| e.id);
        v
    }

    /// Tells the announcer to look again (a file was added or withdrawn).
    pub fn touch(&self) {
        self.changed.notify_waiters();
    }

    /// Resolves at the next [`Library::add`] or [`Library::touch`] after this call (not after the
    /// first poll, so a change while the caller is busy is not lost).
    pub fn changed(&self) -> impl std::future::Future<Output = ()> + '_ {
        let mut notified = Box::pin(self.changed.notified());
        notified.as_mut().enable();
        notified
    }
}
