//! The files a peer shares, by id, complete or being downloaded, and the signal that tells the
//! announcer to look again.

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
        self.share(Arc::new(file))
    }

    /// Adds a file someone else holds too (a download adds the file it is writing).
    pub fn share(&self, file: Arc<SharedFile>) -> Arc<SharedFile> {
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

    /// Stops sharing `file` (a download that failed), if it is the one shared under its id.
    pub fn remove(&self, file: &Arc<SharedFile>) {
        let mut files = self.files.write().unwrap();
        if files.get(&file.id).is_some_and(|f| Arc::ptr_eq(f, file)) {
            files.remove(&file.id);
            drop(files);
            self.changed.notify_waiters();
        }
    }

    /// What should be registered with the tracker now: every file not withdrawn, complete or
    /// being downloaded.
    pub fn entries(&self) -> Vec<FileEntry> {
        self.vouched().into_iter().map(|(e, _)| e).collect()
    }

    /// Every file not withdrawn, with `None` if it is complete, or the bytes verified so far of a
    /// download in progress.
    pub fn vouched(&self) -> Vec<(FileEntry, Option<u64>)> {
        let mut v: Vec<(FileEntry, Option<u64>)> = self
            .files
            .read()
            .unwrap()
            .values()
            .filter(|f| !f.is_withdrawn())
            .map(|f| (f.entry(), f.partial_bytes()))
            .collect();
        v.sort_by_key(|(e, _)| e.id);
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
