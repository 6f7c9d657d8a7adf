//! Debris: what killed uploads leave in a cache, found and removed.
//!
//! - On a local directory, object_store writes each object to `<key>#<n>` and renames it into
//!   place when complete; a killed upload leaves that staging file (up to a whole NAR) behind.
//! - Copies that re-compress stage NARs as `nar/.tmp-<unique>` ([`layout::temp_nar`]) before
//!   renaming them; a killed copy leaves that object behind, on any store.
//!
//! Neither is visible to Nix nor named by any narinfo. [`BinaryCache::debris`] lists them
//! (`verify` and `info` report them) and [`BinaryCache::remove_stale_debris`] deletes those
//! untouched for [`DEBRIS_AGE`] (every push calls it first): an upload in progress writes its
//! staging file continuously, so one a day old belongs to no running upload.

use std::time::{Duration, SystemTime};

use futures::{StreamExt as _, TryStreamExt as _};

use super::{layout, BinaryCache, StoreError};

/// Debris untouched for this long is removed by the next push: 24 hours.
pub const DEBRIS_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// One leftover object of a killed upload.
///
/// Listed by [`BinaryCache::debris`], which has an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debris {
    /// The key (for a local staging file, its path relative to the cache root).
    pub key: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

impl Debris {
    fn stale(&self, now: SystemTime) -> bool {
        self.modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= DEBRIS_AGE)
    }
}

impl BinaryCache {
    /// The debris in the cache, sorted by key: staging files of killed uploads (`<key>#<n>` in
    /// a local directory) and staged re-compressed NARs (`nar/.tmp-*`), which no narinfo names.
    /// Plain HTTP caches cannot be listed and have none to report.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let staged = cache.staged_nar("killed-copy");
    /// let data = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"NAR bytes"))]);
    /// cache.put_staged_nar(&staged, data).await.unwrap();
    /// // Never published nor discarded: debris, but too fresh to be removed.
    /// let debris = cache.debris().await.unwrap();
    /// assert_eq!((debris.len(), debris[0].size), (1, 9));
    /// assert_eq!(cache.remove_stale_debris().await.unwrap(), 0);
    /// # });
    /// ```
    pub async fn debris(&self) -> Result<Vec<Debris>, StoreError> {
        let mut found = match self.objects().local_root() {
            Some(root) => {
                let root = root.to_path_buf();
                tokio::task::spawn_blocking(move || local_debris(&root))
                    .await
                    .unwrap_or_default()
            }
            None if self.is_read_only() => Vec::new(),
            None => {
                let mut found = Vec::new();
                for prefix in [layout::NAR_DIR, layout::CACHECORE_DIR] {
                    let mut listed = self.objects().list(prefix).boxed();
                    while let Some(meta) = listed.try_next().await? {
                        if layout::is_debris(&meta.key) {
                            found.push(Debris {
                                key: meta.key.clone(),
                                size: meta.size,
                                modified: Some(meta.last_modified),
                            });
                        }
                    }
                }
                found
            }
        };
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// Deletes the debris untouched for [`DEBRIS_AGE`]; returns how many objects went.
    ///
    /// See [`debris`](Self::debris) for an example.
    pub async fn remove_stale_debris(&self) -> Result<usize, StoreError> {
        // An HTTP cache that takes uploads cleans up after itself (the server aborts what a
        // client abandoned); it cannot be listed anyway.
        if self.is_read_only() || !self.objects().is_listable() {
            return Ok(0);
        }
        let now = SystemTime::now();
        let mut removed = 0;
        for d in self.debris().await? {
            if !d.stale(now) {
                continue;
            }
            match self.objects().local_root() {
                // Local staging files are not objects the object layer deletes by key.
                Some(root) => {
                    if std::fs::remove_file(root.join(&d.key)).is_ok() {
                        removed += 1;
                    }
                }
                None => {
                    self.objects().delete(&d.key).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Staging files under a local cache root: `<name>#<n>` anywhere and `nar/.tmp-*`, found by a
/// walk that never follows symlinks.
fn local_debris(root: &std::path::Path) -> Vec<Debris> {
    let mut out = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push((entry.path(), key));
            } else if meta.is_file() && layout::is_debris(&key) {
                out.push(Debris {
                    key,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn local_debris_is_found_and_only_stale_debris_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
        std::fs::create_dir(dir.path().join("nar")).unwrap();
        std::fs::write(dir.path().join("nar/abc.nar.zst#1"), b"partial").unwrap();
        std::fs::write(dir.path().join("nar/.tmp-x-1"), b"staged").unwrap();
        std::fs::write(dir.path().join("nar/abc.nar.zst"), b"real").unwrap();
        std::fs::write(dir.path().join("x.narinfo#12"), b"half").unwrap();
        let found: Vec<String> = cache
            .debris()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.key)
            .collect();
        assert_eq!(found, ["nar/.tmp-x-1", "nar/abc.nar.zst#1", "x.narinfo#12"]);
        // Fresh debris stays; aged debris goes; real objects always stay.
        assert_eq!(cache.remove_stale_debris().await.unwrap(), 0);
        let old = SystemTime::now() - DEBRIS_AGE - Duration::from_secs(60);
        for k in ["nar/abc.nar.zst#1", "nar/abc.nar.zst"] {
            std::fs::File::options()
                .write(true)
                .open(dir.path().join(k))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        assert_eq!(cache.remove_stale_debris().await.unwrap(), 1);
        assert!(!dir.path().join("nar/abc.nar.zst#1").exists());
        assert!(dir.path().join("nar/abc.nar.zst").exists());
        assert!(dir.path().join("nar/.tmp-x-1").exists());
    }
}
