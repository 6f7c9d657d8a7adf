//! An HTTP binary cache over any store: what `cachecore serve` runs, as an [`axum::Router`] a
//! Rust service can mount (feature `server`).
//!
//! - **Reads**: `GET`/`HEAD` of `nix-cache-info`, `<hash>.narinfo`, `nar/…`, `<hash>.ls`,
//!   `log/…`, `realisations/…`, with the content types Nix's caches send, `ETag` and
//!   `Last-Modified` from the store, conditional requests (304), one `Range` (206/416),
//!   `Cache-Control: immutable` for NARs. Bodies stream from the store with `Content-Length`
//!   set; nothing holds a whole object. A missing or unreadable object is an error status; a
//!   store failure after the headers were sent closes the connection, so a client sees a
//!   failed transfer, never a clean short file.
//! - **Uploads** (`PUT`, as `nix copy --to http://…` sends them) need the write token. Every
//!   upload is checked before it becomes visible: a NAR must hash to its name; a narinfo must
//!   name this key's store path, and its NAR must be present with the FileSize, FileHash,
//!   NarSize and NarHash it states, and the narinfos of its references present (else 409, and
//!   Nix, which uploads references first, never meets it); an identical re-upload succeeds, a
//!   different object where one is present is 409.
//! - `/serve/<hash>-<name>/<path>` is one file from inside a store path, read by ranged reads of
//!   its NAR (a directory is an HTML index), for browsers (`files`).
//! - With [`Config::upstreams`], a **pull-through proxy**: a narinfo this cache lacks is copied
//!   with its closure from the first upstream that has it, signatures and NARs checked, before
//!   it is served ([`Upstream`]).
//! - `/` is a landing page, `/metrics` Prometheus text, `/health` a health check.
//! - [`serve`] closes idle connections and caps how many are open ([`Connections`],
//!   `listener`), so that idle sockets cannot exhaust the server's descriptors.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cachecore::server::{self, Config};
//! use cachecore::store::BinaryCache;
//! let cache = BinaryCache::open("/srv/cache")?;
//! let app = server::router(cache, Config::default()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server::serve(listener, app, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! Never require an entire object in memory: downloads stream; a NAR upload streams into the
//! store (multipart above 10 MiB) while it is hashed; narinfos, listings, logs and
//! realisations are bounded by [`Config`] limits.

mod auth;
mod conditional;
mod files;
mod keys;
mod landing;
mod listener;
mod metrics;
mod proxy;
mod read;
mod routes;
mod scoped;
mod upload;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::cache_info::CacheInfo;
use crate::signing::{PublicKey, SecretKey};
use crate::store::{BinaryCache, StoreError};
use crate::store_path::StoreDir;

pub use auth::{Token, TokenError};
pub use listener::{default_max_connections, serve, serve_with, Connections};
pub use proxy::Upstream;
pub use scoped::{
    Grant, Refusal, Revocations, Right, SecretError, TokenSecret, MIN_SECRET_LEN, TOKEN_PREFIX,
};

use auth::Access;
use metrics::Metrics;

/// How a server behaves. `Default` is a public read-only cache.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use axum::{body::Body, http::{Request, StatusCode}};
/// use cachecore::server::{self, Config, Token};
/// use cachecore::store::BinaryCache;
/// use tower::ServiceExt as _;
/// let mut config = Config::default(); // a public, read-only cache
/// config.write_token = Some(Token::parse("s3cret\n").unwrap()); // now uploads need this
/// let app = server::router(BinaryCache::open("memory://").unwrap(), config).await.unwrap();
/// let log = "/log/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.drv";
/// let put = |auth| Request::put(log).header("authorization", auth).body(Body::from("ok\n"));
/// let refused = app.clone().oneshot(put("Bearer wrong").unwrap()).await.unwrap();
/// assert_eq!(refused.status(), StatusCode::FORBIDDEN);
/// let taken = app.clone().oneshot(put("Bearer s3cret").unwrap()).await.unwrap();
/// assert!(taken.status().is_success());
/// let get = Request::get(log).body(Body::empty()).unwrap();
/// assert_eq!(app.oneshot(get).await.unwrap().status(), StatusCode::OK); // reads stay public
/// # });
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Token that uploads (`PUT`) need; `None` refuses every upload.
    pub write_token: Option<Token>,
    /// Token that reads need; `None` makes reads public (unless [`private_reads`]). The write
    /// token grants reads too.
    ///
    /// [`private_reads`]: Config::private_reads
    pub read_token: Option<Token>,
    /// The secret scoped tokens are checked with ([`TokenSecret`]): a token issued with it
    /// grants what it says (read, push, sign), until it expires or is revoked. Beside the
    /// tokens above, which keep working.
    pub token_secret: Option<Arc<TokenSecret>>,
    /// Scoped tokens revoked on this server (by id or name).
    pub revoked_tokens: Option<Arc<Revocations>>,
    /// Reads need a token even without a `read_token` (a scoped token's, or the write token).
    pub private_reads: bool,
    /// Public keys shown on the landing page, for `trusted-public-keys`.
    pub public_keys: Vec<PublicKey>,
    /// A key to sign every uploaded narinfo with, so that uploaders need no signing key (list
    /// its public key in `public_keys` too, for the landing page).
    pub signing_key: Option<Arc<SecretKey>>,
    /// The `Priority` announced in `nix-cache-info` (else the store's, else none).
    pub priority: Option<u64>,
    /// Largest NAR upload in bytes.
    pub max_nar_upload: u64,
    /// Largest upload of a narinfo, listing, log or realisation, in bytes.
    pub max_small_upload: u64,
    /// Uploads processed at once; more wait their turn.
    pub max_concurrent_uploads: usize,
    /// An upload whose body sends nothing for this long is abandoned.
    pub upload_idle_timeout: Duration,
    /// Hand out presigned URLs so that large NARs pushed by `cachecore push` go straight to
    /// the bucket (S3 stores; clients must reach the bucket's endpoint, and fall back to
    /// uploading here when they cannot connect to it).
    pub direct_uploads: bool,
    /// Caches to fill this one from when a narinfo is asked for that it lacks (pull-through
    /// proxy, see [`Upstream`]); in order. Needs a writable store.
    pub upstreams: Vec<Upstream>,
    /// How long a narinfo (any object of at most 64 KiB) read from a remote store is answered
    /// from memory before the store is asked again, as a CDN would for the `max-age` narinfos
    /// are served with ([`Objects::set_remote_ttl`](crate::store::Objects::set_remote_ttl)).
    /// Objects this server writes are seen at once, and misses are never kept, so a path
    /// uploaded through another replica is seen at once too; a narinfo changed or deleted
    /// through another replica is seen after at most this long. Zero: always ask the store. A
    /// local directory's files are checked on every read instead.
    pub remote_read_ttl: Duration,
    /// Answer `GET nar/…` with a redirect (307) to a presigned URL of the NAR in the bucket,
    /// valid for an hour, instead of streaming it: NAR bytes then never pass through this
    /// server (S3 stores only; clients must reach the bucket's endpoint, and anyone holding a
    /// URL may read that one NAR until it expires). Nix follows redirects.
    pub redirect_nars: bool,
    /// Where `/serve/` keeps whole NARs that cannot be read at random (xz, bzip2, zstd without
    /// a seek table): each is fetched and checked once, and files are read from the kept copy
    /// instead of decompressing the NAR from its start for every request. `None`: no such
    /// NARs are kept (every request reads from the start).
    pub nar_cache: Option<crate::access::NarCache>,
    /// The cache's name on its landing page (default "Nix binary cache").
    pub title: Option<String>,
    /// Records the narinfos answered, for GC ([`crate::gc::access`]); the caller flushes it
    /// ([`AccessRecorder::spawn_flusher`](crate::gc::access::AccessRecorder::spawn_flusher),
    /// and once more when the server stops). `None`: nothing is recorded.
    pub access_recorder: Option<Arc<crate::gc::access::AccessRecorder>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            write_token: None,
            read_token: None,
            token_secret: None,
            revoked_tokens: None,
            private_reads: false,
            public_keys: Vec::new(),
            signing_key: None,
            priority: None,
            max_nar_upload: 16 << 30,
            max_small_upload: 64 << 20,
            max_concurrent_uploads: 8,
            upload_idle_timeout: Duration::from_secs(60),
            direct_uploads: true,
            upstreams: Vec::new(),
            remote_read_ttl: Duration::from_secs(10),
            redirect_nars: false,
            nar_cache: None,
            title: None,
            access_recorder: None,
        }
    }
}

/// Why a server could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up the metrics registry: {0}")]
    Metrics(String),
    /// The configuration cannot work, and says why.
    #[error("{0}")]
    Config(String),
}

/// What every handler shares.
#[derive(Debug)]
struct AppState {
    cache: BinaryCache,
    config: Config,
    /// `nix-cache-info` as served.
    cache_info: Bytes,
    store_dir: StoreDir,
    priority: Option<u64>,
    uploads: Semaphore,
    /// Narinfo, listing, log and realisation writes of one key are checked and written under
    /// one of these (by key hash), so two different uploads of one path cannot both pass the
    /// "nothing different is present" check in this process.
    write_locks: Vec<tokio::sync::Mutex<()>>,
    /// Listings uploaded before their narinfo, until it arrives.
    held_listings: upload::HeldListings,
    /// GC tombstones read by the push rule of narinfo uploads (`gc::lease`).
    tombstones: crate::gc::lease::TombstoneCache,
    metrics: Metrics,
    totals: Mutex<landing::Totals>,
    /// The upstreams, when this server is a pull-through proxy.
    proxy: Option<Arc<proxy::Proxy>>,
    /// The store as scoped tokens' prefixes are matched against: its URL without the query.
    token_scope: String,
}

type Shared = Arc<AppState>;

/// The route label a route puts on its response for the metrics and the request log
/// (`routes`).
#[derive(Debug, Clone, Copy)]
struct RouteLabel(&'static str);

/// On a response whose body bytes its handler counts itself as they are sent
/// (`response_body_bytes_total`); [`observe`] counts every other body.
#[derive(Debug, Clone, Copy)]
struct BodyCounted;

/// The router serving `cache` as configured. Reads `nix-cache-info` once; a store without one
/// is served as a cache of `/nix/store`, and gets that file written when uploads are enabled.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use axum::{body::Body, http::{Request, StatusCode}};
/// use cachecore::{server::{self, Config}, store::BinaryCache};
/// use tower::ServiceExt as _;
/// let cache = BinaryCache::open("memory://").unwrap();
/// let app = server::router(cache, Config::default()).await.unwrap();
/// // One request, without a socket (as a test of a service mounting the router would do).
/// let request = Request::get("/nix-cache-info").body(Body::empty()).unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
/// assert!(body.starts_with(b"StoreDir: /nix/store\n"));
/// # });
/// ```
pub async fn router(cache: BinaryCache, config: Config) -> Result<Router, ServerError> {
    if !config.upstreams.is_empty() && cache.is_read_only() {
        return Err(ServerError::Config(format!(
            "{} is read-only: a pull-through proxy stores what it fetches, so it needs a writable store",
            cache.url()
        )));
    }
    if let Some(up) = config.upstreams.iter().find(|u| u.trusted_keys.is_empty()) {
        return Err(ServerError::Config(format!(
            "the upstream {} has no trusted key: paths copied from it must be signed by one (--upstream-key)",
            up.cache.url()
        )));
    }
    cache.objects().set_remote_ttl(config.remote_read_ttl);
    if config.redirect_nars
        && cache
            .objects()
            .presigned_get(crate::store::layout::CACHE_INFO, Duration::from_secs(60))
            .await?
            .is_none()
    {
        return Err(ServerError::Config(format!(
            "{} cannot sign URLs (only s3:// stores can), so it cannot redirect NAR downloads to itself",
            cache.url()
        )));
    }
    let stored = cache.cache_info().await?;
    let mut info = match stored {
        Some(info) => info,
        // A cache that takes uploads gets its description written, as Nix does for a new
        // binary cache, so other readers of the store (nginx, `file://`) see a cache too.
        None if (config.write_token.is_some() || config.token_secret.is_some())
            && !cache.is_read_only() =>
        {
            cache.init(&CacheInfo::default()).await?
        }
        None => CacheInfo::default(),
    };
    if config.priority.is_some() {
        info.priority = config.priority;
    }
    // Whether this server signs what it takes, and with which key, as served: the store's
    // word on it is never passed on.
    info.extra
        .retain(|(name, _)| name != crate::cache_info::SIGNING_KEY_FIELD);
    if let Some(secret) = &config.signing_key {
        info.extra.push((
            crate::cache_info::SIGNING_KEY_FIELD.to_owned(),
            secret.public_key().to_string(),
        ));
    }
    let metrics = Metrics::new().map_err(|e| ServerError::Metrics(e.to_string()))?;
    let store_dir = StoreDir::new(&info.store_dir);
    let proxy = (!config.upstreams.is_empty()).then(|| {
        proxy::Proxy::new(
            config.upstreams.clone(),
            cache.clone(),
            store_dir.clone(),
            metrics.clone(),
        )
    });
    if let Some(p) = &proxy {
        tokio::spawn(p.clone().check_upstreams());
    }
    let token_scope = cache
        .url()
        .split_once('?')
        .map_or(cache.url(), |(u, _)| u)
        .to_owned();
    let state = Arc::new(AppState {
        token_scope,
        store_dir,
        proxy,
        priority: info.priority,
        cache_info: Bytes::from(info.to_string()),
        uploads: Semaphore::new(config.max_concurrent_uploads.max(1)),
        write_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        held_listings: upload::HeldListings::default(),
        tombstones: Default::default(),
        metrics,
        totals: Mutex::new(landing::Totals::default()),
        cache,
        config,
    });
    Ok(routes::table(&state)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state))
}

/// A one-line plain-text answer.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The HTTP status for each kind of failure: the server's one map from
/// [`ErrorKind`](crate::error::ErrorKind), beside the command line's exit statuses and the
/// mount's errnos (see [`crate::error`]). Every kind is decided here, with no fallback arm.
///
/// - A failure that is the request's (an object that does not exist, a key the store refuses,
///   a write that would replace something) is a 4xx.
/// - The store refusing this server access is 502: the client can do nothing about it, and the
///   server works.
/// - Everything else failed in the store or here: 500 (the full error goes to the log).
fn status_of(kind: crate::error::ErrorKind) -> StatusCode {
    use crate::error::ErrorKind as K;
    match kind {
        K::NotFound => StatusCode::NOT_FOUND,
        K::InvalidInput => StatusCode::BAD_REQUEST,
        K::Conflict => StatusCode::CONFLICT,
        K::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
        K::Denied => StatusCode::BAD_GATEWAY,
        K::Unavailable | K::Corrupt | K::Untrusted | K::Local | K::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The answer to a store failure on `key`: the status of its kind, and one sentence naming the
/// object (not the store's URL) for the client; the full error goes to the log.
fn store_failure(key: &str, e: &StoreError) -> Response {
    use crate::error::ErrorKind as K;
    let kind = e.kind();
    let status = status_of(kind);
    if status.is_server_error() {
        tracing::error!(key, error = %e, "store failure");
    }
    let message = match kind {
        K::NotFound => format!("{key} does not exist"),
        K::Denied => format!("the store refused this server access to {key}"),
        K::Unsupported => format!("the store is read-only or cannot do this; cannot write {key}"),
        K::Conflict => format!("{key} conflicts with what the store holds; nothing was replaced"),
        K::InvalidInput => format!("the store refused the request for {key} as invalid"),
        K::Unavailable => format!("the store could not be reached or failed to answer for {key}"),
        K::Corrupt | K::Untrusted | K::Local | K::Internal => {
            format!("the store failed on {key}")
        }
    };
    text(status, message)
}

/// What a request's credentials allow, once they were found good.
#[derive(Debug, Clone)]
pub(crate) struct Rights {
    pub push: bool,
    pub sign: bool,
    /// The scoped token's name, for refusals; `None` for the tokens of `--token-file` and
    /// `--read-token-file` (and for no token, on a public cache).
    pub holder: Option<String>,
}

impl Rights {
    const ALL: Rights = Rights {
        push: true,
        sign: true,
        holder: None,
    };
    const READ: Rights = Rights {
        push: false,
        sign: false,
        holder: None,
    };

    /// `the token "ci"` or `the token`, for refusals.
    fn who(&self) -> String {
        match &self.holder {
            Some(name) => format!("the token {name:?}"),
            None => "the token".to_owned(),
        }
    }

    /// What the holder may do, for refusals.
    fn may(&self) -> &'static str {
        match (self.push, self.sign) {
            (true, true) => "read, push and sign",
            (true, false) => "read and push",
            (false, true) => "read and sign",
            (false, false) => "only read",
        }
    }
}

/// What a request's credentials amount to, all tokens considered.
enum Credential {
    Missing,
    Wrong,
    /// A scoped token this server issued, refused for this reason.
    Refused(String),
    Holds(Rights),
}

impl AppState {
    /// The credentials of a request: a scoped token (when the server has a token secret), or
    /// one of the tokens of `--token-file` and `--read-token-file` (both are compared whatever
    /// is offered, so the time taken does not say which matched).
    fn credential(&self, headers: &axum::http::HeaderMap) -> Credential {
        if let Some(secret) = &self.config.token_secret {
            if let Some(offered) = auth::offered(headers) {
                if offered.starts_with(TOKEN_PREFIX.as_bytes()) {
                    return self.scoped(secret, &offered);
                }
            }
        }
        let write = self
            .config
            .write_token
            .as_ref()
            .map(|t| auth::check(headers, &[t]));
        let read = self
            .config
            .read_token
            .as_ref()
            .map(|t| auth::check(headers, &[t]));
        match (write, read) {
            (Some(Access::Granted), _) => Credential::Holds(Rights::ALL),
            (_, Some(Access::Granted)) => Credential::Holds(Rights::READ),
            (Some(Access::Missing), _) | (_, Some(Access::Missing)) => Credential::Missing,
            _ if !headers.contains_key(axum::http::header::AUTHORIZATION) => Credential::Missing,
            _ => Credential::Wrong,
        }
    }

    fn scoped(&self, secret: &TokenSecret, offered: &[u8]) -> Credential {
        let grant = match secret.check(offered) {
            Ok(g) => g,
            Err(why) => return Credential::Refused(why.to_string()),
        };
        if let Some(revoked) = &self.config.revoked_tokens {
            if revoked.is_revoked(&grant) {
                return Credential::Refused(
                    Refusal::Revoked {
                        name: grant.name,
                        id: grant.id,
                    }
                    .to_string(),
                );
            }
        }
        if let Some(prefix) = &grant.prefix {
            if !self.token_scope.starts_with(prefix.as_str()) {
                return Credential::Refused(
                    Refusal::OtherStore {
                        name: grant.name,
                        prefix: prefix.clone(),
                    }
                    .to_string(),
                );
            }
        }
        Credential::Holds(Rights {
            push: grant.allows(Right::Push),
            sign: grant.allows(Right::Sign),
            holder: Some(grant.name),
        })
    }

    /// Whether a request may read, or the answer that refuses it (the `read` group's layer in
    /// `routes`, and only there).
    fn may_read(&self, headers: &axum::http::HeaderMap) -> Result<(), Response> {
        if self.config.read_token.is_none() && !self.config.private_reads {
            return Ok(());
        }
        refusal(self.credential(headers), "reading this cache").map(drop)
    }

    /// What a request may upload, or the answer that refuses it (the `write` group's layer in
    /// `routes`, and only there): a token that may push or sign.
    fn may_write(&self, headers: &axum::http::HeaderMap) -> Result<Rights, Response> {
        if self.config.write_token.is_none() && self.config.token_secret.is_none() {
            return Err(text(
                StatusCode::FORBIDDEN,
                "uploads are disabled on this server (it was started without --token-file or --token-secret)",
            ));
        }
        let rights = refusal(self.credential(headers), "uploading")?;
        if !rights.push && !rights.sign {
            return Err(text(
                StatusCode::FORBIDDEN,
                format!("{} may only read this cache, not upload", rights.who()),
            ));
        }
        Ok(rights)
    }

    fn write_lock(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let h = key
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        // The modulo keeps the index in range.
        &self.write_locks[(h % self.write_locks.len() as u64) as usize]
    }
}

fn refusal(credential: Credential, what: &str) -> Result<Rights, Response> {
    match credential {
        Credential::Holds(rights) => Ok(rights),
        Credential::Refused(why) => Err(text(StatusCode::FORBIDDEN, why)),
        Credential::Missing => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                format!("{what} needs a token (Authorization: Bearer TOKEN, or basic auth with the token as password; Nix sends it from a netrc line `machine HOST password TOKEN`, HOST without the port)"),
            );
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cachecore\""),
            );
            Err(r)
        }
        Credential::Wrong => Err(text(
            StatusCode::FORBIDDEN,
            format!("the token offered for {what} is wrong"),
        )),
    }
}

/// Records every request in the metrics and the log.
async fn observe(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await;
    // Every route labels its answers (`routes`); only a panic's would lack one.
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or("other", |l| l.0);
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .record(route, method.as_str(), status, elapsed.as_secs_f64());
    tracing::info!(
        target: "cachecore::serve::request",
        method = %method,
        path = %path,
        route,
        status,
        micros = elapsed.as_micros() as u64,
        length = response
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
    );
    if response.status().is_server_error() {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if method != axum::http::Method::HEAD && response.extensions().get::<BodyCounted>().is_none() {
        response = count_body(&state, route, response);
    }
    // No body is ever to be taken for something else than its type says: a build log, or an
    // error echoing the path asked for, is text, never HTML a browser would guess.
    response
        .headers_mut()
        .entry(axum::http::header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

/// Counts the body of `response` in `response_body_bytes_total`: its size when known, else each
/// chunk as it is sent.
fn count_body(state: &AppState, route: &str, response: Response) -> Response {
    use axum::body::HttpBody as _;
    let sent = state.metrics.sent_bytes.with_label_values(&[route]);
    if let Some(n) = response.body().size_hint().exact() {
        sent.inc_by(n);
        return response;
    }
    let (parts, body) = response.into_parts();
    let counted = futures::TryStreamExt::inspect_ok(body.into_data_stream(), move |chunk| {
        sent.inc_by(chunk.len() as u64)
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

async fn metrics_page(State(state): State<Shared>) -> Response {
    let mut r = Response::new(Body::from(state.metrics.render()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `200 ok` when the store answers (a HEAD of `nix-cache-info`), else 503.
async fn health(State(state): State<Shared>) -> Response {
    match state
        .cache
        .objects()
        .head(crate::store::layout::CACHE_INFO)
        .await
    {
        Ok(_) => text(StatusCode::OK, "ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check: the store does not answer");
            text(StatusCode::SERVICE_UNAVAILABLE, "the store does not answer")
        }
    }
}
