//! Why a path stays, or goes: the planner's reasons for one path at a time (`cachecore gc
//! --why`, Python's `GcPlan.why_kept`).
//!
//! [`Keepers`] walks the live paths once, breadth first, from the paths [`seeds`] keeps for
//! their own sake, group by group in [`Seed`] order (roots first): each live path records the
//! path it was reached from, 4 bytes a path (4 MB for a million), and no text. A question
//! about one path follows those links back to its seed and names what keeps the seed: the
//! roots or leases naming it, or its push or last read. Paths live but reached from no seed
//! are the ones `max_size` keeps, or narinfos that do not parse.

use serde::Serialize;

use super::apply::PlannedRun;
use super::plan::{seeds, PathId, Plan, PlanOptions, RootIds, Seed, Snapshot};
use super::roots::unix_secs;

/// Not reached from any seed (and not deleted).
const UNREACHED: u32 = u32::MAX;
/// Its narinfo is deleted by the plan.
const DELETED: u32 = u32::MAX - 1;
/// A seed of group `Seed as u32`: `SEED_BASE + group`.
const SEED_BASE: u32 = u32::MAX - 16;
/// The groups in [`Seed`] order.
const GROUPS: [Seed; 5] = [
    Seed::Root,
    Seed::Lease,
    Seed::PushedWithin,
    Seed::UsedWithin,
    Seed::NotTrashed,
];

/// For every path of a plan: the path it was reached from (live by reference), or that it is
/// a seed, deleted, or not reached from a seed. Built once per plan ([`Keepers::new`]).
#[derive(Debug, Clone)]
pub struct Keepers {
    from: Vec<u32>,
}

impl Keepers {
    /// Walks the closure of the plan's seeds, group by group (each breadth first, so the chain
    /// to a path is a shortest one from the first group that reaches it).
    pub fn new(
        snapshot: &Snapshot,
        roots: &RootIds,
        now: u64,
        options: &PlanOptions,
        plan: &Plan,
    ) -> Keepers {
        let mut from = vec![UNREACHED; snapshot.path_count()];
        for &id in &plan.narinfos {
            if let Some(slot) = from.get_mut(id as usize) {
                *slot = DELETED;
            }
        }
        let mut queue = std::collections::VecDeque::new();
        for (kind, ids) in seeds(snapshot, roots, now, options) {
            let group = GROUPS.iter().position(|&g| g == kind).unwrap_or(0) as u32;
            for id in ids {
                if let Some(slot) = from.get_mut(id as usize).filter(|s| **s == UNREACHED) {
                    *slot = SEED_BASE + group;
                    queue.push_back(id);
                }
            }
            while let Some(id) = queue.pop_front() {
                let Some(summary) = snapshot.summary(id) else {
                    continue;
                };
                for &r in summary.references.iter() {
                    // Live is closed under references: a deleted path is never reached here.
                    if let Some(slot) = from.get_mut(r as usize).filter(|s| **s == UNREACHED) {
                        *slot = id;
                        queue.push_back(r);
                    }
                }
            }
        }
        Keepers { from }
    }

    /// Why path `id` stays or goes, in `snapshot`'s terms: the seed kind and the chain of ids
    /// from the seed to `id`; `None` for a path the plan deletes or the cache lacks.
    pub fn chain(&self, id: PathId) -> Option<(Option<Seed>, Vec<PathId>)> {
        let mut chain = vec![id];
        let mut at = id;
        loop {
            match *self.from.get(at as usize)? {
                DELETED => return None,
                UNREACHED => return Some((None, chain)),
                link if link >= SEED_BASE => {
                    chain.reverse();
                    let kind = GROUPS.get((link - SEED_BASE) as usize).copied();
                    return Some((kind, chain));
                }
                link => {
                    // A walk of the BFS tree: at most every path once.
                    if chain.len() > self.from.len() {
                        return None;
                    }
                    chain.push(link);
                    at = link;
                }
            }
        }
    }
}

/// What a plan does with one store path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum PathFate {
    /// The cache has no narinfo for it.
    NotInCache,
    /// The plan deletes its narinfo: nothing keeps it.
    Deleted,
    /// It stays.
    Kept(Kept),
}

/// Why a path stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// What keeps the first path of `via`.
    pub by: Keeper,
    /// Hash parts, from the path kept for its own sake to this one, each referring to the
    /// next: just this path when it is kept for its own sake.
    pub via: Vec<String>,
}

/// What keeps a path (for its own sake, with its closure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Keeper {
    /// Live roots name it (`host/name`).
    Root { roots: Vec<String> },
    /// The leases of pushes in progress name it (`gcleases/<name>`).
    Lease { leases: Vec<String> },
    /// Pushed (Unix seconds) within `older_than` (seconds).
    PushedWithin { pushed: u64, within: u64 },
    /// Pushed or read through `serve --record-access` (Unix seconds) within `unused_for`.
    UsedWithin { last_used: u64, within: u64 },
    /// `only_trashed`: no trashed root reaches it.
    NotTrashed,
    /// `max_size`: among the most recently used paths whose NARs fit (last used, Unix
    /// seconds).
    Size { last_used: u64 },
    /// Its narinfo does not parse: kept (what it refers to is unknown).
    Unparseable,
}

impl PathFate {
    /// One sentence, as `cachecore gc --why` prints it; ages are counted back from `now` (Unix
    /// seconds, the plan's time).
    pub fn describe(&self, now: u64) -> String {
        let kept = match self {
            PathFate::NotInCache => return "not in the cache (no narinfo)".to_owned(),
            PathFate::Deleted => {
                return "deleted: no root, lease or option keeps it or anything referring to it"
                    .to_owned()
            }
            PathFate::Kept(kept) => kept,
        };
        let ago = |t: u64| age(now.saturating_sub(t));
        let why = match &kept.by {
            Keeper::Root { roots } => format!("named by GC root {}", roots.join(", ")),
            Keeper::Lease { leases } => format!(
                "named by the lease of a push in progress ({})",
                leases.join(", ")
            ),
            Keeper::PushedWithin { pushed, within } => format!(
                "pushed {} ago, within older_than ({})",
                ago(*pushed),
                age(*within)
            ),
            Keeper::UsedWithin { last_used, within } => format!(
                "pushed or read {} ago, within unused_for ({})",
                ago(*last_used),
                age(*within)
            ),
            Keeper::NotTrashed => "reached by no trashed root (only_trashed)".to_owned(),
            Keeper::Size { last_used } => format!(
                "among the most recently used paths that fit in max_size (used {} ago)",
                ago(*last_used)
            ),
            Keeper::Unparseable => {
                "its narinfo does not parse (what it refers to is unknown)".to_owned()
            }
        };
        match kept.via.as_slice() {
            [first, _, ..] => format!(
                "kept: in the closure of {first}, {why}: {}",
                kept.via.join(" -> ")
            ),
            _ => format!("kept: {why}"),
        }
    }
}

/// `secs` in the largest unit of `gc`'s durations that fits (`3d`, `5h`, `12m`, `40s`).
fn age(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl PlannedRun {
    /// The links [`why`](Self::why) follows, walked once for this plan.
    pub fn keepers(&self) -> Keepers {
        Keepers::new(
            &self.scan.snapshot,
            &self.root_ids,
            unix_secs(self.now),
            &self.options.plan,
            &self.plan,
        )
    }

    /// What the plan does with the path of hash part `hash`, and what keeps it.
    pub fn why(&self, keepers: &Keepers, hash: &str) -> PathFate {
        let snapshot = &self.scan.snapshot;
        let now = unix_secs(self.now);
        let Some(id) = snapshot.path_id(hash) else {
            return PathFate::NotInCache;
        };
        if snapshot.summary(id).is_none() && !snapshot.is_unparseable(id) {
            return PathFate::NotInCache;
        }
        let Some((kind, chain)) = keepers.chain(id) else {
            return PathFate::Deleted;
        };
        let seed = chain.first().copied().unwrap_or(id);
        let seed_hash = snapshot.hash_part(seed);
        let options = &self.options.plan;
        let within = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_secs());
        let by = match kind {
            Some(Seed::Root) => Keeper::Root {
                roots: self
                    .scan
                    .roots
                    .iter()
                    .filter(|r| r.body.paths().any(|p| p.hash_part() == seed_hash))
                    .map(ToString::to_string)
                    .collect(),
            },
            Some(Seed::Lease) => Keeper::Lease {
                leases: self
                    .scan
                    .leases
                    .iter()
                    .filter(|(_, l)| l.holds_at(now) && l.paths.iter().any(|p| p == seed_hash))
                    .map(|(name, _)| crate::store::layout::gc_lease(name))
                    .collect(),
            },
            Some(Seed::PushedWithin) => Keeper::PushedWithin {
                pushed: snapshot.summary(seed).map_or(0, |s| s.pushed),
                within: within(options.older_than),
            },
            Some(Seed::UsedWithin) => Keeper::UsedWithin {
                last_used: snapshot.last_used(seed),
                within: within(options.unused_for),
            },
            Some(Seed::NotTrashed) => Keeper::NotTrashed,
            None if snapshot.summary(id).is_none() => Keeper::Unparseable,
            None => Keeper::Size {
                last_used: snapshot.last_used(id),
            },
        };
        PathFate::Kept(Kept {
            by,
            via: chain
                .iter()
                .map(|&p| snapshot.hash_part(p).to_owned())
                .collect(),
        })
    }
}
