//! [`FrameCache`]: decompressed frames of seekable NARs kept in memory, shared by every
//! [`super::NarAccess`] given it, bounded in bytes, least recently used dropped first; and the
//! bookkeeping that makes concurrent readers of the same frames fetch them once.
//!
//! Without one, a `NarAccess` keeps only the last frame it decoded. With one, frames outlive
//! the read that fetched them (a FUSE mount's 128 KiB reads, several readers of one file, a
//! re-read), read-ahead has somewhere to put what it fetched, and memory stays within the bound
//! whatever the readers do (plus the frames of the reads in flight).
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! # use std::sync::Arc;
//! # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
//! use cachecore::access::{FrameCache, NarAccess};
//! use cachecore::store::BinaryCache;
//! # let src = tempfile::tempdir().unwrap();
//! # // Incompressible, so the NAR is several frames and too large to be read whole.
//! # let mut x = 1u64;
//! # let big: Vec<u8> = (0..9 << 20).map(|_| { x = x.wrapping_mul(6364136223846793005).wrapping_add(1); (x >> 56) as u8 }).collect();
//! # std::fs::write(src.path().join("big"), big).unwrap();
//! let cache = BinaryCache::open("memory://").unwrap();
//! # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "big",
//! #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
//! let frames = FrameCache::new(64 << 20);
//! let nar = NarAccess::open(&cache, &path).await.unwrap().with_frame_cache(frames.clone());
//! nar.read(100..200).await.unwrap();
//! assert!(frames.used_bytes() > 0 && frames.used_bytes() <= 64 << 20);
//! # });
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// A frame: its object (`<store url>: <key>`) and index.
type Key = (Arc<str>, usize);

/// Decompressed frames in memory (see the [module docs](self)). Cheap to clone: clones share
/// the frames.
#[derive(Clone, Debug)]
pub struct FrameCache {
    inner: Arc<Mutex<State>>,
    max_bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    frames: HashMap<Key, (Bytes, u64)>,
    /// Last use → frame, oldest first.
    by_use: BTreeMap<u64, Key>,
    tick: u64,
    used: u64,
    /// Groups of frames being fetched: (object, first index) → the lock their readers wait on.
    fetching: HashMap<Key, Arc<tokio::sync::Mutex<()>>>,
}

impl FrameCache {
    /// A cache holding at most `max_bytes` of decompressed frames.
    pub fn new(max_bytes: u64) -> FrameCache {
        FrameCache {
            inner: Arc::new(Mutex::new(State::default())),
            max_bytes,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of frames held now.
    pub fn used_bytes(&self) -> u64 {
        self.state().used
    }

    /// The frame, if held (and marks it used).
    pub(super) fn get(&self, object: &Arc<str>, index: usize) -> Option<Bytes> {
        let mut s = self.state();
        let key = (object.clone(), index);
        let (bytes, used) = s.frames.get(&key)?.clone();
        s.tick += 1;
        let tick = s.tick;
        s.by_use.remove(&used);
        s.by_use.insert(tick, key.clone());
        if let Some(entry) = s.frames.get_mut(&key) {
            entry.1 = tick;
        }
        Some(bytes)
    }

    /// Whether the frame is held (without marking it used).
    pub(super) fn contains(&self, object: &Arc<str>, index: usize) -> bool {
        self.state().frames.contains_key(&(object.clone(), index))
    }

    /// Keeps a frame, dropping the least recently used beyond the bound (a frame larger than
    /// the whole bound is not kept).
    pub(super) fn insert(&self, object: &Arc<str>, index: usize, frame: Bytes) {
        let len = frame.len() as u64;
        if len > self.max_bytes {
            return;
        }
        let mut s = self.state();
        let key = (object.clone(), index);
        s.tick += 1;
        let tick = s.tick;
        if let Some((old, used)) = s.frames.insert(key.clone(), (frame, tick)) {
            s.used -= old.len() as u64;
            s.by_use.remove(&used);
        }
        s.by_use.insert(tick, key);
        s.used += len;
        while s.used > self.max_bytes {
            let Some((_, oldest)) = s.by_use.pop_first() else {
                break;
            };
            if let Some((bytes, _)) = s.frames.remove(&oldest) {
                s.used -= bytes.len() as u64;
            }
        }
    }

    /// The lock that readers of the group of frames starting at `index` take while one of them
    /// fetches it; [`FrameCache::done`] when finished.
    pub(super) fn flight(&self, object: &Arc<str>, index: usize) -> Arc<tokio::sync::Mutex<()>> {
        self.state()
            .fetching
            .entry((object.clone(), index))
            .or_default()
            .clone()
    }

    /// Forgets the lock of a group once no reader holds it.
    pub(super) fn done(
        &self,
        object: &Arc<str>,
        index: usize,
        flight: Arc<tokio::sync::Mutex<()>>,
    ) {
        let mut s = self.state();
        // Ours and the map's: nobody else waits.
        if Arc::strong_count(&flight) <= 2 {
            s.fetching.remove(&(object.clone(), index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_frames_go_first_and_the_bound_holds() {
        let cache = FrameCache::new(300);
        let a: Arc<str> = Arc::from("a");
        for i in 0..3 {
            cache.insert(&a, i, Bytes::from(vec![i as u8; 100]));
        }
        assert_eq!(cache.used_bytes(), 300);
        // Frame 0 used again: frame 1 is now the oldest.
        assert!(cache.get(&a, 0).is_some());
        cache.insert(&a, 3, Bytes::from(vec![3u8; 100]));
        assert!(cache.contains(&a, 0) && !cache.contains(&a, 1));
        assert_eq!(cache.used_bytes(), 300);
        // Too large to keep at all.
        cache.insert(&a, 9, Bytes::from(vec![0u8; 301]));
        assert!(!cache.contains(&a, 9));
        // Replacing a frame does not count it twice.
        cache.insert(&a, 3, Bytes::from(vec![4u8; 100]));
        assert_eq!(cache.used_bytes(), 300);
        assert_eq!(cache.get(&a, 3).unwrap()[0], 4);
    }
}
