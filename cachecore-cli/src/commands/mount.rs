//! `cachecore mount`: checks the arguments, makes the filesystem (`cachecore_fuse::CacheFs`)
//! and serves it in the foreground; SIGINT/SIGTERM detach the mount and end the process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use cachecore::access::NarCache;
use cachecore::signing::PublicKey;
use cachecore_fuse::{CacheFs, Check, FsOptions};

use super::cache::open;
use crate::cli::{MountArgs, MountCheck};

/// How long after a signal the mount may take to let go (files still open in it) before the
/// process exits anyway (the mount is already detached: nothing stale is left).
const GRACE: Duration = Duration::from_secs(2);

pub fn run(args: MountArgs) -> anyhow::Result<ExitCode> {
    let trusted_keys = PublicKey::from_args(&args.trusted_keys)?;
    if trusted_keys.is_empty() && !args.no_check_sigs {
        bail!("pass --trusted-key KEY to check signatures, or --no-check-sigs to skip the check");
    }
    let check = match args.check {
        // A path without signed frame digests is read whole (see `Check::Frames`).
        Some(MountCheck::Frames) => Check::Frames,
        Some(MountCheck::Nar) => Check::Nar,
        None if args.no_check_sigs => Check::Ranges,
        None => Check::Frames,
    };
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => default_cache_dir()?,
    };
    let nar_cache = NarCache::open(&cache_dir, args.cache_size)
        .with_context(|| format!("cannot use {} as the NAR cache", cache_dir.display()))?;
    // fuser's own messages (a second unmount after `fusermount3 -u`, say) are not the user's.
    super::serve::init_logging("text", "info,fuser=error");
    let cache = open(&args.store)?;
    let source = cache.url().to_owned();
    let fs = CacheFs::new(
        cache,
        FsOptions {
            trusted_keys,
            check_signatures: !args.no_check_sigs,
            check,
            nar_cache: Some(nar_cache),
            memory: args.memory,
        },
    )?;
    // Handlers in place before the mount is: a signal never leaves it behind.
    let signals = Signals::install()?;
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    let served = cachecore_fuse::mount(fs, &args.mountpoint, &source, |handle| {
        tracing::info!(
            "mounted {source} on {}; stop with Ctrl-C or `fusermount3 -u {}`",
            args.mountpoint.display(),
            args.mountpoint.display()
        );
        std::thread::spawn(move || {
            let status = signals.wait();
            let _ = stopped_tx.send(status);
            if let Err(e) = handle.unmount() {
                tracing::warn!("cannot unmount: {e}");
            }
            // Files still open keep the filesystem alive after the detach: leave them be.
            std::thread::sleep(GRACE);
            std::process::exit(i32::from(status));
        });
    });
    served.with_context(|| format!("cannot mount on {}", args.mountpoint.display()))?;
    Ok(match stopped_rx.try_recv() {
        Ok(status) => ExitCode::from(status),
        Err(_) => ExitCode::SUCCESS,
    })
}

/// SIGINT and SIGTERM, caught.
struct Signals {
    rt: tokio::runtime::Runtime,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let entered = rt.enter();
        let interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        drop(entered);
        Ok(Signals {
            rt,
            interrupt,
            terminate,
        })
    }

    /// Waits for one; the exit status a shell gives for it (130, 143).
    fn wait(mut self) -> u8 {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.interrupt.recv() => 130,
                _ = self.terminate.recv() => 143,
            }
        })
    }
}

fn default_cache_dir() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .context("pass --cache-dir (neither XDG_CACHE_HOME nor HOME is set)")?,
        )
        .join(".cache"),
    };
    Ok(base.join("cachecore").join("nars"))
}
