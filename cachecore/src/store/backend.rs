//! Opening an object store from a parsed store URL: the backends' builders, credentials from
//! the environment and AWS profiles, timeouts and retries. Kept apart from the [`Objects`](super::Objects)
//! handle, which only talks to the store once it exists.

use std::sync::Arc;
use std::time::Duration;

use object_store::list::PaginatedListStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::aws_profile;
use super::error::{ErrorContext, StoreError};
use super::local::LocalDir;
use super::url::{StoreLocation, StoreUrl};

/// Retries of a failed request (connection refused, 5xx, throttling), with exponential backoff;
/// the same number of attempts as Nix's `download-attempts` default.
const MAX_RETRIES: usize = 5;

fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: MAX_RETRIES,
        ..RetryConfig::default()
    }
}

/// No overall request deadline (a multi-GiB NAR may take longer than any fixed limit), but a
/// stalled connection fails after a minute of silence.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout_disabled()
        .with_read_timeout(Duration::from_secs(60))
        .with_connect_timeout(Duration::from_secs(5))
        .with_dns_resolver(Arc::new(LoopbackLocalhost))
}

/// Host name resolution as curl (and so Nix) does it: `localhost` and every `*.localhost` name
/// are the loopback addresses (RFC 6761), without asking the system resolver, which often
/// knows only `localhost` itself. A Garage website endpoint reached as
/// `http://nixcache.web.garage.localhost:3902` keeps its `Host` header, which names the bucket.
/// Other names go to the system resolver.
#[derive(Debug)]
struct LoopbackLocalhost;

/// Whether `host` is `localhost` or a name under it.
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

impl object_store::client::DnsResolver for LoopbackLocalhost {
    fn resolve(&self, host: &str) -> object_store::client::DnsFuture {
        let host = host.to_owned();
        Box::pin(async move {
            use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
            if is_localhost(&host) {
                return Ok(vec![
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ]);
            }
            let addrs = tokio::task::spawn_blocking(move || {
                std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 0))
            })
            .await??;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// The variable holding the token of an `http(s)://` cache (`cachecore serve --token-file`):
/// sent as `Authorization: Bearer`, and with it the cache takes uploads.
pub const TOKEN_VAR: &str = "CACHECORE_TOKEN";

/// The process environment (variables that are not UTF-8 are skipped).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The `PREFIX_*` variables of `env`, lower-cased, to apply the way the builders' `from_env` do
/// but on top of our defaults (so `AWS_ALLOW_HTTP=true` and friends still work).
fn env_pairs(env: &[(String, String)], prefix: &str) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn env_var<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// An opened store: its object_store client, what it can do (known when it is opened; what
/// writes it honours is probed later, see
/// [`Objects::write_support`](super::Objects::write_support)), and what its errors need to
/// say. [`Objects`](super::Objects) is the handle on one.
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) cx: ErrorContext,
    /// Refuses every write (a plain HTTP cache without a token, or a caller's choice).
    pub(crate) read_only: bool,
    /// Send `Content-Type` with uploads (backends that keep attributes).
    pub(crate) content_types: bool,
    pub(crate) listing: Listing,
    /// A local directory's own reader, which every read of an object goes through.
    pub(crate) local: Option<Arc<LocalDir>>,
    /// What signs URLs for direct uploads and redirects (S3).
    pub(crate) presigner: Option<Presigner>,
    /// Whether every write gives an object a new entity tag, even with the same bytes within
    /// the same second (a local directory's tags hold the file's inode and mtime to the
    /// microsecond; memory counts writes). S3's and GCS's tags are the content's MD5 and their
    /// HEADs give times to the second, so there a rewrite with the same bytes within the
    /// second looks unchanged; unknown stores are taken to be like that.
    pub(crate) rewrites_change_tags: bool,
}

/// How a store lists a directory.
pub(crate) enum Listing {
    /// Not at all (plain HTTP).
    Unsupported,
    /// `list_with_delimiter`, the whole directory at once (local directories, memory, stores a
    /// caller built).
    Whole,
    /// Delimited and paginated (S3, GCS, Azure).
    Paginated(Lister),
}

/// A delimited, paginated lister, and the URL's prefix in the bucket.
pub(crate) struct Lister {
    pub(crate) store: Arc<dyn PaginatedListStore>,
    /// The URL's prefix with a trailing `/`, or empty.
    pub(crate) prefix: String,
}

/// Signs URLs that let a client write one object without credentials of its own.
pub(crate) struct Presigner {
    pub(crate) signer: Arc<dyn object_store::signer::Signer>,
    /// The cache's prefix in the bucket (`""`, or `dir/`).
    pub(crate) prefix: String,
}

impl Backend {
    /// A store with nothing of its own to add: listed whole, no content types, no signing.
    fn plain(url: &str, store: Arc<dyn ObjectStore>, read_only: bool) -> Backend {
        Backend {
            store,
            cx: ErrorContext {
                url: url.to_owned(),
                ..ErrorContext::default()
            },
            read_only,
            content_types: false,
            listing: Listing::Whole,
            local: None,
            presigner: None,
            rewrites_change_tags: false,
        }
    }

    /// A bucket of a cloud store (S3, GCS, Azure), the cache under `prefix` in it.
    fn bucket<S>(url: &str, bucket: &str, prefix: &str, store: S, advice: Option<String>) -> Backend
    where
        S: ObjectStore + PaginatedListStore + Clone,
    {
        let mut b = Backend::plain(url, with_prefix(Arc::new(store.clone()), prefix), false);
        b.cx.bucket = Some(bucket.to_owned());
        b.cx.credential_advice = advice;
        b.content_types = true;
        b.listing = Listing::Paginated(Lister {
            store: Arc::new(store),
            prefix: dir_prefix(prefix),
        });
        b
    }
}

/// Opens the store `parsed` names; a local directory that is not there is created when
/// `create`, else [`StoreError::NoStore`].
pub(crate) fn open(
    parsed: &StoreUrl,
    env: &[(String, String)],
    create: bool,
) -> Result<Backend, StoreError> {
    let url = parsed.as_str();
    let mut backend = match &parsed.location {
        StoreLocation::Local { dir } => {
            let (local, store) = LocalDir::open(url, dir, create)?;
            let mut b = Backend::plain(url, Arc::new(store), false);
            b.local = Some(Arc::new(local));
            b.rewrites_change_tags = true;
            b
        }
        StoreLocation::Memory => {
            let mut b = Backend::plain(url, Arc::new(InMemory::new()), false);
            b.rewrites_change_tags = true;
            b
        }
        StoreLocation::Http { base } => http(url, base, env)?,
        StoreLocation::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            profile,
        } => {
            let (store, advice, effective_endpoint) = build_s3(
                url,
                bucket,
                endpoint.as_deref(),
                region.as_deref(),
                profile.as_deref(),
                env,
            )?;
            let mut b = Backend::bucket(url, bucket, prefix, store.clone(), advice);
            b.cx.endpoint = effective_endpoint;
            b.presigner = Some(Presigner {
                signer: Arc::new(store),
                prefix: dir_prefix(prefix),
            });
            b
        }
        StoreLocation::Gcs { bucket, prefix } => {
            let store = build_gcs(url, bucket, env)?;
            let advice = "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT to a service account key file";
            Backend::bucket(url, bucket, prefix, store, Some(advice.to_owned()))
        }
        StoreLocation::Azure { container, prefix } => {
            let store = build_azure(url, container, env)?;
            let advice =
                "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or a SAS token";
            Backend::bucket(url, container, prefix, store, Some(advice.to_owned()))
        }
    };
    backend.cx.scheme = match &parsed.location {
        StoreLocation::Local { .. } | StoreLocation::Memory => "",
        StoreLocation::Http { base } if base.scheme() == "https" => "https",
        StoreLocation::Http { .. } => "http",
        StoreLocation::S3 { .. } => "s3",
        StoreLocation::Gcs { .. } => "gs",
        StoreLocation::Azure { .. } => "az",
    };
    Ok(backend)
}

fn setup(url: &str) -> impl Fn(object_store::Error) -> StoreError + '_ {
    move |source| StoreError::Setup {
        url: url.to_owned(),
        source: Box::new(source),
    }
}

/// A plain HTTP(S) cache: read-only, unlisted, unless a token lets it take uploads
/// (`cachecore serve`).
fn http(url: &str, base: &url::Url, env: &[(String, String)]) -> Result<Backend, StoreError> {
    let token = env_var(env, TOKEN_VAR)
        .map(str::trim)
        .filter(|t| !t.is_empty());
    // A user and password in the URL are sent as basic auth, and kept out of the URL the HTTP
    // client sees (whose errors quote it).
    let (base, basic) = split_userinfo(base);
    let base = &base;
    let mut options = client_options().with_allow_http(base.scheme() == "http");
    let authorization = match (token, &basic) {
        (Some(_), Some(_)) => {
            return Err(StoreError::BadUrl {
                url: url.to_owned(),
                reason: format!("give a token either in {TOKEN_VAR} or in the URL, not both"),
            })
        }
        (Some(t), None) => Some(format!("Bearer {t}")),
        (None, Some(user_pass)) => {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(user_pass);
            Some(format!("Basic {encoded}"))
        }
        (None, None) => None,
    };
    if let Some(a) = authorization {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value =
            reqwest::header::HeaderValue::from_str(&a).map_err(|_| StoreError::BadUrl {
                url: url.to_owned(),
                reason: format!("{TOKEN_VAR} holds characters an HTTP header cannot carry"),
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        options = options.with_default_headers(headers);
    }
    let reads: Arc<dyn ObjectStore> = Arc::new(
        object_store::http::HttpBuilder::new()
            .with_url(base.as_str())
            .with_client_options(options)
            .with_retry(retry_config())
            .build()
            .map_err(setup(url))?,
    );
    let mut b = match token {
        // Without a token a server takes no upload: the cache is read-only.
        None => Backend::plain(url, reads, true),
        Some(t) => {
            let uploads = super::http_upload::HttpUploads::new(
                reads,
                base.clone(),
                t,
                Duration::from_secs(5),
            )
            .map_err(setup(url))?;
            Backend::plain(url, Arc::new(uploads), false)
        }
    };
    b.listing = Listing::Unsupported;
    Ok(b)
}

fn build_gcs(
    url: &str,
    bucket: &str,
    env: &[(String, String)],
) -> Result<object_store::gcp::GoogleCloudStorage, StoreError> {
    let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_client_options(client_options())
        .with_retry(retry_config());
    if let Some(path) = env_var(env, "SERVICE_ACCOUNT") {
        b = b.with_service_account_path(path);
    }
    for (k, v) in env_pairs(env, "GOOGLE_") {
        if let Ok(key) = k.parse() {
            b = b.with_config(key, v);
        }
    }
    b.with_bucket_name(bucket).build().map_err(setup(url))
}

fn build_azure(
    url: &str,
    container: &str,
    env: &[(String, String)],
) -> Result<object_store::azure::MicrosoftAzure, StoreError> {
    let mut b = object_store::azure::MicrosoftAzureBuilder::new()
        .with_client_options(client_options())
        .with_retry(retry_config());
    for (k, v) in env_pairs(env, "AZURE_") {
        if let Ok(key) = k.parse() {
            b = b.with_config(key, v);
        }
    }
    if let Some(msi) = env_var(env, "MSI_ENDPOINT") {
        b = b.with_msi_endpoint(msi);
    }
    b.with_container_name(container).build().map_err(setup(url))
}

/// `base` without its user and password, and them as `user:password` (percent-decoded).
fn split_userinfo(base: &url::Url) -> (url::Url, Option<zeroize::Zeroizing<String>>) {
    use super::url::percent_decode;
    let mut bare = base.clone();
    if base.username().is_empty() && base.password().is_none() {
        return (bare, None);
    }
    let user_pass = zeroize::Zeroizing::new(format!(
        "{}:{}",
        percent_decode(base.username()),
        percent_decode(base.password().unwrap_or_default())
    ));
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    (bare, Some(user_pass))
}

/// A store the caller built (see [`BinaryCache::from_object_store`]).
///
/// [`BinaryCache::from_object_store`]: super::BinaryCache::from_object_store
pub(crate) fn custom(store: Arc<dyn ObjectStore>, url: &str, read_only: bool) -> Backend {
    Backend::plain(url, store, read_only)
}

fn dir_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        // `prefix` was validated by `Path::parse` when the URL was parsed.
        let path = Path::parse(prefix).unwrap_or_else(|_| Path::from(prefix));
        Arc::new(object_store::prefix::PrefixStore::new(store, path))
    }
}

/// Builds the S3 client; returns it with the advice to show if fetching credentials fails
/// (`None` when static keys were found).
fn build_s3(
    url: &str,
    bucket: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
    profile_name: Option<&str>,
    env_all: &[(String, String)],
) -> Result<(object_store::aws::AmazonS3, Option<String>, Option<String>), StoreError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let cred_err = |reason: String| StoreError::MissingCredentials {
        url: url.to_owned(),
        op: "open",
        key: "the store".to_owned(),
        detail: reason,
        source: None,
    };
    let mut b = AmazonS3Builder::new()
        .with_client_options(client_options())
        .with_retry(retry_config());
    let env = env_pairs(env_all, "AWS_");
    let env_has = |k: &str| env.iter().any(|(key, v)| key == k && !v.is_empty());
    for (k, v) in &env {
        if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
            b = b.with_config(key, v);
        }
    }
    // The loop above applies variables in the environment's order; as in the AWS SDKs,
    // AWS_REGION wins over AWS_DEFAULT_REGION and AWS_ENDPOINT_URL over AWS_ENDPOINT whatever
    // that order is.
    if let Some(r) = env_var(env_all, "AWS_REGION") {
        b = b.with_region(r);
    }
    if let Some(e) = env_var(env_all, "AWS_ENDPOINT_URL") {
        b = b.with_endpoint(e);
    }

    // Profile: explicit ?profile= wins over keys in the environment; AWS_PROFILE or `default`
    // only fill in what the environment does not give.
    let files = aws_profile::ProfileFiles::from_env(env_all);
    let env_profile = env_var(env_all, "AWS_PROFILE").map(str::to_owned);
    let env_keys = env_has("aws_access_key_id") && env_has("aws_secret_access_key");
    // A profile named in the URL must exist; one named by AWS_PROFILE must exist unless the
    // environment has keys anyway (as with the AWS CLI).
    let (name, explicit) = match (profile_name, &env_profile) {
        (Some(p), _) => (p.to_owned(), true),
        (None, Some(p)) => (p.clone(), !env_keys),
        (None, None) => ("default".to_owned(), false),
    };
    let profile = files.load(&name).map_err(&cred_err)?;
    let mut source = if env_keys {
        "AWS_ACCESS_KEY_ID".to_owned()
    } else {
        String::new()
    };
    match profile {
        None if explicit => {
            return Err(cred_err(format!(
                "profile {name:?} is in neither {}",
                files.describe("nor")
            )))
        }
        None => {}
        Some(p) => {
            let use_keys = profile_name.is_some() || !env_keys;
            if use_keys {
                if p.has_keys() {
                    if let (Some(id), Some(secret)) = (&p.access_key_id, &p.secret_access_key) {
                        b = b
                            .with_access_key_id(id)
                            .with_secret_access_key(secret.as_str());
                        if let Some(t) = &p.session_token {
                            b = b.with_token(t.as_str());
                        }
                        source = format!("profile {name:?}");
                    }
                } else if explicit && !p.unsupported.is_empty() {
                    return Err(cred_err(format!(
                        "profile {name:?} gets its keys through {}, which cachecore does not support; export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead",
                        p.unsupported.join(", ")
                    )));
                } else if explicit {
                    return Err(cred_err(format!(
                        "profile {name:?} in {} has no aws_access_key_id and aws_secret_access_key",
                        files.describe("or")
                    )));
                }
            }
            if region.is_none() && !env_has("aws_region") && !env_has("aws_default_region") {
                if let Some(r) = &p.region {
                    b = b.with_region(r);
                }
            }
            if endpoint.is_none() && !env_has("aws_endpoint") && !env_has("aws_endpoint_url") {
                if let Some(e) = &p.endpoint_url {
                    b = b.with_endpoint(e);
                }
            }
        }
    }
    if let Some(r) = region {
        b = b.with_region(r);
    }
    if let Some(e) = endpoint {
        b = b.with_endpoint(e);
    }
    let effective_endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if let Some(e) = &effective_endpoint {
        // A custom endpoint (Garage, MinIO, Ceph): path-style, and plain HTTP if it says so.
        // Without static keys object_store would ask the EC2 metadata service, whose IAM
        // credentials such a server does not accept: say so now instead of after its timeouts.
        let provider_env = [
            "aws_web_identity_token_file",
            "aws_container_credentials_relative_uri",
            "aws_container_credentials_full_uri",
        ];
        if source.is_empty() && !provider_env.iter().any(|k| env_has(k)) {
            return Err(cred_err(format!(
                "no keys for endpoint {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add aws_access_key_id and aws_secret_access_key for profile {name:?} to {} (or pick a profile with ?profile=NAME or AWS_PROFILE)",
                super::url::redact(e),
                files.credentials.display()
            )));
        }
        b = b.with_virtual_hosted_style_request(false);
        if e.starts_with("http://") {
            b = b.with_allow_http(true);
        }
    }
    let s3 = b
        .with_bucket_name(bucket)
        .build()
        .map_err(|source| StoreError::Setup {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    // Without static keys object_store asks the web-identity, container or instance-metadata
    // providers; if that fails, say where static keys would have been found.
    let advice = source.is_empty().then(|| {
        format!(
            "there is no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment and no keys for profile {name:?} in {}, so the EC2 instance metadata service was asked",
            files.describe("or")
        )
    });
    // For messages: without the credentials an endpoint URL may carry.
    let effective_endpoint = effective_endpoint.map(|e| super::url::redact(&e));
    Ok((s3, advice, effective_endpoint))
}
