//! [`NarCache`]: whole NARs kept in a local directory, each fetched once, checked against its
//! narinfo (FileSize, FileHash, NarSize, NarHash) as it streams in, and read at random from
//! there afterwards; and the frames of seekable NARs that were checked against signed digests
//! (see [Frames](#frames)).
//!
//! Random access ([`super::NarAccess`]) uses it for what cannot be read at random from the
//! cache — xz, bzip2, zstd without a seek table — which would otherwise be decompressed from
//! the start for every read, and for readers that serve nothing unchecked (a FUSE mount's
//! `--check nar`): the NAR is checked whole before its first byte is served.
//!
//! # What it keeps, and what that costs
//!
//! - One file per NAR, `<NarHash in nix32>.nar`, written as `<…>.<pid>-<random>.tmp` beside it
//!   and renamed into place only once every check passed: a crash mid-download leaves a `.tmp`
//!   (removed when the directory is next opened), never a half-written `.nar`. A kept NAR is
//!   used again only when its length is the narinfo's `NarSize`; its bytes are trusted as the
//!   local disk is (the directory is the user's own, like the local Nix store).
//! - At most `max_bytes` bytes of NARs and frames: after each fetch, the least recently used are deleted
//!   until the rest fit (a NAR larger than the whole budget is still fetched, used, and deleted
//!   next time). A reader holding a deleted NAR open keeps reading it (its inode lives on).
//! - Concurrent readers of the same NAR fetch it once: the others wait for that fetch.
//! - The directory outlives the process: a new `NarCache` on it finds what is there.
//!
//! # Frames
//!
//! A reader that checks frames against signed digests ([`super::NarAccess::frames_checked`])
//! keeps each frame it fetched here too, compressed, as `frame-<sha256 in hex>.zst`: named by
//! the sha256 of its bytes, the digest the signed frame digests pin. Frames and NARs share the
//! one budget and the one least-recently-used order. A kept frame is hashed again whenever it
//! is read back, and one that no longer hashes to its name is deleted and fetched again. So a
//! frame is written without `fsync` (a crash can leave a damaged one, never a wrong byte
//! served), and frames of different caches and objects meet under one name only when they are
//! the same bytes. A reader without signed digests keeps no frames here: nothing would name
//! their content before they are fetched.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! # use std::sync::Arc;
//! # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
//! use cachecore::access::{NarAccess, NarCache};
//! use cachecore::store::BinaryCache;
//! # let src = tempfile::tempdir().unwrap();
//! # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
//! let cache = BinaryCache::open("memory://").unwrap();
//! # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
//! #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let kept = NarCache::open(dir.path(), 1 << 30).unwrap();
//! let nar = NarAccess::open(&cache, &path).await.unwrap()
//!     .with_nar_cache(kept.clone())
//!     .whole_nar_checked();
//! assert_eq!(&nar.read(8..21).await.unwrap()[..], b"nix-archive-1");
//! assert_eq!(kept.used_bytes(), nar.nar_size()); // fetched once, checked, kept
//! # });
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::narinfo::NarInfo;
use crate::store::BinaryCache;

use super::AccessError;

/// Whole NARs in a local directory (see the [module docs](self)). Cheap to clone.
#[derive(Clone, Debug)]
pub struct NarCache {
    inner: Arc<CacheDir>,
}

/// The directory, its bound and what it holds, shared by every clone.
#[derive(Debug)]
struct CacheDir {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Kept NARs and frames: file name → (bytes, last use).
    kept: HashMap<String, (u64, SystemTime)>,
    used: u64,
    /// NARs being fetched: file name → the lock their readers wait on.
    fetching: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// Kept frames are `frame-<sha256 in hex>.zst`.
const FRAME_PREFIX: &str = "frame-";
const FRAME_SUFFIX: &str = ".zst";

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A NAR kept in the cache directory, open for reads at any offset.
#[derive(Debug, Clone)]
pub struct KeptNar {
    file: Arc<File>,
    len: u64,
}

impl KeptNar {
    /// The NAR's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the NAR is empty (never, for a valid one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` from NAR offset `at` (blocking; the caller checked the range).
    pub fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, at)
    }
}

impl NarCache {
    /// The cache in `dir` (created if missing), holding at most `max_bytes` of NARs and
    /// frames. Leftovers of interrupted downloads are removed; NARs and frames kept by an
    /// earlier process are used again.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<NarCache> {
        std::fs::create_dir_all(dir)?;
        let mut state = State::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if name.ends_with(".nar")
                || (name.starts_with(FRAME_PREFIX) && name.ends_with(FRAME_SUFFIX))
            {
                let meta = entry.metadata()?;
                if meta.is_file() {
                    let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    state.used += meta.len();
                    state.kept.insert(name, (meta.len(), used));
                }
            }
        }
        Ok(NarCache {
            inner: Arc::new(CacheDir {
                dir: dir.to_owned(),
                max_bytes,
                state: Mutex::new(state),
            }),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes of NARs and frames kept now.
    pub fn used_bytes(&self) -> u64 {
        lock(&self.inner.state).used
    }

    /// How many frames are kept now.
    pub fn kept_frames(&self) -> usize {
        lock(&self.inner.state)
            .kept
            .keys()
            .filter(|name| name.starts_with(FRAME_PREFIX))
            .count()
    }

    fn frame_file_name(sha256: &[u8; 32]) -> String {
        format!("{FRAME_PREFIX}{}{FRAME_SUFFIX}", hex::encode(sha256))
    }

    /// The compressed bytes of the kept frame whose sha256 is `sha256` and length `len`, read
    /// back and hashed again (blocking); `None` when none is kept, or the kept one is damaged
    /// (then it is deleted).
    pub(super) fn kept_frame(&self, sha256: &[u8; 32], len: u32) -> Option<Vec<u8>> {
        use sha2::Digest as _;
        let name = Self::frame_file_name(sha256);
        let path = self.inner.dir.join(&name);
        let file = File::open(&path).ok()?;
        let mut bytes = Vec::with_capacity(len as usize);
        // One byte more than the frame, to see a longer file.
        let read =
            io::Read::read_to_end(&mut io::Read::take(&file, u64::from(len) + 1), &mut bytes);
        if read.is_err()
            || bytes.len() != len as usize
            || <[u8; 32]>::from(sha2::Sha256::digest(&bytes)) != *sha256
        {
            drop(file);
            let _ = std::fs::remove_file(&path);
            self.forget(&name);
            return None;
        }
        self.touch(&name, &file, u64::from(len));
        Some(bytes)
    }

    /// Keeps `bytes`, a frame checked against its signed digest `sha256` (blocking; best
    /// effort: a frame that cannot be written is only not kept).
    pub(super) fn keep_frame(&self, sha256: &[u8; 32], bytes: &[u8]) {
        let name = Self::frame_file_name(sha256);
        if lock(&self.inner.state).kept.contains_key(&name) {
            return;
        }
        let tmp = self.tmp_path(&name);
        let written = std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, self.inner.dir.join(&name)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.record(&name, bytes.len() as u64);
        self.evict(&name);
    }

    /// A fresh temporary name beside `name`, removed when the directory is next opened.
    fn tmp_path(&self, name: &str) -> PathBuf {
        use rand_core::RngCore as _;
        self.inner.dir.join(format!(
            "{name}.{}-{:016x}.tmp",
            std::process::id(),
            rand_core::OsRng.next_u64()
        ))
    }

    pub(super) fn file_name(info: &NarInfo) -> String {
        // The NarHash names the NAR whatever object holds it; `:` is not in nix32.
        format!("{}-{}.nar", info.nar_hash.algo(), info.nar_hash.to_nix32())
    }

    /// The NAR of `info`: the kept one, or fetched from `cache` now (checked whole against the
    /// narinfo, then kept). Concurrent calls for the same NAR fetch it once.
    pub async fn get(&self, cache: &BinaryCache, info: &NarInfo) -> Result<KeptNar, AccessError> {
        let name = Self::file_name(info);
        if let Some(kept) = self.kept(&name, info.nar_size)? {
            return Ok(kept);
        }
        let flight = lock(&self.inner.state)
            .fetching
            .entry(name.clone())
            .or_default()
            .clone();
        let result = async {
            let _only_one = flight.lock().await;
            if let Some(kept) = self.kept(&name, info.nar_size)? {
                return Ok(kept);
            }
            self.fetch(cache, info, &name).await
        }
        .await;
        let mut state = lock(&self.inner.state);
        if Arc::strong_count(&flight) <= 2 {
            state.fetching.remove(&name);
        }
        result
    }

    fn io_error(&self, what: &str, source: io::Error) -> AccessError {
        AccessError::NarCache {
            dir: self.inner.dir.display().to_string(),
            what: what.to_owned(),
            source,
        }
    }

    /// The kept NAR `name` when it is there with the right length.
    fn kept(&self, name: &str, nar_size: u64) -> Result<Option<KeptNar>, AccessError> {
        let path = self.inner.dir.join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("cannot open a kept NAR", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| self.io_error("cannot read a kept NAR", e))?
            .len();
        if len != nar_size {
            // Not what the narinfo describes (another cache's NAR of the same hash cannot differ
            // in length; a damaged file can): fetch it again.
            drop(file);
            let _ = std::fs::remove_file(&path);
            self.forget(name);
            return Ok(None);
        }
        self.touch(name, &file, len);
        Ok(Some(KeptNar {
            file: Arc::new(file),
            len,
        }))
    }

    /// Notes the file `name`, of `len` bytes, as kept and used now; returns now.
    fn record(&self, name: &str, len: u64) -> SystemTime {
        let now = SystemTime::now();
        let mut state = lock(&self.inner.state);
        if state.kept.insert(name.to_owned(), (len, now)).is_none() {
            state.used += len;
        }
        now
    }

    /// A kept file used again: [`NarCache::record`]ed, and the use kept as its mtime, which
    /// survives a restart (best effort).
    fn touch(&self, name: &str, file: &File, len: u64) {
        let now = self.record(name, len);
        let _ = file.set_modified(now);
    }

    fn forget(&self, name: &str) {
        let mut state = lock(&self.inner.state);
        if let Some((len, _)) = state.kept.remove(name) {
            state.used -= len;
        }
    }

    async fn fetch(
        &self,
        cache: &BinaryCache,
        info: &NarInfo,
        name: &str,
    ) -> Result<KeptNar, AccessError> {
        let reader = cache.nar(info).await?;
        let tmp = self.tmp_path(name);
        let this = self.clone();
        let final_path = self.inner.dir.join(name);
        let nar_size = info.nar_size;
        let written = tokio::task::spawn_blocking(move || -> Result<File, AccessError> {
            let result = (|| {
                let mut out = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(|e| this.io_error("cannot create a file", e))?;
                let mut reader = reader;
                let mut buffered = io::BufWriter::with_capacity(1 << 20, &mut out);
                let copied = io::copy(&mut reader, &mut buffered);
                // The reader's own verdict says what was wrong with the NAR, if anything was.
                let checked = reader.finish();
                checked?;
                copied.map_err(|e| this.io_error("cannot write a NAR", e))?;
                buffered
                    .flush()
                    .map_err(|e| this.io_error("cannot write a NAR", e))?;
                drop(buffered);
                out.sync_data()
                    .map_err(|e| this.io_error("cannot write a NAR", e))?;
                std::fs::rename(&tmp, &final_path)
                    .map_err(|e| this.io_error("cannot move a fetched NAR into place", e))?;
                Ok(out)
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            AccessError::Cancelled {
                object: info.url.clone(),
            }
        })??;
        self.record(name, nar_size);
        self.evict(name);
        Ok(KeptNar {
            file: Arc::new(written),
            len: nar_size,
        })
    }

    /// Deletes the least recently used NARs and frames (never `keep`) until the rest fit.
    fn evict(&self, keep: &str) {
        let mut state = lock(&self.inner.state);
        if state.used <= self.inner.max_bytes {
            return;
        }
        let mut by_age: Vec<(SystemTime, String, u64)> = state
            .kept
            .iter()
            .filter(|(name, _)| name.as_str() != keep)
            .map(|(name, (len, used))| (*used, name.clone(), *len))
            .collect();
        by_age.sort();
        for (_, name, len) in by_age {
            if state.used <= self.inner.max_bytes {
                break;
            }
            match std::fs::remove_file(self.inner.dir.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => continue,
            }
            state.kept.remove(&name);
            state.used -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{self, NoProgress, PushOptions};
    use crate::store_path::StoreDir;

    fn pushed(
        rt: &tokio::runtime::Runtime,
        cache: &BinaryCache,
        name: &str,
        len: usize,
    ) -> NarInfo {
        let src = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + name.len()) as u8).collect();
        std::fs::write(src.path().join("f"), bytes).unwrap();
        let (path, _) = rt
            .block_on(ops::push_add(
                cache,
                &StoreDir::default(),
                src.path(),
                name,
                &PushOptions::default(),
                Arc::new(NoProgress),
            ))
            .unwrap();
        rt.block_on(cache.narinfo(&path)).unwrap().unwrap()
    }

    #[test]
    fn fetched_once_kept_evicted_and_found_again() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cache = BinaryCache::open("memory://").unwrap();
        let a = pushed(&rt, &cache, "a", 300_000);
        let b = pushed(&rt, &cache, "b", 300_000);
        let dir = tempfile::tempdir().unwrap();
        // Room for one NAR only.
        let kept = NarCache::open(dir.path(), a.nar_size + 1000).unwrap();
        // A leftover of a killed download is removed on open.
        std::fs::write(dir.path().join("x.nar.1-2.tmp"), b"half").unwrap();
        let kept = {
            drop(kept);
            NarCache::open(dir.path(), a.nar_size + 1000).unwrap()
        };
        assert!(!dir.path().join("x.nar.1-2.tmp").exists());

        // Four readers at once fetch it once (one file, no leftovers).
        let got: Vec<KeptNar> = rt.block_on(async {
            let all = (0..4).map(|_| kept.get(&cache, &a));
            futures::future::try_join_all(all).await.unwrap()
        });
        assert!(got.iter().all(|k| k.len() == a.nar_size));
        let mut magic = [0u8; 13];
        got[0].read_exact_at(&mut magic, 8).unwrap();
        assert_eq!(&magic, b"nix-archive-1");
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(kept.used_bytes(), a.nar_size);

        // A second NAR pushes the first out (budget), and a reader of the first still reads.
        rt.block_on(kept.get(&cache, &b)).unwrap();
        assert_eq!(kept.used_bytes(), b.nar_size);
        got[1].read_exact_at(&mut magic, 8).unwrap();
        assert_eq!(&magic, b"nix-archive-1");

        // A new process finds it.
        let again = NarCache::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(again.used_bytes(), b.nar_size);

        // A NAR that fails its checks is not kept.
        let mut bad = a.clone();
        bad.nar_hash = crate::hash::Hash::digest(crate::hash::HashAlgo::Sha256, b"other");
        let err = rt.block_on(again.get(&cache, &bad)).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Corrupt, "{err}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn frames_are_kept_by_digest_share_the_budget_and_are_hashed_when_read_back() {
        use sha2::Digest as _;
        let frame = |seed: u8| -> (Vec<u8>, [u8; 32]) {
            let bytes: Vec<u8> = (0..1000u32).map(|i| (i as u8) ^ seed).collect();
            let sha = sha2::Sha256::digest(&bytes).into();
            (bytes, sha)
        };
        let dir = tempfile::tempdir().unwrap();
        // Room for two frames.
        let kept = NarCache::open(dir.path(), 2500).unwrap();
        let (a, a_sha) = frame(1);
        let (b, b_sha) = frame(2);
        let (c, c_sha) = frame(3);
        assert_eq!(kept.kept_frame(&a_sha, 1000), None);
        kept.keep_frame(&a_sha, &a);
        kept.keep_frame(&b_sha, &b);
        assert_eq!(kept.kept_frame(&a_sha, 1000).as_deref(), Some(&a[..]));
        assert_eq!((kept.kept_frames(), kept.used_bytes()), (2, 2000));
        // A third goes beyond the budget: b, used least recently, is deleted.
        kept.keep_frame(&c_sha, &c);
        assert_eq!(kept.kept_frame(&b_sha, 1000), None);
        assert_eq!((kept.kept_frames(), kept.used_bytes()), (2, 2000));
        // A new process finds them; one damaged on disk is deleted, never returned.
        drop(kept);
        let kept = NarCache::open(dir.path(), 2500).unwrap();
        assert_eq!(kept.kept_frames(), 2);
        let path = dir.path().join(NarCache::frame_file_name(&c_sha));
        let mut damaged = c.clone();
        damaged[500] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(kept.kept_frame(&c_sha, 1000), None);
        assert!(!path.exists());
        assert_eq!((kept.kept_frames(), kept.used_bytes()), (1, 1000));
        // A longer file than the frame is not it either.
        let path = dir.path().join(NarCache::frame_file_name(&a_sha));
        std::fs::write(&path, [&a[..], b"x"].concat()).unwrap();
        assert_eq!(kept.kept_frame(&a_sha, 1000), None);
        assert_eq!(kept.kept_frames(), 0);
    }
}
