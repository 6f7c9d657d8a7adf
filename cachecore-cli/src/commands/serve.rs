//! `cachecore serve`: parse the flags, bind, and run the library's server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cachecore::gc::access::AccessRecorder;
use cachecore::server::{self, Config, Token};

use crate::cli::ServeArgs;
use crate::stdout::outln;

fn read_token(path: &Path) -> anyhow::Result<Token> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?,
    );
    Token::parse(&text).with_context(|| format!("token file {}", path.display()))
}

fn optional_token(path: Option<&PathBuf>) -> anyhow::Result<Option<Token>> {
    path.map(|p| read_token(p)).transpose()
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format, "info");
    let cache = super::cache::open(&args.store)?;
    let mut config = Config::default();
    config.write_token = optional_token(args.token_file.as_ref())?;
    config.read_token = optional_token(args.read_token_file.as_ref())?;
    config.public_keys = cachecore::signing::PublicKey::from_args(&args.public_keys)?;
    if let Some(file) = &args.token_secret {
        config.token_secret = Some(std::sync::Arc::new(super::token::read_secret(file)?));
    }
    if let Some(file) = &args.revoked_tokens {
        config.revoked_tokens = Some(std::sync::Arc::new(
            server::Revocations::open(file).with_context(|| {
                format!(
                    "cannot read the revoked tokens file {} (an empty file revokes nothing)",
                    file.display()
                )
            })?,
        ));
    }
    if args.private_reads
        && args.token_file.is_none()
        && args.token_secret.is_none()
        && args.read_token_file.is_none()
    {
        anyhow::bail!(
            "--private-reads without a token no one could read: give --token-secret FILE (scoped tokens), --token-file FILE or --read-token-file FILE too"
        );
    }
    config.private_reads = args.private_reads;
    let takes_uploads = args.token_file.is_some() || args.token_secret.is_some();
    match (&args.key, takes_uploads) {
        (Some(_), false) => anyhow::bail!(
            "--key signs uploads, and without --token-file this server takes none (nor with no --token-secret): give --token-file FILE or --token-secret FILE too, or leave out --key (sign with `cachecore push --key` instead)"
        ),
        (None, true) => eprintln!(
            "warning: uploads are stored unsigned unless the clients sign them (Nix refuses unsigned paths); give --key SECRET_FILE to sign every upload here"
        ),
        _ => {}
    }
    if let Some(file) = &args.key {
        let secret = cachecore::signing::SecretKey::read_file(file)?;
        let public = secret.public_key();
        if !config.public_keys.contains(&public) {
            config.public_keys.insert(0, public);
        }
        config.signing_key = Some(std::sync::Arc::new(secret));
    }
    config.priority = args.priority;
    config.title = args.title.clone();
    config.max_nar_upload = args.max_upload_size;
    config.max_concurrent_uploads = args.upload_jobs;
    config.upload_idle_timeout = Duration::from_secs(args.upload_timeout);
    config.direct_uploads = !args.no_direct_uploads;
    config.remote_read_ttl = Duration::from_secs(args.remote_read_ttl);
    config.redirect_nars = args.redirect_nars;
    if args.record_access && (cache.is_read_only() || !cache.can_list()) {
        anyhow::bail!(
            "--record-access writes access records into the store, and {} cannot be written or listed",
            cache.url()
        );
    }
    let recorder = args
        .record_access
        .then(|| std::sync::Arc::new(AccessRecorder::new(cache.clone())));
    config.access_recorder.clone_from(&recorder);
    // Held until the server stops: a temporary NAR cache goes with it.
    let temporary_nars;
    let nar_dir = match &args.nar_cache_dir {
        Some(dir) => dir.clone(),
        None => {
            temporary_nars = tempfile::Builder::new()
                .prefix("cachecore-serve-nars-")
                .tempdir()
                .context("cannot create a temporary directory for --nar-cache-dir")?;
            temporary_nars.path().to_owned()
        }
    };
    config.nar_cache = Some(
        cachecore::access::NarCache::open(&nar_dir, args.nar_cache_size)
            .with_context(|| format!("cannot use {} as --nar-cache-dir", nar_dir.display()))?,
    );
    for (i, url) in args.upstreams.iter().enumerate() {
        // Its own keys (after it on the command line) and those given before every upstream.
        let keys: Vec<&String> = args
            .upstream_keys
            .iter()
            .zip(
                args.upstream_key_owners
                    .iter()
                    .chain(std::iter::repeat(&None)),
            )
            .filter(|(_, owner)| owner.is_none_or(|o| o == i))
            .map(|(k, _)| k)
            .collect();
        if keys.is_empty() {
            anyhow::bail!(
                "--upstream {url} has no trusted key: give the public key its paths must be signed by with --upstream-key after it"
            );
        }
        let keys = cachecore::signing::PublicKey::from_args(&keys)?;
        let mut up = server::Upstream::new(super::cache::open(url)?, keys);
        up.lookup_timeout = Duration::from_secs(args.upstream_timeout);
        config.upstreams.push(up);
    }
    let mut connections = server::Connections::default();
    connections.idle_timeout = Duration::from_secs(args.idle_timeout);
    if let Some(n) = args.max_connections {
        connections.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let listen = if args.listen.is_empty() {
        vec!["127.0.0.1:8080".to_owned()]
    } else {
        args.listen
    };
    cachecore::ops::runtime()
        .context("cannot start the async runtime")?
        .block_on(async move {
            let app = server::router(cache, config).await?;
            let mut tasks = Vec::new();
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            for addr in resolve_listen(&listen).await? {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let bound = listener.local_addr()?;
                outln!("cachecore serve: listening on http://{bound}")?;
                let mut stop = stop_rx.clone();
                tasks.push(tokio::spawn(server::serve_with(
                    listener,
                    app.clone(),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                    connections.clone(),
                )));
            }
            let flusher = recorder.map(|r| {
                let mut stop = stop_rx.clone();
                r.spawn_flusher(cachecore::gc::access::FLUSH_EVERY, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
            });
            shutdown_signal().await;
            tracing::info!("stopping: finishing open requests");
            let _ = stop_tx.send(true);
            for t in tasks {
                t.await.context("the server task failed")??;
            }
            if let Some(flusher) = flusher {
                flusher
                    .await
                    .context("the access recorder failed")?
                    .context("cannot write the last access record")?;
            }
            Ok::<(), anyhow::Error>(())
        })
}

/// The addresses of the --listen arguments: an address as it is, a host name and port (every
/// address the name has, each once).
async fn resolve_listen(listen: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for arg in listen {
        let found: Vec<SocketAddr> = match arg.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => tokio::net::lookup_host(arg.as_str())
                .await
                .with_context(|| {
                    format!("--listen {arg:?} is not an address or host name with a port, like 127.0.0.1:8080, [::]:8080 or localhost:8080")
                })?
                .collect(),
        };
        for a in found {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    Ok(addrs)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) still stops the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

pub(super) fn init_logging(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colour only for a person at a terminal, never into a log file or journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
