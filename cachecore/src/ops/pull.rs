//! `pull`: download one store path from a cache, check its hashes and signatures, unpack it.
//!
//! What `pull` trusts and what it creates:
//! - the narinfo must be the one of the path asked for (identity, checked by the store), signed
//!   by a trusted key unless the caller opts out, and its NAR must match it (FileSize, FileHash,
//!   NarSize, NarHash; reading stops at the declared sizes, so a decompression bomb costs at
//!   most NarSize bytes of disk);
//! - the tree is unpacked inside a staging directory created exclusively (`mkdir`, which fails
//!   if the name exists) under a name no one else uses: `.<DEST name>.cachecore-pull-<pid>-<random>`,
//!   holding a marker file with the pid of the pull that owns it. Only that directory is ever
//!   removed; a pre-existing file or directory of any other name is never touched;
//! - staging directories left by killed pulls (their marker names a pid that no longer runs)
//!   are recognised and removed by the next pull to a sibling of the same DEST;
//! - the tree is moved to DEST with `renameat2(RENAME_NOREPLACE)`, so a DEST that appeared
//!   while the pull ran (even an empty directory, which a plain `rename` silently replaces) is an
//!   error ([`OpError::DestinationExists`]), never overwritten. On file systems without that
//!   flag, a file is moved with `link` + `unlink` (which also never replace) and a directory
//!   with a check followed by `rename` (the only window left: an empty directory created
//!   between the two calls).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::browse::{narinfo, with_nar};
use super::{OpError, Progress};
use crate::nar;
use crate::signing::PublicKey;
use crate::store::BinaryCache;
use crate::store_path::StorePath;

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Keys whose signature makes a path trusted; at least one is required unless
    /// `check_signatures` is false.
    pub trusted_keys: Vec<PublicKey>,
    pub check_signatures: bool,
}

/// Checks that `info` carries a signature by one of `keys` ([`OpError::Untrusted`] if not).
///
/// ```
/// use cachecore::{error::ErrorKind, ops, signing::SecretKey};
/// use cachecore::hash::{Hash, HashAlgo};
/// use cachecore::narinfo::NarInfo;
/// use cachecore::store_path::{StoreDir, StorePath};
/// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
/// let mut info = NarInfo::new(StoreDir::default(), path, "nar/x.nar".into(),
///     Hash::digest(HashAlgo::Sha256, b"nar"), 3);
/// let ours = SecretKey::generate("cache.example.org-1").unwrap();
/// info.sign(&ours).unwrap();
/// assert!(ops::check_trusted(&info, &[ours.public_key()]).is_ok());
/// let theirs = SecretKey::generate("elsewhere-1").unwrap().public_key();
/// let e = ops::check_trusted(&info, &[theirs]).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::Untrusted);
/// ```
pub fn check_trusted(info: &crate::narinfo::NarInfo, keys: &[PublicKey]) -> Result<(), OpError> {
    if info.valid_signatures(keys).next().is_some() {
        return Ok(());
    }
    let names = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    Err(OpError::Untrusted {
        path: info.store_dir.full_path(&info.store_path),
        found: names({
            // Key names are the cache's text: a few, each cut short.
            const SHOWN: usize = 5;
            let mut shown: Vec<String> = info
                .signatures
                .iter()
                .take(SHOWN)
                .map(|s| crate::untrusted::excerpt(s.split(':').next().unwrap_or("")))
                .collect();
            if info.signatures.len() > SHOWN {
                shown.push(format!("and {} more", info.signatures.len() - SHOWN));
            }
            shown
        }),
        trusted: names(keys.iter().map(|k| k.name().to_owned()).collect()),
    })
}

/// Downloads `path` from `cache` and unpacks it at `dest`, which must not exist. Nothing is left
/// at `dest` unless every check passed (see the [module docs](self)). `progress` hears of the
/// one path, its NAR bytes as they are unpacked, and its end.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use cachecore::ops::{self, NoProgress, PullOptions, PushOptions};
/// use cachecore::{signing::SecretKey, store::BinaryCache, store_path::StoreDir};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::create_dir(src.path().join("bin")).unwrap();
/// # std::fs::write(src.path().join("bin/hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// let key = SecretKey::generate("cache.example.org-1").unwrap();
/// let pull_opts = PullOptions { trusted_keys: vec![key.public_key()], check_signatures: true };
/// let push_opts = PushOptions { signers: vec![Arc::new(key)], ..PushOptions::default() };
/// let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello", &push_opts,
///     Arc::new(NoProgress)).await.unwrap();
/// let tmp = tempfile::tempdir().unwrap();
/// let dest = tmp.path().join("hello"); // must not exist yet
/// ops::pull(&cache, &path, &dest, &pull_opts, Arc::new(NoProgress)).await.unwrap();
/// assert_eq!(std::fs::read_to_string(dest.join("bin/hello")).unwrap(), "hello, world\n");
/// # });
/// ```
pub async fn pull(
    cache: &BinaryCache,
    path: &StorePath,
    dest: &Path,
    opts: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<(), OpError> {
    if dest.symlink_metadata().is_ok() {
        return Err(OpError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let info = narinfo(cache, path).await?;
    if opts.check_signatures {
        check_trusted(&info, &opts.trusted_keys)?;
    }
    let staging = Staging::create(dest)?;
    let name = info.store_dir.full_path(&info.store_path);
    let tree = staging.tree();
    let guard = StagingGuard::new(staging.dir.clone());
    let dropped = guard.dropped.clone();
    progress.planned(1, info.nar_size, 0);
    let counting = progress.clone();
    let staging_dir = staging.dir.clone();
    let result = with_nar(cache, &info, move |nar| {
        let nar = CountingReader {
            inner: nar,
            progress: counting,
            unreported: 0,
        };
        nar::unpack(nar, &tree).map_err(|source| OpError::Unpack { path: name, source })?;
        // The pull was dropped while this thread unpacked: nobody will move the tree into
        // place or remove it but this thread (see StagingGuard).
        if dropped.load(std::sync::atomic::Ordering::SeqCst) {
            remove_tree(&staging_dir);
        }
        Ok(())
    })
    .await;
    guard.disarm();
    let moved = result.and_then(|()| {
        rename_no_replace(&staging.tree(), dest).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                OpError::DestinationExists {
                    path: dest.to_path_buf(),
                }
            } else {
                OpError::io(
                    format!("cannot move the unpacked tree to {}", dest.display()),
                    e,
                )
            }
        })
    });
    staging.remove();
    if moved.is_ok() {
        progress.path_done(&info.store_dir.full_path(&info.store_path));
    }
    moved
}

/// Reports the bytes read through it to a [`Progress`], about a MiB at a time.
struct CountingReader<R> {
    inner: R,
    progress: Arc<dyn Progress>,
    unreported: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.unreported += n as u64;
        if self.unreported >= 1 << 20 || (n == 0 && self.unreported > 0) {
            self.progress.bytes(std::mem::take(&mut self.unreported));
        }
        Ok(n)
    }
}

/// Removes the staging tree when a pull is dropped before it finished (as when a frontend stops
/// on a signal). The unpacking thread may still be running then: the guard marks the pull
/// dropped before removing the tree, and the thread checks the mark after creating it, so
/// whichever of the two comes second removes it.
struct StagingGuard {
    path: Option<PathBuf>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StagingGuard {
    fn new(path: PathBuf) -> Self {
        StagingGuard {
            path: Some(path),
            dropped: Default::default(),
        }
    }

    /// The pull goes on to move or remove the tree itself.
    fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            self.dropped
                .store(true, std::sync::atomic::Ordering::SeqCst);
            remove_tree(&path);
        }
    }
}

/// The marker file inside a staging directory: the pid of the pull that owns it.
const MARKER: &str = "cachecore-pull.pid";
/// What follows `.<name>` in a staging directory's name.
const INFIX: &str = ".cachecore-pull-";

/// A staging directory this pull created (and so may remove).
struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Creates `.<DEST name>.cachecore-pull-<pid>-<random>` beside `dest` with `mkdir` (never
    /// an existing directory), after removing the staging directories of dead pulls there.
    fn create(dest: &Path) -> Result<Staging, OpError> {
        use rand_core::RngCore as _;
        let name = dest
            .file_name()
            .ok_or_else(|| OpError::InvalidDestination {
                path: dest.to_path_buf(),
            })?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(INFIX);
        remove_dead_leftovers(&parent, &prefix);
        let pid = std::process::id();
        for _ in 0..16 {
            let mut candidate = prefix.clone();
            candidate.push(format!("{pid}-{:016x}", rand_core::OsRng.next_u64()));
            let dir = parent.join(candidate);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let staging = Staging { dir };
                    std::fs::write(staging.dir.join(MARKER), pid.to_string()).map_err(|e| {
                        OpError::io(
                            format!("cannot write {}", staging.dir.join(MARKER).display()),
                            e,
                        )
                    })?;
                    return Ok(staging);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(OpError::io(
                        format!("cannot create the staging directory {}", dir.display()),
                        e,
                    ))
                }
            }
        }
        Err(OpError::io(
            format!("cannot create a staging directory in {}", parent.display()),
            io::Error::new(io::ErrorKind::AlreadyExists, "every name tried exists"),
        ))
    }

    /// Where the tree is unpacked.
    fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// Removes the staging directory and whatever is left in it.
    fn remove(self) {
        remove_tree(&self.dir);
    }
}

/// Removes the staging directories beside DEST (names starting with `prefix`) whose marker
/// names a process that no longer runs. A directory without a readable marker, or whose pid is
/// alive, is left alone.
fn remove_dead_leftovers(parent: &Path, prefix: &std::ffi::OsStr) {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().starts_with(prefix.as_bytes()) {
            continue;
        }
        let dir = entry.path();
        // Only real directories (never through a symlink).
        if !dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(dir.join(MARKER)) else {
            continue;
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            remove_tree(&dir);
        }
    }
}

/// Whether a process with this pid runs (Linux: it has a `/proc` entry).
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Moves `from` to `to`, failing with `AlreadyExists` when `to` exists (see the module docs).
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::EXIST => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        )),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            // The file system has no RENAME_NOREPLACE.
            if from.symlink_metadata()?.is_dir() {
                if to.symlink_metadata().is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists", to.display()),
                    ));
                }
                std::fs::rename(from, to)
            } else {
                std::fs::hard_link(from, to)?;
                std::fs::remove_file(from)
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes an unpacked tree (its directories may be read-only).
fn remove_tree(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = path.symlink_metadata() {
        if meta.is_dir() {
            for entry in walk_dirs(path) {
                let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755));
            }
            let _ = std::fs::remove_dir_all(path);
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn staging_is_exclusive_and_only_dead_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        // Someone's directory with a name like an old staging name: never touched.
        let foreign = dir.path().join(".out.cachecore-pull-1");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("keep"), b"mine").unwrap();
        // A leftover of a dead pull (pid 0 is never a user process) and one of a live process.
        let dead = dir
            .path()
            .join(".out.cachecore-pull-999999999-0000000000000000");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(MARKER), "999999999").unwrap();
        let live = dir.path().join(".out.cachecore-pull-1-0000000000000001");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join(MARKER), "1").unwrap();

        let a = Staging::create(&dest).unwrap();
        let b = Staging::create(&dest).unwrap();
        assert_ne!(a.dir, b.dir);
        assert!(!dead.exists(), "a dead pull's staging directory is removed");
        assert!(live.exists(), "a live process's is kept");
        assert!(
            foreign.join("keep").exists(),
            "a directory without a marker is kept"
        );
        a.remove();
        b.remove();
        assert!(foreign.join("keep").exists());
    }

    #[test]
    fn rename_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        std::fs::create_dir(&from).unwrap();
        std::fs::create_dir(&to).unwrap();
        let e = rename_no_replace(&from, &to).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir(&to).unwrap();
        rename_no_replace(&from, &to).unwrap();
        assert!(to.is_dir() && !from.exists());
    }
}
