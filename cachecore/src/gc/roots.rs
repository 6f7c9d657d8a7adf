//! GC roots as objects: one object per root at `gcroots/<host>/<name>`, a versioned text body
//! naming store paths, and the escaping that lets names such as `per-user/alice/profile` be one
//! key segment and come back unchanged.
//!
//! # The body (version 1)
//!
//! ```text
//! cachecore-gcroot 1
//! keep 2
//! revision 1765000000
//! /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12
//! revision 1764000000
//! /nix/store/0a6h3ql5fxh8lnmbpvc2bkfb1y9kh2kz-hello-2.11
//! ```
//!
//! - The first line names the format and its version; a reader refuses any other.
//! - `keep N` (N ≥ 1): how many revisions this root keeps, newest first. A plain root keeps 1;
//!   a series (`roots add --keep N`) keeps its last N, like pins keeping revisions.
//! - Each `revision <unix seconds>` is followed by one or more full store paths (with their
//!   store directory, checked against the cache's).
//! - A trashed root (`gctrash/<host>/<name>`) has the same body with a `trashed <unix seconds>`
//!   line after the header: the time it left, written into the body because a rename keeps an
//!   old mtime on a directory and is copy + delete on S3.
//!
//! Every line is checked; anything else is an error naming the object and the line, and a root
//! that does not parse stops a GC run before anything is deleted.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;

use super::apply::GcError;
use crate::store::{layout, BinaryCache, GcRootEntry, WriteMode};
use crate::store_path::{StoreDir, StorePath};

/// The first line of a root body.
pub const ROOT_HEADER: &str = "cachecore-gcroot 1";

/// Why a root's name, host or body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct RootError {
    /// The object or argument (`gcroots/laptop/hello line 3`, `root name ""`).
    pub what: String,
    pub reason: String,
}

impl RootError {
    fn new(what: impl Into<String>, reason: impl Into<String>) -> Self {
        RootError {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Always [`InvalidInput`](crate::error::ErrorKind::InvalidInput) for an argument,
    /// [`Corrupt`](crate::error::ErrorKind::Corrupt) for an object read from the cache.
    pub fn kind(&self) -> crate::error::ErrorKind {
        if self.what.starts_with("gcroots/") || self.what.starts_with("gctrash/") {
            crate::error::ErrorKind::Corrupt
        } else {
            crate::error::ErrorKind::InvalidInput
        }
    }
}

/// Whether `b` stays as it is in an escaped name (anything else is `%XX`).
fn plain(b: u8, first: bool) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+') || (b == b'.' && !first)
}

/// The key segment of a root name or host: bytes other than `[A-Za-z0-9_+-]` (and `.` except
/// first, so no segment is `.` or `..`) become `%XX` (upper-case hex). Empty names are refused
/// by [`unescape`] and by the callers.
///
/// ```
/// use cachecore::gc::roots::{escape, unescape};
/// assert_eq!(escape("per-user/alice/profile"), "per-user%2Falice%2Fprofile");
/// assert_eq!(unescape(&escape("..")).unwrap(), "..");
/// assert_eq!(escape(".hidden"), "%2Ehidden");
/// ```
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if plain(b, i == 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name an [`escape`]d key segment stands for. Only the exact spelling [`escape`] writes
/// is accepted (a `%` before a byte that needs none, lower-case hex, a bare `/` are refused),
/// so a name and its key are one-to-one.
pub fn unescape(segment: &str) -> Result<String, RootError> {
    let bad = |reason: &str| RootError::new(format!("root key segment {segment:?}"), reason);
    if segment.is_empty() {
        return Err(bad("empty"));
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or_else(|| bad("`%` not followed by two hex digits"))?;
            let upper = hex
                .iter()
                .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h));
            let value = std::str::from_utf8(hex)
                .ok()
                .filter(|_| upper)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("`%` not followed by two upper-case hex digits"))?;
            if plain(value, out.is_empty()) {
                return Err(bad("escapes a character that is written as itself"));
            }
            out.push(value);
            i += 3;
        } else if plain(b, out.is_empty()) {
            out.push(b);
            i += 1;
        } else {
            return Err(bad("holds a character that must be %-escaped"));
        }
    }
    String::from_utf8(out).map_err(|_| bad("does not decode to UTF-8"))
}

/// A root name or host given on the command line: non-empty, no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), RootError> {
    if name.is_empty() {
        return Err(RootError::new(format!("{what} {name:?}"), "is empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(RootError::new(
            format!("{what} {name:?}"),
            "holds a control character",
        ));
    }
    if name.len() > 512 {
        return Err(RootError::new(
            format!("{what} {name:?}"),
            "is longer than 512 bytes",
        ));
    }
    Ok(())
}

/// One revision of a root: when it was added and the store paths it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// Unix seconds.
    pub added: u64,
    pub paths: Vec<StorePath>,
}

/// A root's body, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootBody {
    /// How many revisions are kept (≥ 1).
    pub keep: usize,
    /// Newest first; at most `keep`.
    pub revisions: Vec<Revision>,
    /// For a trashed root: when it left (Unix seconds).
    pub trashed: Option<u64>,
}

/// Unix seconds of `t` (0 before 1970).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time of Unix seconds `s`.
pub fn from_unix_secs(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

impl RootBody {
    /// A root keeping `paths` since `now`, and `keep` revisions of it.
    pub fn new(paths: Vec<StorePath>, keep: usize, now: SystemTime) -> Self {
        RootBody {
            keep: keep.max(1),
            revisions: vec![Revision {
                added: unix_secs(now),
                paths,
            }],
            trashed: None,
        }
    }

    /// Adds a revision (newest first) and drops the oldest beyond `keep`.
    pub fn push_revision(&mut self, paths: Vec<StorePath>, keep: usize, now: SystemTime) {
        self.keep = keep.max(1);
        self.revisions.insert(
            0,
            Revision {
                added: unix_secs(now),
                paths,
            },
        );
        self.revisions.truncate(self.keep);
    }

    /// Every store path the root keeps (of all its kept revisions).
    pub fn paths(&self) -> impl Iterator<Item = &StorePath> {
        self.revisions.iter().flat_map(|r| r.paths.iter())
    }

    /// The body as written (see the module docs).
    pub fn render(&self, store_dir: &StoreDir) -> String {
        let mut out = format!("{ROOT_HEADER}\n");
        if let Some(t) = self.trashed {
            out.push_str(&format!("trashed {t}\n"));
        }
        out.push_str(&format!("keep {}\n", self.keep));
        for r in &self.revisions {
            out.push_str(&format!("revision {}\n", r.added));
            for p in &r.paths {
                out.push_str(&format!("{}/{p}\n", store_dir.as_str()));
            }
        }
        out
    }

    /// Parses a body read from `object` (its key, for messages), whose paths must be in
    /// `store_dir`.
    pub fn parse(object: &str, bytes: &[u8], store_dir: &StoreDir) -> Result<Self, RootError> {
        let at =
            |line: usize, reason: String| RootError::new(format!("{object} line {line}"), reason);
        let text =
            std::str::from_utf8(bytes).map_err(|_| RootError::new(object, "is not UTF-8 text"))?;
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, ROOT_HEADER)) => {}
            Some((n, l)) => {
                return Err(at(
                    n,
                    format!(
                        "expected `{ROOT_HEADER}`, found {:?}",
                        crate::narinfo::excerpt(l)
                    ),
                ))
            }
            None => return Err(RootError::new(object, "is empty")),
        }
        let mut body = RootBody {
            keep: 0,
            revisions: Vec::new(),
            trashed: None,
        };
        for (n, line) in lines {
            if let Some(v) = line.strip_prefix("trashed ") {
                if body.trashed.is_some() || body.keep != 0 {
                    return Err(at(
                        n,
                        "`trashed` must come once, right after the header".into(),
                    ));
                }
                body.trashed = Some(number(v).ok_or_else(|| at(n, "bad time".into()))?);
            } else if let Some(v) = line.strip_prefix("keep ") {
                let keep = number(v)
                    .and_then(|k| usize::try_from(k).ok())
                    .filter(|&k| k >= 1)
                    .ok_or_else(|| at(n, "`keep` needs a number of at least 1".into()))?;
                if body.keep != 0 {
                    return Err(at(n, "`keep` given twice".into()));
                }
                body.keep = keep;
            } else if let Some(v) = line.strip_prefix("revision ") {
                if body.keep == 0 {
                    return Err(at(n, "`revision` before `keep`".into()));
                }
                if body.revisions.last().is_some_and(|r| r.paths.is_empty()) {
                    return Err(at(n, "the revision before names no store path".into()));
                }
                let added = number(v).ok_or_else(|| at(n, "bad time".into()))?;
                body.revisions.push(Revision {
                    added,
                    paths: Vec::new(),
                });
            } else if line.starts_with('/') {
                let path = store_dir
                    .parse_path(line)
                    .map_err(|e| {
                        at(
                            n,
                            format!("not a store path in {}: {e}", store_dir.as_str()),
                        )
                    })?
                    .to_owned();
                body.revisions
                    .last_mut()
                    .ok_or_else(|| at(n, "store path before any `revision`".into()))?
                    .paths
                    .push(path);
            } else {
                return Err(at(
                    n,
                    format!("unexpected line {:?}", crate::narinfo::excerpt(line)),
                ));
            }
        }
        if body.revisions.is_empty() || body.revisions.iter().any(|r| r.paths.is_empty()) {
            return Err(RootError::new(
                object,
                "names no store path (every revision needs one)",
            ));
        }
        if body.revisions.len() > body.keep {
            return Err(RootError::new(
                object,
                format!(
                    "holds {} revisions but keeps {}",
                    body.revisions.len(),
                    body.keep
                ),
            ));
        }
        Ok(body)
    }
}

/// A decimal number as written by [`RootBody::render`] (no sign, no leading `+`).
fn number(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A root as GC sees it: where it is and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub host: String,
    pub name: String,
    pub body: RootBody,
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.name)
    }
}

/// Every root (or, `trashed`, every trashed root) of the cache, read and parsed. A key or a
/// body that does not parse is an error: a GC must stop rather than run without a root.
pub async fn read_all(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    trashed: bool,
) -> Result<Vec<Root>, GcError> {
    let listing = if trashed {
        cache.list_gc_trash(None)
    } else {
        cache.list_gc_roots(None)
    };
    let mut entries: Vec<GcRootEntry> = listing.try_collect().await?;
    entries.sort_by(|a, b| a.meta.key.cmp(&b.meta.key));
    let mut roots = Vec::with_capacity(entries.len());
    for entry in entries {
        let key = &entry.meta.key;
        let in_key = |e: RootError| RootError::new(key.clone(), e.to_string());
        let host = unescape(&entry.host).map_err(in_key)?;
        let name = unescape(&entry.name).map_err(in_key)?;
        let bytes = if trashed {
            cache.gc_trash(&entry.host, &entry.name).await?
        } else {
            cache.gc_root(&entry.host, &entry.name).await?
        };
        // Removed since the listing.
        let Some(bytes) = bytes else { continue };
        let body = RootBody::parse(key, &bytes, store_dir)?;
        if trashed != body.trashed.is_some() {
            let reason = if trashed {
                "has no `trashed` line"
            } else {
                "has a `trashed` line"
            };
            return Err(RootError::new(key.clone(), reason).into());
        }
        roots.push(Root { host, name, body });
    }
    Ok(roots)
}

/// Adds root `name` of `host` keeping `paths`. With `keep`, the root is a series: the paths
/// become its newest revision and its last `keep` revisions stay rooted; without, the root is
/// replaced. Returns the body written.
///
/// Two `add`s to one series at the same moment can lose one revision (read, then write; no
/// compare-and-swap on every backend).
pub async fn add(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    host: &str,
    name: &str,
    paths: Vec<StorePath>,
    keep: Option<usize>,
    now: SystemTime,
) -> Result<RootBody, GcError> {
    check_name("host", host)?;
    check_name("root name", name)?;
    if paths.is_empty() {
        return Err(RootError::new(format!("root {host}/{name}"), "names no store path").into());
    }
    let (h, n) = (escape(host), escape(name));
    let body = match keep {
        None => RootBody::new(paths, 1, now),
        Some(keep) => match cache.gc_root(&h, &n).await? {
            Some(bytes) => {
                let mut body = RootBody::parse(&layout::gcroot(&h, &n), &bytes, store_dir)?;
                body.push_revision(paths, keep, now);
                body
            }
            None => RootBody::new(paths, keep, now),
        },
    };
    cache
        .put_gc_root(&h, &n, body.render(store_dir).into(), WriteMode::Overwrite)
        .await?;
    Ok(body)
}

/// Moves root `name` of `host` to the trash, writing the time it left into its body.
pub async fn remove(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    host: &str,
    name: &str,
    now: SystemTime,
) -> Result<(), GcError> {
    let (h, n) = (escape(host), escape(name));
    let Some(bytes) = cache.gc_root(&h, &n).await? else {
        return Err(GcError::NoSuchRoot {
            url: cache.url().to_owned(),
            host: host.to_owned(),
            name: name.to_owned(),
            trash: "",
        });
    };
    let mut body = RootBody::parse(&layout::gcroot(&h, &n), &bytes, store_dir)?;
    body.trashed = Some(unix_secs(now));
    cache
        .put_gc_trash(&h, &n, body.render(store_dir).into(), WriteMode::Overwrite)
        .await?;
    cache.delete_gc_root(&h, &n).await?;
    Ok(())
}

/// Moves trashed root `name` of `host` back (refused if a root of that name exists).
pub async fn restore(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    host: &str,
    name: &str,
) -> Result<(), GcError> {
    let (h, n) = (escape(host), escape(name));
    let Some(bytes) = cache.gc_trash(&h, &n).await? else {
        return Err(GcError::NoSuchRoot {
            url: cache.url().to_owned(),
            host: host.to_owned(),
            name: name.to_owned(),
            trash: " in the trash",
        });
    };
    let mut body = RootBody::parse(&layout::gctrash(&h, &n), &bytes, store_dir)?;
    body.trashed = None;
    cache
        .put_gc_root(&h, &n, body.render(store_dir).into(), WriteMode::Create)
        .await?;
    cache.delete_gc_trash(&h, &n).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn path(s: &str) -> StorePath {
        StorePath::from_base_name(s).unwrap()
    }

    #[tokio::test]
    async fn add_remove_restore_and_bad_keys() {
        let cache = BinaryCache::open("memory://").unwrap();
        let dir = StoreDir::default();
        let now = from_unix_secs(1_700_000_000);
        let p = path("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12");
        let q = path("0a6h3ql5fxh8lnmbpvc2bkfb1y9kh2kz-a");
        add(
            &cache,
            &dir,
            "laptop",
            "per-user/alice/profile",
            vec![p.clone()],
            Some(2),
            now,
        )
        .await
        .unwrap();
        add(
            &cache,
            &dir,
            "laptop",
            "per-user/alice/profile",
            vec![q.clone()],
            Some(2),
            now,
        )
        .await
        .unwrap();
        let roots = read_all(&cache, &dir, false).await.unwrap();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].name, "per-user/alice/profile");
        assert_eq!(
            roots[0].body.paths().cloned().collect::<Vec<_>>(),
            [q.clone(), p.clone()]
        );
        remove(&cache, &dir, "laptop", "per-user/alice/profile", now)
            .await
            .unwrap();
        assert!(read_all(&cache, &dir, false).await.unwrap().is_empty());
        let trashed = read_all(&cache, &dir, true).await.unwrap();
        assert_eq!(trashed[0].body.trashed, Some(1_700_000_000));
        restore(&cache, &dir, "laptop", "per-user/alice/profile")
            .await
            .unwrap();
        assert_eq!(read_all(&cache, &dir, false).await.unwrap().len(), 1);
        assert!(matches!(
            remove(&cache, &dir, "laptop", "nope", now).await,
            Err(GcError::NoSuchRoot { .. })
        ));
        // A key that does not parse, or a body that does not, stops the reading.
        let objects = cache.objects();
        objects
            .put("gcroots/laptop", "x".into(), WriteMode::Overwrite)
            .await
            .unwrap();
        let err = read_all(&cache, &dir, false).await.unwrap_err();
        assert!(err.to_string().contains("gcroots/laptop"), "{err}");
        objects.delete("gcroots/laptop").await.unwrap();
        objects
            .put("gcroots/laptop/bad%2f", "x".into(), WriteMode::Overwrite)
            .await
            .unwrap();
        assert!(read_all(&cache, &dir, false).await.is_err());
        objects.delete("gcroots/laptop/bad%2f").await.unwrap();
        objects
            .put("gcroots/laptop/x", "junk".into(), WriteMode::Overwrite)
            .await
            .unwrap();
        let err = read_all(&cache, &dir, false).await.unwrap_err();
        assert!(err.to_string().contains("gcroots/laptop/x line 1"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        for name in [
            "per-user/alice/profile",
            "..",
            ".",
            "a.b",
            "x%y",
            "système",
            "release-2024.05",
            "with space",
            "auto/0123abc",
        ] {
            let key = escape(name);
            assert!(!key.contains('/') && key != "." && key != "..", "{key}");
            assert_eq!(unescape(&key).unwrap(), name);
        }
        // One spelling per name.
        for bad in ["", "%2f", "%41", "a/b", "%", "%4", ".x", "%G0"] {
            assert!(unescape(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_round_trips_and_keeps_n() {
        let dir = StoreDir::default();
        let now = from_unix_secs(1_700_000_000);
        let mut body = RootBody::new(
            vec![path("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12")],
            2,
            now,
        );
        body.push_revision(vec![path("0a6h3ql5fxh8lnmbpvc2bkfb1y9kh2kz-a")], 2, now);
        body.push_revision(vec![path("1a6h3ql5fxh8lnmbpvc2bkfb1y9kh2kz-b")], 2, now);
        assert_eq!(body.revisions.len(), 2);
        let text = body.render(&dir);
        assert_eq!(
            RootBody::parse("gcroots/h/n", text.as_bytes(), &dir).unwrap(),
            body
        );
        assert_eq!(body.paths().count(), 2);
        body.trashed = Some(5);
        let text = body.render(&dir);
        assert_eq!(
            RootBody::parse("gctrash/h/n", text.as_bytes(), &dir).unwrap(),
            body
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_a_line() {
        let dir = StoreDir::default();
        let p = "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello";
        let cases = [
            ("", "is empty"),
            ("cachecore-gcroot 2\n", "line 1"),
            ("cachecore-gcroot 1\nkeep 1\n", "names no store path"),
            ("cachecore-gcroot 1\nkeep 0\n", "line 2"),
            ("cachecore-gcroot 1\nkeep 1\nrevision x\n", "line 3"),
            (&*format!("cachecore-gcroot 1\nkeep 1\n{p}\n"), "line 3"),
            ("cachecore-gcroot 1\nkeep 1\nrevision 1\n/other/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello\n", "line 4"),
            (&*format!("cachecore-gcroot 1\nkeep 1\nrevision 1\n{p}\nrevision 2\n{p}\n"), "2 revisions"),
            (&*format!("cachecore-gcroot 1\nkeep 1\nrevision 1\nrevision 2\n{p}\n"), "line 4"),
            (&*format!("cachecore-gcroot 1\nkeep 1\nrevision 1\n{p}\njunk\n"), "line 5"),
        ];
        for (text, expect) in cases {
            let err = RootBody::parse("gcroots/h/n", text.as_bytes(), &dir).unwrap_err();
            assert!(err.to_string().contains(expect), "{text:?}: {err}");
            assert_eq!(err.kind(), crate::error::ErrorKind::Corrupt);
        }
        assert!(RootBody::parse("gcroots/h/n", b"\xff", &dir).is_err());
    }
}

/// The GC roots Nix keeps under `dir` (`/nix/var/nix/gcroots`): every symbolic link, followed
/// link by link (`auto/…` → `./result` → the store path; `profiles` → the profiles directory,
/// walked too) to a path in `store_dir`, named by its path under `dir`. Links that lead nowhere
/// (a deleted `result`) or outside the store are left out, as Nix's GC does. Sorted by name.
pub fn local_gcroots(
    dir: &std::path::Path,
    store_dir: &StoreDir,
) -> std::io::Result<Vec<(String, StorePath)>> {
    Ok(local_gcroots_and_dirs(dir, store_dir)?.0)
}

/// This machine's GC roots: (name, store path), sorted by name.
pub type LocalRoots = Vec<(String, StorePath)>;

/// [`local_gcroots`], and the directories whose changes can change them: those walked, and
/// those holding each link of a root's chain outside the store (`~/project` for
/// `auto/x → ~/project/result`), for [`RootsWatcher`].
pub fn local_gcroots_and_dirs(
    dir: &std::path::Path,
    store_dir: &StoreDir,
) -> std::io::Result<(LocalRoots, Vec<std::path::PathBuf>)> {
    use std::path::{Path, PathBuf};
    /// How deep directories are walked, and how many links one chain may have.
    const MAX_DEPTH: usize = 8;
    const MAX_HOPS: usize = 40;
    let store = Path::new(store_dir.as_str());
    let in_store = |p: &Path| -> Option<StorePath> {
        let base = p.strip_prefix(store).ok()?.components().next()?;
        StorePath::from_base_name(base.as_os_str().to_str()?).ok()
    };
    let mut out: Vec<(String, StorePath)> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(dir.to_path_buf(), String::new(), 0)];
    while let Some((d, prefix, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            // The top directory must be readable; below it, an unreadable one is skipped.
            Err(e) if depth == 0 => return Err(e),
            Err(_) => continue,
        };
        dirs.push(d.clone());
        for entry in entries {
            let entry = entry?;
            let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let name = if prefix.is_empty() {
                file
            } else {
                format!("{prefix}/{file}")
            };
            let mut path = entry.path();
            for hop in 0..MAX_HOPS {
                if let Some(sp) = in_store(&path) {
                    out.push((name.clone(), sp));
                    break;
                }
                if hop > 0 {
                    // A link (or the lack of one) outside the directory walked.
                    dirs.extend(path.parent().map(Path::to_path_buf));
                }
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    break; // leads nowhere
                };
                if meta.file_type().is_symlink() {
                    let Ok(target) = std::fs::read_link(&path) else {
                        break;
                    };
                    path = match path.parent() {
                        Some(parent) if target.is_relative() => parent.join(target),
                        _ => target,
                    };
                } else {
                    if meta.is_dir() && depth < MAX_DEPTH {
                        stack.push((path, name.clone(), depth + 1));
                    }
                    break;
                }
            }
        }
    }
    out.sort();
    out.dedup();
    dirs.sort();
    dirs.dedup();
    Ok((out, dirs))
}

/// Watches directories (inotify) for links appearing, vanishing or being replaced, so that
/// `roots sync --watch` syncs again when a GC root of this machine changes, without polling.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone)]
pub struct RootsWatcher {
    fd: std::sync::Arc<rustix::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl RootsWatcher {
    /// A watcher watching nothing yet.
    pub fn new() -> std::io::Result<Self> {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
        Ok(RootsWatcher { fd: fd.into() })
    }

    /// Watches `dirs` too (already watched ones are left as they are); a directory that cannot
    /// be watched (gone, unreadable) is skipped. Returns how many are watched now.
    pub fn watch(&self, dirs: &[std::path::PathBuf]) -> usize {
        use rustix::fs::inotify::{self, WatchFlags};
        let flags = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        dirs.iter()
            .filter(|d| inotify::add_watch(&*self.fd, d.as_path(), flags).is_ok())
            .count()
    }

    /// Blocks until something changes in a watched directory (one or more events, read and
    /// dropped: the caller reads the roots again).
    pub fn wait(&self) -> std::io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(&*self.fd, &mut buf) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A thread of its own waiting for changes: each is a message on the channel returned
    /// (the thread ends when the channel's receiver is dropped and a change comes).
    pub fn changes(&self) -> tokio::sync::mpsc::UnboundedReceiver<std::io::Result<()>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = self.clone();
        std::thread::spawn(move || loop {
            let changed = watcher.wait();
            let failed = changed.is_err();
            if tx.send(changed).is_err() || failed {
                return;
            }
        });
        rx
    }
}

/// What [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Roots written (new, or naming another path than before).
    pub added: Vec<String>,
    /// Roots already as they are locally.
    pub unchanged: usize,
    /// Roots of the host that no longer exist locally, moved to the trash.
    pub trashed: Vec<String>,
}

/// Makes `host`'s roots in the cache those of `local` (name, store path; see
/// [`local_gcroots`]): each written unless it already names that path, and every other root
/// of `host` moved to the trash with the time it left ([`remove`]).
pub async fn sync(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    host: &str,
    local: &[(String, StorePath)],
    now: SystemTime,
) -> Result<SyncReport, GcError> {
    check_name("host", host)?;
    let existing: Vec<Root> = read_all(cache, store_dir, false)
        .await?
        .into_iter()
        .filter(|r| r.host == host)
        .collect();
    let mut report = SyncReport::default();
    for (name, path) in local {
        let same = existing.iter().any(|r| {
            &r.name == name
                && r.body
                    .revisions
                    .first()
                    .is_some_and(|rev| rev.paths == [path.clone()])
        });
        if same {
            report.unchanged += 1;
        } else {
            add(cache, store_dir, host, name, vec![path.clone()], None, now).await?;
            report.added.push(name.clone());
        }
    }
    for r in existing {
        if !local.iter().any(|(n, _)| *n == r.name) {
            remove(cache, store_dir, host, &r.name, now).await?;
            report.trashed.push(r.name);
        }
    }
    Ok(report)
}
