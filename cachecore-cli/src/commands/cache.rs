//! The binary cache commands: init, push, copy, pull, verify, ls, cat, info.

use std::io::{self, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use cachecore::local_store::LocalStore;
use cachecore::ops::{self, Progress};
use cachecore::signing::{PublicKey, SecretKey, Signer};
use cachecore::store::{BinaryCache, GivenAs, StoreUrl};
use cachecore::store_path::{StoreDir, StorePath};
use cachecore::untrusted::Untrusted;

use crate::cli::{EncodingArgs, PushArgs};
use crate::progress::{count, human_size, TransferProgress};
use crate::stdout::{outln, stdout, stream};

/// Opens a STORE that must be there already (the commands that read, and `serve`): nothing is
/// created, and a directory that does not exist is one sentence naming it (exit 4) — with the
/// URL it likely meant when it reads like a mistyped one.
pub(super) fn open(url: &str) -> anyhow::Result<BinaryCache> {
    open_with_token(url, None)
}

/// [`open`], with the token of a `cachecore serve` read from `token_file`.
pub(super) fn open_with_token(url: &str, token_file: Option<&Path>) -> anyhow::Result<BinaryCache> {
    let env = env_with_token(url, token_file)?;
    Ok(BinaryCache::open_existing(url, &env)?)
}

/// Opens a STORE that a command writes to (`init`, `push`, `copy`'s destination), with the
/// `encodings` given as options over its URL's, creating a local directory that is not there,
/// but refusing an argument that reads like a mistyped URL
/// (`http//host:port`, `host:port`), which would otherwise become a directory of that name.
pub(super) fn open_or_create(
    url: &str,
    encodings: &EncodingArgs,
    log_compression: Option<cachecore::compression::Compression>,
    token_file: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<(BinaryCache, NewDir)> {
    let env = env_with_token(url, token_file)?;
    let mut parsed = StoreUrl::parse(url)?;
    encodings.apply(&mut parsed, log_compression)?;
    let missing_dir = match &parsed.location {
        cachecore::store::StoreLocation::Local { dir } if !dir.exists() => Some(dir.clone()),
        _ => None,
    };
    if missing_dir.is_some() {
        if let Some(meant) = StoreUrl::likely_meant(url) {
            bail!(
                "{url} looks like a mistyped URL, not a directory: did you mean {meant}? (nothing was created; write ./{url} for a directory of that name)"
            );
        }
    }
    let cache = BinaryCache::open_parsed(&parsed, &env)?;
    Ok((
        cache,
        NewDir {
            dir: missing_dir,
            quiet,
        },
    ))
}

/// The local directory [`open_or_create`] created for a STORE, if it did: said on stderr when
/// the command succeeds ([`NewDir::done`]), removed again if still empty when it fails.
pub(super) struct NewDir {
    dir: Option<std::path::PathBuf>,
    quiet: bool,
}

impl NewDir {
    /// The command succeeded: say that the cache is new.
    pub(super) fn done(mut self) {
        if let Some(dir) = self.dir.take() {
            if !self.quiet {
                eprintln!(
                    "created a new cache in {} (it did not exist)",
                    dir.display()
                );
            }
        }
    }
}

impl Drop for NewDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            // Fails, as it should, unless the directory is still empty.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The environment a store is opened with: the process's, and the token read from
/// `token_file` (for an `http(s)://` cache only).
fn env_with_token(url: &str, token_file: Option<&Path>) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = cachecore::store::process_env();
    let Some(file) = token_file else {
        return Ok(env);
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        bail!("--token-file is for an http(s):// cache (a `cachecore serve`), not {url}");
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read token file {}", file.display()))?,
    );
    // The same rules as the server's token file.
    cachecore::server::Token::parse(&text)
        .with_context(|| format!("token file {}", file.display()))?;
    env.push((
        cachecore::store::TOKEN_VAR.to_owned(),
        text.trim().to_owned(),
    ));
    Ok(env)
}

pub(super) fn block_on<T>(
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    ops::runtime()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// [`block_on`] for an operation that writes (push, copy, pull): on SIGINT or SIGTERM the
/// operation is dropped, which stops it and starts its cleanups (aborted uploads, staging
/// removed), and those are waited for — here, and by the runtime's drop for the threads
/// still packing or unpacking — before [`Interrupted`] is returned.
pub(super) fn block_on_interruptible<T>(
    caches: &[&BinaryCache],
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = ops::runtime().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let signal = tokio::select! {
            result = future => return result,
            _ = interrupt.recv() => Interrupted::SIGINT,
            _ = terminate.recv() => Interrupted::SIGTERM,
        };
        for cache in caches {
            cache.finish_cleanups().await;
        }
        Err(signal.into())
    });
    drop(runtime);
    result
}

/// An operation was stopped by a signal and cleaned up after itself; `main` prints one line
/// and exits with 128 + the signal's number, as shells do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    pub exit_status: u8,
}

impl Interrupted {
    const SIGINT: Interrupted = Interrupted { exit_status: 130 };
    const SIGTERM: Interrupted = Interrupted { exit_status: 143 };
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted — run the same command again to finish")
    }
}

impl std::error::Error for Interrupted {}

/// A store path as every command takes it (what `push` takes): a store path, a symlink to one
/// such as `./result`, a path inside one, or a base name; returns the path and the sub-path.
pub(super) fn parse_path(store_dir: &StoreDir, arg: &str) -> anyhow::Result<(StorePath, String)> {
    Ok(cachecore::local_store::resolve_path_arg(
        store_dir,
        Path::new(arg),
    )?)
}

pub fn init(
    url: &str,
    priority: Option<u64>,
    no_mass_query: bool,
    update: bool,
    token_file: Option<&Path>,
) -> anyhow::Result<()> {
    let (cache, new_dir) = open_or_create(url, &EncodingArgs::default(), None, token_file, false)?;
    let mut wanted = cache
        .settings()
        .cache_info(cachecore::store_path::DEFAULT_STORE_DIR);
    if priority.is_some() {
        wanted.priority = priority;
    }
    if no_mass_query {
        wanted.want_mass_query = Some(false);
    }
    let now = block_on(async { Ok(cache.init_or_update(&wanted, update).await?) })?;
    print_cache_info(&mut stdout(), &now)?;
    if now.priority != wanted.priority || now.want_mass_query != wanted.want_mass_query {
        eprintln!(
            "{} already has a nix-cache-info with other settings (shown above), left as it is; \
             run `cachecore init` again with --update to replace them",
            cache.url()
        );
    }
    new_dir.done();
    Ok(())
}

/// `push ./result s3://…`: the arguments are the wrong way round.
fn check_store_comes_first(store: &str, paths: &[std::path::PathBuf]) -> anyhow::Result<()> {
    if let Some(url) = paths.iter().find(|p| p.to_string_lossy().contains("://")) {
        bail!(
            "{} is a store URL given as a path to push: STORE comes first (`cachecore push STORE PATH...`)",
            url.display()
        );
    }
    let as_path = Path::new(store);
    if !store.contains("://")
        && as_path.symlink_metadata().is_ok()
        && cachecore::local_store::resolve_path_arg(&StoreDir::default(), as_path).is_ok()
    {
        bail!(
            "{store} is a Nix store path, not a binary cache: STORE comes first (`cachecore push STORE PATH...`)"
        );
    }
    Ok(())
}

impl crate::cli::EncodingArgs {
    /// The encodings given as options (these, and push's `--log-compression`) set on `store`,
    /// over its URL's settings of the same names.
    fn apply(
        &self,
        store: &mut StoreUrl,
        log_compression: Option<cachecore::compression::Compression>,
    ) -> anyhow::Result<()> {
        for (name, method) in [
            ("narinfo-compression", self.narinfo_compression),
            ("ls-compression", self.ls_compression),
            ("log-compression", log_compression),
        ] {
            if let Some(method) = method {
                store.set_setting(name, method.name(), GivenAs::CommandLine)?;
            }
        }
        Ok(())
    }
}

pub fn push(args: PushArgs) -> anyhow::Result<()> {
    check_store_comes_first(&args.store, &args.paths)?;
    // Keys first: a refused key leaves no trace (opening a directory store creates it).
    let signers = args
        .keys
        .iter()
        .map(|k| Ok(Arc::new(SecretKey::read_file(k)?) as Arc<dyn Signer>))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (cache, new_dir) = open_or_create(
        &args.store,
        &args.encodings,
        args.log_compression,
        args.token_file.as_deref(),
        args.output.quiet,
    )?;
    // The store URL's settings, then the options given here on top.
    let mut opts = ops::PushOptions::for_cache(&cache)?;
    if !signers.is_empty() {
        opts.signers = signers;
    }
    if let Some(method) = args.compression {
        opts.compression.method = method;
    }
    if args.level.is_some() {
        opts.compression.level = args.level;
    }
    if args.no_listing {
        opts.write_listing = false;
    }
    opts.jobs = args.jobs;
    opts.closure = !args.no_closure;
    opts.logs = args.logs;
    opts.repair = args.repair;
    let quiet = args.output.quiet;
    let progress = TransferProgress::new("pushed", quiet);
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
        let (path, summary) = block_on_interruptible(&[&cache], async {
            Ok(ops::push_add(&cache, &store_dir, dir, &name, &opts, p).await?)
        })?;
        progress.finish(&push_summary(&summary, cache.url()));
        warn_unsigned(&summary, &cache, quiet);
        new_dir.done();
        outln!("{}", store_dir.full_path(&path))?;
        return Ok(());
    }
    let local = LocalStore::open(store_dir).context("cannot open the local Nix store")?;
    let roots = args
        .paths
        .iter()
        .map(|p| match local.resolve(p) {
            Ok(path) => Ok(path),
            Err(e @ cachecore::local_store::LocalStoreError::NotInStore { .. }) if p.is_dir() => {
                bail!(
                    "{e}; to push a plain directory as the store path `nix-store --add` would give it, use `cachecore push STORE --add {}`",
                    p.display()
                )
            }
            Err(e) => Err(e.into()),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let p: Arc<dyn Progress> = progress.clone();
    let summary = block_on_interruptible(&[&cache], async {
        Ok(ops::push(&cache, &local, &roots, &opts, p).await?)
    })?;
    progress.finish(&push_summary(&summary, cache.url()));
    warn_unsigned(&summary, &cache, quiet);
    warn_present_unsigned(&summary, &args, cache.url());
    new_dir.done();
    Ok(())
}

/// One line when paths found in the cache lack the signature of the push's `--key`: how many,
/// and the `sign` command that adds it.
fn warn_present_unsigned(summary: &ops::PushSummary, args: &PushArgs, url: &str) {
    let n = summary.present_unsigned;
    if n == 0 || args.output.quiet {
        return;
    }
    let (paths, are) = if n == 1 {
        ("path", "is")
    } else {
        ("paths", "are")
    };
    let key = args
        .keys
        .first()
        .map_or("SECRET_FILE".into(), |k| k.display().to_string());
    let named: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
    let token = args
        .token_file
        .as_ref()
        .map(|t| format!(" --token-file {}", t.display()))
        .unwrap_or_default();
    eprintln!(
        "warning: {n} {paths} already in {url} {are} not signed by this push's key (pushed unsigned, or with another key), and a push never rewrites them; add the signature with `cachecore sign {url} {} --key {key}{token}`",
        named.join(" ")
    );
}

/// The last line of a push, of store paths or of a directory with --add alike.
fn push_summary(summary: &ops::PushSummary, url: &str) -> String {
    format!(
        "{} pushed ({} of NAR, {} compressed), {} already in {url}",
        count(summary.pushed, "path"),
        human_size(summary.nar_bytes),
        human_size(summary.file_bytes),
        summary.skipped,
    )
}

/// One line when a push wrote narinfos without any signature, with the fix. Through a
/// `cachecore serve`, what its `nix-cache-info` says: which key the server signs them with,
/// or that it does not sign.
fn warn_unsigned(summary: &ops::PushSummary, cache: &BinaryCache, quiet: bool) {
    if summary.unsigned == 0 || quiet {
        return;
    }
    let n = summary.unsigned;
    let paths = if n == 1 { "path was" } else { "paths were" };
    if cache.url().starts_with("http://") || cache.url().starts_with("https://") {
        let info = block_on(async { Ok(cache.cache_info().await?) })
            .ok()
            .flatten();
        let signer = info.as_ref().and_then(|i| {
            i.extra
                .iter()
                .find(|(k, _)| k == cachecore::cache_info::SIGNING_KEY_FIELD)
                .map(|(_, v)| v.clone())
        });
        match signer {
            Some(key) => eprintln!(
                "{n} {paths} sent unsigned; the server signed them with its key {}",
                Untrusted(&key)
            ),
            None => eprintln!(
                "warning: {n} {paths} pushed unsigned, and the server does not sign (it runs \
                 without --key): Nix refuses them; sign here with --key SECRET_FILE, or run \
                 `cachecore serve --key SECRET_FILE`"
            ),
        }
        return;
    }
    eprintln!(
        "warning: {n} {paths} pushed unsigned, and Nix refuses unsigned paths by default; \
         sign with --key SECRET_FILE or secret-key=SECRET_FILE in the store URL \
         (make a key with `cachecore key generate NAME --out SECRET_FILE`)"
    );
}

/// `sign`: adds the signature of the key in `key_file` to the narinfos of `paths` (with their
/// closures) or of every path.
pub fn sign(
    url: &str,
    paths: &[String],
    all: bool,
    key_file: &Path,
    jobs: usize,
    token_file: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<()> {
    let key = SecretKey::read_file(key_file)?;
    let name = key.name().to_owned();
    let signer: Arc<dyn Signer> = Arc::new(key);
    let cache = open_with_token(url, token_file)?;
    let store_dir = StoreDir::default();
    let paths = paths
        .iter()
        .map(|p| parse_path(&store_dir, p).map(|(p, _)| p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let which = if all {
        ops::SignPaths::All
    } else {
        ops::SignPaths::Closures(&paths)
    };
    let progress = TransferProgress::paths_only("signed", "to sign", quiet);
    let p: Arc<dyn Progress> = progress.clone();
    let summary = block_on_interruptible(&[&cache], async {
        Ok(ops::sign(&cache, which, &signer, jobs, p).await?)
    })?;
    let frames = match summary.frames_signed {
        0 => String::new(),
        n => format!(" ({n} with their frame digests)"),
    };
    progress.finish(&format!(
        "{} signed with {name}{frames}, {} already signed by it, in {}",
        count(summary.signed, "path"),
        summary.already,
        cache.url()
    ));
    for refused in &summary.frames_refused {
        // Unchecked frame digests are not vouched for: readers checking frames read these
        // paths' NARs whole. `cachecore verify` reports the same.
        eprintln!("warning: {}", Untrusted(refused));
    }
    Ok(())
}

/// How `copy` copies, as given on the command line.
pub struct CopySettings<'a> {
    pub recompress: Option<(cachecore::compression::Compression, Option<i32>)>,
    /// How TO stores narinfos and listings, over its URL's settings (copy writes no logs).
    pub encodings: &'a EncodingArgs,
    pub jobs: usize,
    pub trusted_keys: &'a [String],
    pub quiet: bool,
    /// The token files of FROM and TO (`cachecore serve`s).
    pub from_token: Option<&'a Path>,
    pub to_token: Option<&'a Path>,
}

pub fn copy(
    from: &str,
    to: &str,
    paths: &[String],
    all: bool,
    settings: CopySettings<'_>,
) -> anyhow::Result<()> {
    let CopySettings {
        recompress,
        encodings,
        jobs,
        trusted_keys: keys,
        quiet,
        from_token,
        to_token,
    } = settings;
    if paths.is_empty() && !all {
        bail!("name the store paths to copy, or pass --all");
    }
    let from = open_with_token(from, from_token)?;
    let (to, new_dir) = open_or_create(to, encodings, None, to_token, quiet)?;
    let store_dir = StoreDir::default();
    let paths = paths
        .iter()
        .map(|p| parse_path(&store_dir, p).map(|(p, _)| p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let trusted_keys = PublicKey::from_args(keys)?;
    let opts = ops::CopyOptions {
        jobs,
        recompress: recompress
            .map(|(method, level)| cachecore::compression::NarCompression::new(method, level)),
        trusted_keys,
        ..ops::CopyOptions::default()
    };
    let progress = TransferProgress::new("copied", quiet);
    let p: Arc<dyn Progress> = progress.clone();
    let summary = block_on_interruptible(&[&to], async {
        Ok(ops::copy(&from, &to, &paths, &opts, p).await?)
    })?;
    progress.finish(&format!(
        "{} copied, {} already in {}",
        count(summary.copied, "path"),
        summary.skipped,
        to.url()
    ));
    new_dir.done();
    Ok(())
}

pub fn pull(
    cache: &BinaryCache,
    path: &str,
    dest: &Path,
    keys: &[String],
    no_check_sigs: bool,
) -> anyhow::Result<()> {
    let (path, _) = parse_path(&StoreDir::default(), path)?;
    let trusted_keys = PublicKey::from_args(keys)?;
    if trusted_keys.is_empty() && !no_check_sigs {
        bail!("pass --trusted-key KEY to check signatures, or --no-check-sigs to skip the check");
    }
    let opts = ops::PullOptions {
        trusted_keys,
        check_signatures: !no_check_sigs,
    };
    let progress = TransferProgress::terminal_only("pulled");
    let p: Arc<dyn Progress> = progress.clone();
    block_on_interruptible(&[cache], async {
        Ok(ops::pull(cache, &path, dest, &opts, p).await?)
    })?;
    progress.finish("");
    Ok(())
}

/// `verify` of `cache`, opened from `url`.
pub fn verify(
    cache: &BinaryCache,
    url: &str,
    paths: &[String],
    keys: &[String],
    jobs: usize,
) -> anyhow::Result<ExitCode> {
    let store_dir = StoreDir::default();
    let paths = paths
        .iter()
        .map(|p| parse_path(&store_dir, p).map(|(p, _)| p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let trusted_keys = PublicKey::from_args(keys)?;
    let signatures_unchecked = trusted_keys.is_empty();
    let opts = ops::VerifyOptions { trusted_keys, jobs };
    let report = block_on(async { Ok(ops::verify(cache, &paths, &opts).await?) })?;
    let mut out = io::BufWriter::new(stdout());
    for problem in &report.problems {
        writeln!(out, "{}", Untrusted(&problem.to_string()))?;
    }
    out.flush()?;
    if !report.debris.is_empty() {
        let bytes: u64 = report
            .debris
            .iter()
            .fold(0, |sum, d| sum.saturating_add(d.size));
        eprintln!(
            "{} leftover objects of killed uploads ({bytes} bytes), named by no narinfo; a push removes those over a day old:",
            report.debris.len()
        );
        for d in &report.debris {
            eprintln!("  {} ({} bytes)", Untrusted(&d.key), d.size);
        }
    }
    if signatures_unchecked {
        let has = if report.unsigned == 1 { "has" } else { "have" };
        eprintln!(
            "signatures were not checked (pass --trusted-key KEY to check them); {} of the {} {has} no signature",
            report.unsigned,
            count(report.checked, "path")
        );
    }
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
        "Nix substitutes from it with these lines in /etc/nix/nix.conf (extra-: beside the caches already set, such as cache.nixos.org):\n  extra-substituters = {substituter}\n  extra-trusted-public-keys = {}\n",
        keys.join(" ")
    )
}

pub fn ls(cache: &BinaryCache, path: Option<&str>) -> anyhow::Result<()> {
    let mut out = io::BufWriter::new(stdout());
    match path {
        None => {
            // Printed a page at a time, as the cache is read.
            use futures::TryStreamExt as _;
            block_on(async {
                let mut pages = ops::path_pages(cache);
                while let Some(page) = pages.try_next().await? {
                    for p in page {
                        writeln!(out, "{p}")?;
                    }
                }
                Ok(())
            })?;
        }
        Some(arg) => {
            let (path, sub) = parse_path(&StoreDir::default(), arg)?;
            let listing = block_on(async { Ok(ops::listing(cache, &path).await?) })?;
            let node = listing
                .get(&sub)
                .with_context(|| format!("{arg} does not exist in {}", cache.url()))?;
            crate::commands::nar::print_tree(&mut out, &sub, node)?;
        }
    }
    out.flush()?;
    Ok(())
}

pub fn cat(cache: BinaryCache, arg: &str, keys: &[String], verify: bool) -> anyhow::Result<()> {
    let (path, sub) = parse_path(&StoreDir::default(), arg)?;
    if sub.is_empty() {
        bail!("{arg} names a whole store path; name a file inside it, e.g. {arg}/bin/…");
    }
    let trusted_keys = PublicKey::from_args(keys)?;
    let sub = sub.to_owned();
    if !verify && trusted_keys.is_empty() {
        let out = stream().buffered();
        return block_on(async move { Ok(ops::cat_file(&cache, &path, &sub, out).await?) });
    }
    block_on(async move {
        let info = ops::browse::narinfo(&cache, &path).await?;
        if !trusted_keys.is_empty() {
            ops::check_trusted(&info, &trusted_keys)?;
        }
        if verify || trusted_keys.is_empty() {
            return Ok(ops::cat_checked(&cache, &info, &sub, stream().buffered()).await?);
        }
        Ok(ops::cat_signed(&cache, &info, &sub, &trusted_keys, stream().buffered()).await?)
    })
}

/// A cache's `nix-cache-info` as it reads, each line escaped (its `StoreDir` and unknown
/// fields are the cache's text).
fn print_cache_info(
    out: &mut impl io::Write,
    info: &cachecore::cache_info::CacheInfo,
) -> io::Result<()> {
    for line in info.to_string().lines() {
        writeln!(out, "{}", Untrusted(line))?;
    }
    Ok(())
}

pub fn info(cache: &BinaryCache) -> anyhow::Result<()> {
    let (info, totals) = block_on(async { Ok(ops::info(cache).await?) })?;
    let mut out = io::BufWriter::new(stdout());
    match info {
        Some(i) => print_cache_info(&mut out, &i)?,
        None => writeln!(out, "(no nix-cache-info: not initialised)")?,
    }
    writeln!(out, "Paths: {}", totals.paths)?;
    writeln!(out, "NarBytes: {}", totals.nar_bytes)?;
    writeln!(out, "FileBytes: {}", totals.file_bytes)?;
    if totals.debris_objects > 0 {
        writeln!(
            out,
            "Debris: {} leftover objects of killed uploads, {} bytes (a push removes those over a day old)",
            totals.debris_objects, totals.debris_bytes
        )?;
    }
    out.flush()?;
    Ok(())
}
