//! The pull-through proxy: a narinfo missing from the store is looked for in the upstream
//! caches, in order; the first that has it is copied from — the path and its whole closure,
//! every narinfo signed by one of that upstream's keys and every NAR checked (FileSize,
//! FileHash, NarSize, NarHash) before its narinfo is written, references first ([`ops::copy`]).
//! So the store never shows a narinfo without its NAR and closure, and what is served after a
//! fill is what any later request gets from the store itself.
//!
//! Concurrent requests for one narinfo wait for one fill. An upstream that does not answer
//! within its timeout, or whose objects do not check out, is a miss for that request (the next
//! upstream is asked); when every upstream is down, what the store holds is still served.
//!
//! An upstream that cannot be reached (or does not answer in time) is skipped for a while
//! instead of costing its connection retries on every miss: [`FIRST_BACKOFF`] after the first
//! failure, twice as long after each further one, up to [`MAX_BACKOFF`]; the first request after
//! that asks it again, and an answer ends the backoff. At startup every upstream is asked for its
//! `nix-cache-info` in the background ([`Proxy::check_upstreams`]): one warning for an upstream
//! that cannot be reached (its backoff starts) or is not a binary cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt as _, Shared};

use super::metrics::{InGauge, Metrics};
use crate::ops::{self, CopyOptions, NoProgress};
use crate::signing::PublicKey;
use crate::store::BinaryCache;
use crate::store_path::StoreDir;

/// A cache a server fills itself from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Upstream {
    pub cache: BinaryCache,
    /// Every path copied from it must be signed by one of these (at least one is needed).
    pub trusted_keys: Vec<PublicKey>,
    /// How long a narinfo lookup may take before the upstream counts as a miss.
    pub lookup_timeout: Duration,
    /// How long copying a closure from it may take.
    pub copy_timeout: Duration,
}

impl Upstream {
    /// `cache`, trusting `trusted_keys`, with a 10 s lookup and a 10 min copy timeout.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::server::{self, Config, Upstream};
    /// use cachecore::{signing::PublicKey, store::BinaryCache};
    /// let key: PublicKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=".parse().unwrap();
    /// let upstream = Upstream::new(BinaryCache::open("https://cache.nixos.org").unwrap(), vec![key]);
    /// assert_eq!(upstream.lookup_timeout.as_secs(), 10);
    /// let mut config = Config::default();
    /// config.upstreams.push(upstream);
    /// // A pull-through proxy stores what it fetches: its own store must be writable.
    /// let app = server::router(BinaryCache::open("memory://").unwrap(), config).await;
    /// assert!(app.is_ok());
    /// # });
    /// ```
    pub fn new(cache: BinaryCache, trusted_keys: Vec<PublicKey>) -> Upstream {
        Upstream {
            cache,
            trusted_keys,
            lookup_timeout: Duration::from_secs(10),
            copy_timeout: Duration::from_secs(600),
        }
    }
}

type Fill = Shared<BoxFuture<'static, bool>>;

/// How long an upstream that could not be reached is skipped after its first failure.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest an unreachable upstream is skipped before it is asked again.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Whether an upstream is being skipped, and since how many failures in a row.
#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    failures: u32,
}

/// Why an upstream gave nothing for a request.
struct Failure {
    why: String,
    /// It could not be reached or did not answer in time (not: what it sent was refused).
    unreachable: bool,
}

impl Failure {
    fn refused(why: impl Into<String>) -> Failure {
        Failure {
            why: why.into(),
            unreachable: false,
        }
    }
}

/// The upstreams of one server, and the fills in flight.
#[derive(Debug)]
pub(super) struct Proxy {
    upstreams: Vec<Upstream>,
    backoff: Vec<Mutex<Backoff>>,
    store: BinaryCache,
    store_dir: StoreDir,
    metrics: Metrics,
    in_flight: Mutex<HashMap<String, Fill>>,
}

impl Proxy {
    pub(super) fn new(
        upstreams: Vec<Upstream>,
        store: BinaryCache,
        store_dir: StoreDir,
        metrics: Metrics,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            backoff: upstreams.iter().map(|_| Mutex::default()).collect(),
            upstreams,
            store,
            store_dir,
            metrics,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// Fills the store with the path whose narinfo is `<hash_part>.narinfo` from the first
    /// upstream that has it; whether one did. Concurrent calls for one hash part share a fill.
    pub(super) async fn fill(self: &Arc<Self>, hash_part: &str) -> bool {
        let fill = {
            let Ok(mut in_flight) = self.in_flight.lock() else {
                return false;
            };
            match in_flight.get(hash_part) {
                Some(f) => f.clone(),
                None => {
                    let this = self.clone();
                    let hash = hash_part.to_owned();
                    let running = InGauge::start(&self.metrics.upstream_fills);
                    let f = async move {
                        let _running = running;
                        let filled = this.fill_from_upstreams(&hash).await;
                        if let Ok(mut in_flight) = this.in_flight.lock() {
                            in_flight.remove(&hash);
                        }
                        filled
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(hash_part.to_owned(), f.clone());
                    f
                }
            }
        };
        // Run on a task of its own: a client hanging up does not cancel a fill others wait on.
        let _waiting = InGauge::start(&self.metrics.upstream_waiting);
        tokio::spawn(fill).await.unwrap_or(false)
    }

    async fn fill_from_upstreams(&self, hash_part: &str) -> bool {
        // Filled meanwhile, by a fill that ended between the request's look and this one's
        // start: nothing to fetch.
        let key = crate::store::layout::narinfo(hash_part);
        if let Ok(Some(_)) = self.store.objects().head(&key).await {
            return true;
        }
        for (i, up) in self.upstreams.iter().enumerate() {
            let label = i.to_string();
            if self.skipped(i) {
                self.metrics
                    .upstream
                    .with_label_values(&[label.as_str(), "skipped"])
                    .inc();
                continue;
            }
            let result = self.fill_from(up, hash_part).await;
            let outcome = match &result {
                Ok(true) => "hit",
                Ok(false) => "miss",
                Err(_) => "error",
            };
            self.metrics
                .upstream
                .with_label_values(&[label.as_str(), outcome])
                .inc();
            match result {
                Ok(filled) => {
                    self.answered(i);
                    if filled {
                        return true;
                    }
                }
                Err(f) if f.unreachable => self.unreachable(i, &f.why),
                Err(f) => {
                    self.answered(i);
                    tracing::warn!(
                        upstream = up.cache.url(),
                        narinfo = %format!("{hash_part}.narinfo"),
                        "upstream counted as a miss: {}",
                        f.why
                    );
                }
            }
        }
        false
    }

    /// Whether upstream `i` is being skipped (it could not be reached a moment ago).
    fn skipped(&self, i: usize) -> bool {
        self.backoff[i]
            .lock()
            .ok()
            .and_then(|b| b.until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Upstream `i` answered: its backoff, if any, ends.
    fn answered(&self, i: usize) {
        let Ok(mut b) = self.backoff[i].lock() else {
            return;
        };
        if b.failures > 0 {
            tracing::warn!(
                upstream = self.upstreams[i].cache.url(),
                "upstream answers again; it is asked for every miss from now on"
            );
        }
        *b = Backoff::default();
    }

    /// Upstream `i` could not be reached: it is skipped for a while, longer after each failure
    /// in a row.
    fn unreachable(&self, i: usize, why: &str) {
        let Ok(mut b) = self.backoff[i].lock() else {
            return;
        };
        let wait = FIRST_BACKOFF
            .saturating_mul(1 << b.failures.min(16))
            .min(MAX_BACKOFF);
        b.failures = b.failures.saturating_add(1);
        b.until = Some(Instant::now() + wait);
        tracing::warn!(
            upstream = self.upstreams[i].cache.url(),
            "upstream {} cannot be reached ({why}); skipped for {} s, then asked again",
            self.upstreams[i].cache.url(),
            wait.as_secs()
        );
    }

    /// Asks every upstream for its `nix-cache-info`, at once, and warns (one sentence each)
    /// about one that cannot be reached (its backoff starts) or is not a binary cache of this
    /// cache's store directory. A warning, never a refusal: an upstream may come up later.
    pub(super) async fn check_upstreams(self: Arc<Self>) {
        let checks = self.upstreams.iter().enumerate().map(|(i, up)| {
            let this = self.clone();
            async move {
                let url = up.cache.url();
                match tokio::time::timeout(up.lookup_timeout, up.cache.cache_info()).await {
                    Err(_) => this.unreachable(
                        i,
                        &format!("no answer within {} s", up.lookup_timeout.as_secs()),
                    ),
                    Ok(Err(e)) if e.kind() == crate::error::ErrorKind::Unavailable => {
                        this.unreachable(i, &e.to_string());
                    }
                    Ok(Err(e)) => tracing::warn!(
                        upstream = url,
                        "upstream {url} is not a binary cache this proxy can fill from: {e}"
                    ),
                    Ok(Ok(None)) => tracing::warn!(
                        upstream = url,
                        "upstream {url} is not a binary cache: it has no nix-cache-info"
                    ),
                    Ok(Ok(Some(info))) if info.store_dir != this.store_dir.as_str() => {
                        tracing::warn!(
                            upstream = url,
                            "upstream {url} is a cache of {}, not of {}: none of its paths will be used",
                            info.store_dir,
                            this.store_dir.as_str()
                        );
                    }
                    Ok(Ok(Some(_))) => {}
                }
            }
        });
        futures::future::join_all(checks).await;
    }

    async fn fill_from(&self, up: &Upstream, hash_part: &str) -> Result<bool, Failure> {
        let info = match tokio::time::timeout(
            up.lookup_timeout,
            up.cache.narinfo_by_hash(hash_part),
        )
        .await
        {
            Err(_) => {
                return Err(Failure {
                    why: format!("no answer within {} s", up.lookup_timeout.as_secs()),
                    unreachable: true,
                })
            }
            Ok(Err(e)) => {
                return Err(Failure {
                    unreachable: e.kind() == crate::error::ErrorKind::Unavailable,
                    why: e.to_string(),
                })
            }
            Ok(Ok(None)) => return Ok(false),
            Ok(Ok(Some(info))) => info,
        };
        if info.store_dir != self.store_dir {
            return Err(Failure::refused(format!(
                "its paths are in {}, this cache's in {}",
                info.store_dir.as_str(),
                self.store_dir.as_str()
            )));
        }
        let opts = CopyOptions {
            trusted_keys: up.trusted_keys.clone(),
            ..CopyOptions::default()
        };
        let copy = copy_on_own_thread(up.cache.clone(), self.store.clone(), info.store_path, opts);
        match tokio::time::timeout(up.copy_timeout, copy).await {
            Err(_) => Err(Failure::refused(format!(
                "the copy took longer than {} s",
                up.copy_timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(Failure::refused(e.to_string())),
            Ok(Ok(_)) => Ok(true),
        }
    }
}

/// [`ops::copy`] driven on a blocking thread of the runtime: its future is not provably `Send`
/// (closures over borrowed caches inside), and a fill must run on a task of its own.
async fn copy_on_own_thread(
    from: BinaryCache,
    to: BinaryCache,
    path: crate::store_path::StorePath,
    opts: CopyOptions,
) -> Result<ops::CopySummary, ops::OpError> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        handle.block_on(ops::copy(&from, &to, &[path], &opts, Arc::new(NoProgress)))
    })
    .await
    .map_err(crate::ops::join_error)?
}
