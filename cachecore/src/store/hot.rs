//! Small objects kept in memory between reads, each checked before it is used again.
//!
//! A narinfo is read far more often than it changes: a busy `serve` answers the same few
//! thousand of them all day. Reading one from a local directory costs four system calls
//! (open, stat, read, close); answering it from here costs one, a `stat` of its name that must
//! find the very file the bytes were read from, unchanged — same device, inode, size,
//! modification and change times (nginx's `open_file_cache` checks less). From a remote store,
//! where even a `HEAD` is a round trip, an entry is instead used for a fixed time after it was
//! read ([`Objects::with_remote_ttl`](super::Objects::with_remote_ttl), off unless asked for).
//!
//! Only whole objects of at most [`MAX_ENTRY`] bytes are kept, [`MAX_BYTES`] in all: when an
//! insert would exceed that, arbitrary entries are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;

use super::objects::ObjectMeta;

/// The largest object kept: a narinfo, a listing of a small path, a seek table.
pub(crate) const MAX_ENTRY: u64 = 64 * 1024;

/// Bytes kept in all (the objects' bytes; keys and metadata add a little).
pub(crate) const MAX_BYTES: usize = 16 << 20;

/// What an entry must still match to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    /// A local file: its identity when its bytes were read.
    File(FileId),
    /// A remote object: usable until then.
    Until(Instant),
}

/// A local file's identity: any change to its bytes changes its change time (and a file put in
/// its place is another inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

/// How long a file must have been left unchanged before its bytes are kept: a kernel without
/// fine-grained timestamps (before Linux 6.13) gives two changes within one clock tick the same
/// change time, so only a file whose last change is older than any tick is told apart from its
/// next version.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

impl FileId {
    /// Whether the file was last changed long enough ago ([`SETTLE`]) for its next change to
    /// show in its change time.
    pub(crate) fn settled(&self) -> bool {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(self.ctime.0.max(0) as u64, self.ctime.1 as u32);
        std::time::SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age >= SETTLE)
    }

    // The nanosecond fields are `u64` here and `i64` on some targets.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of(st: &rustix::fs::Stat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec as u64),
            ctime: (st.st_ctime, st.st_ctime_nsec as u64),
        }
    }
}

struct Entry {
    validity: Validity,
    meta: ObjectMeta,
    bytes: Bytes,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
}

/// The kept objects of one [`Objects`](super::Objects) handle.
#[derive(Default)]
pub(crate) struct HotObjects {
    entries: Mutex<Entries>,
}

impl HotObjects {
    /// The object at `key` if it is kept and `still_valid` says its validity holds; an entry
    /// that no longer holds is dropped.
    pub(crate) fn get(
        &self,
        key: &str,
        still_valid: impl FnOnce(&Validity) -> bool,
    ) -> Option<(ObjectMeta, Bytes)> {
        let (validity, meta, bytes) = {
            let entries = self.entries.lock().ok()?;
            let e = entries.map.get(key)?;
            (e.validity, e.meta.clone(), e.bytes.clone())
        };
        if still_valid(&validity) {
            return Some((meta, bytes));
        }
        self.remove(key);
        None
    }

    /// Keeps `bytes`, the whole object at `meta.key`, if it is small enough.
    pub(crate) fn insert(&self, validity: Validity, meta: ObjectMeta, bytes: Bytes) {
        if bytes.len() as u64 > MAX_ENTRY || bytes.len() as u64 != meta.size {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let entries = &mut *entries;
        while entries.bytes + bytes.len() > MAX_BYTES {
            let Some(victim) = entries.map.keys().next().cloned() else {
                break;
            };
            if let Some(old) = entries.map.remove(&victim) {
                entries.bytes -= old.bytes.len();
            }
        }
        entries.bytes += bytes.len();
        let key = meta.key.clone();
        let entry = Entry {
            validity,
            meta,
            bytes,
        };
        if let Some(old) = entries.map.insert(key, entry) {
            entries.bytes -= old.bytes.len();
        }
    }

    /// Forgets `key` (written or deleted through this handle).
    pub(crate) fn remove(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(old) = entries.map.remove(key) {
                entries.bytes -= old.bytes.len();
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let e = self.entries.lock().unwrap();
        (e.map.len(), e.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn meta(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            last_modified: SystemTime::UNIX_EPOCH,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn an_entry_is_used_only_while_valid_and_dropped_after() {
        let hot = HotObjects::default();
        let until = Validity::Until(Instant::now() + Duration::from_secs(60));
        hot.insert(until, meta("a.narinfo", 3), Bytes::from_static(b"abc"));
        assert_eq!(hot.get("a.narinfo", |_| true).unwrap().1, &b"abc"[..]);
        assert!(hot.get("a.narinfo", |_| false).is_none());
        assert_eq!(hot.len(), (0, 0), "an invalid entry is dropped");
        assert!(hot.get("a.narinfo", |_| true).is_none());
    }

    #[test]
    fn large_objects_and_partial_bytes_are_not_kept_and_the_total_is_bounded() {
        let hot = HotObjects::default();
        let v = Validity::Until(Instant::now());
        let big = Bytes::from(vec![0u8; MAX_ENTRY as usize + 1]);
        hot.insert(v, meta("big", big.len() as u64), big);
        hot.insert(v, meta("part", 10), Bytes::from_static(b"abc"));
        assert_eq!(hot.len(), (0, 0));
        let entry = Bytes::from(vec![1u8; MAX_ENTRY as usize]);
        for i in 0..(2 * MAX_BYTES / MAX_ENTRY as usize) {
            hot.insert(v, meta(&format!("k{i}"), MAX_ENTRY), entry.clone());
        }
        let (n, bytes) = hot.len();
        assert_eq!(bytes, n * MAX_ENTRY as usize);
        assert!(bytes <= MAX_BYTES && n == MAX_BYTES / MAX_ENTRY as usize);
        // Replacing an entry counts its bytes once.
        hot.insert(v, meta("k0", 3), Bytes::from_static(b"xyz"));
        hot.insert(v, meta("k0", 3), Bytes::from_static(b"xyz"));
        assert!(hot.len().1 <= MAX_BYTES);
    }
}
