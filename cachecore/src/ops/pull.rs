//! `pull`: download one store path from a cache, check its hashes and signatures, unpack it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::browse::{narinfo, read_nar};
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

/// Checks that `info` carries a signature by one of `keys`.
pub(crate) fn check_trusted(
    info: &crate::narinfo::NarInfo,
    keys: &[PublicKey],
) -> Result<(), OpError> {
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
        found: names(
            info.signatures
                .iter()
                .map(|s| s.split(':').next().unwrap_or("").to_owned())
                .collect(),
        ),
        trusted: names(keys.iter().map(|k| k.name().to_owned()).collect()),
    })
}

/// Downloads `path` from `cache` and unpacks it at `dest`, which must not exist. Nothing is left
/// at `dest` unless every check passed. `progress` hears of the one path, its NAR bytes as they
/// are unpacked, and its end.
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
    let staging = staging_path(dest)?;
    let name = info.store_dir.full_path(&info.store_path);
    let target = staging.clone();
    let guard = StagingGuard::new(staging.clone());
    let dropped = guard.dropped.clone();
    progress.planned(1, info.nar_size, 0);
    let counting = progress.clone();
    let result = read_nar(cache, &info, move |nar| {
        let nar = CountingReader {
            inner: nar,
            progress: counting,
            unreported: 0,
        };
        nar::unpack(nar, &target).map_err(|source| OpError::Unpack { path: name, source })?;
        // The pull was dropped while this thread unpacked: nobody will move the tree into
        // place or remove it but this thread (see StagingGuard).
        if dropped.load(std::sync::atomic::Ordering::SeqCst) {
            remove_tree(&target);
        }
        Ok(())
    })
    .await;
    guard.disarm();
    match result {
        Ok(()) => {
            std::fs::rename(&staging, dest).map_err(|e| {
                OpError::io(
                    format!("cannot move the unpacked tree to {}", dest.display()),
                    e,
                )
            })?;
            progress.path_done(&info.store_dir.full_path(&info.store_path));
            Ok(())
        }
        Err(e) => {
            remove_tree(&staging);
            Err(e)
        }
    }
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

/// A sibling of `dest` to unpack into before the checks pass.
fn staging_path(dest: &Path) -> Result<PathBuf, OpError> {
    let name = dest
        .file_name()
        .ok_or_else(|| OpError::InvalidDestination {
            path: dest.to_path_buf(),
        })?;
    let mut staged = std::ffi::OsString::from(".");
    staged.push(name);
    staged.push(format!(".cachecore-pull-{}", std::process::id()));
    Ok(dest.with_file_name(staged))
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
