//! Listings built from NARs, kept in memory by the NAR's `NarHash`.
//!
//! A path without a `.ls` (as `nix copy` and `push --no-listing` leave it) has its listing built
//! from its NAR: the whole NAR fetched, decompressed and checked against the narinfo. Serving
//! `/serve/` from it, or `cat`-ing one file, would pay that again for every request; kept here,
//! it is paid once.
//!
//! Why this is safe: a listing is kept only once the NAR it was read from checked out against
//! its narinfo's `NarHash` (a SHA-256 of the whole NAR), and it is kept under that hash — so it
//! is the listing of *any* NAR with that hash, whichever narinfo names it later. Nothing can
//! make it stale: a NAR replaced by `push --repair` has another hash, or the same bytes. Stored
//! `.ls` files, which no hash covers, are never kept here.
//!
//! Memory: each listing is counted as its names and symlink targets plus [`NODE_COST`] bytes a
//! node, and [`MAX_BYTES`] in all (the bound [the object memory](super::hot) has); a listing
//! costing more than a quarter of that (tens of thousands of files) is not kept, and when an
//! insert would pass the bound, arbitrary entries are dropped first.
//!
//! Builds of one hash run once at a time: callers asking while a build runs wait for it and
//! share its result (a failed or cancelled build leaves the next waiter to try its own).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::nar::{Listing, ListingNode};

/// Bytes kept in all (as for the object memory).
pub(crate) const MAX_BYTES: usize = super::hot::MAX_BYTES;

/// The largest listing kept.
pub(crate) const MAX_ENTRY: usize = MAX_BYTES / 4;

/// What a node costs besides its name and target: the enum, a map slot, allocation headers.
pub(crate) const NODE_COST: usize = 96;

type Building = Arc<tokio::sync::OnceCell<Arc<Listing>>>;

#[derive(Default)]
struct Entries {
    /// Kept listings by NarHash, with their cost.
    kept: HashMap<String, (Arc<Listing>, usize)>,
    bytes: usize,
    /// Builds under way, by NarHash.
    building: HashMap<String, Building>,
}

/// The listings of one [`BinaryCache`](super::BinaryCache) handle (and its clones).
#[derive(Default)]
pub(crate) struct NarListings {
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for NarListings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, bytes) = self.len();
        f.debug_struct("NarListings")
            .field("kept", &n)
            .field("bytes", &bytes)
            .finish()
    }
}

/// What `listing` costs to keep.
pub(crate) fn cost(listing: &Listing) -> usize {
    fn node(n: &ListingNode) -> usize {
        NODE_COST
            + match n {
                ListingNode::Regular { .. } => 0,
                ListingNode::Symlink { target } => target.len(),
                ListingNode::Directory { entries } => entries
                    .iter()
                    .map(|(name, child)| name.len() + node(child))
                    .sum(),
            }
    }
    node(&listing.root)
}

/// Forgets a build when its caller is done with it (or dropped: a cancelled request).
struct Done<'a> {
    listings: &'a NarListings,
    nar_hash: &'a str,
    cell: &'a Building,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if let Ok(mut e) = self.listings.entries.lock() {
            if e.building
                .get(self.nar_hash)
                .is_some_and(|c| Arc::ptr_eq(c, self.cell))
            {
                e.building.remove(self.nar_hash);
            }
        }
    }
}

impl NarListings {
    /// The kept listing of the NAR with `nar_hash`, or the one `build` makes (which must read
    /// it from a NAR checked against that hash), then kept. One build of a hash runs at a time.
    pub(crate) async fn get_or_build<E, F, Fut>(
        &self,
        nar_hash: &str,
        build: F,
    ) -> Result<Arc<Listing>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Listing, E>>,
    {
        let cell = match self.entries.lock() {
            Ok(mut e) => {
                if let Some((listing, _)) = e.kept.get(nar_hash) {
                    return Ok(listing.clone());
                }
                Some(e.building.entry(nar_hash.to_owned()).or_default().clone())
            }
            Err(_) => None,
        };
        let Some(cell) = cell else {
            return build().await.map(Arc::new);
        };
        let done = Done {
            listings: self,
            nar_hash,
            cell: &cell,
        };
        let listing = cell
            .get_or_try_init(|| async { build().await.map(Arc::new) })
            .await?
            .clone();
        self.keep(nar_hash, &listing);
        drop(done);
        Ok(listing)
    }

    fn keep(&self, nar_hash: &str, listing: &Arc<Listing>) {
        let needed = cost(listing) + nar_hash.len();
        if needed > MAX_ENTRY {
            return;
        }
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        let e = &mut *e;
        if e.kept.contains_key(nar_hash) {
            return;
        }
        while e.bytes + needed > MAX_BYTES {
            let Some(victim) = e.kept.keys().next().cloned() else {
                break;
            };
            if let Some((_, c)) = e.kept.remove(&victim) {
                e.bytes -= c;
            }
        }
        e.bytes += needed;
        e.kept
            .insert(nar_hash.to_owned(), (listing.clone(), needed));
    }

    /// Listings kept, and their cost.
    pub(crate) fn len(&self) -> (usize, usize) {
        self.entries
            .lock()
            .map_or((0, 0), |e| (e.kept.len(), e.bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A listing of one directory holding `files` files with names of `name_len` bytes.
    fn listing(files: usize, name_len: usize) -> Listing {
        let entries: BTreeMap<String, ListingNode> = (0..files)
            .map(|i| {
                let name = format!("{i:0name_len$}");
                let node = ListingNode::Regular {
                    size: 1,
                    executable: false,
                    nar_offset: Some(0),
                };
                (name, node)
            })
            .collect();
        Listing {
            root: ListingNode::Directory { entries },
        }
    }

    #[test]
    fn a_listing_is_built_once_even_by_concurrent_callers() {
        let rt = crate::ops::runtime().unwrap();
        let listings = Arc::new(NarListings::default());
        let builds = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (listings, builds) = (listings.clone(), builds.clone());
                tasks.push(tokio::spawn(async move {
                    listings
                        .get_or_build("sha256:a", || async {
                            builds.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Ok::<_, ()>(listing(3, 8))
                        })
                        .await
                        .unwrap()
                }));
            }
            for t in tasks {
                assert_eq!(*t.await.unwrap(), listing(3, 8));
            }
        });
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(listings.len().0, 1);
        assert!(listings.entries.lock().unwrap().building.is_empty());
    }

    #[test]
    fn failures_are_not_kept_and_cancelled_builds_leave_nothing_behind() {
        let rt = crate::ops::runtime().unwrap();
        let listings = NarListings::default();
        rt.block_on(async {
            let err = listings
                .get_or_build("sha256:b", || async { Err::<Listing, _>("bad NAR") })
                .await;
            assert_eq!(err.unwrap_err(), "bad NAR");
            // A build dropped half-way (the request went away).
            let slow = listings.get_or_build("sha256:b", || async {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                Ok::<_, ()>(listing(1, 1))
            });
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(20), slow)
                    .await
                    .is_err()
            );
            let got = listings
                .get_or_build("sha256:b", || async { Ok::<_, ()>(listing(2, 1)) })
                .await
                .unwrap();
            assert_eq!(*got, listing(2, 1));
        });
        let e = listings.entries.lock().unwrap();
        assert!(e.building.is_empty());
        assert_eq!(e.kept.len(), 1);
    }

    #[test]
    fn memory_stays_within_the_bound() {
        let rt = crate::ops::runtime().unwrap();
        let listings = NarListings::default();
        // Too large to keep at all: built every time.
        let huge = MAX_ENTRY / NODE_COST + 1;
        assert!(cost(&listing(huge, 1)) > MAX_ENTRY);
        rt.block_on(async {
            for _ in 0..2 {
                listings
                    .get_or_build("sha256:huge", || async { Ok::<_, ()>(listing(huge, 1)) })
                    .await
                    .unwrap();
            }
            assert_eq!(listings.len(), (0, 0));
            // Many that fit one by one: the total stays bounded.
            let each = listing(huge / 3, 1);
            for i in 0..20 {
                let each = each.clone();
                listings
                    .get_or_build(&format!("sha256:{i}"), || async { Ok::<_, ()>(each) })
                    .await
                    .unwrap();
            }
        });
        let (n, bytes) = listings.len();
        assert!(n >= 4 && bytes <= MAX_BYTES, "{n} listings, {bytes} bytes");
    }
}
