//! The pure, deterministic planner: a [`Snapshot`] of the cache (narinfo summaries on compact
//! integer ids, the objects listed, the tombstones of earlier runs), the roots, the time and
//! the [`PlanOptions`] in; a [`Plan`] out. No I/O, no clock, no randomness: the same input gives
//! the same plan, which is what the model test and `--dry-run` rely on.
//!
//! Memory: one [`PathSummary`] per narinfo (references as `u32` ids, the NAR key interned once
//! however many narinfos share it), never a whole narinfo.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::narinfo::NarInfo;
use crate::store_path::HASH_PART_LEN;

/// A store path's id (its hash part, interned).
pub type PathId = u32;
/// An object key's id (a NAR key or a log's derivation name, interned).
pub type KeyId = u32;

/// What the planner keeps of one narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSummary {
    /// `References`, as ids, without the path itself.
    pub references: Box<[PathId]>,
    /// The `URL:` (the NAR's key), interned.
    pub nar: KeyId,
    /// The key of the `.frames` object its `FramesHash` names, interned; [`FRAMES_UNKNOWN`]
    /// for a push index entry that does not say (written before the index recorded it).
    pub frames: Option<KeyId>,
    /// `FileSize` (0 when absent).
    pub file_size: u64,
    /// `NarSize`.
    pub nar_size: u64,
    /// When the narinfo was written (its object's last-modified), Unix seconds.
    pub pushed: u64,
    /// The base name of the `Deriver`, interned (its build log is `log/<deriver>`).
    pub deriver: Option<KeyId>,
    /// The narinfo object's version as listed ([`fingerprint`]): a rewrite changes it.
    pub version: u64,
}

impl PathSummary {
    /// The key of the `.frames` object the narinfo names, when it names one (and that is
    /// known).
    pub fn frames_key(&self) -> Option<KeyId> {
        self.frames.filter(|&f| f != FRAMES_UNKNOWN)
    }
}

/// A number that changes when an object is rewritten: its ETag, size and last-modified time
/// to the second, hashed, so that a listing and a HEAD of one unchanged object agree on every
/// backend (S3 lists times to the millisecond but HEAD answers them to the second; the ETag of
/// a local file holds its mtime to the microsecond). An S3 object rewritten with the same bytes
/// within the same second is not seen as rewritten by it: the applier keeps a narinfo listed in
/// the second of its tombstone on such stores instead (see `Applier::same_second`).
pub fn fingerprint(meta: &crate::store::ObjectInfo) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.e_tag.hash(&mut h);
    meta.size.hash(&mut h);
    super::roots::unix_secs(meta.last_modified).hash(&mut h);
    h.finish()
}

/// [`PathSummary::frames`] of a path whose push index entry does not say whether its narinfo
/// names frame digests: such an entry is used only while the cache has no `.frames` object
/// ([`Snapshot::confirm_indexed`]), else the narinfo is read.
pub const FRAMES_UNKNOWN: KeyId = KeyId::MAX;

/// An object GC may delete besides narinfos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectRef {
    /// A NAR object (its key).
    Nar(KeyId),
    /// A seekable NAR's frame digests, `nar/<nix32>.frames` (its key), named by the
    /// `FramesHash` of narinfos.
    Frames(KeyId),
    /// A path's `<hash>.ls`.
    Listing(PathId),
    /// A build log `log/<drv>`.
    Log(KeyId),
    /// A realisation `realisations/<id>.doi` (its id interned).
    Realisation(KeyId),
}

/// A tombstone written by an earlier run: what it unpublished and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TombstoneSummary {
    /// Its object name (`.cachecore/gc/<name>`).
    pub name: String,
    /// When it was written, Unix seconds.
    pub written: u64,
    /// The objects whose narinfos it unpublished.
    pub objects: Vec<ObjectRef>,
}

/// Everything the planner reads, on integer ids.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    hashes: Vec<[u8; HASH_PART_LEN]>,
    by_hash: HashMap<[u8; HASH_PART_LEN], PathId>,
    /// By [`PathId`]: the narinfo's summary, when the cache has a (parseable) narinfo.
    paths: Vec<Option<PathSummary>>,
    /// Hash parts whose narinfo exists but does not parse: never deleted, and while any
    /// exists no orphan NAR is deleted (what they name is unknown).
    unparseable: HashSet<PathId>,
    /// The listed versions of the unparseable narinfos ([`fingerprint`]).
    unparseable_versions: HashMap<PathId, u64>,
    /// Object keys, interned: their text one after another in one string (a million NAR keys
    /// cost their bytes and 24 more each, not three allocations).
    keys: KeyArena,
    /// Listed `nar/…` objects: size, last-modified (Unix seconds), [`fingerprint`].
    nar_objects: HashMap<KeyId, (u64, u64, u64)>,
    /// Listed `nar/<nix32>.frames` objects, as `nar_objects`.
    frame_objects: HashMap<KeyId, (u64, u64, u64)>,
    /// Listed `<hash>.ls` objects.
    listings: HashMap<PathId, (u64, u64)>,
    /// Listed build logs, by derivation base name.
    logs: HashMap<KeyId, u64>,
    /// Realisations, by id: the output path they name, size, last-modified.
    realisations: HashMap<KeyId, (PathId, u64, u64)>,
    tombstones: Vec<TombstoneSummary>,
    /// When `serve` last answered a path's narinfo (Unix seconds), from the access records.
    last_read: HashMap<PathId, u64>,
    /// By [`PathId`], for paths whose summary came from the push index: when the index object
    /// was written and the narinfo time the entry records (Unix ms; [`NO_TIME`] for none).
    index_stamps: Vec<(u64, u64)>,
    /// References to hash parts with no narinfo (a closure already broken), counted.
    pub dangling_references: u64,
}

/// Interned strings: the text of all in one `String`, each found by a 64-bit hash of its
/// text (the rare two with one hash are told apart by their text).
#[derive(Debug, Default, Clone)]
struct KeyArena {
    text: String,
    /// By id: where its text starts and ends in `text`.
    spans: Vec<(usize, usize)>,
    /// Hash of the text → the first id with that hash.
    by_hash: HashMap<u64, KeyId>,
    /// Ids whose hash an earlier id has already (by text).
    collisions: HashMap<Box<str>, KeyId>,
}

impl KeyArena {
    fn hash(key: &str) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    fn get(&self, id: KeyId) -> &str {
        self.spans
            .get(id as usize)
            .and_then(|&(a, b)| self.text.get(a..b))
            .unwrap_or("")
    }

    fn id(&self, key: &str) -> Option<KeyId> {
        match self.by_hash.get(&Self::hash(key)) {
            Some(&id) if self.get(id) == key => Some(id),
            Some(_) => self.collisions.get(key).copied(),
            None => None,
        }
    }

    fn intern(&mut self, key: &str) -> KeyId {
        if let Some(id) = self.id(key) {
            return id;
        }
        let id = KeyId::try_from(self.spans.len()).unwrap_or(KeyId::MAX);
        let start = self.text.len();
        self.text.push_str(key);
        self.spans.push((start, self.text.len()));
        match self.by_hash.entry(Self::hash(key)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.insert(key.into(), id);
            }
        }
        id
    }
}

/// No time recorded (an index stamp's).
const NO_TIME: u64 = u64::MAX;

/// A hash part as a fixed array, when `s` is one (32 ASCII bytes).
fn hash_key(s: &str) -> Option<[u8; HASH_PART_LEN]> {
    s.as_bytes().try_into().ok()
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Snapshot::default()
    }

    /// The id of hash part `hash`, interned on first sight. A string that is not 32 bytes has
    /// none (callers pass hash parts taken from keys and parsed store paths).
    pub fn intern_path(&mut self, hash: &str) -> Option<PathId> {
        let key = hash_key(hash)?;
        if let Some(&id) = self.by_hash.get(&key) {
            return Some(id);
        }
        let id = PathId::try_from(self.hashes.len()).ok()?;
        self.hashes.push(key);
        self.paths.push(None);
        self.by_hash.insert(key, id);
        Some(id)
    }

    /// The id of hash part `hash`, if seen.
    pub fn path_id(&self, hash: &str) -> Option<PathId> {
        self.by_hash.get(&hash_key(hash)?).copied()
    }

    /// The hash part of `id`.
    pub fn hash_part(&self, id: PathId) -> &str {
        self.hashes
            .get(id as usize)
            .and_then(|h| std::str::from_utf8(h).ok())
            .unwrap_or("")
    }

    /// The id of object key `key`, interned.
    pub fn intern_key(&mut self, key: &str) -> KeyId {
        self.keys.intern(key)
    }

    /// The id of object key `key`, if interned.
    pub fn key_id(&self, key: &str) -> Option<KeyId> {
        self.keys.id(key)
    }

    /// The key of `id`.
    pub fn key(&self, id: KeyId) -> &str {
        self.keys.get(id)
    }

    /// Every listed NAR object's key.
    pub fn nar_keys(&self) -> impl Iterator<Item = &str> {
        self.nar_objects.keys().map(|&k| self.key(k))
    }

    /// Every listed frame digests object's key.
    pub fn frames_keys(&self) -> impl Iterator<Item = &str> {
        self.frame_objects.keys().map(|&k| self.key(k))
    }

    /// The summary of path `id`, when it has a parseable narinfo.
    pub fn summary(&self, id: PathId) -> Option<&PathSummary> {
        self.paths.get(id as usize).and_then(Option::as_ref)
    }

    /// Adds the narinfo stored at `hash`'s key, written at `pushed` (Unix seconds).
    /// `version` is its [`fingerprint`].
    pub fn add_narinfo(&mut self, hash: &str, info: &NarInfo, pushed: u64, version: u64) {
        let frames = crate::store::index::frames_hash(info);
        self.add_path(
            hash,
            (&info.references, info.deriver.as_ref()),
            (&info.url, Some(frames.as_ref())),
            (info.file_size.unwrap_or(0), info.nar_size),
            (pushed, version),
        );
    }

    /// Adds the path a push index entry describes (see [`add_narinfo`](Self::add_narinfo)).
    pub fn add_index_entry(&mut self, entry: &crate::store::IndexEntry, pushed: u64, version: u64) {
        self.add_path(
            &entry.path.hash_part(),
            (&entry.references, entry.deriver.as_ref()),
            (
                &entry.url,
                entry.frames_known.then_some(entry.frames.as_ref()),
            ),
            (entry.file_size.unwrap_or(0), entry.nar_size),
            (pushed, version),
        );
    }

    /// `frames`: the `FramesHash`, `None` when unknown.
    fn add_path(
        &mut self,
        hash: &str,
        (references, deriver): (
            &[crate::store_path::StorePath],
            Option<&crate::store_path::StorePath>,
        ),
        (url, frames): (&str, Option<Option<&crate::hash::Hash>>),
        (file_size, nar_size): (u64, u64),
        (pushed, version): (u64, u64),
    ) {
        let Some(id) = self.intern_path(hash) else {
            return;
        };
        let mut references: Vec<PathId> = references
            .iter()
            .filter_map(|r| self.intern_path(&r.hash_part()))
            .filter(|&r| r != id)
            .collect();
        references.sort_unstable();
        references.dedup();
        let nar = self.intern_key(url);
        let frames = self.intern_frames(frames);
        let deriver = deriver.map(|d| self.intern_key(&d.to_string()));
        if let Some(stamp) = self.index_stamps.get_mut(id as usize) {
            *stamp = (NO_TIME, NO_TIME); // read from its narinfo
        }
        if let Some(slot) = self.paths.get_mut(id as usize) {
            *slot = Some(PathSummary {
                references: references.into(),
                nar,
                frames,
                file_size,
                nar_size,
                pushed,
                deriver,
                version,
            });
        }
    }

    /// Adds the entries of one push index object ([`crate::store::index`]), written at
    /// `written_ms` (its last-modified, Unix ms), straight into the snapshot (no entry is kept
    /// whole): an entry replaces the summary an earlier one gave its path (give objects oldest
    /// first). The entries stand until [`confirm_indexed`](Self::confirm_indexed) checks them
    /// against the listed narinfos. Returns the lines that do not parse (`line n: why`); a
    /// body whose header is wrong is an error.
    pub fn add_index_object(
        &mut self,
        bytes: &[u8],
        written_ms: u64,
    ) -> Result<Vec<String>, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        let mut lines = text.lines();
        if lines.next() != Some(crate::store::index::INDEX_HEADER) {
            return Err(format!(
                "line 1 is not `{}`",
                crate::store::index::INDEX_HEADER
            ));
        }
        let mut bad = Vec::new();
        for (i, line) in lines.enumerate() {
            if let Err(why) = self.add_index_line(line, written_ms) {
                bad.push(format!("line {}: {why}", i + 2));
            }
        }
        Ok(bad)
    }

    /// One index line (as [`crate::store::IndexEntry`] parses it), into the snapshot.
    fn add_index_line(&mut self, line: &str, written_ms: u64) -> Result<(), String> {
        use crate::store_path::StorePathRef;
        let mut fields = line.split('\t');
        let mut next = || fields.next();
        let wrong = || format!("{} fields, not 8 or 9", line.split('\t').count());
        let (
            Some(path),
            Some(url),
            Some(nar_size),
            Some(file_size),
            Some(pushed),
            Some(mtime),
            Some(deriver),
            Some(refs),
            frames,
            None,
        ) = (
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
        )
        else {
            return Err(wrong());
        };
        let frames = frames.map(crate::store::index::field_frames).transpose()?;
        use crate::store::index::{field_number as num, field_optional as opt};
        let base = |v: &str| -> Result<(), String> {
            StorePathRef::from_base_name(v)
                .map(drop)
                .map_err(|e| format!("{:?} is not a store path: {e}", crate::narinfo::excerpt(v)))
        };
        if !crate::store::layout::is_nar(url) {
            return Err(format!(
                "{:?} is not a NAR key",
                crate::narinfo::excerpt(url)
            ));
        }
        base(path)?;
        let nar_size = num("NarSize", nar_size)?;
        let file_size = opt("FileSize", file_size)?;
        let pushed = num("push time", pushed)?;
        let mtime = opt("narinfo time", mtime)?;
        let deriver = match deriver {
            "-" => None,
            d => {
                base(d)?;
                Some(d)
            }
        };
        let mut ids: Vec<PathId> = Vec::new();
        for r in refs.split(' ').filter(|r| !r.is_empty()) {
            base(r)?;
        }
        let Some(id) = self.intern_path(&path[..HASH_PART_LEN]) else {
            return Err("a store path without a hash part".to_owned());
        };
        for r in refs.split(' ').filter(|r| !r.is_empty()) {
            ids.extend(self.intern_path(&r[..HASH_PART_LEN]).filter(|&r| r != id));
        }
        ids.sort_unstable();
        ids.dedup();
        let nar = self.intern_key(url);
        let frames = self.intern_frames(frames.as_ref().map(Option::as_ref));
        let deriver = deriver.map(|d| self.intern_key(d));
        if let Some(slot) = self.paths.get_mut(id as usize) {
            *slot = Some(PathSummary {
                references: ids.into(),
                nar,
                frames,
                file_size: file_size.unwrap_or(0),
                nar_size,
                pushed,
                deriver,
                version: 0,
            });
        }
        let i = id as usize;
        if self.index_stamps.len() <= i {
            self.index_stamps.resize(i + 1, (NO_TIME, NO_TIME));
        }
        self.index_stamps[i] = (written_ms, mtime.unwrap_or(NO_TIME));
        Ok(())
    }

    /// For the narinfo of path `id` as listed (last modified at `mtime_ms`, Unix ms; version
    /// `version`): whether the push index entry added for it still describes it — it records
    /// that very time, or (a writer's entry, with no time) the narinfo is not newer than the
    /// index object. If so the summary takes the listed time and version and `true` is
    /// returned; else the caller reads the narinfo ([`add_narinfo`](Self::add_narinfo)).
    pub fn confirm_indexed(&mut self, id: PathId, mtime_ms: u64, version: u64) -> bool {
        let i = id as usize;
        let Some(&(written_ms, recorded)) = self.index_stamps.get(i) else {
            return false;
        };
        let fits = if recorded == NO_TIME {
            written_ms != NO_TIME && mtime_ms <= written_ms
        } else {
            recorded == mtime_ms
        };
        let frames_listed = !self.frame_objects.is_empty();
        match self.paths.get_mut(i) {
            // An entry that does not say which frame digests its narinfo names is of no use
            // while some `.frames` object may be its.
            Some(Some(summary))
                if fits && !(frames_listed && summary.frames == Some(FRAMES_UNKNOWN)) =>
            {
                if summary.frames == Some(FRAMES_UNKNOWN) {
                    summary.frames = None;
                }
                summary.pushed = mtime_ms / 1000;
                summary.version = version;
                self.index_stamps[i] = (NO_TIME, NO_TIME);
                true
            }
            _ => false,
        }
    }

    /// Forgets the summaries of index entries no listed narinfo confirmed (their narinfo is
    /// gone, or was read instead): call after every listed narinfo was confirmed or read.
    pub fn drop_unconfirmed(&mut self) {
        for (i, stamp) in self.index_stamps.iter_mut().enumerate() {
            if stamp.0 != NO_TIME {
                if let Some(slot) = self.paths.get_mut(i) {
                    *slot = None;
                }
            }
            *stamp = (NO_TIME, NO_TIME);
        }
        self.index_stamps = Vec::new();
    }

    /// Adds a narinfo key whose object does not parse.
    pub fn add_unparseable(&mut self, hash: &str) {
        if let Some(id) = self.intern_path(hash) {
            self.unparseable.insert(id);
        }
    }

    /// Adds a narinfo key whose object does not parse, with its listed [`fingerprint`] (so that
    /// `delete_unparseable` can check it is still the object read).
    pub fn add_unparseable_version(&mut self, hash: &str, version: u64) {
        if let Some(id) = self.intern_path(hash) {
            self.unparseable.insert(id);
            self.unparseable_versions.insert(id, version);
        }
    }

    /// The listed version of the narinfo of `id`, parseable or not.
    pub fn narinfo_version(&self, id: PathId) -> Option<u64> {
        self.summary(id)
            .map(|s| s.version)
            .or_else(|| self.unparseable_versions.get(&id).copied())
    }

    /// Adds a listed NAR object.
    pub fn add_nar_object(&mut self, key: &str, size: u64, modified: u64, version: u64) {
        let id = self.intern_key(key);
        self.nar_objects.insert(id, (size, modified, version));
    }

    /// Adds a listed `nar/<nix32>.frames` object (frame digests).
    pub fn add_frames_object(&mut self, key: &str, size: u64, modified: u64, version: u64) {
        let id = self.intern_key(key);
        self.frame_objects.insert(id, (size, modified, version));
    }

    /// The [`fingerprint`] of a listed frame digests object.
    pub fn frames_version(&self, key: KeyId) -> Option<u64> {
        self.frame_objects.get(&key).map(|s| s.2)
    }

    /// The interned key of the `.frames` object `frames` names: `None` for none,
    /// [`FRAMES_UNKNOWN`] when not known.
    fn intern_frames(&mut self, frames: Option<Option<&crate::hash::Hash>>) -> Option<KeyId> {
        match frames {
            None => Some(FRAMES_UNKNOWN),
            Some(None) => None,
            Some(Some(h)) => Some(self.intern_key(&crate::store::layout::frame_digests(h))),
        }
    }

    /// The [`fingerprint`] of a listed NAR object.
    pub fn nar_version(&self, key: KeyId) -> Option<u64> {
        self.nar_objects.get(&key).map(|s| s.2)
    }

    /// Adds a listed `<hash>.ls`.
    pub fn add_listing(&mut self, hash: &str, size: u64, modified: u64) {
        if let Some(id) = self.intern_path(hash) {
            self.listings.insert(id, (size, modified));
        }
    }

    /// Adds a realisation `realisations/<id>.doi` naming the output path with hash part
    /// `out_hash`.
    pub fn add_realisation(&mut self, id: &str, out_hash: &str, size: u64, modified: u64) {
        if let Some(out) = self.intern_path(out_hash) {
            let k = self.intern_key(id);
            self.realisations.insert(k, (out, size, modified));
        }
    }

    /// Adds a listed build log `log/<drv>`.
    pub fn add_log(&mut self, drv: &str, size: u64) {
        let id = self.intern_key(drv);
        self.logs.insert(id, size);
    }

    /// Sets the listed times of objects from `time_of(key)` (Unix seconds), for the model
    /// test, whose clock runs ahead of the in-memory store's.
    #[cfg(test)]
    pub(crate) fn set_times(&mut self, time_of: impl Fn(&str) -> Option<u64>) {
        for (k, v) in self
            .nar_objects
            .iter_mut()
            .chain(self.frame_objects.iter_mut())
        {
            if let Some(t) = time_of(self.keys.get(*k)) {
                v.1 = t;
            }
        }
        for (p, v) in self.listings.iter_mut() {
            let hash = std::str::from_utf8(&self.hashes[*p as usize]).unwrap_or("");
            if let Some(t) = time_of(&format!("{hash}.ls")) {
                v.1 = t;
            }
        }
        for (i, s) in self.paths.iter_mut().enumerate() {
            let hash = std::str::from_utf8(&self.hashes[i]).unwrap_or("");
            if let (Some(s), Some(t)) = (s.as_mut(), time_of(&format!("{hash}.narinfo"))) {
                s.pushed = t;
            }
        }
    }

    /// Records that `serve` last answered the narinfo of `hash` at `secs` (Unix seconds); a
    /// path the snapshot has not seen is ignored.
    pub fn set_last_read(&mut self, hash: &str, secs: u64) {
        if let Some(id) = self.path_id(hash) {
            let t = self.last_read.entry(id).or_insert(secs);
            *t = (*t).max(secs);
        }
    }

    /// When path `id` was last used: pushed, or read through `serve` (as its access records
    /// say), whichever is later; 0 without a narinfo.
    pub fn last_used(&self, id: PathId) -> u64 {
        let pushed = self.summary(id).map_or(0, |s| s.pushed);
        pushed.max(self.last_read.get(&id).copied().unwrap_or(0))
    }

    /// How many paths have an access time.
    pub fn read_paths(&self) -> usize {
        self.last_read.len()
    }

    /// Adds an earlier run's tombstone.
    pub fn add_tombstone(&mut self, tombstone: TombstoneSummary) {
        self.tombstones.push(tombstone);
    }

    /// How many path ids there are (paths with a narinfo, and paths only named).
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// Whether the narinfo of `id` exists but does not parse.
    pub fn is_unparseable(&self, id: PathId) -> bool {
        self.unparseable.contains(&id)
    }

    /// How many paths have a (parseable) narinfo.
    pub fn narinfo_count(&self) -> usize {
        self.paths.iter().filter(|p| p.is_some()).count()
    }

    /// The size of the object, as listed (0 when not listed).
    pub fn object_size(&self, object: ObjectRef) -> u64 {
        match object {
            ObjectRef::Nar(k) => self.nar_objects.get(&k).map_or(0, |s| s.0),
            ObjectRef::Frames(k) => self.frame_objects.get(&k).map_or(0, |s| s.0),
            ObjectRef::Listing(p) => self.listings.get(&p).map_or(0, |s| s.0),
            ObjectRef::Log(k) => self.logs.get(&k).copied().unwrap_or(0),
            ObjectRef::Realisation(k) => self.realisations.get(&k).map_or(0, |r| r.1),
        }
    }

    /// When the object was last written, as listed.
    pub fn object_modified(&self, object: ObjectRef) -> Option<u64> {
        match object {
            ObjectRef::Nar(k) => self.nar_objects.get(&k).map(|s| s.1),
            ObjectRef::Frames(k) => self.frame_objects.get(&k).map(|s| s.1),
            ObjectRef::Listing(p) => self.listings.get(&p).map(|s| s.1),
            ObjectRef::Log(_) => None,
            ObjectRef::Realisation(k) => self.realisations.get(&k).map(|r| r.2),
        }
    }
}

/// A set of [`ObjectRef`]s as bitmaps by id (a million objects: a few MB, and no hashing).
#[derive(Debug, Default)]
struct ObjectSet {
    nars: Vec<bool>,
    frames: Vec<bool>,
    listings: Vec<bool>,
    logs: Vec<bool>,
    realisations: Vec<bool>,
}

impl ObjectSet {
    fn slot(&mut self, o: ObjectRef) -> &mut bool {
        let (bits, i) = match o {
            ObjectRef::Nar(k) => (&mut self.nars, k),
            ObjectRef::Frames(k) => (&mut self.frames, k),
            ObjectRef::Listing(p) => (&mut self.listings, p),
            ObjectRef::Log(k) => (&mut self.logs, k),
            ObjectRef::Realisation(k) => (&mut self.realisations, k),
        };
        let i = i as usize;
        if bits.len() <= i {
            bits.resize(i + 1, false);
        }
        &mut bits[i]
    }

    /// Adds `o`; whether it was not there.
    fn insert(&mut self, o: ObjectRef) -> bool {
        !std::mem::replace(self.slot(o), true)
    }

    fn contains(&self, o: ObjectRef) -> bool {
        let (bits, i) = match o {
            ObjectRef::Nar(k) => (&self.nars, k),
            ObjectRef::Frames(k) => (&self.frames, k),
            ObjectRef::Listing(p) => (&self.listings, p),
            ObjectRef::Log(k) => (&self.logs, k),
            ObjectRef::Realisation(k) => (&self.realisations, k),
        };
        bits.get(i as usize).copied().unwrap_or(false)
    }
}

/// What a run may delete, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Paths whose narinfo was written within this long before `now` are live (with their
    /// closures). `None`: only roots keep paths.
    pub older_than: Option<Duration>,
    /// Paths pushed or read (through `serve --record-access`) within this long before `now`
    /// are live (with their closures).
    pub unused_for: Option<Duration>,
    /// How long the objects of unpublished narinfos stay, recorded in a tombstone, before a
    /// later run deletes them. Zero (`--force`): deleted in the same run.
    pub grace: Duration,
    /// NARs and listings that no narinfo names are deleted once older than this (killed
    /// pushes).
    pub failed_uploads_older_than: Duration,
    /// Delete only what trashed roots reach and nothing else keeps.
    pub only_trashed: bool,
    /// Plan even with no root and no `older_than` (everything unrooted is garbage).
    pub allow_empty_roots: bool,
    /// Keep the most recently used unrooted paths (by push time, or last read where access
    /// records say) whose NARs fit in this many bytes with
    /// those of the live paths; evict the others, never a path a kept path refers to.
    pub max_size: Option<u64>,
    /// Delete narinfos that do not parse (when no live narinfo refers to them).
    pub delete_unparseable: bool,
}

/// The default grace: two days, longer than any presigned upload URL `serve` hands out (at
/// most an hour) and any narinfo disk cache of Nix (`narinfo-cache-positive-ttl`, 30 days, is
/// longer: a client that cached a narinfo for longer than the grace gets a 404 for its NAR and
/// falls back to building or another substituter).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2 * 24 * 3600);

/// The default age after which objects no narinfo names are deleted: one day, as push's
/// clean-up of its own leftovers.
pub const DEFAULT_FAILED_UPLOADS_OLDER_THAN: Duration = Duration::from_secs(24 * 3600);

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            older_than: None,
            unused_for: None,
            grace: DEFAULT_GRACE,
            failed_uploads_older_than: DEFAULT_FAILED_UPLOADS_OLDER_THAN,
            only_trashed: false,
            allow_empty_roots: false,
            max_size: None,
            delete_unparseable: false,
        }
    }
}

/// The roots a plan starts from, as ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootIds {
    /// Paths kept by live roots.
    pub live: Vec<PathId>,
    /// Paths kept by the leases of pushes in progress (roots that do not count as roots for
    /// [`PlanError::EmptyRoots`] nor as missing when the cache lacks them).
    pub leased: Vec<PathId>,
    /// Paths named by trashed roots (used by `only_trashed`).
    pub trashed: Vec<PathId>,
}

/// Why no plan was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("no GC root and no --older-than, --unused-for or --max-size: everything in the cache would be garbage; add roots (`cachecore roots add`), give --older-than, or pass --allow-empty-roots if that is really meant")]
    EmptyRoots,
}

impl PlanError {
    /// Always [`InvalidInput`](crate::error::ErrorKind::InvalidInput).
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::InvalidInput
    }
}

/// What a run does, in the order it must be done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Paths with a narinfo that stay.
    pub live: usize,
    /// Narinfos to delete, referrers before what they reference.
    pub narinfos: Vec<PathId>,
    /// Paths of `narinfos` in a reference cycle (a corrupt cache), deleted last, in id order.
    pub in_cycles: usize,
    /// Objects of those narinfos that no remaining narinfo names: recorded in this run's
    /// tombstone, deleted by a run after the grace (or right after the narinfos with grace 0).
    pub tombstone: Vec<ObjectRef>,
    /// Objects to delete after the narinfos: those of due tombstones, orphans, and (grace 0)
    /// `tombstone`'s.
    pub delete: Vec<ObjectRef>,
    /// Of `delete`: the orphans (named by no narinfo, older than the limit).
    pub orphans: usize,
    /// Tombstones whose objects were all handled (deleted, or kept because something names
    /// them again): deleted after `delete` succeeded.
    pub finished_tombstones: Vec<String>,
    /// Orphan NARs kept because some narinfo does not parse (what it names is unknown).
    pub orphans_kept_for_unparseable: usize,
    /// Root paths the cache has no narinfo for.
    pub missing_roots: usize,
    /// Of `narinfos`, how many are unparseable ones (`delete_unparseable`), placed last.
    pub unparseable: usize,
    /// Unrooted paths kept to fill `max_size`.
    pub kept_for_size: usize,
    /// Of `delete`, the realisations (their output's narinfo goes, or is gone).
    pub realisations: usize,
}

impl Plan {
    /// Bytes of NARs and listings (as listed) the run deletes now or after the grace.
    pub fn bytes(&self, snapshot: &Snapshot) -> u64 {
        let all: HashSet<ObjectRef> = self.tombstone.iter().chain(&self.delete).copied().collect();
        all.iter()
            .map(|o| snapshot.object_size(*o))
            .fold(0, u64::saturating_add)
    }
}

/// Plans a run: see the [module docs](super) for what is garbage.
pub fn plan(
    snapshot: &Snapshot,
    roots: &RootIds,
    now: u64,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let has_narinfo = |id: PathId| snapshot.summary(id).is_some();
    if roots.live.is_empty()
        && options.older_than.is_none()
        && options.unused_for.is_none()
        && options.max_size.is_none()
        && !options.only_trashed
        && !options.allow_empty_roots
    {
        return Err(PlanError::EmptyRoots);
    }
    let n = snapshot.paths.len();
    let mut plan = Plan {
        missing_roots: roots.live.iter().filter(|&&r| !has_narinfo(r)).count(),
        ..Plan::default()
    };

    // Live: the closure of the seeds (unparseable narinfos are never deleted; their references
    // are unknown, so they keep nothing).
    let seeds: Vec<PathId> = seeds(snapshot, roots, now, options)
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();
    let mut live = closure(snapshot, &seeds);
    if let Some(max) = options.max_size {
        plan.kept_for_size = keep_newest(snapshot, &mut live, max);
    }
    plan.live = (0..n)
        .filter(|&i| live[i] && snapshot.paths[i].is_some())
        .count();

    let dead: Vec<PathId> = (0..n as PathId)
        .filter(|&id| !live[id as usize] && has_narinfo(id))
        .collect();
    let (mut order, in_cycles) = referrers_first(snapshot, &dead, &live);
    if options.delete_unparseable {
        // Last: their references are unknown, and they may be referred to by dead paths.
        let mut unparseable: Vec<PathId> = snapshot
            .unparseable
            .iter()
            .copied()
            .filter(|&u| !live[u as usize])
            .collect();
        unparseable.sort_unstable();
        plan.unparseable = unparseable.len();
        order.extend(unparseable);
    }
    plan.narinfos = order;
    plan.in_cycles = in_cycles;

    // What remaining narinfos name; and what any narinfo of the snapshot names.
    let mut named_live = ObjectSet::default();
    let mut named_any = ObjectSet::default();
    for id in 0..n as PathId {
        let Some(s) = snapshot.summary(id) else {
            if snapshot.unparseable.contains(&id) {
                named_live.insert(ObjectRef::Listing(id));
                named_any.insert(ObjectRef::Listing(id));
            }
            continue;
        };
        let objects = [
            Some(ObjectRef::Nar(s.nar)),
            s.frames_key().map(ObjectRef::Frames),
            Some(ObjectRef::Listing(id)),
            s.deriver.map(ObjectRef::Log),
        ];
        for o in objects.into_iter().flatten() {
            named_any.insert(o);
            if live[id as usize] {
                named_live.insert(o);
            }
        }
    }

    // Objects already waiting in a tombstone.
    let mut waiting = ObjectSet::default();
    let mut delete: Vec<ObjectRef> = Vec::new();
    let mut queued = ObjectSet::default();
    let mut tombstones: Vec<&TombstoneSummary> = snapshot.tombstones.iter().collect();
    tombstones.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tombstones {
        let due = now.saturating_sub(t.written) >= options.grace.as_secs();
        if !due {
            for &o in &t.objects {
                waiting.insert(o);
            }
            continue;
        }
        for &o in &t.objects {
            // Named again by a narinfo (live, or unpublished by this run, which tombstones it
            // anew), or rewritten since the tombstone (a push uploaded it again): kept.
            let rewritten = snapshot.object_modified(o).is_some_and(|m| m > t.written);
            if !named_any.contains(o) && !rewritten && queued.insert(o) {
                delete.push(o);
            }
        }
        plan.finished_tombstones.push(t.name.clone());
    }

    // This run's unpublished objects.
    let mut tombstone: Vec<ObjectRef> = Vec::new();
    let mut seen = ObjectSet::default();
    for &id in &plan.narinfos {
        let Some(s) = snapshot.summary(id) else {
            continue;
        };
        let mut objects = vec![ObjectRef::Nar(s.nar)];
        objects.extend(
            s.frames_key()
                .filter(|f| snapshot.frame_objects.contains_key(f))
                .map(ObjectRef::Frames),
        );
        if snapshot.listings.contains_key(&id) {
            objects.push(ObjectRef::Listing(id));
        }
        objects.extend(
            s.deriver
                .filter(|d| snapshot.logs.contains_key(d))
                .map(ObjectRef::Log),
        );
        for o in objects {
            if !named_live.contains(o) && seen.insert(o) {
                tombstone.push(o);
            }
        }
    }
    if options.grace.is_zero() {
        for &o in &tombstone {
            if queued.insert(o) {
                delete.push(o);
            }
        }
    }

    // Orphans: objects no narinfo names, old enough, not waiting in a tombstone.
    let limit = now.saturating_sub(options.failed_uploads_older_than.as_secs());
    let mut orphans: Vec<ObjectRef> = snapshot
        .nar_objects
        .iter()
        .map(|(&k, &(_, m, _))| (ObjectRef::Nar(k), m))
        .chain(
            snapshot
                .frame_objects
                .iter()
                .map(|(&k, &(_, m, _))| (ObjectRef::Frames(k), m)),
        )
        .chain(
            snapshot
                .listings
                .iter()
                .map(|(&p, &(_, m))| (ObjectRef::Listing(p), m)),
        )
        .filter(|&(o, m)| {
            m <= limit && !named_any.contains(o) && !waiting.contains(o) && !queued.contains(o)
        })
        .map(|(o, _)| o)
        .collect();
    orphans.sort_unstable();
    // Realisations whose output is not live: with this run's narinfos, or (output already
    // gone) once as old as an orphan.
    let mut realisations: Vec<ObjectRef> = snapshot
        .realisations
        .iter()
        .filter(|(_, &(out, _, modified))| {
            if has_narinfo(out) {
                !live[out as usize]
            } else {
                modified <= limit
            }
        })
        .map(|(&k, _)| ObjectRef::Realisation(k))
        .filter(|&o| !queued.contains(o))
        .collect();
    realisations.sort_unstable();
    plan.realisations = realisations.len();
    delete.extend(realisations);
    if !snapshot.unparseable.is_empty() {
        let before = orphans.len();
        orphans.retain(|o| !matches!(o, ObjectRef::Nar(_) | ObjectRef::Frames(_)));
        plan.orphans_kept_for_unparseable = before - orphans.len();
    }
    plan.orphans = orphans.len();
    delete.extend(orphans);

    plan.tombstone = tombstone;
    plan.delete = delete;
    Ok(plan)
}

/// What keeps a path live for its own sake, with its closure; in the order
/// [`Keepers`](super::why::Keepers) prefers them when several keep one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seed {
    /// A live root names it.
    Root,
    /// The lease of a push in progress names it.
    Lease,
    /// Pushed within `older_than`.
    PushedWithin,
    /// Pushed or read within `unused_for`.
    UsedWithin,
    /// `only_trashed`: no trashed root reaches it.
    NotTrashed,
}

/// The paths live for their own sake (the roots', the leases', those pushed within
/// `older_than`, pushed or read within `unused_for`, and with `only_trashed` every path
/// trashed roots do not reach), by what keeps them, in [`Seed`] order; a path may be in
/// several. Live is their closure, and with `max_size` the newest others that fit.
pub fn seeds(
    snapshot: &Snapshot,
    roots: &RootIds,
    now: u64,
    options: &PlanOptions,
) -> Vec<(Seed, Vec<PathId>)> {
    let n = snapshot.paths.len();
    let mut seeds = vec![
        (Seed::Root, roots.live.clone()),
        (Seed::Lease, roots.leased.clone()),
    ];
    if let Some(age) = options.older_than {
        let cutoff = now.saturating_sub(age.as_secs());
        seeds.push((
            Seed::PushedWithin,
            (0..n as PathId)
                .filter(|&id| snapshot.summary(id).is_some_and(|s| s.pushed >= cutoff))
                .collect(),
        ));
    }
    if let Some(age) = options.unused_for {
        let cutoff = now.saturating_sub(age.as_secs());
        seeds.push((
            Seed::UsedWithin,
            (0..n as PathId)
                .filter(|&id| snapshot.summary(id).is_some() && snapshot.last_used(id) >= cutoff)
                .collect(),
        ));
    }
    if options.only_trashed {
        let trashed = closure(snapshot, &roots.trashed);
        seeds.push((
            Seed::NotTrashed,
            (0..n as PathId)
                .filter(|&id| !trashed[id as usize])
                .collect(),
        ));
    }
    seeds
}

/// With `max_size`: marks live the most recently used paths not yet live ([`Snapshot::last_used`]:
/// pushed or read) whose NARs fit, with the live ones', in `max` bytes, and returns how many. A
/// path goes no sooner than every path that refers to it: paths are taken by the latest use
/// among themselves and everything referring to them (so a kept path's references are kept),
/// latest first, while they fit.
fn keep_newest(snapshot: &Snapshot, live: &mut [bool], max: u64) -> usize {
    let n = live.len();
    let nar_size = |s: &PathSummary| {
        snapshot
            .nar_objects
            .get(&s.nar)
            .map_or(s.file_size, |o| o.0)
    };
    // Bytes of the NARs live paths name (a shared NAR counts once).
    let mut counted: HashSet<KeyId> = HashSet::new();
    let mut size: u64 = 0;
    for id in 0..n as PathId {
        if let (true, Some(s)) = (live[id as usize], snapshot.summary(id)) {
            if counted.insert(s.nar) {
                size = size.saturating_add(nar_size(s));
            }
        }
    }
    let candidates: Vec<PathId> = (0..n as PathId)
        .filter(|&id| !live[id as usize] && snapshot.summary(id).is_some())
        .collect();
    // The newest push among a path and everything referring to it, referrers first.
    let (order, _) = referrers_first(snapshot, &candidates, live);
    let mut newest: HashMap<PathId, u64> = HashMap::with_capacity(order.len());
    for &id in &order {
        let Some(s) = snapshot.summary(id) else {
            continue;
        };
        let used = snapshot.last_used(id);
        let own = newest.entry(id).or_insert(used);
        *own = (*own).max(used);
        let mine = *own;
        for &r in s.references.iter() {
            if !live[r as usize] {
                let theirs = newest.entry(r).or_insert(0);
                *theirs = (*theirs).max(mine);
            }
        }
    }
    // Newest first; among equals, references before their referrers (the reverse of `order`).
    let position: HashMap<PathId, usize> = order.iter().enumerate().map(|(i, &p)| (p, i)).collect();
    let mut by_age = order.clone();
    by_age.sort_by_key(|id| {
        (
            std::cmp::Reverse(newest.get(id).copied().unwrap_or(0)),
            std::cmp::Reverse(position.get(id).copied().unwrap_or(0)),
        )
    });
    let mut kept = 0;
    for id in by_age {
        let Some(s) = snapshot.summary(id) else {
            continue;
        };
        let extra = if counted.contains(&s.nar) {
            0
        } else {
            nar_size(s)
        };
        if size.saturating_add(extra) > max {
            // Everything older goes too: a later, smaller path must not keep a reference of a
            // path evicted here.
            break;
        }
        size = size.saturating_add(extra);
        counted.insert(s.nar);
        live[id as usize] = true;
        kept += 1;
    }
    kept
}

/// The closure of `seeds` (those with a narinfo, and what their narinfos reference), as a
/// bitmap by [`PathId`].
fn closure(snapshot: &Snapshot, seeds: &[PathId]) -> Vec<bool> {
    let mut seen = vec![false; snapshot.paths.len()];
    let mut stack: Vec<PathId> = Vec::new();
    for &s in seeds {
        if let Some(slot) = seen.get_mut(s as usize) {
            if !*slot {
                *slot = true;
                stack.push(s);
            }
        }
    }
    while let Some(id) = stack.pop() {
        let Some(s) = snapshot.summary(id) else {
            continue;
        };
        for &r in s.references.iter() {
            if let Some(slot) = seen.get_mut(r as usize) {
                if !*slot {
                    *slot = true;
                    stack.push(r);
                }
            }
        }
    }
    seen
}

/// `dead` ordered referrers first (Kahn's algorithm on the dead subgraph, smallest id first
/// among the ready ones, so the order is deterministic); paths in a cycle follow, by id.
/// A live path never references a dead one (live is closed under references), so only dead
/// referrers count.
fn referrers_first(snapshot: &Snapshot, dead: &[PathId], live: &[bool]) -> (Vec<PathId>, usize) {
    use std::cmp::Reverse;
    /// Not in `dead`.
    const OTHER: u32 = u32::MAX;
    // By id: how many dead paths refer to it (dead ones only).
    let mut referrers: Vec<u32> = vec![OTHER; snapshot.paths.len()];
    for &d in dead {
        if let Some(c) = referrers.get_mut(d as usize) {
            *c = 0;
        }
    }
    for &d in dead {
        if let Some(s) = snapshot.summary(d) {
            for &r in s.references.iter() {
                if let Some(c) = referrers.get_mut(r as usize).filter(|c| **c != OTHER) {
                    *c += 1;
                }
            }
        }
    }
    // Smallest id first among the ready ones.
    let mut ready: std::collections::BinaryHeap<Reverse<PathId>> = dead
        .iter()
        .filter(|&&d| referrers.get(d as usize) == Some(&0))
        .map(|&d| Reverse(d))
        .collect();
    let mut placed = vec![false; snapshot.paths.len()];
    let mut order = Vec::with_capacity(dead.len());
    while let Some(Reverse(id)) = ready.pop() {
        if std::mem::replace(&mut placed[id as usize], true) {
            continue; // listed twice in `dead`
        }
        order.push(id);
        if let Some(s) = snapshot.summary(id) {
            for &r in s.references.iter() {
                if let Some(c) = referrers.get_mut(r as usize).filter(|c| **c != OTHER) {
                    *c -= 1;
                    if *c == 0 {
                        ready.push(Reverse(r));
                    }
                }
            }
        }
    }
    let mut rest: Vec<PathId> = dead
        .iter()
        .copied()
        .filter(|&d| !placed[d as usize] && !live[d as usize])
        .collect();
    rest.sort_unstable();
    rest.dedup();
    let in_cycles = rest.len();
    order.extend(rest);
    (order, in_cycles)
}
