//! A local directory read as a backend of its own: the one way cachecore reads objects from a
//! `file://` cache or a directory. Writes, deletes, renames and listings go through
//! object_store's `LocalFileSystem` (staging files renamed into place, hard links for
//! create-only); every read of an object — GET, ranged GET, HEAD, the bytes of a narinfo —
//! comes here.
//!
//! - **Beneath the root only.** A key is opened with `openat2(RESOLVE_BENEATH)`: the kernel
//!   refuses any resolution that leaves the directory, symbolic links included. Where it cannot
//!   say yes (no such file, a link out, a kernel without `openat2`) the key is confined the slow
//!   way ([`LocalDir::confine`]), which says why, on the blocking pool.
//! - **Never waits on a file that is no object.** Objects are opened `O_NONBLOCK` and `fstat`ed:
//!   a FIFO, socket or device at a key is refused ([`StoreError::NotRegularFile`]) before any
//!   read, so no thread waits forever for a writer; a HEAD `stat`s through an `O_PATH` handle,
//!   which opens nothing. A directory is no object (absent, as a prefix is on every backend).
//! - **Few system calls, on the calling task when the page cache has the bytes.** A narinfo is
//!   opened, described and read right on the task (`preadv2(RWF_NOWAIT)`, which fails rather
//!   than wait for the disk); anything else takes one trip to the blocking pool. Bodies are read
//!   in [`FILE_CHUNK`] chunks (object_store's local GET takes two trips and reads 8 KiB at a
//!   time, which made `serve` a third as fast as nginx on NARs).
//! - **Kept objects** ([`super::hot`]): a small object's bytes are used again while one `stat`
//!   finds the very file they were read from, unchanged.
//! - **The same ETag as object_store's local backend**, so objects listed (through
//!   object_store) and read (here) agree; `etag_is_object_stores` checks it stays so.

use std::io;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::error::{convert, ErrorContext, Op, StoreError};
use super::hot::{FileId, HotObjects, Validity};
use super::object::{Object, ObjectInfo, ReadRange};

/// How an object is opened. `NONBLOCK`: a FIFO put at an object's key would otherwise make the
/// open wait for a writer, forever, on whatever thread made it (on a regular file the flag
/// changes nothing); the file is then `fstat`ed and refused unless it is a regular file
/// ([`LocalDir::check_regular`]), so no read waits on it either. `NOCTTY`: a terminal at a key
/// does not become the process's.
const OPEN_OBJECT: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::CLOEXEC)
    .union(rustix::fs::OFlags::NOCTTY)
    .union(rustix::fs::OFlags::NONBLOCK);

/// Bytes read from a local file per chunk of a GET's body.
const FILE_CHUNK: u64 = 256 * 1024;

/// A local object (or range) up to this size is read on the calling task, not in the blocking
/// pool (see [`LocalDir::get`]): narinfos, listings of small paths, seek tables.
const INLINE_READ: u64 = 64 * 1024;

/// A local directory opened as a cache.
pub(crate) struct LocalDir {
    /// The directory, canonical: no key may reach outside it.
    root: PathBuf,
    /// The directory itself, open (`O_PATH`): objects are opened beneath it. `None` if it could
    /// not be opened so (then every read takes the slow way).
    root_fd: Option<OwnedFd>,
    /// The store's URL, for errors.
    cx: ErrorContext,
}

/// A local file's I/O failure as object_store reports its own.
pub(crate) fn local_error(
    e: impl std::error::Error + Send + Sync + 'static,
) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    }
}

impl LocalDir {
    /// Opens the directory `dir` of the store `url` (creating it if needed when `create`, else
    /// [`StoreError::NoStore`] if it is not there), and object_store's backend for the writes
    /// and listings.
    pub(crate) fn open(
        url: &str,
        dir: &Path,
        create: bool,
    ) -> Result<(LocalDir, object_store::local::LocalFileSystem), StoreError> {
        if create {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::BadUrl {
                url: url.to_owned(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        } else if !dir.is_dir() {
            if dir.exists() {
                return Err(StoreError::BadUrl {
                    url: url.to_owned(),
                    reason: format!("{} is not a directory", dir.display()),
                });
            }
            let advice = match super::StoreUrl::likely_meant(url) {
                Some(meant) => format!("did you mean {meant}?"),
                None => "`cachecore init` creates a cache".to_owned(),
            };
            return Err(StoreError::NoStore {
                url: url.to_owned(),
                dir: dir.display().to_string(),
                advice,
            });
        }
        let root = std::fs::canonicalize(dir).map_err(|e| StoreError::BadUrl {
            url: url.to_owned(),
            reason: format!("cannot resolve directory {}: {e}", dir.display()),
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&root).map_err(|e| {
            StoreError::Setup {
                url: url.to_owned(),
                source: Box::new(e),
            }
        })?;
        let root_fd = rustix::fs::open(
            &root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        let cx = ErrorContext {
            url: url.to_owned(),
            ..ErrorContext::default()
        };
        Ok((LocalDir { root, root_fd, cx }, store))
    }

    /// The directory, canonical.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn err(&self, op: Op, key: &str, e: io::Error) -> StoreError {
        convert(&self.cx, op, key, local_error(e))
    }

    /// Refuses a key that resolves outside the directory through a symbolic link (an object, or
    /// a directory on the way to it): a cache is untrusted input, and reading
    /// `nar/x -> /etc/shadow` or writing through `nar -> /` must not happen. The deepest part
    /// of the key that exists is resolved, so writes are checked as well as reads.
    pub(crate) fn confine(&self, key: &str) -> Result<(), StoreError> {
        let root = &self.root;
        let mut probe = root.join(key);
        let resolved = loop {
            match std::fs::canonicalize(&probe) {
                Ok(p) => break Some(p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A dangling symlink is refused too: it points somewhere we cannot check.
                    if probe.symlink_metadata().is_ok() {
                        break None;
                    }
                    if !probe.pop() || !probe.starts_with(root) {
                        return Ok(());
                    }
                }
                // Not a directory on the way, permission denied, ...: the operation itself
                // reports it.
                Err(_) => return Ok(()),
            }
        };
        match resolved {
            Some(p) if p.starts_with(root) => Ok(()),
            _ => Err(StoreError::OutsideRoot {
                url: self.cx.url.clone(),
                key: key.to_owned(),
            }),
        }
    }

    /// `openat2` of `key` beneath the root with `flags`: the kernel refuses any resolution
    /// that leaves the directory, symbolic links included, which is what
    /// [`confine`](Self::confine) checks in several calls. `None` when it cannot say yes (no
    /// such file, a link out of the directory, a kernel without `openat2`): then the caller
    /// confines and opens the slow way, which says why.
    fn open_beneath(&self, key: &str, flags: rustix::fs::OFlags) -> Option<OwnedFd> {
        use rustix::fs::{openat2, Mode, ResolveFlags};
        let root = self.root_fd.as_ref()?;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        openat2(root, key, flags, Mode::empty(), resolve).ok()
    }

    /// Whether the file `st` describes, at `key`, is an object: `true` for a regular file,
    /// `false` for a directory (a prefix, absent as an object on every backend), and
    /// [`StoreError::NotRegularFile`] for anything else.
    fn check_regular(&self, key: &str, st: &rustix::fs::Stat) -> Result<bool, StoreError> {
        use rustix::fs::FileType;
        let what = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => return Ok(true),
            FileType::Directory => return Ok(false),
            FileType::Fifo => "FIFO",
            FileType::Socket => "socket",
            FileType::CharacterDevice => "character device",
            FileType::BlockDevice => "block device",
            FileType::Symlink => "symbolic link",
            FileType::Unknown => "file of unknown type",
        };
        Err(StoreError::NotRegularFile {
            url: self.cx.url.clone(),
            key: key.to_owned(),
            what,
        })
    }

    /// The object at `key`, or the bytes `range` of it (not empty: the caller answers those);
    /// `None` if there is none. A whole object kept in `hot` is answered from there while its
    /// file is unchanged; a small one read whole is kept.
    ///
    /// A file the kernel opens beneath the root in one call is opened, described and — up to
    /// [`INLINE_READ`] bytes, a narinfo's size, if the page cache has them — read right here: a
    /// few system calls on the page cache cost less than the trip to the blocking pool and
    /// back, which was most of what `serve` spent on a narinfo. Anything else takes one trip to
    /// the blocking pool: the key confined the slow way, the file opened, described and, for a
    /// range of at most [`FILE_CHUNK`] bytes, read.
    pub(crate) async fn get(
        self: &Arc<Self>,
        key: &str,
        range: ReadRange,
        hot: &HotObjects,
    ) -> Result<Option<Object>, StoreError> {
        if range == ReadRange::All {
            if let Some(kept) = self.kept(key, hot) {
                return Ok(Some(kept));
            }
        }
        let read_since = hot.generation();
        let opened = match self.open_beneath(key, OPEN_OBJECT) {
            Some(fd) => self.describe(std::fs::File::from(fd), key, &range, true)?,
            None => {
                let this = self.clone();
                let owned_key = key.to_owned();
                tokio::task::spawn_blocking(move || this.open_slowly(&owned_key, &range))
                    .await
                    .map_err(|e| convert(&self.cx, Op::Read, key, local_error(e)))??
            }
        };
        let Some(LocalFile {
            meta,
            range,
            file,
            first,
            id,
            settled,
        }) = opened
        else {
            return Ok(None);
        };
        let body = match first {
            Some(bytes) => {
                if range.start == 0 && range.end == meta.size && settled {
                    hot.insert(read_since, Validity::File(id), meta.clone(), &bytes);
                }
                stream::once(async move { Ok(bytes) }).boxed()
            }
            None => {
                let cx = self.cx.clone();
                let owned_key = key.to_owned();
                file_chunks(file, range.clone())
                    .map_err(move |e| convert(&cx, Op::Read, &owned_key, e))
                    .boxed()
            }
        };
        Ok(Some(Object { meta, range, body }))
    }

    /// [`get`](Self::get)'s open when `openat2` could not: on the blocking pool, the key
    /// confined, the file opened without blocking and described.
    fn open_slowly(&self, key: &str, range: &ReadRange) -> Result<Option<LocalFile>, StoreError> {
        self.confine(key)?;
        let path = self.root.join(key);
        let file = match rustix::fs::open(&path, OPEN_OBJECT, rustix::fs::Mode::empty()) {
            Ok(fd) => std::fs::File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => {
                // A socket cannot be opened at all (ENXIO): say what is there.
                if let Ok(st) = rustix::fs::stat(&path) {
                    self.check_regular(key, &st)?;
                }
                return Err(self.err(Op::Read, key, e.into()));
            }
        };
        self.describe(file, key, range, false)
    }

    /// A kept object: the file at `key` is still the one its bytes were read from (one `stat`,
    /// not following a final symbolic link).
    fn kept(&self, key: &str, hot: &HotObjects) -> Option<Object> {
        let root = self.root_fd.as_ref()?;
        let (meta, bytes) = hot.get(key, |validity| match validity {
            Validity::File(id) => {
                rustix::fs::statat(root, key, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileId::of(&st) == *id)
            }
            Validity::Until(_) => false,
        })?;
        Some(Object::whole(meta, bytes))
    }

    /// An open file's metadata and the bytes of `range` it covers, and those bytes themselves
    /// when they are few: on the calling task (`on_task`), at most [`INLINE_READ`] bytes and
    /// only from the page cache; on the blocking pool, at most [`FILE_CHUNK`]. `None` for a
    /// directory.
    fn describe(
        &self,
        file: std::fs::File,
        key: &str,
        range: &ReadRange,
        on_task: bool,
    ) -> Result<Option<LocalFile>, StoreError> {
        let read_up_to = if on_task { INLINE_READ } else { FILE_CHUNK };
        let read_err = |e: io::Error| self.err(Op::Read, key, e);
        let st = rustix::fs::fstat(&file).map_err(|e| read_err(e.into()))?;
        if !self.check_regular(key, &st)? {
            return Ok(None);
        }
        let id = FileId::of(&st);
        // Before the bytes are read: a change after this shows in the file's times.
        let settled = id.settled();
        let meta = info_of(key, &st);
        let size = meta.size;
        let bytes = match range {
            ReadRange::All => 0..size,
            ReadRange::Bounded(r) if r.start < size => r.start..r.end.min(size),
            ReadRange::From(o) if *o < size => *o..size,
            ReadRange::Last(n) => size.saturating_sub(*n)..size,
            _ => {
                return Err(StoreError::RangeNotSatisfiable {
                    url: self.cx.url.clone(),
                    key: key.to_owned(),
                    range: range
                        .to_get_range()
                        .map_or_else(String::new, |r| r.to_string()),
                })
            }
        };
        let len = bytes.end - bytes.start;
        let first = if len <= read_up_to {
            let mut buf = vec![0u8; len as usize];
            if on_task {
                // Only what the page cache holds.
                read_cached(&file, &mut buf, bytes.start).then(|| Bytes::from(buf))
            } else {
                use std::os::unix::fs::FileExt as _;
                file.read_exact_at(&mut buf, bytes.start)
                    .map_err(read_err)?;
                Some(Bytes::from(buf))
            }
        } else {
            None
        };
        Ok(Some(LocalFile {
            meta,
            range: bytes,
            file,
            first,
            id,
            settled,
        }))
    }

    /// The metadata of the object at `key`, `None` if there is none: a `stat` through an
    /// `O_PATH` handle beneath the root (which opens nothing, so never waits on a FIFO), else
    /// the key confined the slow way and the file `stat`ed on the blocking pool. What is not a
    /// regular file is refused as [`get`](Self::get) refuses it.
    pub(crate) async fn head(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<Option<ObjectInfo>, StoreError> {
        let path_only = rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC;
        if let Some(st) = self
            .open_beneath(key, path_only)
            .and_then(|fd| rustix::fs::fstat(&fd).ok())
        {
            return Ok(self.check_regular(key, &st)?.then(|| info_of(key, &st)));
        }
        let this = self.clone();
        let owned_key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let key = owned_key.as_str();
            this.confine(key)?;
            match rustix::fs::stat(this.root.join(key)) {
                Ok(st) => Ok(this.check_regular(key, &st)?.then(|| info_of(key, &st))),
                Err(rustix::io::Errno::NOENT) => Ok(None),
                Err(e) => Err(this.err(Op::Stat, key, e.into())),
            }
        })
        .await
        .map_err(|e| convert(&self.cx, Op::Stat, key, local_error(e)))?
    }

    /// `fsync`s the object at `key` and the directories from it up to the root (a rename or a
    /// new file is durable only once its directory is).
    pub(crate) async fn sync(self: &Arc<Self>, key: &str) -> Result<(), StoreError> {
        let root = self.root.clone();
        let file = root.join(key);
        let result = tokio::task::spawn_blocking(move || -> io::Result<()> {
            // Not blocking on a FIFO put in the object's place since it was written.
            let fd = rustix::fs::open(&file, OPEN_OBJECT, rustix::fs::Mode::empty())?;
            std::fs::File::from(fd).sync_all()?;
            let mut dir = file.parent();
            while let Some(d) = dir {
                std::fs::File::open(d)?.sync_all()?;
                if d == root {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await;
        let e = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(join) => io::Error::other(join.to_string()),
        };
        Err(StoreError::Durability {
            url: self.cx.url.clone(),
            key: key.to_owned(),
            source: e,
        })
    }
}

/// A local file opened for a GET ([`LocalDir::describe`]).
struct LocalFile {
    meta: ObjectInfo,
    /// The bytes of the file asked for.
    range: Range<u64>,
    file: std::fs::File,
    /// Those bytes, when they were read already.
    first: Option<Bytes>,
    id: FileId,
    /// Whether the file was old enough to keep its bytes, when it was described.
    settled: bool,
}

/// What a local file's `stat` says as object metadata, with the ETag object_store's local
/// backend gives the same file (so listings, HEADs and GETs agree).
// The nanosecond fields are `u64` here and `i64` on some targets.
#[allow(clippy::unnecessary_cast)]
fn info_of(key: &str, st: &rustix::fs::Stat) -> ObjectInfo {
    let size = st.st_size as u64;
    // As std's `Metadata::modified` (which object_store's HEAD uses for the ETag), with a
    // time before 1970 read as 1970.
    let modified = if st.st_mtime < 0 {
        SystemTime::UNIX_EPOCH
    } else {
        let nanos = std::time::Duration::from_nanos(st.st_mtime_nsec as u64);
        std::time::Duration::from_secs(st.st_mtime as u64)
            .checked_add(nanos)
            .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let micros = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let inode = st.st_ino;
    ObjectInfo {
        key: key.to_owned(),
        size,
        last_modified: modified,
        e_tag: Some(format!("\"{inode:x}-{micros:x}-{size:x}\"")),
        version: None,
        content_encoding: None,
    }
}

/// Fills `buf` from `file` at `pos` only if the page cache holds all of it (`preadv2` with
/// `RWF_NOWAIT`, which fails rather than wait for the disk): `true` when it did. Reading cached
/// bytes on the calling task is what nginx does with `sendfile`, and costs less than a trip to
/// the blocking pool; a read that would wait for the disk is left to the pool.
fn read_cached(file: &std::fs::File, buf: &mut [u8], pos: u64) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let read = rustix::io::preadv2(
            file,
            &mut [io::IoSliceMut::new(&mut buf[done..])],
            pos + done as u64,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        match read {
            Ok(n) if n > 0 => done += n,
            // The end of the file (the pool's read says so), not cached, or unsupported.
            _ => return false,
        }
    }
    true
}

/// The bytes `range` of a local file as a stream of [`FILE_CHUNK`]-sized chunks, each read on
/// the calling task when the page cache holds it ([`read_cached`]), else with `pread` on the
/// blocking pool. A file that ends early is an error, never a short body. (Also the body of a
/// file object_store hands out, from a `LocalFileSystem` a caller built.)
pub(crate) fn file_chunks(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let file = Arc::new(file);
    stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let len = (end - pos).min(FILE_CHUNK) as usize;
            let mut buf = vec![0u8; len];
            if read_cached(&file, &mut buf, pos) {
                return Ok(Some((Bytes::from(buf), pos + len as u64)));
            }
            let chunk = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, pos).map(|()| buf)
            })
            .await
            .map_err(local_error)?
            .map_err(local_error)?;
            Ok(Some((Bytes::from(chunk), pos + len as u64)))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt as _;

    /// The ETag and time of a file as read here are what object_store's local backend says of
    /// the same file (its format is private to it, so a change there shows here first): the
    /// listing comes from object_store, reads from here, and `serve` compares the two.
    #[tokio::test]
    async fn etag_is_object_stores() {
        let dir = tempfile::tempdir().unwrap();
        let (local, store) = LocalDir::open("test://", dir.path(), true).unwrap();
        let local = Arc::new(local);
        let files = [("a.narinfo", 10usize), ("nar/b.nar", 300_000), ("empty", 0)];
        for (key, size) in files {
            let path = dir.path().join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![7u8; size]).unwrap();
        }
        // A time with microseconds, and one before 1970.
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join("a.narinfo"))
            .unwrap();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        f.set_modified(t).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join("empty"))
            .unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(86_400))
            .unwrap();
        for (key, _) in files {
            let theirs = store.head(&key.into()).await.unwrap();
            let ours = local.head(key).await.unwrap().unwrap();
            assert_eq!(ours.e_tag, theirs.e_tag, "{key}");
            assert_eq!(ours.size, theirs.size, "{key}");
            let got = local
                .get(key, ReadRange::All, &HotObjects::default())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.meta, ours, "{key}: a GET and a HEAD agree");
            if key != "empty" {
                assert_eq!(
                    ours.last_modified,
                    SystemTime::from(theirs.last_modified),
                    "{key}"
                );
            }
        }
    }
}
