//! `pull`: download one store path from a cache, check its hashes and signatures, unpack it.

use std::path::{Path, PathBuf};

use super::browse::{narinfo, read_nar};
use super::OpError;
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
/// at `dest` unless every check passed.
pub async fn pull(
    cache: &BinaryCache,
    path: &StorePath,
    dest: &Path,
    opts: &PullOptions,
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
    let result = read_nar(cache, &info, move |nar| {
        nar::unpack(nar, &target).map_err(|source| OpError::Unpack { path: name, source })
    })
    .await;
    match result {
        Ok(()) => std::fs::rename(&staging, dest).map_err(|e| {
            OpError::io(
                format!("cannot move the unpacked tree to {}", dest.display()),
                e,
            )
        }),
        Err(e) => {
            remove_tree(&staging);
            Err(e)
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
