//! A shared folder on disk: walking it into entries (symbolic links and special files skipped,
//! with a note each), opening its files strictly beneath its root, hashing all of them on every
//! core, and the few open descriptors that serve its chunks.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use shoal_proto::manifest::{chunk_count, ChunkHash};
use shoal_proto::relpath::RelPath;
use shoal_proto::sha256;

use super::hash_chunks;
use super::shared::Snapshot;

/// Opens `path` beneath the folder open as `root`: never through a symbolic link, never outside
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, one system call whatever the depth).
pub fn open_beneath(root: &File, path: &str, flags: OFlags, mode: u32) -> io::Result<File> {
    let fd = rustix::fs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(mode),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok(File::from(fd))
}

/// Opens a folder as a root for [`open_beneath`] (not through a symbolic link).
pub fn open_root(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// What a walk found: files and empty folders by relative path, sorted, and a note for
/// everything skipped.
#[derive(Debug, Default)]
pub struct Walk {
    pub entries: Vec<Walked>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    pub path: RelPath,
    /// `None` for an empty folder; the size and executable bit of a file.
    pub file: Option<(u64, bool)>,
}

/// Walks the folder at `root` without following symbolic links. Symbolic links, special files
/// (sockets, FIFOs, devices) and names a manifest cannot carry (not UTF-8, control characters)
/// are skipped with a note; a folder left with nothing in it is an empty folder.
pub fn walk(root: &Path) -> io::Result<Walk> {
    let mut walk = Walk::default();
    walk_into(root, "", &mut walk)?;
    walk.entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(walk)
}

fn walk_into(dir: &Path, prefix: &str, walk: &mut Walk) -> io::Result<bool> {
    let mut any = false;
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let shown = item.path();
        let Some(name) = item.file_name().to_str().map(str::to_string) else {
            walk.notes.push(format!(
                "skipped {}: its name is not UTF-8",
                shown.display()
            ));
            continue;
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = match RelPath::new(rel.clone()) {
            Ok(p) => p,
            Err(why) => {
                let shown = shoal_proto::names::printable(&rel);
                walk.notes.push(format!("skipped {shown}: the path {why}"));
                continue;
            }
        };
        // `DirEntry::file_type` does not follow a symbolic link.
        let kind = item.file_type()?;
        if kind.is_symlink() {
            walk.notes.push(format!(
                "skipped the symbolic link {} (links are not followed)",
                shown.display()
            ));
        } else if kind.is_dir() {
            if !walk_into(&item.path(), path.as_str(), walk)? {
                walk.entries.push(Walked { path, file: None });
            }
            any = true;
        } else if kind.is_file() {
            let meta = item.metadata()?;
            let exec = meta.permissions().mode() & 0o100 != 0;
            walk.entries.push(Walked {
                path,
                file: Some((meta.len(), exec)),
            });
            any = true;
        } else {
            walk.notes.push(format!(
                "skipped {}: not a regular file (a socket, FIFO or device)",
                shown.display()
            ));
        }
    }
    Ok(any)
}

/// One file of a tree to hash: its path, and the size the walk saw.
pub struct ToHash<'a> {
    pub path: &'a RelPath,
    pub size: u64,
}

/// Why hashing one file of a tree failed.
#[derive(Debug)]
pub enum HashTreeError {
    Io(String, io::Error),
    /// The file changed while it was read (or is no longer what the walk saw).
    Changed(String),
}

/// Files up to this many chunks are hashed whole by one thread, many files at once; larger
/// ones one at a time on every core ([`hash_chunks`]): ten thousand 4 KiB files must not cost ten
/// thousand rounds of starting threads.
const SMALL_CHUNKS: u64 = 4;

/// Hashes every file (opened beneath `root`), on all cores; each file's hashes and the snapshot
/// it was hashed under. `progress` grows by the bytes hashed; `stop` ends the work early.
pub fn hash_tree(
    root: &File,
    files: &[ToHash<'_>],
    chunk_size: u32,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> Result<Vec<(Vec<ChunkHash>, Snapshot)>, HashTreeError> {
    let small = |f: &ToHash<'_>| f.size <= SMALL_CHUNKS * u64::from(chunk_size);
    let mut out: Vec<Option<(Vec<ChunkHash>, Snapshot)>> = (0..files.len()).map(|_| None).collect();
    // The large files first, each on every core.
    for (i, f) in files.iter().enumerate().filter(|(_, f)| !small(f)) {
        out[i] = Some(hash_one(root, f, chunk_size, progress, stop)?);
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let failed: Mutex<Option<HashTreeError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= files.len() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if !small(&files[i]) {
                        continue;
                    }
                    match hash_one(root, &files[i], chunk_size, progress, stop) {
                        Ok(r) => mine.push((i, r)),
                        Err(e) => {
                            failed.lock().unwrap().get_or_insert(e);
                            next.store(files.len(), Ordering::Relaxed);
                        }
                    }
                }
                results.lock().unwrap().extend(mine);
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    if stop.load(Ordering::Relaxed) {
        return Err(HashTreeError::Io(
            String::new(),
            io::ErrorKind::Interrupted.into(),
        ));
    }
    for (i, r) in results.into_inner().unwrap() {
        out[i] = Some(r);
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every file hashed"))
        .collect())
}

fn hash_one(
    root: &File,
    f: &ToHash<'_>,
    chunk_size: u32,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(Vec<ChunkHash>, Snapshot), HashTreeError> {
    let name = || f.path.to_string();
    let io = |e: io::Error| HashTreeError::Io(name(), e);
    let file =
        open_beneath(root, f.path.as_str(), OFlags::RDONLY | OFlags::NONBLOCK, 0).map_err(io)?;
    let before = Snapshot::of(&file).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() || before.len != f.size {
        return Err(HashTreeError::Changed(name()));
    }
    let n = chunk_count(f.size, chunk_size).map_err(|e| io(io::Error::other(e)))?;
    let hashes = if u64::from(n) <= SMALL_CHUNKS {
        let mut data = vec![0u8; f.size as usize];
        file.read_exact_at(&mut data, 0)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => HashTreeError::Changed(name()),
                _ => io(e),
            })?;
        progress.fetch_add(f.size, Ordering::Relaxed);
        let mut hashes = Vec::with_capacity(n as usize);
        let mut chunks = data.chunks(chunk_size as usize);
        while let Some(a) = chunks.next() {
            match chunks.next() {
                Some(b) if a.len() == b.len() => {
                    let (ha, hb) = sha256::digest_pair(a, b);
                    hashes.extend([ha, hb]);
                }
                Some(b) => hashes.extend([sha256::digest(a), sha256::digest(b)]),
                None => hashes.push(sha256::digest(a)),
            }
        }
        hashes
    } else {
        hash_chunks(&file, f.size, chunk_size, progress, stop).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => HashTreeError::Changed(name()),
            _ => io(e),
        })?
    };
    if Snapshot::of(&file).map_err(io)? != before {
        return Err(HashTreeError::Changed(name()));
    }
    Ok((hashes, before))
}

/// How many descriptors of a tree's files stay open at once: enough for every connection serving
/// it to find its file open, far fewer than a folder of ten thousand files would take.
const OPEN_FILES: usize = 64;

/// A tree's root and a few of its files kept open, the least recently opened closed first.
pub struct OpenFiles {
    root: File,
    /// How files are opened: for reading only, or for writing (a download's folder), perhaps
    /// with `O_DIRECT`.
    access: OFlags,
    open: Mutex<Recent>,
}

/// Open files by entry, and the order they were opened in.
type Recent = (HashMap<u32, Arc<File>>, VecDeque<u32>);

impl OpenFiles {
    pub fn new(root: File) -> OpenFiles {
        OpenFiles::with_access(root, OFlags::RDONLY)
    }

    pub fn with_access(root: File, access: OFlags) -> OpenFiles {
        OpenFiles {
            root,
            access,
            open: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    pub fn root(&self) -> &File {
        &self.root
    }

    /// The file of entry `entry` at `path`, opened beneath the root if it is not open.
    pub fn get(&self, entry: u32, path: &RelPath) -> io::Result<Arc<File>> {
        self.get_or_create(entry, path, 0)
    }

    /// [`Self::get`], creating the file with `mode` if the access says `O_CREAT`. Only a regular
    /// file is opened: a FIFO planted in the folder would hang a blocking open on a runtime
    /// thread, so the open does not block and anything else is refused (a shared folder then
    /// withdraws the share, as for a changed file). A file opened for writing must also have one
    /// name: a hard link planted in the folder would send our writes into another file.
    pub fn get_or_create(&self, entry: u32, path: &RelPath, mode: u32) -> io::Result<Arc<File>> {
        if let Some(f) = self.open.lock().unwrap().0.get(&entry) {
            return Ok(f.clone());
        }
        let file = open_beneath(
            &self.root,
            path.as_str(),
            self.access | OFlags::NONBLOCK,
            mode,
        )?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file; refusing to open it"));
        }
        if self.access.intersects(OFlags::WRONLY | OFlags::RDWR) {
            if meta.nlink() != 1 {
                return Err(io::Error::other(
                    "a file with more than one name; refusing to write through it",
                ));
            }
            // Another user's file planted in our folder is not ours to fill.
            if meta.uid() != rustix::process::geteuid().as_raw() {
                return Err(io::Error::other(
                    "a file owned by another user; refusing to write through it",
                ));
            }
        }
        // Back to blocking I/O, as `fsafe::open_part` does.
        let flags = rustix::fs::fcntl_getfl(&file)?;
        rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
        let file = Arc::new(file);
        let mut open = self.open.lock().unwrap();
        let (map, order) = &mut *open;
        if map.insert(entry, file.clone()).is_none() {
            order.push_back(entry);
        }
        while order.len() > OPEN_FILES {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        Ok(file)
    }
}

/// The user executable bit as a file mode for a new file.
pub fn file_mode(executable: bool) -> u32 {
    if executable {
        0o777
    } else {
        0o666
    }
}

/// Whether a file's mode says executable (the owner's bit).
pub fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.mode() & 0o100 != 0
}
