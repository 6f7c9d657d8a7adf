//! `cachecore roots …` and `cachecore gc`: parse, one core call, print.

use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use cachecore::gc::{self, roots, GcOptions, PlanOptions};
use cachecore::store_path::StoreDir;

use super::cache::{block_on, block_on_interruptible, open, parse_path};
use crate::cli::{GcArgs, IndexCommand, RootsCommand};
use crate::stdout::stdout;

/// `--host`, or this machine's host name.
fn host(arg: Option<String>) -> anyhow::Result<String> {
    if let Some(h) = arg {
        return Ok(h);
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .context("cannot tell this machine's host name; pass --host")?;
    let name = name.trim();
    anyhow::ensure!(
        !name.is_empty(),
        "this machine's host name is empty; pass --host"
    );
    Ok(name.to_owned())
}

pub fn roots(cmd: RootsCommand) -> anyhow::Result<()> {
    match cmd {
        RootsCommand::Add {
            store,
            name,
            paths,
            host: h,
            keep,
            store_dir,
        } => {
            let cache = open(&store)?;
            let store_dir = StoreDir::new(&store_dir);
            let host = host(h)?;
            let paths = paths
                .iter()
                .map(|p| parse_path(&store_dir, p).map(|(p, _)| p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let keep = keep.map(|k| usize::try_from(k).unwrap_or(usize::MAX));
            block_on(async {
                cache.expect_store_dir(&store_dir).await?;
                let mut missing = Vec::new();
                for p in &paths {
                    if !cache.has_narinfo(p).await? {
                        missing.push(format!("{}/{p}", store_dir.as_str()));
                    }
                }
                let body = roots::add(
                    &cache,
                    &store_dir,
                    &host,
                    &name,
                    paths,
                    keep,
                    SystemTime::now(),
                )
                .await?;
                for m in missing {
                    eprintln!("warning: {m} is not in {} (rooted anyway)", cache.url());
                }
                eprintln!(
                    "rooted {host}/{name}: {} store paths in {} revisions",
                    body.paths().count(),
                    body.revisions.len()
                );
                Ok(())
            })
        }
        RootsCommand::Remove {
            store,
            name,
            host: h,
        } => {
            let cache = open(&store)?;
            let host = host(h)?;
            block_on(async {
                let store_dir = cache.store_dir().await?;
                roots::remove(&cache, &store_dir, &host, &name, SystemTime::now()).await?;
                eprintln!(
                    "moved {host}/{name} to the trash (`cachecore roots restore` brings it back)"
                );
                Ok(())
            })
        }
        RootsCommand::Restore {
            store,
            name,
            host: h,
        } => {
            let cache = open(&store)?;
            let host = host(h)?;
            block_on(async {
                let store_dir = cache.store_dir().await?;
                roots::restore(&cache, &store_dir, &host, &name).await?;
                eprintln!("restored {host}/{name}");
                Ok(())
            })
        }
        RootsCommand::Sync {
            store,
            host: h,
            gcroots_dir,
            push,
            watch,
            store_dir,
        } => {
            let host = host(h)?;
            let cache = open(&store)?;
            let store_dir = StoreDir::new(&store_dir);
            block_on(async { Ok(cache.expect_store_dir(&store_dir).await?) })?;
            let sync = SyncArgs {
                cache: &cache,
                store_dir: &store_dir,
                host: &host,
                gcroots_dir: &gcroots_dir,
                push,
            };
            if !watch {
                return block_on(async { sync.once().await.map(drop) });
            }
            watch_roots(&cache, &sync)
        }
        RootsCommand::List { store, json } => {
            let cache = open(&store)?;
            let (live, trashed, store_dir) = block_on(async {
                let store_dir = cache.store_dir().await?;
                let live = roots::read_all(&cache, &store_dir, false).await?;
                let trashed = roots::read_all(&cache, &store_dir, true).await?;
                Ok((live, trashed, store_dir))
            })?;
            let full = |p: &cachecore::store_path::StorePath| format!("{}/{p}", store_dir.as_str());
            let mut out = io::BufWriter::new(stdout());
            if json {
                let all: Vec<serde_json::Value> = live
                    .iter()
                    .chain(&trashed)
                    .map(|r| {
                        serde_json::json!({
                            "host": r.host,
                            "name": r.name,
                            "keep": r.body.keep,
                            "trashed": r.body.trashed,
                            "revisions": r.body.revisions.iter().map(|v| serde_json::json!({
                                "added": v.added,
                                "paths": v.paths.iter().map(full).collect::<Vec<_>>(),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut out, &all)?;
                writeln!(out)?;
            } else {
                for r in live.iter().chain(&trashed) {
                    let trashed = if r.body.trashed.is_some() {
                        " (trashed)"
                    } else {
                        ""
                    };
                    let paths: Vec<String> = r.body.paths().map(full).collect();
                    writeln!(out, "{} {}{trashed} {}", r.host, r.name, paths.join(" "))?;
                }
            }
            out.flush()?;
            Ok(())
        }
    }
}

/// `roots sync --watch`: syncs, then again after every change of the directories the roots
/// were read from, until Ctrl-C.
#[cfg(target_os = "linux")]
fn watch_roots(cache: &cachecore::store::BinaryCache, sync: &SyncArgs<'_>) -> anyhow::Result<()> {
    let watcher =
        roots::RootsWatcher::new().context("cannot watch the GC roots directory (inotify)")?;
    block_on_interruptible(&[cache], async {
        let mut changes = watcher.changes();
        loop {
            // Watched before the roots are read, so that no change after the read is missed.
            watcher.watch(&sync.dirs()?);
            let watched = watcher.watch(&sync.once().await?);
            eprintln!("watching {watched} directories for GC roots changing (Ctrl-C stops)");
            match changes.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    return Err(anyhow::Error::new(e).context("cannot watch the GC roots"))
                }
                None => anyhow::bail!("the GC roots watcher stopped"),
            }
            // A burst of changes (a profile switch, a build's result) syncs once.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            while changes.try_recv().is_ok() {}
        }
    })
}

#[cfg(not(target_os = "linux"))]
fn watch_roots(_: &cachecore::store::BinaryCache, _: &SyncArgs<'_>) -> anyhow::Result<()> {
    anyhow::bail!("roots sync --watch needs inotify (Linux)")
}

/// One `roots sync`: this machine's GC roots (their closures pushed first with `push`) made
/// the host's roots in the cache.
struct SyncArgs<'a> {
    cache: &'a cachecore::store::BinaryCache,
    store_dir: &'a StoreDir,
    host: &'a str,
    gcroots_dir: &'a std::path::Path,
    push: bool,
}

impl SyncArgs<'_> {
    /// This machine's roots, and the directories they were read from (see
    /// [`roots::local_gcroots_and_dirs`]).
    fn read(&self) -> anyhow::Result<(roots::LocalRoots, Vec<std::path::PathBuf>)> {
        roots::local_gcroots_and_dirs(self.gcroots_dir, self.store_dir)
            .with_context(|| format!("cannot read the GC roots in {}", self.gcroots_dir.display()))
    }

    /// The directories the roots are read from.
    fn dirs(&self) -> anyhow::Result<Vec<std::path::PathBuf>> {
        Ok(self.read()?.1)
    }

    /// Syncs once; returns the directories the roots were read from.
    async fn once(&self) -> anyhow::Result<Vec<std::path::PathBuf>> {
        let (cache, host) = (self.cache, self.host);
        let (local, dirs) = self.read()?;
        if self.push {
            let nix = cachecore::local_store::LocalStore::open(self.store_dir.clone())
                .context("cannot open the local Nix store")?;
            let opts = cachecore::ops::PushOptions::for_cache(cache)?;
            let paths: Vec<_> = local.iter().map(|(_, p)| p.clone()).collect();
            let summary = cachecore::ops::push(
                cache,
                &nix,
                &paths,
                &opts,
                std::sync::Arc::new(cachecore::ops::NoProgress),
            )
            .await?;
            eprintln!(
                "{}: {} paths pushed, {} already there",
                cache.url(),
                summary.pushed,
                summary.skipped
            );
        }
        let report = roots::sync(cache, self.store_dir, host, &local, SystemTime::now()).await?;
        for name in &report.trashed {
            eprintln!("trashed {host}/{name} (no longer a GC root here)");
        }
        eprintln!(
            "{}: {} roots of {host} written, {} unchanged, {} trashed",
            cache.url(),
            report.added.len(),
            report.unchanged,
            report.trashed.len()
        );
        Ok(dirs)
    }
}

pub fn index(cmd: IndexCommand) -> anyhow::Result<()> {
    let (store, jobs, rebuild) = match cmd {
        IndexCommand::Rebuild { store, jobs } => (store, jobs, true),
        IndexCommand::Compact { store, jobs } => (store, jobs, false),
    };
    let cache = open(&store)?;
    let (paths, deleted) = block_on(async { Ok(cache.compact_index(jobs, rebuild).await?) })?;
    for p in &paths.problems {
        eprintln!("ignored: {p}");
    }
    for (key, why) in &paths.unparseable {
        eprintln!("not indexed, does not parse: {key}: {why}");
    }
    eprintln!(
        "{}: {} paths indexed ({} from the index, {} read from narinfos) in one object; {} index objects replaced",
        cache.url(),
        paths.entries.len(),
        paths.from_index,
        paths.from_narinfos,
        deleted
    );
    Ok(())
}

pub fn gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    let cache = open(&args.store)?;
    let options = GcOptions {
        plan: PlanOptions {
            older_than: args.older_than,
            unused_for: args.unused_for,
            grace: if args.force {
                std::time::Duration::ZERO
            } else {
                args.grace
            },
            failed_uploads_older_than: args.failed_uploads_older_than,
            only_trashed: args.only_trashed,
            allow_empty_roots: args.allow_empty_roots,
            max_size: args.max_size,
            delete_unparseable: args.delete_unparseable,
        },
        dry_run: args.dry_run || !args.why.is_empty(),
        concurrency: args.jobs,
    };
    let store_dir = StoreDir::new(&args.store_dir);
    let why = args
        .why
        .iter()
        .map(|p| parse_path(&store_dir, p).map(|(p, _)| p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let progress = crate::progress::ReadProgress::new();
    let (report, fates) = block_on(async {
        let now = SystemTime::now();
        let run =
            gc::PlannedRun::prepare(&cache, &store_dir, now, &options, progress.as_ref()).await?;
        let mut fates = Vec::new();
        if !why.is_empty() {
            let keepers = run.keepers();
            for p in &why {
                let fate = run.why(&keepers, &p.hash_part());
                let text = fate.describe(roots::unix_secs(now));
                fates.push(format!("{}: {text}", store_dir.full_path(p)));
            }
        }
        Ok((run.apply(&cache, now).await, fates))
    })?;
    progress.finish();
    if !fates.is_empty() {
        let mut out = io::BufWriter::new(stdout());
        for line in &fates {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    if args.json {
        let mut out = io::BufWriter::new(stdout());
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        out.flush()?;
    }
    let fate = if args.delete_unparseable {
        "deleted unless a live path refers to it"
    } else {
        "kept"
    };
    for u in &report.unparseable {
        eprintln!("does not parse, {fate}: {u}");
    }
    for p in &report.index_problems {
        eprintln!("push index: {p}");
    }
    for p in &report.access_problems {
        eprintln!("access record ignored: {p}");
    }
    for f in &report.failures {
        eprintln!("failed: {f}");
    }
    eprintln!("{}: {}", cache.url(), report.summary());
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::CACHE_BAD)
    })
}
