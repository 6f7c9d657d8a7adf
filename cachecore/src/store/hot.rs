//! Small objects kept in memory between reads, each checked before it is used again.
//!
//! A narinfo is read far more often than it changes: a busy `serve` answers the same few
//! thousand of them all day. Reading one from a local directory costs four system calls
//! (open, stat, read, close); answering it from here costs one, a `stat` of its name that must
//! find the very file the bytes were read from, unchanged — same device, inode, size,
//! modification and change times (nginx's `open_file_cache` checks less). From a remote store,
//! where even a `HEAD` is a round trip, an entry is instead used for a fixed time after it was
//! read ([`Objects::set_remote_ttl`](super::Objects::set_remote_ttl); off for a handle unless
//! set, as `serve` does).
//!
//! On a network file system a `stat` may answer from the client's attribute cache (NFS: up to
//! `acregmax`), so a change made on another machine is seen as late as that cache allows.
//!
//! Only whole objects of at most [`MAX_ENTRY`] bytes are kept, [`MAX_BYTES`] in all (each
//! counted with its key and [`ENTRY_OVERHEAD`]): when an insert would exceed that, arbitrary
//! entries are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::error::StoreError;
use super::object::{Object, ObjectInfo};

/// The largest object kept: a narinfo, a listing of a small path, a seek table.
pub(crate) const MAX_ENTRY: u64 = 64 * 1024;

/// Bytes kept in all.
pub(crate) const MAX_BYTES: usize = 16 << 20;

/// What an entry costs besides its object's bytes and its key: metadata, map slot.
const ENTRY_OVERHEAD: usize = 256;

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

/// [`SETTLE`] on a file system that keeps whole seconds only (ext4 with small inodes, FAT, some
/// network file systems): both times of the file are whole seconds.
const SETTLE_COARSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The clock a file's settling is measured by: the system's, or in unit tests one the test
/// sets ([`TEST_NOW`]), so they need neither sleep nor a fast machine.
fn now() -> std::time::SystemTime {
    #[cfg(test)]
    if let Some(t) = TEST_NOW.with(std::cell::Cell::get) {
        return t;
    }
    std::time::SystemTime::now()
}

#[cfg(test)]
thread_local! {
    /// The time [`now`] answers on this thread, when set.
    pub(crate) static TEST_NOW: std::cell::Cell<Option<std::time::SystemTime>> =
        const { std::cell::Cell::new(None) };
}

impl FileId {
    /// Whether the file was last changed long enough ago ([`SETTLE`]) for its next change to
    /// show in its change time. Asked when the file was described, before its bytes are read.
    pub(crate) fn settled(&self) -> bool {
        let coarse = self.ctime.1 == 0 && self.mtime.1 == 0;
        let settle = if coarse { SETTLE_COARSE } else { SETTLE };
        let since_epoch = std::time::Duration::new(self.ctime.0.max(0) as u64, 0)
            .checked_add(std::time::Duration::from_nanos(self.ctime.1));
        let Some(changed) = since_epoch.and_then(|d| std::time::UNIX_EPOCH.checked_add(d)) else {
            return false;
        };
        now().duration_since(changed).is_ok_and(|age| age >= settle)
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
    meta: ObjectInfo,
    bytes: Bytes,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
    /// Bumped by every [`HotObjects::remove`]: a read that began before a write through the
    /// handle ended must not keep what it read ([`HotObjects::generation`]).
    generation: u64,
}

fn cost(key: &str, bytes: &Bytes) -> usize {
    bytes.len() + key.len() + ENTRY_OVERHEAD
}

/// The kept objects of one [`Objects`](super::Objects) handle.
#[derive(Default)]
pub(crate) struct HotObjects {
    entries: Mutex<Entries>,
}

impl HotObjects {
    /// Taken before a read whose bytes may be kept, and given to [`insert`](Self::insert):
    /// if anything was written or deleted in between, nothing is kept.
    pub(crate) fn generation(&self) -> u64 {
        self.entries.lock().map_or(u64::MAX, |e| e.generation)
    }

    /// The object at `key` if it is kept and `still_valid` says its validity holds; an entry
    /// that no longer holds is dropped.
    pub(crate) fn get(
        &self,
        key: &str,
        still_valid: impl FnOnce(&Validity) -> bool,
    ) -> Option<(ObjectInfo, Bytes)> {
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

    /// Keeps `bytes`, the whole object at `meta.key` read since [`generation`](Self::generation)
    /// said `read_since`, if it is small enough and nothing was written through the handle
    /// meanwhile. The bytes are copied: a chunk from an HTTP client may be a slice of its
    /// connection's whole read buffer.
    pub(crate) fn insert(
        &self,
        read_since: u64,
        validity: Validity,
        meta: ObjectInfo,
        bytes: &Bytes,
    ) {
        if bytes.len() as u64 > MAX_ENTRY || bytes.len() as u64 != meta.size {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let entries = &mut *entries;
        if entries.generation != read_since {
            return;
        }
        let bytes = Bytes::copy_from_slice(bytes);
        let key = meta.key.clone();
        let needed = cost(&key, &bytes);
        while entries.bytes + needed > MAX_BYTES {
            let Some(victim) = entries.map.keys().next().cloned() else {
                break;
            };
            if let Some(old) = entries.map.remove(&victim) {
                entries.bytes -= cost(&victim, &old.bytes);
            }
        }
        let entry = Entry {
            validity,
            meta,
            bytes,
        };
        entries.bytes += needed;
        if let Some(old) = entries.map.insert(key.clone(), entry) {
            entries.bytes -= cost(&key, &old.bytes);
        }
    }

    /// Forgets `key` (being written or deleted through this handle, or just written or
    /// deleted), and keeps no read that began before.
    pub(crate) fn remove(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.generation += 1;
            if let Some(old) = entries.map.remove(key) {
                entries.bytes -= cost(key, &old.bytes);
            }
        }
    }

    /// Reads the small remote `object` whole and keeps it for `ttl`
    /// ([`Objects::set_remote_ttl`](super::Objects::set_remote_ttl)). Bytes that do not add up
    /// to its size are passed on, not kept: the reader's length check says what is wrong.
    pub(crate) async fn keep_for(
        &self,
        object: Object,
        ttl: std::time::Duration,
        read_since: u64,
    ) -> Result<Object, StoreError> {
        let Object {
            meta,
            range,
            mut body,
        } = object;
        let mut chunks = Vec::new();
        let mut len = 0u64;
        while let Some(chunk) = body.try_next().await? {
            len += chunk.len() as u64;
            chunks.push(chunk);
            if len > meta.size {
                break;
            }
        }
        if len != meta.size {
            let body = stream::iter(chunks.into_iter().map(Ok)).chain(body).boxed();
            return Ok(Object { meta, range, body });
        }
        let bytes = Bytes::from(chunks.concat());
        if let Some(until) = Instant::now().checked_add(ttl) {
            self.insert(read_since, Validity::Until(until), meta.clone(), &bytes);
        }
        Ok(Object::whole(meta, bytes))
    }

    /// A remote object kept by [`keep_for`](Self::keep_for) and not expired.
    pub(crate) fn kept_for_now(&self, key: &str) -> Option<(ObjectInfo, Bytes)> {
        let now = Instant::now();
        self.get(key, |v| matches!(v, Validity::Until(t) if now < *t))
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

    fn meta(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            last_modified: SystemTime::UNIX_EPOCH,
            e_tag: None,
            version: None,
            content_encoding: None,
        }
    }

    #[test]
    fn an_entry_is_used_only_while_valid_and_dropped_after() {
        let hot = HotObjects::default();
        let until = Validity::Until(Instant::now() + Duration::from_secs(60));
        let g = hot.generation();
        hot.insert(g, until, meta("a.narinfo", 3), &Bytes::from_static(b"abc"));
        assert_eq!(hot.get("a.narinfo", |_| true).unwrap().1, &b"abc"[..]);
        assert!(hot.get("a.narinfo", |_| false).is_none());
        assert_eq!(hot.len(), (0, 0), "an invalid entry is dropped");
        assert!(hot.get("a.narinfo", |_| true).is_none());
    }

    #[test]
    fn large_objects_and_partial_bytes_are_not_kept_and_the_total_is_bounded() {
        let hot = HotObjects::default();
        let v = Validity::Until(Instant::now());
        let g = hot.generation();
        let big = Bytes::from(vec![0u8; MAX_ENTRY as usize + 1]);
        hot.insert(g, v, meta("big", big.len() as u64), &big);
        hot.insert(g, v, meta("part", 10), &Bytes::from_static(b"abc"));
        assert_eq!(hot.len(), (0, 0));
        let entry = Bytes::from(vec![1u8; MAX_ENTRY as usize]);
        for i in 0..(2 * MAX_BYTES / MAX_ENTRY as usize) {
            hot.insert(g, v, meta(&format!("k{i}"), MAX_ENTRY), &entry);
        }
        let (n, bytes) = hot.len();
        assert!(n > 0 && bytes <= MAX_BYTES, "{n} entries, {bytes} bytes");
        assert!(n >= MAX_BYTES / (MAX_ENTRY as usize + 300));
        // Replacing an entry counts it once; empty objects still cost their keys.
        hot.insert(g, v, meta("k0", 3), &Bytes::from_static(b"xyz"));
        hot.insert(g, v, meta("k0", 3), &Bytes::from_static(b"xyz"));
        for i in 0..100_000 {
            hot.insert(g, v, meta(&format!("empty{i}"), 0), &Bytes::new());
        }
        let (n, bytes) = hot.len();
        assert!(bytes <= MAX_BYTES && n < MAX_BYTES / ENTRY_OVERHEAD);
    }

    #[test]
    fn a_read_that_began_before_a_write_is_not_kept() {
        let hot = HotObjects::default();
        let v = Validity::Until(Instant::now() + Duration::from_secs(60));
        let before = hot.generation();
        hot.remove("a.narinfo"); // a write through the handle, while the read was under way
        hot.insert(before, v, meta("a.narinfo", 3), &Bytes::from_static(b"old"));
        assert!(hot.get("a.narinfo", |_| true).is_none());
        let after = hot.generation();
        hot.insert(after, v, meta("a.narinfo", 3), &Bytes::from_static(b"new"));
        assert_eq!(hot.get("a.narinfo", |_| true).unwrap().1, &b"new"[..]);
    }
}
