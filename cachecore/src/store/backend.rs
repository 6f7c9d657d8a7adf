//! Opening an object store from a parsed store URL: the backends' builders, credentials from
//! the environment and AWS profiles, timeouts and retries. Kept apart from the [`Objects`]
//! handle, which only talks to the store once it exists.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use tokio::sync::OnceCell;

use super::aws_profile;
use super::error::{ErrorContext, StoreError};
use super::objects::{Inner, Lister, Objects};
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

pub(crate) fn open(parsed: &StoreUrl, env: &[(String, String)]) -> Result<Objects, StoreError> {
    let url = parsed.as_str().to_owned();
    let setup = |source: object_store::Error| StoreError::Setup {
        url: url.clone(),
        source: Box::new(source),
    };
    let mut cx = ErrorContext {
        url: url.clone(),
        ..ErrorContext::default()
    };
    let mut read_only = false;
    let mut content_types = false;
    let mut lister = None;
    let mut local_root = None;
    let mut local_root_fd = None;
    let mut presigner = None;
    let store: Arc<dyn ObjectStore> = match &parsed.location {
        StoreLocation::Local { dir } => {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::BadUrl {
                url: url.clone(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
            let root = std::fs::canonicalize(dir).map_err(|e| StoreError::BadUrl {
                url: url.clone(),
                reason: format!("cannot resolve directory {}: {e}", dir.display()),
            })?;
            let store =
                object_store::local::LocalFileSystem::new_with_prefix(&root).map_err(setup)?;
            local_root_fd = rustix::fs::open(
                &root,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok();
            local_root = Some(root);
            Arc::new(store)
        }
        StoreLocation::Memory => Arc::new(object_store::memory::InMemory::new()),
        StoreLocation::Http { base } => {
            let token = env_var(env, TOKEN_VAR)
                .map(str::trim)
                .filter(|t| !t.is_empty());
            // A user and password in the URL are sent as basic auth, and kept out of the URL
            // the HTTP client sees (whose errors quote it).
            let (base, basic) = split_userinfo(base);
            let mut options = client_options().with_allow_http(base.scheme() == "http");
            let authorization = match (token, &basic) {
                (Some(_), Some(_)) => {
                    return Err(StoreError::BadUrl {
                        url: url.clone(),
                        reason: format!(
                            "give a token either in {TOKEN_VAR} or in the URL, not both"
                        ),
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
                        url: url.clone(),
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
                    .map_err(setup)?,
            );
            match token {
                // Without a token a server takes no upload: the cache is read-only.
                None => {
                    read_only = true;
                    reads
                }
                Some(t) => Arc::new(
                    super::http_upload::HttpUploads::new(
                        reads,
                        base.clone(),
                        t,
                        Duration::from_secs(5),
                    )
                    .map_err(setup)?,
                ),
            }
        }
        StoreLocation::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            profile,
        } => {
            cx.bucket = Some(bucket.clone());
            content_types = true;
            let (s3, advice, effective_endpoint) = build_s3(
                &url,
                bucket,
                endpoint.as_deref(),
                region.as_deref(),
                profile.as_deref(),
                env,
            )?;
            cx.credential_advice = advice;
            cx.endpoint = effective_endpoint;
            lister = Some(Lister {
                store: Arc::new(s3.clone()),
                prefix: dir_prefix(prefix),
            });
            presigner = Some(super::objects::Presigner {
                signer: Arc::new(s3.clone()),
                prefix: dir_prefix(prefix),
            });
            with_prefix(Arc::new(s3), prefix)
        }
        StoreLocation::Gcs { bucket, prefix } => {
            cx.bucket = Some(bucket.clone());
            content_types = true;
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
            let gcs = b.with_bucket_name(bucket).build().map_err(setup)?;
            cx.credential_advice = Some(
                "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT to a service account key file"
                    .to_owned(),
            );
            lister = Some(Lister {
                store: Arc::new(gcs.clone()),
                prefix: dir_prefix(prefix),
            });
            with_prefix(Arc::new(gcs), prefix)
        }
        StoreLocation::Azure { container, prefix } => {
            cx.bucket = Some(container.clone());
            content_types = true;
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
            let az = b.with_container_name(container).build().map_err(setup)?;
            cx.credential_advice = Some(
                "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or a SAS token"
                    .to_owned(),
            );
            lister = Some(Lister {
                store: Arc::new(az.clone()),
                prefix: dir_prefix(prefix),
            });
            with_prefix(Arc::new(az), prefix)
        }
    };
    Ok(Objects::new(Inner {
        store,
        cx,
        read_only,
        content_types,
        lister,
        listable: !read_only && !matches!(parsed.location, StoreLocation::Http { .. }),
        support: OnceCell::new(),
        local_root,
        local_root_fd,
        cleanups: Default::default(),
        presigner,
        hot: Default::default(),
        remote_ttl_ms: Default::default(),
    }))
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

/// The objects of a store the caller built (see [`BinaryCache::from_object_store`]).
///
/// [`BinaryCache::from_object_store`]: super::BinaryCache::from_object_store
pub(crate) fn custom(store: Arc<dyn ObjectStore>, url: &str, read_only: bool) -> Objects {
    Objects::new(Inner {
        store,
        cx: ErrorContext {
            url: url.to_owned(),
            ..ErrorContext::default()
        },
        read_only,
        content_types: false,
        lister: None,
        listable: true,
        support: OnceCell::new(),
        local_root: None,
        local_root_fd: None,
        cleanups: Default::default(),
        presigner: None,
        hot: Default::default(),
        remote_ttl_ms: Default::default(),
    })
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
