//! The binary cache commands: init, push, copy, pull, verify, ls, cat, info.

use std::io::{self, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use cachecore::cache_info::CacheInfo;
use cachecore::local_store::LocalStore;
use cachecore::ops::{self, Progress};
use cachecore::signing::{PublicKey, SecretKey, Signer};
use cachecore::store::{BinaryCache, StoreUrl};
use cachecore::store_path::{StoreDir, StorePath};

use crate::cli::PushArgs;
use crate::progress::{count, TransferProgress};
use crate::stdout::{outln, stdout};

fn open(url: &str) -> anyhow::Result<BinaryCache> {
    Ok(BinaryCache::open(url)?)
}

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    ops::runtime()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// A store path named in full (`/nix/store/<hash>-<name>[/sub]`) or by base name; returns the
/// path and the sub-path.
fn parse_path<'a>(store_dir: &StoreDir, arg: &'a str) -> anyhow::Result<(StorePath, &'a str)> {
    if arg.starts_with('/') {
        let (path, sub) = store_dir.parse_path_with_subpath(arg)?;
        return Ok((path.to_owned(), sub));
    }
    let (base, sub) = arg.split_once('/').unwrap_or((arg, ""));
    Ok((StorePath::from_base_name(base)?, sub))
}

pub fn init(url: &str, priority: u64, no_mass_query: bool) -> anyhow::Result<()> {
    let cache = open(url)?;
    let wanted = CacheInfo {
        priority: Some(priority),
        want_mass_query: Some(!no_mass_query),
        ..CacheInfo::default()
    };
    let now = block_on(async { Ok(cache.init(&wanted).await?) })?;
    write!(stdout(), "{now}")?;
    Ok(())
}

pub fn push(args: PushArgs) -> anyhow::Result<()> {
    // Keys first: a refused key leaves no trace (opening a directory store creates it).
    let signers = args
        .keys
        .iter()
        .map(|k| Ok(Arc::new(SecretKey::read_file(k)?) as Arc<dyn Signer>))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache = open(&args.store)?;
    let opts = ops::PushOptions {
        jobs: args.jobs,
        compression: args.compression,
        level: args.level,
        closure: !args.no_closure,
        signers,
        write_listing: !args.no_listing,
        logs: args.logs,
        ..ops::PushOptions::default()
    };
    let progress = TransferProgress::new("pushed", args.output.quiet);
    let store_dir = StoreDir::default();
    if let Some(dir) = &args.add {
        let name = match &args.name {
            Some(n) => n.clone(),
            None => std::path::absolute(dir)?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .with_context(|| format!("{} has no name to use; pass --name", dir.display()))?,
        };
        let p: Arc<dyn Progress> = progress.clone();
        let (path, summary) =
            block_on(async { Ok(ops::push_add(&cache, &store_dir, dir, &name, &opts, p).await?) })?;
        progress.finish(&push_summary(&summary, cache.url()));
        outln!("{}", store_dir.full_path(&path))?;
        return Ok(());
    }
    let local = LocalStore::open(store_dir).context("cannot open the local Nix store")?;
    let roots = args
        .paths
        .iter()
        .map(|p| local.resolve(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let p: Arc<dyn Progress> = progress.clone();
    let summary = block_on(async { Ok(ops::push(&cache, &local, &roots, &opts, p).await?) })?;
    progress.finish(&push_summary(&summary, cache.url()));
    Ok(())
}

/// The last line of `push` and `push --add`.
fn push_summary(summary: &ops::PushSummary, url: &str) -> String {
    format!(
        "{} pushed ({} NAR bytes, {} compressed), {} already in {url}",
        count(summary.pushed, "path"),
        summary.nar_bytes,
        summary.file_bytes,
        summary.skipped,
    )
}

pub fn copy(
    from: &str,
    to: &str,
    paths: &[String],
    all: bool,
    recompress: Option<(cachecore::compression::Compression, Option<i32>)>,
    jobs: usize,
    quiet: bool,
) -> anyhow::Result<()> {
    if paths.is_empty() && !all {
        bail!("name the store paths to copy, or pass --all");
    }
    let (from, to) = (open(from)?, open(to)?);
    let store_dir = StoreDir::default();
    let paths = paths
        .iter()
        .map(|p| parse_path(&store_dir, p).map(|(p, _)| p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = ops::CopyOptions { jobs, recompress };
    let progress = TransferProgress::new("copied", quiet);
    let p: Arc<dyn Progress> = progress.clone();
    let summary = block_on(async { Ok(ops::copy(&from, &to, &paths, &opts, p).await?) })?;
    progress.finish(&format!(
        "{} copied, {} already in {}",
        count(summary.copied, "path"),
        summary.skipped,
        to.url()
    ));
    Ok(())
}

pub fn pull(
    url: &str,
    path: &str,
    dest: &Path,
    keys: &[String],
    no_check_sigs: bool,
) -> anyhow::Result<()> {
    let cache = open(url)?;
    let (path, _) = parse_path(&StoreDir::default(), path)?;
    let trusted_keys = PublicKey::from_args(keys)?;
    if trusted_keys.is_empty() && !no_check_sigs {
        bail!("pass --trusted-key KEY to check signatures, or --no-check-sigs to skip the check");
    }
    let opts = ops::PullOptions {
        trusted_keys,
        check_signatures: !no_check_sigs,
    };
    block_on(async { Ok(ops::pull(&cache, &path, dest, &opts).await?) })
}

pub fn verify(
    url: &str,
    paths: &[String],
    keys: &[String],
    jobs: usize,
) -> anyhow::Result<ExitCode> {
    let cache = open(url)?;
    let store_dir = StoreDir::default();
    let paths = paths
        .iter()
        .map(|p| parse_path(&store_dir, p).map(|(p, _)| p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let trusted_keys = PublicKey::from_args(keys)?;
    let opts = ops::VerifyOptions { trusted_keys, jobs };
    let report = block_on(async { Ok(ops::verify(&cache, &paths, &opts).await?) })?;
    let mut out = io::BufWriter::new(stdout());
    for problem in &report.problems {
        writeln!(out, "{problem}")?;
    }
    out.flush()?;
    let checked = count(report.checked, "path");
    if !report.is_ok() {
        let problems = count(report.problems.len(), "problem");
        eprintln!("{checked} checked in {}: {problems}", cache.url());
        return Ok(ExitCode::from(crate::exit::CACHE_BAD));
    }
    eprintln!("{checked} verified in {}: no problems", cache.url());
    if !opts.trusted_keys.is_empty() {
        eprint!("{}", nix_conf_hint(url, &opts.trusted_keys));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `nix.conf` lines that make Nix substitute from a cache verified with `keys`.
fn nix_conf_hint(url: &str, keys: &[PublicKey]) -> String {
    let substituter = StoreUrl::parse(url)
        .ok()
        .and_then(|u| u.nix_substituter())
        .unwrap_or_else(|| "<the HTTP address that serves it>".to_owned());
    let keys = keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    format!(
        "Nix substitutes from it with these lines in /etc/nix/nix.conf:\n  substituters = {substituter}\n  trusted-public-keys = {}\n",
        keys.join(" ")
    )
}

pub fn ls(url: &str, path: Option<&str>) -> anyhow::Result<()> {
    let cache = open(url)?;
    let mut out = io::BufWriter::new(stdout());
    match path {
        None => {
            for p in block_on(async { Ok(ops::list_paths(&cache).await?) })? {
                writeln!(out, "{p}")?;
            }
        }
        Some(arg) => {
            let (path, sub) = parse_path(&StoreDir::default(), arg)?;
            let listing = block_on(async { Ok(ops::listing(&cache, &path).await?) })?;
            let node = listing
                .get(sub)
                .with_context(|| format!("{arg} does not exist in {}", cache.url()))?;
            crate::commands::nar::print_tree(&mut out, sub, node)?;
        }
    }
    out.flush()?;
    Ok(())
}

pub fn cat(url: &str, arg: &str) -> anyhow::Result<()> {
    let cache = open(url)?;
    let (path, sub) = parse_path(&StoreDir::default(), arg)?;
    if sub.is_empty() {
        bail!("{arg} names a whole store path; name a file inside it, e.g. {arg}/bin/…");
    }
    let sub = sub.to_owned();
    block_on(async move { Ok(ops::cat(&cache, &path, &sub, stdout()).await?) })
}

pub fn info(url: &str) -> anyhow::Result<()> {
    let cache = open(url)?;
    let (info, totals) = block_on(async { Ok(ops::info(&cache).await?) })?;
    let mut out = io::BufWriter::new(stdout());
    match info {
        Some(i) => write!(out, "{i}")?,
        None => writeln!(out, "(no nix-cache-info: not initialised)")?,
    }
    writeln!(out, "Paths: {}", totals.paths)?;
    writeln!(out, "NarBytes: {}", totals.nar_bytes)?;
    writeln!(out, "FileBytes: {}", totals.file_bytes)?;
    out.flush()?;
    Ok(())
}
