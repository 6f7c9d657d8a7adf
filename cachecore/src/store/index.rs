//! The push index: `index/<time>-<unique>` objects, each listing the paths one operation
//! published (a push, a copy, a proxy fill, an upload `serve` took), written after the narinfos
//! they list. Append-only under unique names, so no compare-and-swap is needed; duplicates are
//! harmless (the entry of the newest object wins). An optimisation only: deleting every index
//! object loses nothing, since paths no entry covers are read from their narinfos.
//!
//! Format (text, one object):
//!
//! ```text
//! cachecore-index 1
//! <base name>\t<NAR key>\t<NarSize>\t<FileSize|->\t<pushed unix secs>\t<narinfo mtime ms|->\t<Deriver base name|->\t<references, space-separated base names>\t<frame digests key|->
//! ```
//!
//! The last field, the key of the `.frames` object the narinfo's `FramesHash` names
//! (`layout::frame_digests`), was added after the first index objects were written: a line
//! of eight fields does not say whether its narinfo names frame digests
//! ([`IndexEntry::frames_known`] is false), and a GC reads such a narinfo when the cache has
//! any `.frames` object.
//!
//! An entry is used for a path only while it still describes the narinfo listed under the
//! path's key: when it records the narinfo's modification time (compaction and
//! `index rebuild` do), that time must be the listed one; else (a writer's entry) the narinfo
//! must not be newer than the index object. Otherwise, and for every path no entry covers, the
//! narinfo itself is read.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::cache::BinaryCache;
use super::error::StoreError;
use super::layout;
use super::objects::{ObjectInfo, WriteMode};
use crate::narinfo::NarInfo;
use crate::store_path::StorePath;

/// The first line of an index object.
pub const INDEX_HEADER: &str = "cachecore-index 1";

/// How many narinfo keys [`BinaryCache::path_pages`] resolves at a time.
pub const PATHS_PAGE: usize = 1000;

/// The largest index object read: 256 MiB (about 700,000 entries of 4 references).
pub const MAX_INDEX_OBJECT_BYTES: u64 = 256 << 20;

/// The most entries one index object holds (about 35 MB): a compaction of more writes several.
pub const ENTRIES_PER_OBJECT: usize = 100_000;

/// One path as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub path: StorePath,
    /// The narinfo's `URL:` (the NAR's key).
    pub url: String,
    pub nar_size: u64,
    pub file_size: Option<u64>,
    /// When it was pushed (Unix seconds, by the writer's clock; for a path read from its
    /// narinfo, the narinfo's modification time).
    pub pushed: u64,
    /// The narinfo's modification time (Unix milliseconds) when known for certain.
    pub narinfo_mtime_ms: Option<u64>,
    pub deriver: Option<StorePath>,
    /// `References`, the path itself included when the narinfo lists it.
    pub references: Vec<StorePath>,
    /// The `FramesHash` of the narinfo (its `.frames` object is `layout::frame_digests`).
    pub frames: Option<crate::hash::Hash>,
    /// Whether `frames` is known: false for an entry of eight fields, written before the index
    /// recorded frame digests.
    pub frames_known: bool,
    /// The listed narinfo's version ([`crate::gc::fingerprint`]) when it came from a listing.
    pub(crate) version: u64,
    /// Whether it came from the index (not from reading the narinfo).
    pub(crate) indexed: bool,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl IndexEntry {
    /// The entry for `info`, pushed at `pushed` (Unix seconds).
    pub fn from_narinfo(info: &NarInfo, pushed: u64) -> IndexEntry {
        IndexEntry {
            path: info.store_path.clone(),
            url: info.url.clone(),
            nar_size: info.nar_size,
            file_size: info.file_size,
            pushed,
            narinfo_mtime_ms: None,
            deriver: info.deriver.clone(),
            references: info.references.clone(),
            frames: frames_hash(info),
            frames_known: true,
            version: 0,
            indexed: false,
        }
    }

    fn render_into(&self, out: &mut String) {
        use std::fmt::Write as _;
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let refs: Vec<String> = self.references.iter().map(ToString::to_string).collect();
        let _ = write!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.path,
            self.url,
            self.nar_size,
            opt(self.file_size),
            self.pushed,
            opt(self.narinfo_mtime_ms),
            self.deriver
                .as_ref()
                .map_or("-".to_owned(), ToString::to_string),
            refs.join(" ")
        );
        if self.frames_known {
            let frames = self.frames.as_ref().map(layout::frame_digests);
            let _ = write!(out, "\t{}", frames.as_deref().unwrap_or("-"));
        }
        out.push('\n');
    }

    /// One line (without its newline), or why not.
    fn parse_line(line: &str) -> Result<IndexEntry, String> {
        let fields: Vec<&str> = line.split('\t').collect();
        let wrong = || format!("{} fields, not 8 or 9", fields.len());
        let [path, url, nar_size, file_size, pushed, mtime, deriver, refs, ref frames @ ..] =
            fields[..]
        else {
            return Err(wrong());
        };
        let (frames, frames_known) = match frames {
            [] => (None, false),
            [frames] => (field_frames(frames)?, true),
            _ => return Err(wrong()),
        };
        let (num, opt) = (field_number, field_optional);
        let store_path = |v: &str| {
            StorePath::from_base_name(v)
                .map_err(|e| format!("{:?} is not a store path: {e}", crate::narinfo::excerpt(v)))
        };
        if !layout::is_nar(url) {
            return Err(format!(
                "{:?} is not a NAR key",
                crate::narinfo::excerpt(url)
            ));
        }
        Ok(IndexEntry {
            path: store_path(path)?,
            url: url.to_owned(),
            nar_size: num("NarSize", nar_size)?,
            file_size: opt("FileSize", file_size)?,
            pushed: num("push time", pushed)?,
            narinfo_mtime_ms: opt("narinfo time", mtime)?,
            deriver: match deriver {
                "-" => None,
                d => Some(store_path(d)?),
            },
            references: refs
                .split(' ')
                .filter(|r| !r.is_empty())
                .map(store_path)
                .collect::<Result<_, _>>()?,
            frames,
            frames_known,
            version: 0,
            indexed: false,
        })
    }
}

/// A number field of an index line (`what` names it in the error).
pub(crate) fn field_number(what: &str, v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("{what} {:?} is not a number", crate::narinfo::excerpt(v)))
}

/// The `FramesHash` a narinfo names, when it names one that parses.
pub(crate) fn frames_hash(info: &NarInfo) -> Option<crate::hash::Hash> {
    crate::access::FramesClaim::of(info).map(|c| c.frames)
}

/// The frame digests field of an index line: a `nar/<nix32>.frames` key, or `-`.
pub(crate) fn field_frames(v: &str) -> Result<Option<crate::hash::Hash>, String> {
    match v {
        "-" => Ok(None),
        v => layout::frame_digests_hash(v).map(Some).ok_or_else(|| {
            format!(
                "{:?} is not a frame digests key",
                crate::narinfo::excerpt(v)
            )
        }),
    }
}

/// A number field of an index line that may be `-` (none).
pub(crate) fn field_optional(what: &str, v: &str) -> Result<Option<u64>, String> {
    match v {
        "-" => Ok(None),
        v => field_number(what, v).map(Some),
    }
}

/// An index object's body for `entries`.
pub fn render_index(entries: &[IndexEntry]) -> String {
    let mut out = format!("{INDEX_HEADER}\n");
    for e in entries {
        e.render_into(&mut out);
    }
    out
}

/// The entries of an index object, and the lines that do not parse (`line n: why`); a body
/// whose header is wrong is an error.
pub fn parse_index(bytes: &[u8]) -> Result<(Vec<IndexEntry>, Vec<String>), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let mut lines = text.lines();
    if lines.next() != Some(INDEX_HEADER) {
        return Err(format!("line 1 is not `{INDEX_HEADER}`"));
    }
    let (mut entries, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        match IndexEntry::parse_line(line) {
            Ok(e) => entries.push(e),
            Err(why) => bad.push(format!("line {}: {why}", i + 2)),
        }
    }
    Ok((entries, bad))
}

/// The index as read: the newest entry of each path (with its object's modification time),
/// what did not parse, and the objects read.
#[derive(Debug, Default)]
pub struct IndexRead {
    /// By hash part.
    pub entries: HashMap<String, (IndexEntry, SystemTime)>,
    /// `index/<name>: why` (a whole object) or `index/<name> line n: why`.
    pub problems: Vec<String>,
    /// The index objects read (names).
    pub objects: Vec<String>,
}

/// The cache's paths: from the index where an entry still describes the narinfo, else from
/// the narinfo ([`BinaryCache::paths`]).
#[derive(Debug, Default)]
pub struct CachePaths {
    /// One per narinfo in the cache (that parses), by store path.
    pub entries: Vec<IndexEntry>,
    /// How many came from the index, and how many from reading narinfos.
    pub from_index: usize,
    pub from_narinfos: usize,
    /// Index objects and entries ignored (`key: why`), and narinfos that do not parse.
    pub problems: Vec<String>,
    /// Narinfo keys that do not parse (`key: why`), left out of `entries`.
    pub unparseable: Vec<(String, String)>,
    /// Index objects read (names), for compaction.
    pub index_objects: Vec<String>,
    /// The listed versions of the narinfos in `unparseable`, by key.
    pub(crate) unparseable_versions: HashMap<String, u64>,
}

impl BinaryCache {
    /// Appends an index object listing `entries` (nothing for none; several of at most
    /// [`ENTRIES_PER_OBJECT`] for more); call after their narinfos are written. Returns the
    /// (last) name. Nothing on a plain HTTP cache: the server behind it
    /// indexes the uploads it takes.
    pub async fn append_index(&self, entries: &[IndexEntry]) -> Result<Option<String>, StoreError> {
        if entries.is_empty() || !self.can_list() {
            return Ok(None);
        }
        let mut name = String::new();
        // Objects of a bounded size (a compaction of millions of paths writes several).
        for chunk in entries.chunks(ENTRIES_PER_OBJECT) {
            let now = SystemTime::now();
            let unique = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
            name = format!("{}-{unique:016x}", super::super::gc::roots::unix_secs(now));
            // A name of its own (64 random bits): no create-only write needed (Garage has
            // none).
            self.put_index_entry(
                &name,
                Bytes::from(render_index(chunk)),
                WriteMode::Overwrite,
            )
            .await?;
        }
        Ok(Some(name))
    }

    /// Reads every index object (an object or a line that does not parse is reported and left
    /// out).
    pub async fn read_index(&self) -> Result<IndexRead, StoreError> {
        let mut listed: Vec<ObjectInfo> =
            self.objects().list(layout::INDEX_DIR).try_collect().await?;
        // Oldest first, so newer entries replace older ones.
        listed.sort_by(|a, b| (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key)));
        let mut read = IndexRead::default();
        for meta in listed {
            let Some(name) = meta
                .key
                .strip_prefix(layout::INDEX_DIR)
                .and_then(|k| k.strip_prefix('/'))
                .filter(|n| !n.is_empty() && !n.contains('/'))
            else {
                continue;
            };
            let key = layout::index(name);
            let Some(bytes) = self
                .objects()
                .get_bytes_limited(&key, MAX_INDEX_OBJECT_BYTES)
                .await?
            else {
                continue;
            };
            read.objects.push(name.to_owned());
            match parse_index(&bytes) {
                Ok((entries, bad)) => {
                    read.problems
                        .extend(bad.into_iter().map(|b| format!("{key} {b}")));
                    for e in entries {
                        read.entries
                            .insert(e.path.hash_part(), (e, meta.last_modified));
                    }
                }
                Err(why) => read.problems.push(format!("{key}: {why}")),
            }
        }
        Ok(read)
    }

    /// Every path of the cache (`concurrency` narinfos read at once where the index does not
    /// cover them): one listing of the narinfo keys, the index objects, and a GET for each
    /// narinfo the index does not describe.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::store::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let paths = cache.paths(16).await.unwrap();
    /// assert_eq!(paths.entries[0].path, path);
    /// assert_eq!((paths.from_index, paths.from_narinfos), (1, 0));
    /// # });
    /// ```
    pub async fn paths(&self, concurrency: usize) -> Result<CachePaths, StoreError> {
        let listed: Vec<ObjectInfo> = self
            .objects()
            .list_dir("")
            .try_filter(|m| futures::future::ready(layout::narinfo_hash(&m.key).is_some()))
            .try_collect()
            .await?;
        self.paths_of(listed, concurrency, true, &crate::ops::NoProgress)
            .await
    }

    /// [`paths`](Self::paths) for the narinfo keys `listed` (their metadata as listed), from
    /// the index when `use_index`. `progress` hears of the narinfos to read
    /// ([`planned`](crate::ops::Progress::planned): how many, 0 bytes, how many the index
    /// covers) and of each read ([`path_done`](crate::ops::Progress::path_done) with its key).
    pub(crate) async fn paths_of(
        &self,
        listed: Vec<ObjectInfo>,
        concurrency: usize,
        use_index: bool,
        progress: &dyn crate::ops::Progress,
    ) -> Result<CachePaths, StoreError> {
        let mut index = if use_index {
            self.read_index().await?
        } else {
            IndexRead::default()
        };
        let mut out = self
            .resolve_paths(listed, &mut index.entries, concurrency, progress)
            .await?;
        out.problems.splice(0..0, index.problems);
        out.index_objects = index.objects;
        Ok(out)
    }

    /// The paths of the narinfo keys `listed`: from `index` (the entries used are taken out of
    /// it) where an entry still describes the narinfo, else read from the narinfo. Sorted.
    async fn resolve_paths(
        &self,
        listed: Vec<ObjectInfo>,
        entries: &mut HashMap<String, (IndexEntry, SystemTime)>,
        concurrency: usize,
        progress: &dyn crate::ops::Progress,
    ) -> Result<CachePaths, StoreError> {
        let mut out = CachePaths::default();
        let mut to_read: Vec<ObjectInfo> = Vec::new();
        for meta in listed {
            let Some(hash) = layout::narinfo_hash(&meta.key) else {
                continue;
            };
            match entries.remove(hash) {
                Some((mut e, written))
                    if e.narinfo_mtime_ms
                        .map_or(meta.last_modified <= written, |ms| {
                            ms == unix_ms(meta.last_modified)
                        }) =>
                {
                    e.narinfo_mtime_ms = Some(unix_ms(meta.last_modified));
                    e.version = crate::gc::fingerprint(&meta);
                    e.indexed = true;
                    out.entries.push(e);
                    out.from_index += 1;
                }
                _ => to_read.push(meta),
            }
        }
        progress.planned(to_read.len(), 0, out.from_index);
        let mut reads = futures::stream::iter(to_read)
            .map(|meta| async move {
                let hash = layout::narinfo_hash(&meta.key)
                    .unwrap_or_default()
                    .to_owned();
                let read = self.narinfo_by_hash(&hash).await;
                (hash, meta, read)
            })
            .buffer_unordered(concurrency.max(1));
        while let Some((hash, meta, read)) = reads.next().await {
            progress.path_done(&meta.key);
            match read {
                Ok(Some(info)) => {
                    let mut e = IndexEntry::from_narinfo(
                        &info,
                        super::super::gc::roots::unix_secs(meta.last_modified),
                    );
                    e.narinfo_mtime_ms = Some(unix_ms(meta.last_modified));
                    e.version = crate::gc::fingerprint(&meta);
                    out.entries.push(e);
                    out.from_narinfos += 1;
                }
                Ok(None) => {}
                Err(
                    e @ (StoreError::BadNarInfo { .. }
                    | StoreError::IdentityMismatch { .. }
                    | StoreError::TooLarge { .. }),
                ) => {
                    out.unparseable_versions
                        .insert(layout::narinfo(&hash), crate::gc::fingerprint(&meta));
                    out.unparseable
                        .push((layout::narinfo(&hash), e.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        out.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Every path of the cache ([`paths`](Self::paths)) a page at a time: the index is read
    /// first, then the narinfo keys are listed [`PATHS_PAGE`] at a time (as the store hands
    /// out its listing), and each page's paths the index does not cover are read then. Each
    /// page is sorted (on S3, GCS and Azure, which list keys in order, so is the whole); a
    /// page's `problems` are the index's on the first page, then its own narinfos'. Memory:
    /// the index's entries, and one page.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::store::BinaryCache;
    /// use futures::TryStreamExt;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let pages: Vec<_> = cache.path_pages(16).try_collect().await.unwrap();
    /// assert_eq!(pages.len(), 1);
    /// assert_eq!(pages[0].entries[0].path, path);
    /// assert_eq!((pages[0].from_index, pages[0].from_narinfos), (1, 0));
    /// # });
    /// ```
    pub fn path_pages(
        &self,
        concurrency: usize,
    ) -> futures::stream::BoxStream<'_, Result<CachePaths, StoreError>> {
        let listed = self
            .objects()
            .list_dir("")
            .try_filter(|m| futures::future::ready(layout::narinfo_hash(&m.key).is_some()))
            .try_chunks(PATHS_PAGE)
            .map_err(|e| e.1);
        let start = async move {
            let index = self.read_index().await?;
            let state = (listed, index, true);
            let pages = futures::stream::try_unfold(
                state,
                move |(mut listed, mut index, first)| async move {
                    let Some(page) = listed.try_next().await? else {
                        return Ok(None);
                    };
                    let mut out = self
                        .resolve_paths(
                            page,
                            &mut index.entries,
                            concurrency,
                            &crate::ops::NoProgress,
                        )
                        .await?;
                    if first {
                        out.problems
                            .splice(0..0, std::mem::take(&mut index.problems));
                        out.index_objects = std::mem::take(&mut index.objects);
                    }
                    Ok(Some((out, (listed, index, false))))
                },
            );
            Ok::<_, StoreError>(pages)
        };
        futures::stream::once(start).try_flatten().boxed()
    }

    /// Merges the index into one object: every path of the cache ([`paths`](Self::paths),
    /// so narinfos not yet indexed are read once), written under a new name, then the objects
    /// read deleted. With `rebuild`, the existing index is ignored (every narinfo is read).
    /// Returns the paths listed and the objects deleted.
    pub async fn compact_index(
        &self,
        concurrency: usize,
        rebuild: bool,
    ) -> Result<(CachePaths, usize), StoreError> {
        let old: Vec<String> = if rebuild {
            self.objects()
                .list(layout::INDEX_DIR)
                .try_filter_map(|m| async move {
                    Ok(m.key
                        .strip_prefix(layout::INDEX_DIR)
                        .and_then(|k| k.strip_prefix('/'))
                        .map(str::to_owned))
                })
                .try_collect()
                .await?
        } else {
            Vec::new()
        };
        let paths = if rebuild {
            let listed: Vec<ObjectInfo> = self
                .objects()
                .list_dir("")
                .try_filter(|m| futures::future::ready(layout::narinfo_hash(&m.key).is_some()))
                .try_collect()
                .await?;
            let mut p = self
                .paths_of(listed, concurrency, false, &crate::ops::NoProgress)
                .await?;
            p.index_objects = old;
            p
        } else {
            self.paths(concurrency).await?
        };
        self.append_index(&paths.entries).await?;
        let mut deleted = 0;
        for name in &paths.index_objects {
            self.objects().delete(&layout::index(name)).await?;
            deleted += 1;
        }
        Ok((paths, deleted))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::hash::{Hash, HashAlgo};
    use crate::store_path::StoreDir;

    fn info(base: &str, refs: &[&str]) -> NarInfo {
        let mut i = NarInfo::new(
            StoreDir::default(),
            StorePath::from_base_name(base).unwrap(),
            format!("nar/{}.nar", "1".repeat(52)),
            Hash::digest(HashAlgo::Sha256, base.as_bytes()),
            7,
        );
        i.references = refs
            .iter()
            .map(|r| StorePath::from_base_name(r).unwrap())
            .collect();
        i
    }

    const A: &str = "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-a";
    const B: &str = "00000000000000000000000000000000-b";

    #[test]
    fn entries_round_trip_and_bad_lines_are_reported() {
        let mut e = IndexEntry::from_narinfo(&info(A, &[A, B]), 5);
        e.file_size = Some(3);
        e.deriver = Some(StorePath::from_base_name(&format!("{}-a.drv", "1".repeat(32))).unwrap());
        let f = IndexEntry::from_narinfo(&info(B, &[]), 6);
        let mut body = render_index(&[e.clone(), f.clone()]);
        body.push_str("garbage\n");
        let (entries, bad) = parse_index(body.as_bytes()).unwrap();
        assert_eq!(entries, [e, f]);
        assert_eq!(bad, ["line 4: 1 fields, not 8 or 9"]);
        assert!(parse_index(b"other 1\n").is_err());
    }

    #[tokio::test]
    async fn paths_use_the_index_and_fall_back_to_narinfos() {
        let cache = BinaryCache::open("memory://").unwrap();
        cache.init(&Default::default()).await.unwrap();
        let (a, b) = (info(A, &[]), info(B, &[A]));
        cache.put_narinfo(&a).await.unwrap();
        cache.put_narinfo(&b).await.unwrap();
        // Only b is indexed; a is read from its narinfo.
        cache
            .append_index(&[IndexEntry::from_narinfo(&b, 1)])
            .await
            .unwrap();
        let p = cache.paths(4).await.unwrap();
        assert_eq!((p.from_index, p.from_narinfos), (1, 1));
        let paths: Vec<String> = p.entries.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(paths, [B, A]);
        // An entry whose narinfo was written again later is not used.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        cache.put_narinfo(&b).await.unwrap();
        let p = cache.paths(4).await.unwrap();
        assert_eq!((p.from_index, p.from_narinfos), (0, 2));
        // Compaction: one object, every path indexed with its narinfo's time.
        let (_, deleted) = cache.compact_index(4, false).await.unwrap();
        assert_eq!(deleted, 1);
        let p = cache.paths(4).await.unwrap();
        assert_eq!(
            (p.from_index, p.from_narinfos, p.index_objects.len()),
            (2, 0, 1)
        );
        // A damaged object is reported and its paths read from narinfos.
        cache
            .put_index_entry("0-bad", Bytes::from_static(b"junk"), WriteMode::Create)
            .await
            .unwrap();
        let p = cache.paths(4).await.unwrap();
        assert_eq!(
            p.problems,
            ["index/0-bad: line 1 is not `cachecore-index 1`"]
        );
        assert_eq!(p.entries.len(), 2);
    }
}
