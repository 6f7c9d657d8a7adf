//! The kernel's side: a `fuser::Filesystem` that forwards each request to [`CacheFs`] and maps
//! its error's [`ErrorKind`] to an errno ([`errno`]), and [`mount`], which serves a mount in
//! the calling thread until it is unmounted.
//!
//! Attributes are those of a Nix store: owned by root, directories and executables `0555`,
//! other files `0444`, symlinks `0777`, every time 1 s after the epoch. Store paths never
//! change, so the kernel may keep entries, attributes and file pages for [`TTL`].

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use cachecore::error::ErrorKind;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::fs::{Attr, CacheFs, FileKind, FsError};

/// How long the kernel may keep what it was told (store paths never change).
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// Worker threads answering the kernel.
const THREADS: usize = 8;

/// The errno for an error kind: `NotFound` → `ENOENT`, `Denied` → `EACCES`, `Unsupported` →
/// `EOPNOTSUPP`, anything else `EIO`.
///
/// ```
/// use cachecore::error::ErrorKind;
/// use cachecore_fuse::errno;
/// assert_eq!(errno(ErrorKind::NotFound), fuser::Errno::ENOENT);
/// assert_eq!(errno(ErrorKind::Corrupt), fuser::Errno::EIO);
/// ```
pub fn errno(kind: ErrorKind) -> Errno {
    match kind {
        ErrorKind::NotFound => Errno::ENOENT,
        ErrorKind::Denied => Errno::EACCES,
        ErrorKind::Unsupported => Errno::EOPNOTSUPP,
        _ => Errno::EIO,
    }
}

/// [`CacheFs`] for the kernel.
#[derive(Debug)]
struct Adapter {
    fs: CacheFs,
    /// The kernel opens files without asking (`FUSE_NO_OPEN_SUPPORT`, Linux 4.19): `open`
    /// answers `ENOSYS` once, and from then on the kernel keeps file pages across opens and
    /// sends no open or release for files — a store path's files never change, so there is
    /// nothing to ask. (Directories are still opened: the root grows as names are looked up,
    /// so only the directories inside store paths are cached, see `opendir`.)
    zero_message_open: bool,
    /// Files for the kernel's page cache, to the thread that hands them over (see `read`).
    pushes: std::sync::mpsc::SyncSender<Vec<(u64, bytes::Bytes)>>,
}

fn file_attr(a: &Attr) -> FileAttr {
    let (kind, perm, nlink) = match a.kind {
        FileKind::Directory => (FileType::Directory, 0o555, 2),
        FileKind::Regular if a.executable => (FileType::RegularFile, 0o555, 1),
        FileKind::Regular => (FileType::RegularFile, 0o444, 1),
        FileKind::Symlink => (FileType::Symlink, 0o777, 1),
    };
    let time = UNIX_EPOCH + Duration::from_secs(1);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind,
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

/// The errno for `e`; logs the errors a user should hear of (not a missing name).
fn fail(what: &str, e: &FsError) -> Errno {
    let kind = e.kind();
    if kind != ErrorKind::NotFound {
        tracing::warn!("{what}: {e}");
    }
    errno(kind)
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Larger kernel read-ahead for sequential readers (the kernel caps it).
        let _ = config.set_max_readahead(1 << 20);
        let offered = config.capabilities();
        // Entries come with their attributes (`ls -l` asks no lookup per entry), and symlink
        // targets are cached by the kernel like file pages.
        for wanted in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            if offered.contains(wanted) {
                let _ = config.add_capabilities(wanted);
            }
        }
        self.zero_message_open = offered.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(fail(&format!("lookup of {name:?}"), &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(fail("getattr", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        use std::os::unix::ffi::OsStrExt as _;
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(fail("readlink", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.zero_message_open {
            // Reads check the inode's kind and path as they come (`CacheFs::read`).
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.getattr(ino.0) {
            Ok(a) if a.kind == FileKind::Regular => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(fail("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => return reply.error(fail(&format!("read of inode {}", ino.0), &e)),
        }
        // A reader going through files in order: the next ones already in memory go into the
        // kernel's page cache (FUSE_NOTIFY_STORE), and are read from there without a request
        // each. Handed over by a thread of its own: storing into a page waits for a read of
        // that page in flight, which a worker must stay free to answer. Best effort: when
        // that thread is behind, this batch is dropped.
        let following = self.fs.following(ino.0, offset);
        if !following.is_empty() {
            let _ = self.pushes.try_send(following);
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(ino.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written. `ENOSYS` tells the kernel so for good: it sends no more
        // flushes, which would otherwise cost a round trip on every close.
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // A store path has no extended attributes. `ENOSYS` tells the kernel so for good: it
        // asks no more (`ls -l` asks for ACLs on every entry).
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            // The root lists the store paths looked up so far: read afresh at each open.
            Ok(_) if ino == INodeNo::ROOT => reply.opened(FileHandle(0), FopenFlags::empty()),
            // A directory in a store path never changes: the kernel keeps its entries.
            Ok(a) if a.kind == FileKind::Directory => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(fail("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(fail("readdir", &e)),
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (ino.0, FileType::Directory, OsStr::new("..")),
        ];
        let all = dots.into_iter().chain(entries.iter().map(|e| {
            let kind = match e.kind {
                FileKind::Directory => FileType::Directory,
                FileKind::Regular => FileType::RegularFile,
                FileKind::Symlink => FileType::Symlink,
            };
            (e.ino, kind, e.name.as_os_str())
        }));
        for (i, (ino, kind, name)) in all.enumerate().skip(offset as usize) {
            // The offset handed back is where the next call starts.
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.fs.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(fail("readdirplus", &e)),
        };
        // `.` and `..` come without attributes (the kernel looks them up itself): offsets 1
        // and 2, as in `readdir`.
        let dots = [(ino.0, OsStr::new(".")), (ino.0, OsStr::new(".."))];
        for (i, (ino, name)) in dots
            .into_iter()
            .chain(entries.iter().map(|e| (e.ino, e.name.as_os_str())))
            .enumerate()
            .skip(offset as usize)
        {
            let attr = match self.fs.getattr(ino) {
                Ok(a) => a,
                Err(e) => return reply.error(fail("readdirplus", &e)),
            };
            if reply.add(
                INodeNo(ino),
                i as u64 + 1,
                name,
                &TTL,
                &file_attr(&attr),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }
}

/// Detaches a mount from the directory tree at once, even with files open in it (`umount -l`):
/// readers holding files see them fail once the serving process exits.
#[derive(Debug, Clone)]
pub struct MountHandle {
    mountpoint: PathBuf,
}

impl MountHandle {
    /// Lazily unmounts (`MNT_DETACH`); the serving [`mount`] call returns once the kernel lets
    /// go of the filesystem (at once when nothing in it is open).
    pub fn unmount(&self) -> io::Result<()> {
        rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH)
            .map_err(io::Error::from)
    }
}

/// Allocations of at least this size get their own mapping, returned to the system when freed.
const MMAP_THRESHOLD: usize = 256 << 10;

/// Makes the process's resident memory follow what the mount holds. The frame cache keeps and
/// drops decompressed frames of a few MiB each, from several threads at once; glibc's default
/// raises its mmap threshold to the size of the first such block freed, and from then on
/// serves them from per-thread heaps that keep the freed space: `--memory 256M` measured 305
/// MiB of peak RSS reading a 600 MiB tree (`benches/mount.sh`). With the threshold fixed,
/// each frame is its own mapping, unmapped when dropped (the measured peak fell under 256 MiB).
/// Process-wide, so done here, where the process becomes a mount, and not in the library.
fn bound_heap_growth() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; it may be called at any time and
        // from any thread, and it reads no memory of ours.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) };
        TRIM_AFTER_TREES.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Set once the process is a mount ([`bound_heap_growth`]).
static TRIM_AFTER_TREES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called by [`CacheFs`] after it read a store path's listing into a tree. Reading a listing
/// allocates many small blocks for a moment (the JSON, its parse, the tree being built): about
/// 32 MiB for a 4 MB listing of 55,000 entries, freed at once but kept by glibc's heaps, which
/// the mount's `--memory` then did not cover (`benches/mount.sh`: a peak of 270 MiB at 256 MiB).
/// In a mount process, hands those pages back to the system; elsewhere (a library user's
/// process, tests) does nothing.
pub(crate) fn after_tree_loaded() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if TRIM_AFTER_TREES.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: malloc_trim only returns free heap pages to the system; it may be called at
        // any time and from any thread.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::malloc_trim(0) };
    }
}

/// Mounts `fs` read-only at `mountpoint` and serves it in the calling thread (with worker
/// threads) until it is unmounted (`fusermount3 -u`, `umount`, or [`MountHandle::unmount`]).
/// `mounted` is called once the mount is in place, with a handle to end it (from a signal
/// handler, say).
pub fn mount(
    fs: CacheFs,
    mountpoint: &Path,
    source: &str,
    mounted: impl FnOnce(MountHandle),
) -> io::Result<()> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(source.to_owned()),
        MountOption::Subtype("cachecore".to_owned()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::Exec,
    ];
    config.n_threads = Some(THREADS);
    bound_heap_growth();
    let (pushes, pushed) = std::sync::mpsc::sync_channel::<Vec<(u64, bytes::Bytes)>>(4);
    let adapter = Adapter {
        fs,
        zero_message_open: false,
        pushes,
    };
    let session = fuser::Session::new(adapter, mountpoint, &config)?;
    let notifier = session.notifier();
    // Ends when the session (and with it the adapter's sender) is gone.
    std::thread::Builder::new()
        .name("cachecore-push".into())
        .spawn(move || {
            for batch in pushed {
                for (ino, contents) in batch {
                    // The kernel refuses a file it has not looked up (or has forgotten).
                    let _ = notifier.store(INodeNo(ino), 0, &contents);
                }
            }
        })?;
    mounted(MountHandle {
        mountpoint: mountpoint.to_owned(),
    });
    session.run()
}
