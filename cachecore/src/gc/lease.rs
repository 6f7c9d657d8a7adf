//! Leases and the push rule: what every writer of narinfos (`push`, `copy`, the proxy's fills,
//! `serve`'s uploads) does so that a GC running beside it never breaks a closure it publishes.
//! The argument is in the [module docs](super#pushes-running-beside-a-gc).
//!
//! - A **lease** (`gcleases/<expires>-<unique>`) names the store paths (hash parts) a writer
//!   will publish or reference, and when it expires. A GC treats every lease that has not
//!   expired (give or take [`CLOCK_SKEW`]) as a root, both when it scans and when it lists the
//!   cache again just before its first delete.
//! - A [`PushGuard`] writes the lease first, then lists the GC tombstones once: a path a
//!   tombstone names whose narinfo is not newer than the tombstone is *condemned* (a GC may be
//!   deleting it) and counts as missing, so it is uploaded again. Just before each narinfo is
//!   written, [`PushGuard::recheck`] checks again that its NAR is there and that the narinfo of
//!   each reference this transfer did not write itself is there and not condemned; and that the
//!   lease has not run out (it is renewed at half its time).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::roots::unix_secs;
use crate::narinfo::NarInfo;
use crate::store::{layout, BinaryCache, StoreError};
use crate::store_path::StorePath;

/// The first line of a lease.
pub const LEASE_HEADER: &str = "cachecore-gc-lease 1";

/// How long a lease lasts: a push renews its lease once half of it has passed.
pub const LEASE_TTL: Duration = Duration::from_secs(2 * 3600);

/// How far apart the clocks of a writer and a GC may be: a GC honours a lease until this long
/// after it expires, and a writer stops publishing under a lease this long before it expires.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The oldest a NAR may be when the narinfo naming it is written: half the default age after
/// which a GC deletes NARs no narinfo names
/// ([`DEFAULT_FAILED_UPLOADS_OLDER_THAN`](super::DEFAULT_FAILED_UPLOADS_OLDER_THAN)).
pub const MAX_UNPUBLISHED_NAR_AGE: Duration = Duration::from_secs(12 * 3600);

/// A lease's body: `cachecore-gc-lease 1`, `expires <unix secs>`, `holder <text>`, then one
/// `path <hash part>` line per store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseBody {
    /// Unix seconds, by the writer's clock.
    pub expires: u64,
    /// Who holds it (`push`, `copy`, `serve`), for people.
    pub holder: String,
    /// Hash parts of the paths it keeps.
    pub paths: Vec<String>,
}

impl LeaseBody {
    /// The body as stored.
    pub fn render(&self) -> String {
        let holder: String = self
            .holder
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut out = format!(
            "{LEASE_HEADER}\nexpires {}\nholder {holder}\n",
            self.expires
        );
        for p in &self.paths {
            out.push_str("path ");
            out.push_str(p);
            out.push('\n');
        }
        out
    }

    /// Parses a body, or says which line is wrong.
    pub fn parse(bytes: &[u8]) -> Result<LeaseBody, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        if lines.next().map(|(_, l)| l) != Some(LEASE_HEADER) {
            return Err(format!("line 1 is not `{LEASE_HEADER}`"));
        }
        let expires = lines
            .next()
            .and_then(|(_, l)| l.strip_prefix("expires "))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| "line 2 is not `expires <unix seconds>`".to_owned())?;
        let holder = lines
            .next()
            .and_then(|(_, l)| l.strip_prefix("holder "))
            .ok_or_else(|| "line 3 is not `holder <text>`".to_owned())?
            .to_owned();
        let mut paths = Vec::new();
        for (n, line) in lines {
            match line.strip_prefix("path ") {
                Some(h) if layout::narinfo_hash(&layout::narinfo(h)).is_some() => {
                    paths.push(h.to_owned())
                }
                _ => {
                    return Err(format!(
                        "line {n}: {:?} is not `path <hash part>`",
                        crate::narinfo::excerpt(line)
                    ))
                }
            }
        }
        Ok(LeaseBody {
            expires,
            holder,
            paths,
        })
    }

    /// Whether a GC whose clock says `now` must honour it.
    pub fn holds_at(&self, now: u64) -> bool {
        self.expires.saturating_add(CLOCK_SKEW.as_secs()) > now
    }
}

/// Why a writer guarded by a [`PushGuard`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{url}: GC tombstone {name} is not valid: {reason}; nothing was published (what it condemns is unknown)")]
    Tombstone {
        url: String,
        name: String,
        reason: String,
    },
    /// A reference vanished (or was condemned) while the transfer ran: a GC collected it.
    #[error("{path} was not published to {url}: its reference {reference} {why} since the push started (a GC ran beside it); run the push again, which uploads it anew")]
    ReferenceCollected {
        path: StorePath,
        reference: StorePath,
        why: &'static str,
        url: String,
    },
    /// The NAR a narinfo names is gone (a GC took it for an abandoned upload), or so old that a
    /// GC may ([`MAX_UNPUBLISHED_NAR_AGE`]).
    #[error("{path} was not published to {url}: its NAR {nar} is gone or was uploaded more than 12 hours ago (a GC takes NARs no narinfo names for abandoned uploads); run the push again")]
    NarCollected {
        path: StorePath,
        nar: String,
        url: String,
    },
}

impl GuardError {
    /// What kind of failure this is: [`Conflict`](crate::error::ErrorKind::Conflict) for a GC
    /// that collected what the transfer needs.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            GuardError::Store(e) => e.kind(),
            GuardError::Tombstone { .. } => ErrorKind::Corrupt,
            GuardError::ReferenceCollected { .. } | GuardError::NarCollected { .. } => {
                ErrorKind::Conflict
            }
        }
    }
}

/// The narinfos the GC tombstones of `cache` unpublish (or are about to), each with the
/// last-modified time of the newest tombstone naming it: a narinfo not newer than that is
/// *condemned*. Tombstones already read (`known`, by name: a tombstone is written once) are
/// not read again.
pub async fn condemned(
    cache: &BinaryCache,
    known: &mut HashMap<String, (SystemTime, Vec<String>)>,
) -> Result<HashMap<String, SystemTime>, GuardError> {
    let listed = cache.list_gc_tombstones().await?;
    let names: HashSet<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    known.retain(|n, _| names.contains(n.as_str()));
    for (name, meta) in &listed {
        if known.contains_key(name) {
            continue;
        }
        let Some(bytes) = cache.gc_tombstone(name).await? else {
            continue;
        };
        let narinfos =
            super::apply::tombstone_narinfos(&bytes).map_err(|reason| GuardError::Tombstone {
                url: cache.url().to_owned(),
                name: layout::gc_tombstone(name),
                reason,
            })?;
        known.insert(name.clone(), (meta.last_modified, narinfos));
    }
    let mut out: HashMap<String, SystemTime> = HashMap::new();
    for (written, narinfos) in known.values() {
        for h in narinfos {
            let t = out.entry(h.clone()).or_insert(*written);
            *t = (*t).max(*written);
        }
    }
    Ok(out)
}

/// The GC tombstones read so far, by name (a tombstone is written once, so a name read once
/// need not be read again): for a writer that begins many guarded transfers, such as `serve`.
#[derive(Debug, Default)]
pub struct TombstoneCache(std::sync::Mutex<HashMap<String, (SystemTime, Vec<String>)>>);

impl TombstoneCache {
    /// [`condemned`], reading only tombstones not read before.
    pub async fn condemned(
        &self,
        cache: &BinaryCache,
    ) -> Result<HashMap<String, SystemTime>, GuardError> {
        let mut known = std::mem::take(&mut *self.lock());
        let result = condemned(cache, &mut known).await;
        let mut shared = self.lock();
        if shared.is_empty() {
            *shared = known;
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SystemTime, Vec<String>)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a narinfo last modified at `modified` is condemned by a tombstone written at
/// `tombstone` (both by the store's clock; the same second counts as condemned, as some
/// stores keep whole seconds).
pub fn is_condemned(modified: SystemTime, tombstone: SystemTime) -> bool {
    unix_secs(modified) <= unix_secs(tombstone)
}

/// A lease held by a writer.
#[derive(Debug)]
struct Held {
    name: String,
    /// When it was written, by the writer's clock.
    written: SystemTime,
    body: LeaseBody,
}

/// The push rule for one transfer: its lease, the condemned paths seen when it began, and the
/// re-check before each narinfo. See the [module docs](self).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use cachecore::gc::lease::PushGuard;
/// use cachecore::store::BinaryCache;
/// use cachecore::store_path::StorePath;
/// let cache = BinaryCache::open("memory://").unwrap();
/// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
/// let guard = PushGuard::begin(&cache, "push", std::slice::from_ref(&path)).await.unwrap();
/// // A GC sees the lease as a root until it is released (or expires).
/// assert_eq!(cache.list_gc_leases().await.unwrap().len(), 1);
/// assert_eq!(guard.missing(std::slice::from_ref(&path), 8).await.unwrap(), [path]);
/// guard.end().await;
/// assert!(cache.list_gc_leases().await.unwrap().is_empty());
/// # });
/// ```
#[derive(Debug)]
pub struct PushGuard {
    cache: BinaryCache,
    /// `None` for a store that cannot be listed (a plain HTTP cache: the server behind it guards
    /// the uploads it takes).
    lease: Option<tokio::sync::Mutex<Held>>,
    condemned: HashMap<String, SystemTime>,
    ttl: Duration,
}

impl PushGuard {
    /// Writes a lease naming `paths` (everything the transfer may publish or reference), then
    /// reads the GC tombstones. `holder` names the writer in the lease.
    pub async fn begin(
        cache: &BinaryCache,
        holder: &str,
        paths: &[StorePath],
    ) -> Result<PushGuard, GuardError> {
        Self::begin_at(cache, holder, paths, SystemTime::now(), LEASE_TTL).await
    }

    /// [`begin`](Self::begin) with the time and the lease's length given (for tests and for
    /// writers with a clock of their own).
    pub async fn begin_at(
        cache: &BinaryCache,
        holder: &str,
        paths: &[StorePath],
        now: SystemTime,
        ttl: Duration,
    ) -> Result<PushGuard, GuardError> {
        Self::begin_cached(cache, holder, paths, now, ttl, &TombstoneCache::default()).await
    }

    /// [`begin_at`](Self::begin_at), reading only the tombstones `tombstones` has not seen.
    pub async fn begin_cached(
        cache: &BinaryCache,
        holder: &str,
        paths: &[StorePath],
        now: SystemTime,
        ttl: Duration,
        tombstones: &TombstoneCache,
    ) -> Result<PushGuard, GuardError> {
        if !cache.can_list() {
            return Ok(PushGuard {
                cache: cache.clone(),
                lease: None,
                condemned: HashMap::new(),
                ttl,
            });
        }
        let mut hashes: Vec<String> = paths.iter().map(StorePath::hash_part).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let body = LeaseBody {
            expires: unix_secs(now + ttl),
            holder: holder.to_owned(),
            paths: hashes,
        };
        let held = write_lease(cache, body, now).await?;
        let condemned = tombstones.condemned(cache).await?;
        Ok(PushGuard {
            cache: cache.clone(),
            lease: Some(tokio::sync::Mutex::new(held)),
            condemned,
            ttl,
        })
    }

    /// Of `paths`, those the transfer must upload: without a narinfo, or with one a GC
    /// tombstone condemns (`concurrency` HEADs at once).
    pub async fn missing(
        &self,
        paths: &[StorePath],
        concurrency: usize,
    ) -> Result<Vec<StorePath>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(paths)
            .map(|p| async move {
                let meta = self.cache.narinfo_meta(&p.hash_part()).await?;
                let upload = match meta {
                    None => true,
                    Some(m) => self.is_condemned(p, m.last_modified),
                };
                Ok::<_, StoreError>(upload.then(|| p.clone()))
            })
            .buffered(concurrency.max(1))
            .try_filter_map(|p| async move { Ok(p) })
            .try_collect()
            .await
    }

    /// Whether the narinfo of `path`, last modified at `modified`, is condemned by a tombstone
    /// seen when the guard began.
    pub fn is_condemned(&self, path: &StorePath, modified: SystemTime) -> bool {
        self.condemned
            .get(&path.hash_part())
            .is_some_and(|&t| is_condemned(modified, t))
    }

    /// Just before `info` is written: its NAR is there; the narinfo of each reference outside
    /// `transfer` (the paths this transfer writes itself) is there and not condemned; the
    /// lease has not run out (renewed at half its time).
    pub async fn recheck(
        &self,
        info: &NarInfo,
        transfer: &HashSet<StorePath>,
    ) -> Result<(), GuardError> {
        self.recheck_inner(info, transfer, false).await
    }

    /// [`recheck`](Self::recheck) for a writer that cannot upload a condemned reference again
    /// (`serve`, taking a narinfo whose references its client believes present): a condemned
    /// reference's narinfo is written again, unchanged, which makes every GC keep it and its
    /// closure (its version changed since the GC read it), then checked to be still there.
    pub async fn recheck_rescuing(
        &self,
        info: &NarInfo,
        transfer: &HashSet<StorePath>,
    ) -> Result<(), GuardError> {
        self.recheck_inner(info, transfer, true).await
    }

    async fn recheck_inner(
        &self,
        info: &NarInfo,
        transfer: &HashSet<StorePath>,
        rescue: bool,
    ) -> Result<(), GuardError> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        self.renew_if_due(lease).await?;
        let url = || self.cache.url().to_owned();
        let nar_age = match self.cache.nar_meta(&info.url).await? {
            Some(meta) => SystemTime::now()
                .duration_since(meta.last_modified)
                .unwrap_or_default(),
            None => Duration::MAX,
        };
        // Gone, or so old that a GC may take it for an abandoned upload any moment.
        if nar_age > MAX_UNPUBLISHED_NAR_AGE {
            return Err(GuardError::NarCollected {
                path: info.store_path.clone(),
                nar: info.url.clone(),
                url: url(),
            });
        }
        for r in &info.references {
            if *r == info.store_path || transfer.contains(r) {
                continue;
            }
            let why = match self.cache.narinfo_meta(&r.hash_part()).await? {
                None => "was deleted",
                Some(m) if self.is_condemned(r, m.last_modified) => {
                    if rescue && self.rescue(r).await? {
                        continue;
                    }
                    "is being deleted"
                }
                Some(_) => continue,
            };
            return Err(GuardError::ReferenceCollected {
                path: info.store_path.clone(),
                reference: r.clone(),
                why,
                url: url(),
            });
        }
        Ok(())
    }

    /// Writes the narinfo of `path` again, unchanged, and says whether it is still there
    /// after: a GC that condemned it keeps it and its closure (its version changed since the
    /// GC read it).
    pub async fn rescue(&self, path: &StorePath) -> Result<bool, StoreError> {
        let Some(bytes) = self.cache.narinfo_bytes(&path.hash_part()).await? else {
            return Ok(false);
        };
        self.cache
            .put_narinfo_bytes(&path.hash_part(), bytes)
            .await?;
        Ok(self.cache.narinfo_meta(&path.hash_part()).await?.is_some())
    }

    /// Writes a new lease (and deletes the old one) once half the lease's time has passed, so
    /// that every narinfo is written under a lease with at least half its time left.
    async fn renew_if_due(&self, lease: &tokio::sync::Mutex<Held>) -> Result<(), GuardError> {
        let mut held = lease.lock().await;
        let now = SystemTime::now();
        let age = now.duration_since(held.written).unwrap_or_default();
        if age < self.ttl / 2 {
            return Ok(());
        }
        let body = LeaseBody {
            expires: unix_secs(now + self.ttl),
            ..held.body.clone()
        };
        let renewed = write_lease(&self.cache, body, now).await?;
        let old = std::mem::replace(&mut *held, renewed);
        // A lease left behind only keeps its paths until it expires.
        let _ = self.cache.delete_gc_lease(&old.name).await;
        Ok(())
    }

    /// Releases the lease (a failure only leaves it to expire).
    pub async fn end(self) {
        if let Some(lease) = self.lease {
            let held = lease.into_inner();
            let _ = self.cache.delete_gc_lease(&held.name).await;
        }
    }
}

/// Writes `body` as a new lease, named `<expires>-<unique>`.
async fn write_lease(
    cache: &BinaryCache,
    body: LeaseBody,
    now: SystemTime,
) -> Result<Held, StoreError> {
    let unique = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let name = format!("{}-{unique:016x}", body.expires);
    cache
        .put_gc_lease(&name, Bytes::from(body.render()))
        .await?;
    Ok(Held {
        name,
        written: now,
        body,
    })
}

/// Every lease of `cache` with its name; one that does not parse is an error (a lease that
/// cannot be read must not let its paths be collected).
pub async fn read_all(cache: &BinaryCache) -> Result<Vec<(String, LeaseBody)>, super::GcError> {
    let mut out = Vec::new();
    for name in cache.list_gc_leases().await? {
        let Some(bytes) = cache.gc_lease(&name).await? else {
            continue; // released since the listing
        };
        let body = LeaseBody::parse(&bytes).map_err(|reason| super::GcError::Lease {
            url: cache.url().to_owned(),
            name: layout::gc_lease(&name),
            reason,
        })?;
        out.push((name, body));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `push --add` follows the push rule too: a path a GC has condemned (its tombstone
    /// written, its deletes to come) is uploaded again, not found "already there", and the GC
    /// then keeps it.
    #[tokio::test]
    async fn push_add_uploads_again_what_a_gc_is_collecting() {
        use crate::gc::{apply, plan};
        use crate::ops::{push_add, NoProgress, PushOptions};
        use crate::store_path::StoreDir;
        let cache = BinaryCache::open("memory://").unwrap();
        let dir = StoreDir::default();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), "hello\n").unwrap();
        let opts = PushOptions::default();
        let add = || {
            push_add(
                &cache,
                &dir,
                src.path(),
                "hello",
                &opts,
                std::sync::Arc::new(NoProgress),
            )
        };
        let (path, _) = add().await.unwrap();
        // A GC with no roots scans, writes its tombstone, lists again, and stops there.
        let now = SystemTime::now();
        let options = apply::GcOptions {
            plan: plan::PlanOptions {
                allow_empty_roots: true,
                ..Default::default()
            },
            concurrency: 4,
            ..Default::default()
        };
        let mut scan = apply::scan(&cache, &dir, 4).await.unwrap();
        let ids = scan.root_ids(unix_secs(now));
        let planned = plan::plan(&scan.snapshot, &ids, unix_secs(now), &options.plan).unwrap();
        assert_eq!(planned.narinfos.len(), 1);
        let mut report = apply::GcReport::default();
        let mut gc = apply::Applier::new(&scan, &planned, now, &options, &mut report);
        assert!(gc.step(&cache, &mut report).await); // the tombstone
        assert!(gc.step(&cache, &mut report).await); // the relist
        let (again, summary) = add().await.unwrap();
        assert_eq!(
            (again, summary.pushed, summary.skipped),
            (path.clone(), 1, 0)
        );
        while gc.step(&cache, &mut report).await {}
        assert!(report.narinfos_deleted.is_empty(), "{report:?}");
        assert!(cache.has_narinfo(&path).await.unwrap());
    }

    #[test]
    fn body_round_trips_and_bad_lines_are_named() {
        let body = LeaseBody {
            expires: 42,
            holder: "push\nx".into(),
            paths: vec!["7h7qgvs4kgzsn8a6rb273saxyqh4jxlz".into()],
        };
        let parsed = LeaseBody::parse(body.render().as_bytes()).unwrap();
        assert_eq!(parsed.paths, body.paths);
        assert_eq!((parsed.expires, parsed.holder.as_str()), (42, "push x"));
        assert!(parsed.holds_at(42 + CLOCK_SKEW.as_secs() - 1));
        assert!(!parsed.holds_at(42 + CLOCK_SKEW.as_secs()));
        let bad = format!("{LEASE_HEADER}\nexpires 1\nholder p\npath nope\n");
        assert_eq!(
            LeaseBody::parse(bad.as_bytes()).unwrap_err(),
            "line 4: \"path nope\" is not `path <hash part>`"
        );
        assert!(LeaseBody::parse(b"x").is_err());
    }
}
