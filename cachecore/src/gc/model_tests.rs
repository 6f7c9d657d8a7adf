//! The planner's unit tests, and the model test: seeded random schedules interleaving the
//! steps of pushes, `serve` uploads and GC runs (some killed half-way) over an in-memory cache,
//! checking after every step that every visible narinfo has its NAR and the narinfos of all its
//! references.
//!
//! The writers follow the push rule of [`lease`](super::lease), with its real code
//! ([`PushGuard`]):
//! - a *push* (`push`, `copy`, the proxy's fills) writes its lease and reads the tombstones
//!   (one step), finds what is missing or condemned (a step), then per path uploads the NAR, re-checks
//!   (a step of its own) and writes the narinfo (another: a GC may act between the re-check
//!   and the write);
//! - an *upload* (a client of `serve`, as `nix copy --to http://…`): the client finds what is
//!   missing, and per path uploads the NAR; the server writes a lease on the narinfo's path and
//!   references, re-checks them (rescuing condemned ones), writes the narinfo and releases the
//!   lease, each a step.
//!
//! Writers stop once older than their lease (12 h here: half the grace and the orphan limit).
//! A GC's HEAD and its delete are one step (a one-request window, see the module docs). One GC
//! runs at a time; `--force` (grace 0) runs start only while no writer is in flight, as the docs
//! ask. [`Faults`] remove the lease or the re-check, to show the model catches what they
//! prevent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::apply::{scan, Applier, GcOptions, GcReport, Scan};
use super::lease::PushGuard;
use super::plan::{plan, ObjectRef, PlanError, PlanOptions, RootIds, Snapshot};
use super::roots;
use crate::compression::Compression;
use crate::hash::{Hash, HashAlgo};
use crate::narinfo::NarInfo;
use crate::store::BinaryCache;
use crate::store_path::{StoreDir, StorePath};

/// xorshift64*: reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn store_path(i: usize) -> StorePath {
    let mut digest = [0u8; 20];
    digest[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    digest[19] = 0x5a;
    StorePath::from_parts(digest, &format!("p{i}")).unwrap()
}

/// A universe of paths: references only to lower indices; some share NAR contents.
struct World {
    paths: Vec<StorePath>,
    references: Vec<Vec<usize>>,
    content: Vec<Bytes>,
}

impl World {
    fn new(rng: &mut Rng, n: usize) -> Self {
        let paths = (0..n).map(store_path).collect();
        let references = (0..n)
            .map(|i| (0..i).filter(|_| rng.chance(25)).collect())
            .collect();
        // Paths i and i + n/2 may have the same NAR (a NAR is named by its content).
        let content = (0..n)
            .map(|i| {
                let c = if i >= n / 2 && rng.chance(50) {
                    i - n / 2
                } else {
                    i
                };
                Bytes::from(format!("nar of {c}"))
            })
            .collect();
        World {
            paths,
            references,
            content,
        }
    }

    fn closure(&self, top: usize) -> Vec<usize> {
        let mut seen = vec![false; self.paths.len()];
        let mut stack = vec![top];
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(&self.references[i]);
            }
        }
        // References only point down: ascending is references first.
        (0..self.paths.len()).filter(|&i| seen[i]).collect()
    }

    fn narinfo(&self, i: usize, url: &str) -> NarInfo {
        let nar_hash = Hash::digest(HashAlgo::Sha256, &self.content[i]);
        let mut info = NarInfo::new(
            StoreDir::default(),
            self.paths[i].clone(),
            url.to_owned(),
            nar_hash,
            self.content[i].len() as u64,
        );
        info.references = self.references[i]
            .iter()
            .map(|&r| self.paths[r].clone())
            .collect();
        info.references.push(self.paths[i].clone());
        info.compression = Some("none".into());
        info
    }
}

/// Parts of the push rule a schedule leaves out (each test that sets one expects a broken
/// closure somewhere).
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    no_lease: bool,
    no_recheck: bool,
}

/// How long a writer's lease lasts in the model (and when it gives up).
const TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone, Copy)]
enum Step {
    /// A push: lease and tombstones.
    Begin,
    /// The missing check (a push: missing or condemned; a client of serve: missing).
    Missing,
    Upload(usize),
    /// serve: the lease on one narinfo's path and references.
    ServeBegin(usize),
    Recheck(usize),
    Put(usize),
}

struct Writer {
    /// A client of `serve` (else a push).
    serve: bool,
    /// The model clock when it started (a push) or uploaded the current NAR (serve).
    started: Duration,
    top: usize,
    todo: Vec<usize>,
    urls: Vec<String>,
    step: Step,
    guard: Option<PushGuard>,
    transfer: HashSet<StorePath>,
}

/// Writes a lease through [`PushGuard`] at model time `now`, or (fault) lets the GC never see
/// it.
async fn begin(
    cache: &BinaryCache,
    holder: &str,
    paths: &[StorePath],
    now: SystemTime,
    faults: Faults,
) -> PushGuard {
    let before: HashSet<String> = cache.list_gc_leases().await.unwrap().into_iter().collect();
    let guard = PushGuard::begin_at(cache, holder, paths, now, TTL)
        .await
        .unwrap();
    if faults.no_lease {
        for name in cache.list_gc_leases().await.unwrap() {
            if !before.contains(&name) {
                cache.delete_gc_lease(&name).await.unwrap();
            }
        }
    }
    guard
}

impl Writer {
    fn new(serve: bool, top: usize, clock: Duration) -> Self {
        Writer {
            serve,
            started: clock,
            top,
            todo: Vec::new(),
            urls: Vec::new(),
            step: if serve { Step::Missing } else { Step::Begin },
            guard: None,
            transfer: HashSet::new(),
        }
    }

    /// Gives up (or finishes): releases the lease.
    async fn end(&mut self) -> bool {
        if let Some(g) = self.guard.take() {
            g.end().await;
        }
        false
    }

    /// One step; `false` when the writer is over (done, or given up).
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &mut self,
        cache: &BinaryCache,
        world: &World,
        rng: &mut Rng,
        base: SystemTime,
        clock: Duration,
        written: &mut HashMap<String, Duration>,
        faults: Faults,
    ) -> bool {
        match self.step {
            Step::Begin => {
                let closure: Vec<StorePath> = world
                    .closure(self.top)
                    .into_iter()
                    .map(|i| world.paths[i].clone())
                    .collect();
                self.guard = Some(begin(cache, "push", &closure, base + clock, faults).await);
                self.step = Step::Missing;
                true
            }
            Step::Missing => {
                // Half the time the closure is uploaded again whatever is there (as `nix copy`
                // of a changed cache might).
                let all = rng.chance(50);
                self.todo.clear();
                for i in world.closure(self.top) {
                    let path = &world.paths[i];
                    let missing = match &self.guard {
                        Some(g) => !g
                            .missing(std::slice::from_ref(path), 1)
                            .await
                            .unwrap()
                            .is_empty(),
                        None => !cache.has_narinfo(path).await.unwrap(),
                    };
                    if all || missing {
                        self.todo.push(i);
                    }
                }
                if self.todo.is_empty() {
                    return self.end().await;
                }
                self.transfer = self.todo.iter().map(|&i| world.paths[i].clone()).collect();
                self.urls = self
                    .todo
                    .iter()
                    .map(|&i| {
                        let hash = Hash::digest(HashAlgo::Sha256, &world.content[i]);
                        if rng.chance(30) {
                            BinaryCache::streamed_nar_url(&hash, Compression::None)
                        } else {
                            BinaryCache::nar_url(&hash, Compression::None)
                        }
                    })
                    .collect();
                self.step = Step::Upload(0);
                true
            }
            Step::Upload(k) => {
                let i = self.todo[k];
                if self.serve {
                    // The server refuses a narinfo whose NAR is older than a lease (the
                    // re-check reads its age).
                    self.started = clock;
                }
                cache
                    .put_nar(&self.urls[k], world.content[i].clone())
                    .await
                    .unwrap();
                written.insert(self.urls[k].clone(), clock);
                if rng.chance(50) {
                    written.insert(format!("{}.ls", world.paths[i].hash_part()), clock);
                    cache
                        .put_listing_bytes(&world.paths[i], Bytes::from_static(b"{}"))
                        .await
                        .unwrap();
                }
                self.step = if self.serve {
                    Step::ServeBegin(k)
                } else {
                    Step::Recheck(k)
                };
                true
            }
            Step::ServeBegin(k) => {
                let i = self.todo[k];
                let mut paths: Vec<StorePath> = world.references[i]
                    .iter()
                    .map(|&r| world.paths[r].clone())
                    .collect();
                paths.push(world.paths[i].clone());
                self.guard = Some(begin(cache, "serve", &paths, base + clock, faults).await);
                self.step = Step::Recheck(k);
                true
            }
            Step::Recheck(k) => {
                let i = self.todo[k];
                let info = world.narinfo(i, &self.urls[k]);
                if !faults.no_recheck {
                    let guard = self.guard.as_ref().unwrap();
                    let checked = if self.serve {
                        // The server checks what its client sends against the cache only.
                        guard.recheck_rescuing(&info, &HashSet::new()).await
                    } else {
                        guard.recheck(&info, &self.transfer).await
                    };
                    if checked.is_err() {
                        return self.end().await; // given up: run again
                    }
                }
                self.step = Step::Put(k);
                true
            }
            Step::Put(k) => {
                let i = self.todo[k];
                // Never past the lease (the real writers renew it in the re-check).
                if clock.saturating_sub(self.started) + super::lease::CLOCK_SKEW >= TTL {
                    return self.end().await;
                }
                cache
                    .put_narinfo(&world.narinfo(i, &self.urls[k]))
                    .await
                    .unwrap();
                written.insert(format!("{}.narinfo", world.paths[i].hash_part()), clock);
                if self.serve {
                    self.end().await;
                }
                if k + 1 == self.todo.len() {
                    return self.end().await;
                }
                self.step = Step::Upload(k + 1);
                true
            }
        }
    }
}

/// Every visible narinfo has its NAR and its references' narinfos.
async fn check_invariant(cache: &BinaryCache, seed: u64, step: usize) -> Result<(), String> {
    use futures::TryStreamExt;
    let infos: Vec<NarInfo> = cache.narinfos(8).try_collect().await.unwrap();
    for info in &infos {
        if cache.nar_meta(&info.url).await.unwrap().is_none() {
            return Err(format!(
                "seed {seed} step {step}: {} has no NAR {}",
                info.store_path, info.url
            ));
        }
        for r in &info.references {
            if !cache.has_narinfo(r).await.unwrap() {
                return Err(format!(
                    "seed {seed} step {step}: {} references {r}, which has no narinfo",
                    info.store_path
                ));
            }
        }
    }
    Ok(())
}

struct GcRun {
    applier: Applier<'static>,
    report: GcReport,
}

async fn run_schedule(seed: u64, faults: Faults) -> Result<(usize, usize), String> {
    let mut rng = Rng::new(seed);
    let cache = BinaryCache::open("memory://").unwrap();
    let dir = StoreDir::default();
    let n = 6 + rng.below(8);
    let world = World::new(&mut rng, n);
    let rooted: Vec<bool> = (0..n).map(|_| rng.chance(15)).collect();
    // The rooted paths (and their closures, so a root is complete) are in place first.
    let rooted_tops: Vec<usize> = (0..n).filter(|&i| rooted[i]).collect();
    let mut rooted = vec![false; n];
    for &t in &rooted_tops {
        for i in world.closure(t) {
            if !rooted[i] {
                rooted[i] = true;
                let file_hash = Hash::digest(HashAlgo::Sha256, &world.content[i]);
                let url = BinaryCache::nar_url(&file_hash, Compression::None);
                cache.put_nar(&url, world.content[i].clone()).await.unwrap();
                cache.put_narinfo(&world.narinfo(i, &url)).await.unwrap();
            }
        }
        roots::add(
            &cache,
            &dir,
            "h",
            &format!("r{t}"),
            vec![world.paths[t].clone()],
            None,
            SystemTime::now(),
        )
        .await
        .unwrap();
    }
    // The model's clock: objects are dated by it (the in-memory store dates them by the real
    // one, which does not jump), through `Snapshot::set_times`.
    let base = SystemTime::now();
    let mut clock = Duration::ZERO;
    let mut written: HashMap<String, Duration> = HashMap::new();
    let mut writers: Vec<Writer> = Vec::new();
    let mut gc: Option<GcRun> = None;
    let (mut deleted, mut gc_runs) = (0, 0);
    let trace = std::env::var("CACHECORE_GC_MODEL_TRACE").is_ok_and(|t| t == seed.to_string());
    for step in 0..120 {
        let choice = rng.below(10);
        if trace {
            let ws: Vec<String> = writers
                .iter()
                .map(|w| format!("{}{}:{:?}", if w.serve { "S" } else { "P" }, w.top, w.step))
                .collect();
            eprintln!(
                "step {step} clock {}h choice {choice} writers {ws:?} gc {}",
                clock.as_secs() / 3600,
                gc.as_ref()
                    .map_or("-".into(), |g| format!("{:?}", g.applier.phase()))
            );
        }
        if choice < 2 && writers.len() < 3 {
            writers.push(Writer::new(rng.chance(30), rng.below(n), clock));
        } else if choice < 6 && !writers.is_empty() {
            let k = rng.below(writers.len());
            if rng.chance(2) {
                writers.swap_remove(k); // killed: its lease stays until it expires
            } else if !writers[k]
                .step(&cache, &world, &mut rng, base, clock, &mut written, faults)
                .await
            {
                writers.swap_remove(k);
            }
        } else if choice < 7 {
            // Time passes: sometimes past the grace and the orphan limit.
            clock += Duration::from_secs([1, 3600, 3 * 24 * 3600][rng.below(3)]);
        } else if let Some(run) = gc.as_mut() {
            if rng.chance(3) {
                gc = None; // killed
            } else if !run.applier.step(&cache, &mut run.report).await {
                deleted += run.report.narinfos_deleted.len();
                gc = None;
            }
        } else {
            gc_runs += 1;
            let now = base + clock;
            // --force only on a cache no one writes to.
            let force = writers.is_empty() && rng.chance(30);
            let options = GcOptions {
                plan: PlanOptions {
                    older_than: rng.chance(30).then(|| Duration::from_secs(3600)),
                    grace: if force {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(24 * 3600)
                    },
                    allow_empty_roots: true,
                    ..PlanOptions::default()
                },
                dry_run: false,
                concurrency: 4,
            };
            let mut s = scan(&cache, &dir, 4).await.unwrap();
            s.snapshot
                .set_times(|key| written.get(key).map(|&c| roots::unix_secs(base + c)));
            let ids = s.root_ids(roots::unix_secs(now));
            let s: &'static Scan = Box::leak(Box::new(s));
            let p = plan(&s.snapshot, &ids, roots::unix_secs(now), &options.plan).unwrap();
            let p = Box::leak(Box::new(p));
            let mut report = GcReport::default();
            let applier = Applier::new(s, p, now, &options, &mut report);
            gc = Some(GcRun { applier, report });
        }
        check_invariant(&cache, seed, step).await?;
    }
    Ok((deleted, gc_runs))
}

fn schedules() -> u64 {
    std::env::var("CACHECORE_GC_MODEL_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500)
}

#[tokio::test]
async fn model_schedules_keep_every_closure() {
    let schedules = schedules();
    let (mut deleted, mut runs) = (0, 0);
    for seed in 0..schedules {
        let (d, r) = run_schedule(seed, Faults::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        deleted += d;
        runs += r;
    }
    // The schedules really collect (a model where GC never deletes proves nothing).
    eprintln!("{schedules} schedules: {runs} GC runs, {deleted} narinfos deleted");
    assert!(
        runs > schedules as usize && deleted > schedules as usize / 2,
        "{runs} runs, {deleted} deleted"
    );
}

/// The first schedule (of the usual ones) that `faults` breaks, if any.
async fn first_broken(faults: Faults) -> Option<String> {
    for seed in 0..schedules() {
        if let Err(e) = run_schedule(seed, faults).await {
            return Some(e);
        }
    }
    None
}

/// Without the lease, a GC that read the cache before a writer's re-check and deletes after it
/// breaks the closure the writer then publishes: the model finds such a schedule.
#[tokio::test]
async fn model_finds_the_race_the_lease_closes() {
    let broken = first_broken(Faults {
        no_lease: true,
        ..Faults::default()
    })
    .await;
    eprintln!("without leases: {broken:?}");
    assert!(
        broken.is_some(),
        "no schedule broke a closure without leases"
    );
}

/// Without the re-check, a writer publishes over a reference a GC deleted (or condemned) after
/// the writer found it present: the model finds such a schedule.
#[tokio::test]
async fn model_finds_the_race_the_recheck_closes() {
    let broken = first_broken(Faults {
        no_recheck: true,
        ..Faults::default()
    })
    .await;
    eprintln!("without the re-check: {broken:?}");
    assert!(
        broken.is_some(),
        "no schedule broke a closure without the re-check"
    );
}

// ---- The planner on hand-made snapshots ----

fn hash(i: usize) -> String {
    store_path(i).hash_part()
}

/// Adds path `i` with `refs`, NAR `nar`, pushed at `pushed`.
fn add(s: &mut Snapshot, i: usize, refs: &[usize], nar: &str, pushed: u64) {
    let mut info = NarInfo::new(
        StoreDir::default(),
        store_path(i),
        nar.to_owned(),
        Hash::digest(HashAlgo::Sha256, nar.as_bytes()),
        10,
    );
    info.references = refs.iter().map(|&r| store_path(r)).collect();
    s.add_narinfo(&hash(i), &info, pushed, i as u64);
    s.add_nar_object(nar, 100, pushed, 0);
}

fn ids(s: &Snapshot, is: &[usize]) -> Vec<u32> {
    is.iter().map(|&i| s.path_id(&hash(i)).unwrap()).collect()
}

fn keys(s: &Snapshot, objects: &[ObjectRef]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|&o| super::apply::object_key(s, o))
        .collect();
    k.sort();
    k
}

#[test]
fn plan_keeps_closures_orders_referrers_first_and_shares_nars() {
    // 0 <- 1 <- 2 (app), 3 -> 0 ; 2 rooted. 3 is garbage; 0 stays (2 needs it).
    // 4 shares its NAR with 1 (live): the NAR stays. 5 -> 4: both garbage, 5 first.
    let mut s = Snapshot::new();
    add(&mut s, 0, &[], "nar/a.nar", 10);
    add(&mut s, 1, &[0], "nar/b.nar", 10);
    add(&mut s, 2, &[1, 0, 2], "nar/c.nar", 10);
    add(&mut s, 3, &[0], "nar/d.nar", 10);
    add(&mut s, 4, &[], "nar/b.nar", 10);
    add(&mut s, 5, &[4], "nar/e.nar", 10);
    s.add_listing(&hash(5), 7, 10);
    s.add_nar_object("nar/orphan.nar", 50, 10, 0);
    s.add_nar_object("nar/young-orphan.nar", 50, 1_000_000 - 60, 0);
    let roots = RootIds {
        live: ids(&s, &[2]),
        trashed: vec![],
        leased: vec![],
    };
    let opts = PlanOptions::default();
    let p = plan(&s, &roots, 1_000_000, &opts).unwrap();
    assert_eq!(p.live, 3);
    let order: Vec<u32> = p.narinfos.clone();
    assert_eq!(order.len(), 3);
    let pos = |i: usize| order.iter().position(|&x| x == ids(&s, &[i])[0]).unwrap();
    assert!(pos(5) < pos(4));
    assert_eq!(
        keys(&s, &p.tombstone),
        [
            format!("{}.ls", hash(5)),
            "nar/d.nar".into(),
            "nar/e.nar".into()
        ]
    );
    assert_eq!(keys(&s, &p.delete), ["nar/orphan.nar"]);
    assert_eq!(p.orphans, 1);
    // Deterministic.
    assert_eq!(plan(&s, &roots, 1_000_000, &opts).unwrap(), p);

    // Grace 0: the tombstone's objects go in the same run, after the due and before orphans.
    let force = PlanOptions {
        grace: Duration::ZERO,
        ..PlanOptions::default()
    };
    let p0 = plan(&s, &roots, 1_000_000, &force).unwrap();
    assert_eq!(keys(&s, &p0.delete).len(), 4);

    // Recently pushed paths stay with their closures.
    let recent = PlanOptions {
        older_than: Some(Duration::from_secs(100)),
        ..PlanOptions::default()
    };
    add(&mut s, 6, &[3], "nar/f.nar", 1_000_000 - 10);
    let p = plan(&s, &roots, 1_000_000, &recent).unwrap();
    assert_eq!(
        keys(&s, &p.tombstone),
        [format!("{}.ls", hash(5)), "nar/e.nar".into()]
    );

    // No roots, no --older-than: refused unless allowed.
    let none = RootIds::default();
    assert_eq!(plan(&s, &none, 1, &opts), Err(PlanError::EmptyRoots));
    let all = PlanOptions {
        allow_empty_roots: true,
        ..PlanOptions::default()
    };
    assert_eq!(plan(&s, &none, 1, &all).unwrap().live, 0);
}

#[test]
fn plan_due_tombstones_unparseable_and_only_trashed() {
    let mut s = Snapshot::new();
    add(&mut s, 0, &[], "nar/a.nar", 10);
    add(&mut s, 1, &[0], "nar/b.nar", 10);
    add(&mut s, 2, &[], "nar/c.nar", 10);
    let gone = s.intern_key("nar/gone.nar");
    s.add_nar_object("nar/gone.nar", 9, 5, 0);
    let named = s.intern_key("nar/a.nar");
    s.add_tombstone(super::plan::TombstoneSummary {
        name: "t-old".into(),
        written: 100,
        objects: vec![ObjectRef::Nar(gone), ObjectRef::Nar(named)],
    });
    s.add_tombstone(super::plan::TombstoneSummary {
        name: "t-new".into(),
        written: 1_000_000 - 5,
        objects: vec![],
    });
    let opts = PlanOptions::default();
    // only_trashed: what trashed roots reach (1, and 0 through it) goes, unless kept.
    let roots = RootIds {
        live: vec![],
        trashed: ids(&s, &[1]),
        leased: vec![],
    };
    let only = PlanOptions {
        only_trashed: true,
        ..PlanOptions::default()
    };
    let p = plan(&s, &roots, 1_000_000, &only).unwrap();
    assert_eq!(p.narinfos, ids(&s, &[1, 0]));
    assert_eq!(p.live, 1);
    // The old tombstone is due: its unnamed NAR goes, the one a narinfo names stays.
    assert_eq!(keys(&s, &p.delete), ["nar/gone.nar"]);
    assert_eq!(p.finished_tombstones, ["t-old"]);
    // A narinfo that does not parse keeps every orphan NAR and is never deleted.
    s.add_unparseable(&hash(7));
    s.add_nar_object("nar/orphan.nar", 50, 10, 0);
    let roots = RootIds {
        live: ids(&s, &[1]),
        trashed: vec![],
        leased: vec![],
    };
    let p = plan(&s, &roots, 1_000_000, &opts).unwrap();
    assert_eq!(p.orphans, 0);
    assert_eq!(p.orphans_kept_for_unparseable, 1);
    assert_eq!(p.narinfos, ids(&s, &[2]));
}

#[test]
fn plan_max_size_evicts_oldest_first_and_never_breaks_a_closure() {
    // 1 -> 0; 0 is old but 1, which needs it, is the newest: they go or stay together.
    let mut s = Snapshot::new();
    add(&mut s, 0, &[], "nar/a.nar", 10);
    add(&mut s, 1, &[0], "nar/b.nar", 50);
    add(&mut s, 2, &[], "nar/c.nar", 30);
    add(&mut s, 3, &[], "nar/d.nar", 40);
    // Older than the first path that does not fit: goes too, though it shares 1's NAR.
    add(&mut s, 4, &[], "nar/b.nar", 5);
    let opts = |max| PlanOptions {
        max_size: Some(max),
        grace: Duration::ZERO,
        ..PlanOptions::default()
    };
    // No roots needed with --max-size.
    let p = plan(&s, &RootIds::default(), 100, &opts(250)).unwrap();
    let mut gone = p.narinfos.clone();
    gone.sort_unstable();
    assert_eq!(gone, ids(&s, &[2, 3, 4]));
    assert_eq!((p.live, p.kept_for_size), (2, 2));
    assert_eq!(keys(&s, &p.delete), ["nar/c.nar", "nar/d.nar"]);
    // Room for one: 0 stays (the reference comes first), 1, which needs it, goes.
    let p = plan(&s, &RootIds::default(), 100, &opts(150)).unwrap();
    let mut gone = p.narinfos.clone();
    gone.sort_unstable();
    assert_eq!(gone, ids(&s, &[1, 2, 3, 4]));
    assert_eq!(p.live, 1);
    // Big enough: nothing goes.
    assert!(plan(&s, &RootIds::default(), 100, &opts(1 << 20))
        .unwrap()
        .narinfos
        .is_empty());
    // Roots count first: 2 rooted (100 bytes) leaves room for 1 and 0 only if 300 fit.
    let roots = RootIds {
        live: ids(&s, &[2]),
        trashed: vec![],
        leased: vec![],
    };
    let p = plan(&s, &roots, 100, &opts(300)).unwrap();
    let mut gone = p.narinfos.clone();
    gone.sort_unstable();
    assert_eq!(gone, ids(&s, &[3, 4]));
}

#[test]
fn plan_deletes_unparseable_narinfos_and_realisations_only_when_told_and_unreferenced() {
    let mut s = Snapshot::new();
    add(&mut s, 0, &[8], "nar/a.nar", 10);
    add(&mut s, 1, &[], "nar/b.nar", 10);
    add(&mut s, 2, &[], "nar/c.nar", 10);
    s.add_unparseable_version(&hash(7), 3);
    s.add_unparseable_version(&hash(8), 4);
    // Realisations: of a live output, a dead one, one with no narinfo (old, young).
    s.add_realisation("sha256:aa!out", &hash(1), 1, 10);
    s.add_realisation("sha256:bb!out", &hash(2), 1, 10);
    s.add_realisation("sha256:cc!out", &hash(9), 1, 10);
    s.add_realisation("sha256:dd!out", &hash(10), 1, 1_000_000 - 5);
    let roots = RootIds {
        live: ids(&s, &[0, 1]),
        trashed: vec![],
        leased: vec![],
    };
    let kept = plan(&s, &roots, 1_000_000, &PlanOptions::default()).unwrap();
    assert_eq!(kept.narinfos, ids(&s, &[2]));
    assert_eq!(kept.unparseable, 0);
    let opts = PlanOptions {
        delete_unparseable: true,
        ..PlanOptions::default()
    };
    let p = plan(&s, &roots, 1_000_000, &opts).unwrap();
    // 8 is referred to by the live 0: kept. 7 goes, last.
    assert_eq!(p.narinfos, ids(&s, &[2, 7]));
    assert_eq!(p.unparseable, 1);
    assert_eq!(s.narinfo_version(ids(&s, &[7])[0]), Some(3));
    assert_eq!(p.realisations, 2);
    let mut realisations: Vec<String> = p
        .delete
        .iter()
        .filter(|o| matches!(o, ObjectRef::Realisation(_)))
        .map(|&o| super::apply::object_key(&s, o))
        .collect();
    realisations.sort();
    assert_eq!(
        realisations,
        [
            "realisations/sha256:bb!out.doi",
            "realisations/sha256:cc!out.doi"
        ]
    );
}

#[test]
fn reads_recorded_by_serve_count_as_use_for_unused_for_and_max_size() {
    // 0 <- 1 and 2 <- 3, all pushed long ago; 1 read recently (it and its reference are used),
    // 3 pushed later than 1 but never read.
    let mut s = Snapshot::new();
    add(&mut s, 0, &[], "nar/a.nar", 10);
    add(&mut s, 1, &[0], "nar/b.nar", 10);
    add(&mut s, 2, &[], "nar/c.nar", 20);
    add(&mut s, 3, &[2], "nar/d.nar", 20);
    s.set_last_read(&hash(1), 1_000_000 - 5);
    s.set_last_read(&hash(99), 1_000_000); // not in the cache: ignored
    assert_eq!(s.read_paths(), 1);
    let none = RootIds::default();
    let unused = PlanOptions {
        unused_for: Some(Duration::from_secs(3600)),
        ..PlanOptions::default()
    };
    let p = plan(&s, &none, 1_000_000, &unused).unwrap();
    assert_eq!(p.live, 2);
    let mut dead = p.narinfos.clone();
    dead.sort_unstable();
    assert_eq!(dead, ids(&s, &[2, 3]));
    // Room for two NARs: the closure read last stays, though 2 and 3 were pushed later.
    let fit = PlanOptions {
        max_size: Some(200),
        ..PlanOptions::default()
    };
    let p = plan(&s, &none, 1_000_000, &fit).unwrap();
    assert_eq!((p.live, p.kept_for_size), (2, 2));
    let mut dead = p.narinfos.clone();
    dead.sort_unstable();
    assert_eq!(dead, ids(&s, &[2, 3]));
}

#[test]
fn keepers_name_the_seed_and_the_chain_of_every_live_path() {
    use super::plan::Seed;
    use super::why::Keepers;
    // 0 <- 1 <- 2 (rooted), 0 <- 3 (leased), 4 pushed recently, 5 old and unrooted, 6 kept for
    // size, 7's narinfo does not parse.
    let mut s = Snapshot::new();
    add(&mut s, 0, &[], "nar/a.nar", 10);
    add(&mut s, 1, &[0], "nar/b.nar", 10);
    add(&mut s, 2, &[1], "nar/c.nar", 10);
    add(&mut s, 3, &[0], "nar/d.nar", 10);
    add(&mut s, 4, &[], "nar/e.nar", 1_000_000 - 5);
    add(&mut s, 5, &[], "nar/f.nar", 10);
    add(&mut s, 6, &[], "nar/g.nar", 20);
    s.add_unparseable(&hash(7));
    let roots = RootIds {
        live: ids(&s, &[2]),
        leased: ids(&s, &[3, 2]),
        trashed: vec![],
    };
    let options = PlanOptions {
        older_than: Some(Duration::from_secs(60)),
        // Room for the live NARs and one more: 6, used after 5.
        max_size: Some(600),
        ..PlanOptions::default()
    };
    let p = plan(&s, &roots, 1_000_000, &options).unwrap();
    assert_eq!(p.narinfos, ids(&s, &[5]));
    let k = Keepers::new(&s, &roots, 1_000_000, &options, &p);
    let chain = |i: usize| k.chain(ids(&s, &[i])[0]);
    // A root before a lease; the shortest chain from the first group reaching a path.
    assert_eq!(chain(2), Some((Some(Seed::Root), ids(&s, &[2]))));
    assert_eq!(chain(0), Some((Some(Seed::Root), ids(&s, &[2, 1, 0]))));
    assert_eq!(chain(3), Some((Some(Seed::Lease), ids(&s, &[3]))));
    assert_eq!(chain(4), Some((Some(Seed::PushedWithin), ids(&s, &[4]))));
    assert_eq!(chain(5), None);
    assert_eq!(chain(6), Some((None, ids(&s, &[6]))));
    assert_eq!(chain(7), Some((None, ids(&s, &[7]))));

    // Random caches: a path is deleted exactly when the planner deletes it, and every chain
    // starts at a seed and follows references.
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let mut s = Snapshot::new();
        let n = 2 + rng.below(40);
        for i in 0..n {
            let refs: Vec<usize> = (0..i).filter(|_| rng.chance(10)).collect();
            add(
                &mut s,
                i,
                &refs,
                &format!("nar/{i}.nar"),
                rng.below(1000) as u64,
            );
        }
        let pick = |rng: &mut Rng| -> Vec<u32> {
            (0..n)
                .filter(|_| rng.chance(8))
                .map(|i| ids(&s, &[i])[0])
                .collect()
        };
        let roots = RootIds {
            live: pick(&mut rng),
            leased: pick(&mut rng),
            trashed: pick(&mut rng),
        };
        let options = PlanOptions {
            older_than: rng.chance(50).then(|| Duration::from_secs(100)),
            only_trashed: rng.chance(20),
            max_size: rng.chance(30).then(|| 100 * rng.below(n) as u64),
            allow_empty_roots: true,
            ..PlanOptions::default()
        };
        let p = plan(&s, &roots, 1000, &options).unwrap();
        let k = Keepers::new(&s, &roots, 1000, &options, &p);
        let groups = super::plan::seeds(&s, &roots, 1000, &options);
        for i in 0..n {
            let id = ids(&s, &[i])[0];
            let Some((kind, chain)) = k.chain(id) else {
                assert!(
                    p.narinfos.contains(&id),
                    "seed {seed}: {i} deleted by the keepers only"
                );
                continue;
            };
            assert!(
                !p.narinfos.contains(&id),
                "seed {seed}: {i} kept by the keepers only"
            );
            assert_eq!(chain.last(), Some(&id));
            for pair in chain.windows(2) {
                assert!(s.summary(pair[0]).unwrap().references.contains(&pair[1]));
            }
            match kind {
                Some(kind) => {
                    let first = chain[0];
                    let group = groups.iter().find(|(g, _)| *g == kind).unwrap();
                    assert!(group.1.contains(&first), "seed {seed}: {i}'s chain");
                }
                None => assert!(
                    options.max_size.is_some() && chain == [id],
                    "seed {seed}: {i}"
                ),
            }
        }
    }
}

// ---- Frame digests (`nar/<nix32>.frames`) ----

/// The `.frames` keys of `cache`.
async fn frames_keys(cache: &BinaryCache) -> Vec<String> {
    use futures::TryStreamExt;
    let mut keys: Vec<String> = cache
        .objects()
        .list("")
        .map_ok(|m| m.key)
        .try_filter(|k| std::future::ready(k.ends_with(".frames")))
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Pushes a tree of one file of `len` bytes (more than one 4 MiB frame: the push writes frame
/// digests) made from `seed`; returns the path and its `.frames` key.
async fn push_framed(cache: &BinaryCache, dir: &std::path::Path, seed: u8) -> (StorePath, String) {
    use std::sync::Arc;
    let src = dir.join(format!("tree{seed}"));
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(u64::from(seed));
    let bytes: Vec<u8> = (0..9 << 20).map(|_| (rng.next() >> 60) as u8).collect();
    std::fs::write(src.join("big"), bytes).unwrap();
    let (path, _) = crate::ops::push_add(
        cache,
        &StoreDir::default(),
        &src,
        &format!("framed{seed}"),
        &crate::ops::PushOptions::default(),
        Arc::new(crate::ops::NoProgress),
    )
    .await
    .unwrap();
    let info = cache.narinfo(&path).await.unwrap().unwrap();
    let frames = crate::store::index::frames_hash(&info).expect("a multi-frame NAR has digests");
    (path, crate::store::layout::frame_digests(&frames))
}

#[tokio::test]
async fn frame_digests_go_with_the_narinfos_that_name_them_and_orphans_after_their_age() {
    use super::apply::collect;
    let dir = tempfile::tempdir().unwrap();
    let cache = BinaryCache::open("memory://").unwrap();
    let (kept, kept_frames) = push_framed(&cache, dir.path(), 1).await;
    let (gone, gone_frames) = push_framed(&cache, dir.path(), 2).await;
    let gone_nar = cache.narinfo(&gone).await.unwrap().unwrap().url;
    let mut all = vec![kept_frames.clone(), gone_frames.clone()];
    all.sort();
    assert_eq!(frames_keys(&cache).await, all);
    roots::add(
        &cache,
        &StoreDir::default(),
        "host",
        "kept",
        vec![kept.clone()],
        None,
        SystemTime::now(),
    )
    .await
    .unwrap();
    let options = GcOptions {
        concurrency: 4,
        ..GcOptions::default()
    };

    // The unrooted path goes; its NAR and frame digests wait in the tombstone for the grace.
    let now = SystemTime::now();
    let report = collect(&cache, &StoreDir::default(), now, &options)
        .await
        .unwrap();
    assert_eq!(report.failures, Vec::<String>::new());
    assert_eq!(
        report.from_index, 2,
        "the index says which digests each names"
    );
    assert_eq!(
        report.narinfos_deleted,
        [format!("{}.narinfo", gone.hash_part())]
    );
    assert!(
        report.tombstoned.contains(&gone_frames) && report.tombstoned.contains(&gone_nar),
        "{report:?}"
    );
    assert!(!report.tombstoned.contains(&kept_frames), "{report:?}");
    assert_eq!(
        frames_keys(&cache).await,
        all,
        "nothing goes before the grace"
    );

    // Digests named by nobody (a killed push) are an orphan once a day old.
    let orphan_hash = cache
        .put_frame_digests(Bytes::from_static(b"digests of a push that was killed"))
        .await
        .unwrap();
    let orphan = crate::store::layout::frame_digests(&orphan_hash);

    // After the grace: the NAR and digests of the collected path go, and the orphan; the
    // rooted path keeps its digests.
    let later = now + Duration::from_secs(3 * 24 * 3600);
    let report = collect(&cache, &StoreDir::default(), later, &options)
        .await
        .unwrap();
    assert_eq!(report.failures, Vec::<String>::new());
    let mut deleted = report.objects_deleted.clone();
    deleted.sort();
    let mut expected = vec![
        gone_nar,
        gone_frames,
        orphan,
        format!("{}.ls", gone.hash_part()),
    ];
    expected.sort();
    assert_eq!(deleted, expected, "{report:?}");
    assert_eq!(report.orphans_deleted, 1);
    assert_eq!(
        frames_keys(&cache).await,
        std::slice::from_ref(&kept_frames)
    );
    assert!(cache.has_narinfo(&kept).await.unwrap());
    assert!(cache
        .frame_digests(
            &crate::store::layout::frame_digests_hash(&kept_frames).unwrap(),
            1 << 20
        )
        .await
        .unwrap()
        .is_some());

    // With grace 0 (`--force`) a collected path's digests go in the same run.
    roots::remove(
        &cache,
        &StoreDir::default(),
        "host",
        "kept",
        SystemTime::now(),
    )
    .await
    .unwrap();
    let force = GcOptions {
        plan: PlanOptions {
            grace: Duration::ZERO,
            allow_empty_roots: true,
            ..PlanOptions::default()
        },
        concurrency: 4,
        ..GcOptions::default()
    };
    let report = collect(&cache, &StoreDir::default(), SystemTime::now(), &force)
        .await
        .unwrap();
    assert!(report.objects_deleted.contains(&kept_frames), "{report:?}");
    assert!(frames_keys(&cache).await.is_empty());
}

#[test]
fn an_index_entry_that_does_not_say_its_frame_digests_is_used_only_while_there_are_none() {
    let line = format!(
        "{}\t{}\t10\t-\t5\t-\t-\t",
        store_path(0),
        format_args!("nar/{}.nar", "1".repeat(52))
    );
    let body = format!("{}\n{line}\n", crate::store::index::INDEX_HEADER);
    // No `.frames` object in the cache: the entry is used.
    let mut s = Snapshot::new();
    assert!(s
        .add_index_object(body.as_bytes(), 10_000)
        .unwrap()
        .is_empty());
    let id = s.path_id(&hash(0)).unwrap();
    assert!(s.confirm_indexed(id, 9_000, 1));
    assert_eq!(s.summary(id).unwrap().frames, None);
    // Some `.frames` object: it may be this narinfo's, so the narinfo is read instead.
    let mut s = Snapshot::new();
    s.add_frames_object(&format!("nar/{}.frames", "1".repeat(52)), 5, 1, 1);
    assert!(s
        .add_index_object(body.as_bytes(), 10_000)
        .unwrap()
        .is_empty());
    let id = s.path_id(&hash(0)).unwrap();
    assert!(!s.confirm_indexed(id, 9_000, 1));
    // A ninth field says: used.
    let mut s = Snapshot::new();
    s.add_frames_object(&format!("nar/{}.frames", "1".repeat(52)), 5, 1, 1);
    let known = format!("{}\n{line}\t-\n", crate::store::index::INDEX_HEADER);
    assert!(s
        .add_index_object(known.as_bytes(), 10_000)
        .unwrap()
        .is_empty());
    let id = s.path_id(&hash(0)).unwrap();
    assert!(s.confirm_indexed(id, 9_000, 1));
}

// ---- Stores whose versions do not tell a rewrite within the second (S3, GCS) ----

/// An in-memory store that tags objects as S3 does — the MD5 of the content (here a sha256),
/// the same for the same bytes however often written — and answers times to the second, as
/// S3's HEADs and GETs do.
#[derive(Debug, Default)]
struct ContentTagged {
    inner: object_store::memory::InMemory,
    tags: std::sync::Mutex<HashMap<String, String>>,
}

impl std::fmt::Display for ContentTagged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentTagged")
    }
}

impl ContentTagged {
    fn tagged(&self, mut meta: object_store::ObjectMeta) -> object_store::ObjectMeta {
        meta.e_tag = self
            .tags
            .lock()
            .unwrap()
            .get(meta.location.as_ref())
            .cloned();
        meta
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for ContentTagged {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let bytes: Vec<u8> = payload.iter().flat_map(|b| b.to_vec()).collect();
        let tag = format!("\"{}\"", Hash::digest(HashAlgo::Sha256, &bytes).to_nix32());
        let mut result = self.inner.put_opts(location, payload, opts).await?;
        self.tags
            .lock()
            .unwrap()
            .insert(location.as_ref().to_owned(), tag.clone());
        result.e_tag = Some(tag);
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        mut options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        // The tags are ours, not the inner store's.
        options.if_match = None;
        options.if_none_match = None;
        let mut result = self.inner.get_opts(location, options).await?;
        result.meta = self.tagged(result.meta);
        let secs = roots::unix_secs(SystemTime::from(result.meta.last_modified));
        result.meta.last_modified = roots::from_unix_secs(secs).into();
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        let tags = self.tags.lock().unwrap().clone();
        self.inner
            .list(prefix)
            .map(move |m| {
                m.map(|mut m| {
                    m.e_tag = tags.get(m.location.as_ref()).cloned();
                    m
                })
            })
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects = listed.objects.into_iter().map(|m| self.tagged(m)).collect();
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Sleeps until the next second of the clock begins.
fn next_second() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 1_000_000,
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_narinfo_rewritten_with_the_same_bytes_within_its_second_is_kept_on_s3_like_stores() {
    for attempt in 0.. {
        let cache = BinaryCache::from_object_store(
            std::sync::Arc::new(ContentTagged::default()),
            "content-tagged://",
            false,
        );
        assert!(!cache.objects().rewrites_change_tags());
        cache.init(&Default::default()).await.unwrap();
        let world = World {
            paths: (0..2).map(store_path).collect(),
            references: vec![vec![], vec![]],
            content: vec![Bytes::from_static(b"old"), Bytes::from_static(b"new")],
        };
        let mut infos = Vec::new();
        for i in 0..2 {
            if i == 1 {
                // Path 1 is written in a second of its own, and the GC runs within it.
                next_second();
            }
            let nar = format!(
                "nar/{}.nar",
                Hash::digest(HashAlgo::Sha256, &world.content[i]).to_nix32()
            );
            cache
                .objects()
                .put(
                    &nar,
                    world.content[i].clone(),
                    crate::store::WriteMode::Overwrite,
                )
                .await
                .unwrap();
            let info = world.narinfo(i, &nar);
            cache.put_narinfo(&info).await.unwrap();
            infos.push(info);
        }
        let scanned = scan(&cache, &StoreDir::default(), 4).await.unwrap();
        let options = GcOptions {
            plan: PlanOptions {
                allow_empty_roots: true,
                ..PlanOptions::default()
            },
            concurrency: 4,
            ..GcOptions::default()
        };
        let now = SystemTime::now();
        let planned = plan(
            &scanned.snapshot,
            &RootIds::default(),
            roots::unix_secs(now),
            &options.plan,
        )
        .unwrap();
        assert_eq!(planned.narinfos.len(), 2);
        let mut report = GcReport::default();
        let mut applier = Applier::new(&scanned, &planned, now, &options, &mut report);
        // The tombstone and the relist; then a push that found path 1 condemned writes its
        // narinfo again, the same bytes.
        applier.step(&cache, &mut report).await;
        applier.step(&cache, &mut report).await;
        cache.put_narinfo(&infos[1]).await.unwrap();
        let written = cache.narinfo_meta(&hash(1)).await.unwrap().unwrap();
        let tombstone = report.tombstone.clone().expect("a tombstone was written");
        let tombstone_meta = cache.objects().head(&tombstone).await.unwrap().unwrap();
        if roots::unix_secs(written.last_modified) != roots::unix_secs(tombstone_meta.last_modified)
        {
            // The machine was too slow to stay within one second: try again.
            assert!(attempt < 5, "never within one second");
            continue;
        }
        while applier.step(&cache, &mut report).await {}
        assert_eq!(report.failures, Vec::<String>::new());
        // Path 0, listed seconds before the tombstone, goes; path 1 is kept: its rewrite
        // cannot be told from its listed version.
        assert_eq!(report.narinfos_deleted, [format!("{}.narinfo", hash(0))]);
        assert!(cache.has_narinfo(&store_path(1)).await.unwrap());
        assert!(!cache.has_narinfo(&store_path(0)).await.unwrap());
        break;
    }
}
