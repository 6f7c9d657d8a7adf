//! Store URLs: where a binary cache lives, in Nix's spelling plus plain directory paths.
//!
//! | URL | store |
//! |-----|-------|
//! | `./dir`, `dir`, `/abs/dir`, `file:///abs/dir` | a local directory |
//! | `s3://bucket[/prefix]?endpoint=..&region=..&profile=..&scheme=..` | S3 or an S3-compatible server |
//! | `gs://bucket[/prefix]` | Google Cloud Storage |
//! | `az://container[/prefix]` | Azure Blob Storage |
//! | `memory://` | an in-memory store (tests) |
//! | `http://host[/path]`, `https://host[/path]` | a plain HTTP cache, read-only |
//!
//! Query parameters are either about *where* the store is (`endpoint`, `region`, `profile`,
//! `scheme`, for `s3://` only) or one of Nix's binary-cache settings, which do here what they do
//! in Nix ([`StoreSettings`]: `secret-key`, `compression`, `compression-level`,
//! `write-nar-listing`, `parallel-compression`, `want-mass-query`, `priority`). Nix's other
//! settings, and any other parameter, are refused with an error naming them, so a misspelt
//! `endpont=` or a setting cachecore cannot honour is never silently ignored.
//!
//! ```
//! use cachecore::store::url::{StoreLocation, StoreUrl};
//! let u = StoreUrl::parse("s3://cache/team?endpoint=http://127.0.0.1:3900&region=garage&compression=zstd").unwrap();
//! match &u.location {
//!     StoreLocation::S3 { bucket, prefix, endpoint, region, .. } => {
//!         assert_eq!(bucket, "cache");
//!         assert_eq!(prefix, "team");
//!         assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:3900"));
//!         assert_eq!(region.as_deref(), Some("garage"));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(u.settings.compression, Some(cachecore::compression::Compression::Zstd));
//! assert!(StoreUrl::parse("s3://cache?endpont=http://x").is_err());
//! assert!(StoreUrl::parse("s3://cache?local-nar-cache=/tmp").is_err());
//! // Narinfos stored compressed, with `Content-Encoding` (not on a local directory).
//! let u = StoreUrl::parse("s3://cache?narinfo-compression=zstd").unwrap();
//! assert_eq!(u.settings.narinfo_compression, Some(cachecore::compression::Compression::Zstd));
//! assert!(StoreUrl::parse("/srv/cache?narinfo-compression=zstd").is_err());
//! ```

use std::path::PathBuf;

use super::error::StoreError;
use crate::cache_info::CacheInfo;
use crate::compression::Compression;

/// Nix's binary-cache settings that cachecore honours, with what each does here (as in Nix).
pub const HONOURED_SETTINGS: &[&str] = &[
    "secret-key",
    "compression",
    "compression-level",
    "write-nar-listing",
    "parallel-compression",
    "want-mass-query",
    "priority",
    "narinfo-compression",
    "ls-compression",
    "log-compression",
];

/// Nix's other binary-cache settings: they make sense for Nix's own stores but have no meaning
/// for cachecore (or name a feature it lacks), so a URL with one is refused rather than having
/// the setting silently ignored.
const REFUSED_SETTINGS: &[(&str, &str)] = &[
    (
        "secret-keys",
        "give one key file with secret-key=FILE, or several --key FILE options",
    ),
    ("index-debug-info", "cachecore does not index debug info"),
    ("local-nar-cache", "cachecore keeps no local NAR cache"),
    (
        "trusted",
        "trust is decided by the reader's trusted-public-keys",
    ),
    (
        "store",
        "cachecore caches always use their nix-cache-info's StoreDir",
    ),
    (
        "multipart-upload",
        "cachecore always uploads large objects in parts",
    ),
    ("buffer-size", "cachecore's part size is fixed"),
    ("path-info-cache-size", "cachecore keeps no path-info cache"),
    (
        "system-features",
        "it applies to Nix's builders, not to binary caches",
    ),
];

/// Nix's binary-cache settings given in a store URL, typed. Each is `None` when the URL does not
/// give it; command-line options override them (see [`crate::ops::PushOptions::for_cache`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreSettings {
    /// `secret-key=FILE`: narinfos pushed are signed with the secret key in FILE.
    pub secret_key: Option<PathBuf>,
    /// `compression=`: how pushed NARs are compressed (cachecore's default: zstd; Nix's: xz).
    pub compression: Option<Compression>,
    /// `compression-level=`: the codec's level (default: the codec's own).
    pub compression_level: Option<i32>,
    /// `write-nar-listing=`: whether push writes `<hash>.ls` listings (cachecore's default:
    /// true, as `mount` and `cat` read them; Nix's: false).
    pub write_nar_listing: Option<bool>,
    /// `parallel-compression=`: compress a NAR's zstd frames on all cores (cachecore's default:
    /// true) or on one; xz is compressed on one thread either way.
    pub parallel_compression: Option<bool>,
    /// `want-mass-query=`: the `WantMassQuery` that `init` (and the first push) write to
    /// `nix-cache-info` (default: true).
    pub want_mass_query: Option<bool>,
    /// `priority=`: the `Priority` that `init` (and the first push) write to `nix-cache-info`
    /// (default: 40, as cache.nixos.org).
    pub priority: Option<u64>,
    /// `narinfo-compression=`: narinfos are stored compressed with `Content-Encoding`
    /// ([`super::encoding`]; not on a local directory). Default: plain.
    pub narinfo_compression: Option<Compression>,
    /// `ls-compression=`: the same for `.ls` listings.
    pub ls_compression: Option<Compression>,
    /// `log-compression=`: the same for build logs.
    pub log_compression: Option<Compression>,
}

impl StoreSettings {
    /// The `nix-cache-info` to create for a cache of `store_dir` with these settings.
    ///
    /// ```
    /// use cachecore::store::StoreUrl;
    /// let u = StoreUrl::parse("file:///srv/cache?priority=30&want-mass-query=false").unwrap();
    /// let info = u.settings.cache_info("/nix/store");
    /// assert_eq!((info.priority, info.want_mass_query), (Some(30), Some(false)));
    /// // Unset: the defaults (those of cache.nixos.org).
    /// let info = StoreUrl::parse("/srv/cache").unwrap().settings.cache_info("/gnu/store");
    /// assert_eq!(info.store_dir, "/gnu/store");
    /// assert_eq!((info.priority, info.want_mass_query), (Some(40), Some(true)));
    /// ```
    pub fn cache_info(&self, store_dir: &str) -> CacheInfo {
        let default = CacheInfo::default();
        CacheInfo {
            store_dir: store_dir.to_owned(),
            want_mass_query: self.want_mass_query.or(default.want_mass_query),
            priority: self.priority.or(default.priority),
            ..default
        }
    }

    /// Sets one of the [`HONOURED_SETTINGS`] from its value, as it is given (errors name the
    /// setting as `given` spells it).
    fn set(&mut self, name: &str, value: &str, given: GivenAs) -> Result<(), String> {
        let shown = given.spell(name);
        let key = shown.as_str();
        fn boolean(key: &str, value: &str) -> Result<bool, String> {
            // Nix's spellings of a boolean setting.
            match value {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(format!("{key}={value} is not a boolean (true or false)")),
            }
        }
        fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
            value
                .parse()
                .map_err(|_| format!("{key}={value} is not a number"))
        }
        fn method(key: &str, value: &str) -> Result<Compression, String> {
            // What Content-Encoding can name and cachecore decodes ("br" is Nix's too).
            Compression::from_name(value).map_err(|_| {
                format!("{key}={value}: expected none, zstd, xz or bzip2 (stored as the objects' Content-Encoding)")
            })
        }
        match name {
            "secret-key" => {
                if value.is_empty() {
                    return Err(format!(
                        "{key}= is empty (expected the path of a secret key file)"
                    ));
                }
                self.secret_key = Some(PathBuf::from(value));
            }
            "compression" => {
                self.compression =
                    Some(Compression::from_name(value).map_err(|e| format!("{key}={value}: {e}"))?);
            }
            "compression-level" => self.compression_level = Some(number(key, value)?),
            "narinfo-compression" => self.narinfo_compression = Some(method(key, value)?),
            "ls-compression" => self.ls_compression = Some(method(key, value)?),
            "log-compression" => self.log_compression = Some(method(key, value)?),
            "write-nar-listing" => self.write_nar_listing = Some(boolean(key, value)?),
            "parallel-compression" => self.parallel_compression = Some(boolean(key, value)?),
            "want-mass-query" => self.want_mass_query = Some(boolean(key, value)?),
            "priority" => self.priority = Some(number(key, value)?),
            _ => return Err(not_honoured(name)),
        }
        Ok(())
    }

    /// Why a local directory cannot keep these settings, if it cannot: a method for
    /// narinfos, listings or logs, which are kept with their `Content-Encoding`.
    fn local_dir_refusal(&self, given: GivenAs) -> Option<String> {
        let encoded = [
            ("narinfo-compression", self.narinfo_compression),
            ("ls-compression", self.ls_compression),
            ("log-compression", self.log_compression),
        ];
        let (name, _) = encoded
            .iter()
            .find(|(_, m)| m.is_some_and(|m| m != Compression::None))?;
        Some(format!(
            "{} needs a store that keeps each object's Content-Encoding (S3, GCS, Azure, or a cachecore serve): Nix reads a local directory's files raw",
            given.spell(name)
        ))
    }
}

/// Where a setting was given, which its errors name it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GivenAs {
    /// `name=value` in the store URL's query.
    Query,
    /// `--name value` on a command line.
    CommandLine,
}

impl GivenAs {
    /// The setting `name` as given: `name` in a query, `--name` on a command line.
    fn spell(self, name: &str) -> String {
        match self {
            GivenAs::Query => name.to_owned(),
            GivenAs::CommandLine => format!("--{name}"),
        }
    }
}

/// Why `key`, which is none of the [`HONOURED_SETTINGS`], is not a setting here: one of Nix's
/// [`REFUSED_SETTINGS`] with its reason, or a name neither knows.
fn not_honoured(key: &str) -> String {
    match REFUSED_SETTINGS.iter().find(|(name, _)| *name == key) {
        Some((_, why)) => format!(
            "Nix's setting {key}= is not supported by cachecore ({why}); the settings it honours are {}",
            HONOURED_SETTINGS.join(", ")
        ),
        None => format!(
            "{key} is not a setting cachecore honours (they are {})",
            HONOURED_SETTINGS.join(", ")
        ),
    }
}

/// The S3 parameters that say where the bucket is.
const S3_PARAMS: &[&str] = &["endpoint", "region", "profile", "scheme"];

/// Where a store is. `Debug` hides credentials in an HTTP URL or an S3 endpoint ([`redact`]).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// A local directory (absolute; relative paths are resolved against the current directory
    /// when parsed).
    Local { dir: PathBuf },
    /// An S3 bucket. `prefix` has no leading or trailing `/` (empty for the bucket root).
    S3 {
        bucket: String,
        prefix: String,
        /// A full endpoint URL (`http://127.0.0.1:3900`); when set, requests use path-style
        /// addressing.
        endpoint: Option<String>,
        region: Option<String>,
        /// A profile in `~/.aws/credentials` / `~/.aws/config`.
        profile: Option<String>,
    },
    /// A Google Cloud Storage bucket.
    Gcs { bucket: String, prefix: String },
    /// An Azure Blob Storage container.
    Azure { container: String, prefix: String },
    /// A fresh in-memory store.
    Memory,
    /// A plain HTTP(S) binary cache (read-only). `base` has no query and no trailing `/`.
    Http { base: url::Url },
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Local { dir } => f.debug_struct("Local").field("dir", dir).finish(),
            StoreLocation::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                profile,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field("endpoint", &endpoint.as_deref().map(redact))
                .field("region", region)
                .field("profile", profile)
                .finish(),
            StoreLocation::Gcs { bucket, prefix } => f
                .debug_struct("Gcs")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .finish(),
            StoreLocation::Azure { container, prefix } => f
                .debug_struct("Azure")
                .field("container", container)
                .field("prefix", prefix)
                .finish(),
            StoreLocation::Memory => f.write_str("Memory"),
            StoreLocation::Http { base } => f
                .debug_struct("Http")
                .field("base", &redact(base.as_str()))
                .finish(),
        }
    }
}

/// A parsed store URL.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub location: StoreLocation,
    /// Nix's binary-cache settings from the query (`compression=zstd`, ...).
    pub settings: StoreSettings,
    display: String,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUrl")
            .field("url", &self.display)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

fn bad(url: &str, reason: impl Into<String>) -> StoreError {
    StoreError::BadUrl {
        url: redact(url),
        reason: reason.into(),
    }
}

/// The URL as shown to users, with every credential it may carry replaced by `***`: the
/// password of `https://user:pass@host`, a user name given alone (`http://TOKEN@host`, a token
/// as user), the same inside a parameter (`endpoint=http://key:secret@host`), the value of any
/// parameter a store URL does not take (`?aws_secret_access_key=…`, refused anyway) and a
/// fragment.
///
/// ```
/// # use cachecore::store::url::redact;
/// assert_eq!(redact("https://alice:pw@cache.example/"), "https://alice:***@cache.example/");
/// assert_eq!(redact("http://tok3n@cache.example/nix"), "http://***@cache.example/nix");
/// assert_eq!(
///     redact("s3://b?endpoint=http://key:secret@127.0.0.1:3900&region=garage&token=t"),
///     "s3://b?endpoint=http://key:***@127.0.0.1:3900/&region=garage&token=***"
/// );
/// assert_eq!(redact("s3://cache/team?region=eu-west-1"), "s3://cache/team?region=eu-west-1");
/// ```
pub fn redact(url: &str) -> String {
    let (rest, fragment) = match url.split_once('#') {
        Some((r, f)) if !f.is_empty() => (r, Some("***")),
        Some((r, _)) => (r, Some("")),
        None => (url, None),
    };
    let (head, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let mut out = redact_userinfo(head);
    if let Some(q) = query {
        out.push('?');
        let pieces: Vec<String> = q.split('&').map(redact_parameter).collect();
        out.push_str(&pieces.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `key=value` of a query, its value redacted when it may be a credential.
fn redact_parameter(piece: &str) -> String {
    let Some((key, value)) = piece.split_once('=') else {
        return piece.to_owned();
    };
    let name = percent_decode(&key.replace('+', " "));
    let known = S3_PARAMS.contains(&name.as_str())
        || HONOURED_SETTINGS.contains(&name.as_str())
        || REFUSED_SETTINGS.iter().any(|(k, _)| *k == name);
    if !known {
        return format!("{key}=***");
    }
    let decoded = percent_decode(&value.replace('+', " "));
    let redacted = redact_userinfo(&decoded);
    if redacted == decoded {
        piece.to_owned()
    } else {
        format!("{key}={redacted}")
    }
}

/// `url` (without query or fragment) with its user and password replaced: `user:***@` when
/// both are given, `***@` for a user name alone (which may be a token). What the URL parser
/// does not take as a URL with a host (`key:secret@host`, a scheme missing) loses everything
/// up to its last `@`.
fn redact_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            } else {
                let _ = u.set_username("***");
            }
            u.to_string()
        }
        Ok(u) if u.host().is_some() => url.to_owned(),
        _ => redact_before_at(url),
    }
}

/// `url` with everything between its scheme (if any) and its last `@` replaced by `***`.
fn redact_before_at(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let start = url.find("://").map_or(0, |i| i + 3);
    if start <= at {
        format!("{}***{}", &url[..start], &url[at..])
    } else {
        format!("***{}", &url[at..])
    }
}

impl StoreUrl {
    /// Parses a store URL; see the [module docs](self). Only relative directory paths touch the
    /// environment (the current directory); nothing else does I/O.
    ///
    /// ```
    /// use std::path::PathBuf;
    /// use cachecore::store::{StoreLocation, StoreUrl};
    /// // A directory, bare or as file:// (settings only in the file:// form).
    /// let u = StoreUrl::parse("/srv/cache").unwrap();
    /// assert_eq!(u.location, StoreLocation::Local { dir: PathBuf::from("/srv/cache") });
    /// let u = StoreUrl::parse("file:///srv/cache?compression=xz&priority=30").unwrap();
    /// assert_eq!(u.location, StoreLocation::Local { dir: PathBuf::from("/srv/cache") });
    /// assert_eq!(u.settings.priority, Some(30));
    /// // S3 or an S3-compatible server.
    /// let u = StoreUrl::parse("s3://cache/team?endpoint=http://127.0.0.1:3900&region=garage").unwrap();
    /// assert!(matches!(&u.location,
    ///     StoreLocation::S3 { bucket, prefix, endpoint: Some(e), region: Some(r), .. }
    ///     if bucket == "cache" && prefix == "team" && e == "http://127.0.0.1:3900" && r == "garage"));
    /// let u = StoreUrl::parse("gs://bucket/prefix").unwrap();
    /// assert_eq!(u.location, StoreLocation::Gcs { bucket: "bucket".into(), prefix: "prefix".into() });
    /// let u = StoreUrl::parse("az://container").unwrap();
    /// assert_eq!(u.location, StoreLocation::Azure { container: "container".into(), prefix: "".into() });
    /// let u = StoreUrl::parse("http://cache.example.org/nix/").unwrap();
    /// assert!(matches!(&u.location,
    ///     StoreLocation::Http { base } if base.as_str() == "http://cache.example.org/nix"));
    /// // A Nix store is not a binary cache.
    /// let e = StoreUrl::parse("ssh://builder").unwrap_err();
    /// assert!(e.to_string().contains("not a binary cache"));
    /// ```
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(bad(url, "the URL is empty"));
        }
        let Some((scheme, _)) = trimmed.split_once("://") else {
            return Self::parse_dir(url, trimmed, StoreSettings::default());
        };
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "file" | "s3" | "gs" | "az" | "memory" | "http" | "https" => {}
            "ssh" | "ssh-ng" | "daemon" | "unix" | "local" => {
                return Err(bad(
                    url,
                    format!("{scheme}:// is a Nix store, not a binary cache; cachecore writes binary caches (a directory, s3://, gs://, az://, http(s)://)"),
                ))
            }
            _ => {
                return Err(bad(
                    url,
                    format!("unknown scheme {scheme}:// (expected a directory, file://, s3://, gs://, az://, memory://, http:// or https://)"),
                ))
            }
        }
        let parsed = url::Url::parse(trimmed).map_err(|e| bad(url, e.to_string()))?;
        let (location_params, settings) = split_query(url, &parsed, &scheme)?;
        let param = |k: &str| {
            location_params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        if parsed.fragment().is_some() {
            return Err(bad(url, "a store URL has no #fragment"));
        }
        let location = match scheme.as_str() {
            "file" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(bad(
                        url,
                        "a file:// URL takes an absolute path: file:///abs/dir (three slashes), or give the directory without file://",
                    ));
                }
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad(url, "not a local absolute path"))?;
                return Self::parse_dir(url, &dir.to_string_lossy(), settings);
            }
            "s3" => {
                let (bucket, prefix) = bucket_and_prefix(url, &parsed, "bucket")?;
                let scheme_param = param("scheme");
                if let Some(s) = &scheme_param {
                    if s != "http" && s != "https" {
                        return Err(bad(url, format!("scheme={s} must be http or https")));
                    }
                }
                let endpoint = param("endpoint")
                    .map(|e| normalize_endpoint(url, &e, scheme_param.as_deref()))
                    .transpose()?;
                let region = param("region");
                if region.as_deref() == Some("") {
                    return Err(bad(url, "region= is empty"));
                }
                let profile = param("profile");
                if profile.as_deref() == Some("") {
                    return Err(bad(url, "profile= is empty"));
                }
                StoreLocation::S3 {
                    bucket,
                    prefix,
                    endpoint,
                    region,
                    profile,
                }
            }
            "gs" => {
                let (bucket, prefix) = bucket_and_prefix(url, &parsed, "bucket")?;
                StoreLocation::Gcs { bucket, prefix }
            }
            "az" => {
                let (container, prefix) = bucket_and_prefix(url, &parsed, "container")?;
                StoreLocation::Azure { container, prefix }
            }
            "memory" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty())
                    || !matches!(parsed.path(), "" | "/")
                {
                    return Err(bad(url, "memory:// takes no name or path"));
                }
                StoreLocation::Memory
            }
            _ => {
                // http, https
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(bad(url, "no host"));
                }
                let mut base = parsed.clone();
                base.set_query(None);
                let path = base.path().trim_end_matches('/').to_owned();
                base.set_path(&path);
                StoreLocation::Http { base }
            }
        };
        Ok(StoreUrl {
            location,
            settings,
            display: redact(trimmed),
        })
    }

    /// What a directory argument that does not exist was likely meant to be, when it reads like
    /// a mistyped URL: `http//host:port` (no colon) or `host:port` (no scheme) — `None` for
    /// anything else, and for a URL with a scheme. A command that would create the directory
    /// refuses such an argument; one that reads adds the likely meaning to its error.
    ///
    /// ```
    /// use cachecore::store::StoreUrl;
    /// assert_eq!(StoreUrl::likely_meant("http//127.0.0.1:4510").as_deref(), Some("http://127.0.0.1:4510"));
    /// assert_eq!(StoreUrl::likely_meant("https:cache.example.org").as_deref(), Some("https://cache.example.org"));
    /// assert_eq!(StoreUrl::likely_meant("127.0.0.1:4510").as_deref(), Some("http://127.0.0.1:4510"));
    /// assert_eq!(StoreUrl::likely_meant("cache.example.org:443/nix").as_deref(), Some("http://cache.example.org:443/nix"));
    /// assert_eq!(StoreUrl::likely_meant("./cache"), None);
    /// assert_eq!(StoreUrl::likely_meant("http://127.0.0.1:4510"), None);
    /// assert_eq!(StoreUrl::likely_meant("backup:2024"), None); // a word, not a host
    /// ```
    pub fn likely_meant(arg: &str) -> Option<String> {
        let arg = arg.trim();
        if arg.contains("://") {
            return None;
        }
        for scheme in ["https", "http", "s3", "gs", "az", "file"] {
            // `http//host`, `http:/host`, `http/host`, `http:host`.
            let Some(rest) = arg.strip_prefix(scheme) else {
                continue;
            };
            let host = rest.trim_start_matches(':').trim_start_matches('/');
            if host.len() < rest.len()
                && !host.is_empty()
                && (rest.starts_with("//") || rest.starts_with(':'))
            {
                return Some(format!("{scheme}://{host}"));
            }
        }
        // `host:port[/path]`: a host name or address, then a port.
        let (host_port, _) = arg.split_once('/').unwrap_or((arg, ""));
        let (host, port) = host_port.rsplit_once(':')?;
        let hostlike = host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok()
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
            || (host.contains('.')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
        let portlike =
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        (hostlike && portlike).then(|| format!("http://{arg}"))
    }

    fn parse_dir(url: &str, path: &str, settings: StoreSettings) -> Result<StoreUrl, StoreError> {
        if path.contains('?') && !std::path::Path::new(path).exists() {
            return Err(bad(
                url,
                "a plain directory takes no ?parameters; write file:///abs/dir?... for settings",
            ));
        }
        if path.contains('\0') {
            return Err(bad(url, "the directory's path holds a NUL byte"));
        }
        let dir = std::path::absolute(path)
            .map_err(|e| bad(url, format!("cannot make {path:?} absolute: {e}")))?;
        if let Some(reason) = settings.local_dir_refusal(GivenAs::Query) {
            return Err(bad(url, reason));
        }
        Ok(StoreUrl {
            location: StoreLocation::Local { dir },
            settings,
            display: url.trim().to_owned(),
        })
    }

    /// Sets one of Nix's binary-cache settings ([`HONOURED_SETTINGS`]) to `value`, over the
    /// URL's own: what `name=value` in its query would do, with the same checks and the same
    /// errors, which name the setting as `given` spells it. On an error nothing is changed. The
    /// URL [as shown](Self::as_str) stays the one given.
    ///
    /// ```
    /// use cachecore::compression::Compression;
    /// use cachecore::store::{GivenAs, StoreUrl};
    /// let mut u = StoreUrl::parse("s3://cache?narinfo-compression=xz").unwrap();
    /// u.set_setting("narinfo-compression", "zstd", GivenAs::CommandLine).unwrap();
    /// assert_eq!(u.settings.narinfo_compression, Some(Compression::Zstd));
    /// // A local directory refuses it, as it refuses the same in a file:// URL's query.
    /// let mut d = StoreUrl::parse("/srv/cache").unwrap();
    /// let e = d.set_setting("ls-compression", "zstd", GivenAs::CommandLine).unwrap_err();
    /// assert!(e.to_string().contains("--ls-compression needs a store that keeps each object's Content-Encoding"));
    /// assert_eq!(d.settings.ls_compression, None);
    /// ```
    pub fn set_setting(
        &mut self,
        name: &str,
        value: &str,
        given: GivenAs,
    ) -> Result<(), StoreError> {
        let refused = |reason| StoreError::BadUrl {
            url: self.display.clone(),
            reason,
        };
        if !HONOURED_SETTINGS.contains(&name) {
            return Err(refused(not_honoured(name)));
        }
        let mut settings = self.settings.clone();
        settings.set(name, value, given).map_err(refused)?;
        if matches!(self.location, StoreLocation::Local { .. }) {
            if let Some(reason) = settings.local_dir_refusal(given) {
                return Err(refused(reason));
            }
        }
        self.settings = settings;
        Ok(())
    }

    /// The URL as shown to users (passwords replaced by `***`).
    ///
    /// ```
    /// use cachecore::store::StoreUrl;
    /// let u = StoreUrl::parse("s3://cache?region=eu-west-1").unwrap();
    /// assert_eq!(u.as_str(), "s3://cache?region=eu-west-1");
    /// let u = StoreUrl::parse("https://alice:s3cret@cache.example.org").unwrap();
    /// assert!(!u.as_str().contains("s3cret"));
    /// assert!(u.as_str().contains("***"));
    /// assert_eq!(u.as_str(), u.to_string());
    /// ```
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The URL Nix reads this cache by, for `nix.conf`'s `substituters`: `file:///abs/dir` for
    /// a local directory, the address itself for `http(s)://`; `None` for object stores, which
    /// Nix reads through an HTTP endpoint in front of them (an S3 website endpoint, a CDN).
    ///
    /// ```
    /// use cachecore::store::StoreUrl;
    /// let substituter = |u: &str| StoreUrl::parse(u).unwrap().nix_substituter();
    /// assert_eq!(substituter("/srv/cache").as_deref(), Some("file:///srv/cache"));
    /// assert_eq!(substituter("https://cache.example.org/").as_deref(), Some("https://cache.example.org"));
    /// assert_eq!(substituter("s3://cache"), None);
    /// ```
    pub fn nix_substituter(&self) -> Option<String> {
        match &self.location {
            StoreLocation::Local { dir } => url::Url::from_directory_path(dir)
                .ok()
                .map(|u| u.as_str().trim_end_matches('/').to_owned()),
            StoreLocation::Http { base } => Some(base.as_str().trim_end_matches('/').to_owned()),
            _ => None,
        }
    }

    /// Whether the store can be written (everything but `http(s)://`).
    ///
    /// ```
    /// use cachecore::store::StoreUrl;
    /// assert!(StoreUrl::parse("s3://cache").unwrap().is_writable());
    /// assert!(StoreUrl::parse("memory://").unwrap().is_writable());
    /// assert!(!StoreUrl::parse("https://cache.example.org").unwrap().is_writable());
    /// ```
    pub fn is_writable(&self) -> bool {
        !matches!(self.location, StoreLocation::Http { .. })
    }
}

type Params = Vec<(String, String)>;

/// Splits the query into location parameters (for this scheme) and Nix settings; refuses
/// anything else, and duplicates.
fn split_query(
    url: &str,
    parsed: &url::Url,
    scheme: &str,
) -> Result<(Params, StoreSettings), StoreError> {
    let mut location = Vec::new();
    let mut settings = StoreSettings::default();
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in parsed.query_pairs() {
        let (k, v) = (k.into_owned(), v.into_owned());
        if seen.contains(&k) {
            return Err(bad(url, format!("parameter {k} is given twice")));
        }
        seen.push(k.clone());
        if scheme == "s3" && S3_PARAMS.contains(&k.as_str()) {
            location.push((k, v));
        } else if HONOURED_SETTINGS.contains(&k.as_str()) {
            settings
                .set(&k, &v, GivenAs::Query)
                .map_err(|reason| bad(url, reason))?;
        } else if REFUSED_SETTINGS.iter().any(|(name, _)| *name == k) {
            return Err(bad(url, not_honoured(&k)));
        } else {
            let known: Vec<&str> = if scheme == "s3" {
                S3_PARAMS.iter().chain(HONOURED_SETTINGS).copied().collect()
            } else {
                HONOURED_SETTINGS.to_vec()
            };
            return Err(bad(
                url,
                format!(
                    "unknown parameter {k:?} for {scheme}:// (known: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok((location, settings))
}

fn bucket_and_prefix(
    url: &str,
    parsed: &url::Url,
    what: &str,
) -> Result<(String, String), StoreError> {
    let bucket = parsed.host_str().unwrap_or_default().to_owned();
    if bucket.is_empty() {
        return Err(bad(
            url,
            format!(
                "no {what} name (expected {}://{what}[/prefix])",
                parsed.scheme()
            ),
        ));
    }
    // S3, GCS and Azure names are letters, digits, `.`, `-` and `_` (S3's legacy names keep
    // upper case and `_`); anything else — an escape, a `:` of an empty port — is a typo.
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(bad(
            url,
            format!("{what} name {bucket:?} has {c:?}; a {what} name is letters, digits, '.', '-' and '_'"),
        ));
    }
    if parsed.username() != ""
        || parsed.password().is_some()
        || parsed.port().is_some()
        || authority_has_colon(url)
    {
        return Err(bad(
            url,
            format!("the {what} name cannot carry a user, password or port; give credentials through the environment or a profile"),
        ));
    }
    let prefix = percent_decode(parsed.path()).trim_matches('/').to_owned();
    if !prefix.is_empty() {
        object_store::path::Path::parse(&prefix)
            .map_err(|e| bad(url, format!("bad prefix {prefix:?}: {e}")))?;
    }
    Ok((bucket, prefix))
}

/// `s3://b:/p` as typed — a port separator with no port, which `url` drops silently.
fn authority_has_colon(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    authority
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .contains(':')
}

/// `%XX` escapes of a URL's path decoded (`+` and `&` are themselves there; a `%` not followed
/// by two hex digits is kept as it is); bytes that are not UTF-8 become U+FFFD.
pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                // Two hex digits make one byte.
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `endpoint=http://h:p` is kept; `endpoint=h:p` (Nix's spelling) needs `scheme=http|https`:
/// without one, Nix would take https, and an https client talking to a plain-HTTP port (the
/// usual local Garage or MinIO) fails with a TLS error that says nothing about the cause.
fn normalize_endpoint(url: &str, e: &str, scheme: Option<&str>) -> Result<String, StoreError> {
    // As messages show it: a user or password in it (however spelt) replaced.
    let shown = redact_before_at(e);
    if e.is_empty() {
        return Err(bad(url, "endpoint= is empty"));
    }
    let full = if e.contains("://") {
        if scheme.is_some() {
            return Err(bad(
                url,
                "give either scheme= or a scheme in endpoint=, not both",
            ));
        }
        e.to_owned()
    } else {
        let Some(scheme) = scheme else {
            return Err(bad(
                url,
                format!(
                    "endpoint={shown} has no scheme: write endpoint=http://{shown} (or https://{shown}), or add scheme=http"
                ),
            ));
        };
        format!("{scheme}://{e}")
    };
    let parsed =
        url::Url::parse(&full).map_err(|err| bad(url, format!("endpoint {shown:?}: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(
            url,
            format!("endpoint {shown:?} must be an http:// or https:// URL"),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad(url, format!("endpoint {shown:?} has no host")));
    }
    if parsed.query().is_some() {
        return Err(bad(url, format!("endpoint {shown:?} cannot carry a query")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            url,
            format!("endpoint {shown:?} cannot carry a user or password; give the keys through AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile"),
        ));
    }
    // As the URL parser understood it (a lenient spelling such as `http:/host` written out in
    // full), so that the endpoint used is the endpoint shown, and reads back the same.
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn ok(u: &str) -> StoreUrl {
        StoreUrl::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"))
    }

    fn err(u: &str) -> String {
        match StoreUrl::parse(u) {
            Err(e @ StoreError::BadUrl { .. }) => e.to_string(),
            other => panic!("{u}: expected BadUrl, got {other:?}"),
        }
    }

    #[test]
    fn nix_substituters() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            ok("./cache").nix_substituter().unwrap(),
            format!("file://{}/cache", cwd.display())
        );
        assert_eq!(
            ok("file:///srv/a b").nix_substituter().as_deref(),
            Some("file:///srv/a%20b")
        );
        assert_eq!(
            ok("https://cache.example.org/")
                .nix_substituter()
                .as_deref(),
            Some("https://cache.example.org")
        );
        assert_eq!(ok("s3://b?region=x").nix_substituter(), None);
    }

    #[test]
    fn directories() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            ok("./cache").location,
            StoreLocation::Local {
                dir: cwd.join("cache")
            }
        );
        assert_eq!(
            ok("cache").location,
            StoreLocation::Local {
                dir: cwd.join("cache")
            }
        );
        assert_eq!(
            ok("/srv/cache").location,
            StoreLocation::Local {
                dir: "/srv/cache".into()
            }
        );
        assert_eq!(ok("/srv/cache").as_str(), "/srv/cache");
        let f = ok("file:///srv/my%20cache?compression=zstd");
        assert_eq!(
            f.location,
            StoreLocation::Local {
                dir: "/srv/my cache".into()
            }
        );
        assert_eq!(f.settings.compression, Some(Compression::Zstd));
        assert!(f.is_writable());
        assert!(err("file://srv/cache").contains("three slashes"));
        assert!(err("file:///srv/cache?endpoint=x").contains("unknown parameter \"endpoint\""));
        assert!(err("").contains("empty"));
        assert!(err("./cache?compression=zstd").contains("no ?parameters"));
        // A NUL byte cannot be in a path the OS opens (found by the store_url fuzz target).
        assert!(err("cache\0x").contains("NUL byte"));
        assert!(err("file:///srv/a%00b").contains("NUL byte"));
    }

    #[test]
    fn prefixes_decode_every_escape_and_keep_what_is_not_one() {
        // Found by the store_url fuzz target: `&` once cut the prefix short.
        let prefix = |u: &str| match ok(u).location {
            StoreLocation::S3 { prefix, .. } => prefix,
            other => panic!("{other:?}"),
        };
        assert_eq!(prefix("s3://b/a&b/c/"), "a&b/c");
        assert_eq!(prefix("s3://b/a+b%20c"), "a+b c");
        assert_eq!(prefix("s3://b/x%2F"), "x");
    }

    #[test]
    fn s3() {
        let u = ok("s3://nixcache");
        assert_eq!(
            u.location,
            StoreLocation::S3 {
                bucket: "nixcache".into(),
                prefix: String::new(),
                endpoint: None,
                region: None,
                profile: None
            }
        );
        let u = ok("s3://nixcache/a/b/?endpoint=http://127.0.0.1:3900/&region=garage&profile=ci&secret-key=/k");
        assert_eq!(
            u.location,
            StoreLocation::S3 {
                bucket: "nixcache".into(),
                prefix: "a/b".into(),
                endpoint: Some("http://127.0.0.1:3900".into()),
                region: Some("garage".into()),
                profile: Some("ci".into())
            }
        );
        assert_eq!(u.settings.secret_key, Some(PathBuf::from("/k")));
        // Nix's spelling: a host name plus scheme=.
        let u = ok("s3://b?endpoint=minio.local:9000&scheme=http");
        assert!(
            matches!(&u.location, StoreLocation::S3 { endpoint: Some(e), .. } if e == "http://minio.local:9000")
        );
        let u = ok("s3://b?endpoint=s3.example.com&scheme=https");
        assert!(
            matches!(&u.location, StoreLocation::S3 { endpoint: Some(e), .. } if e == "https://s3.example.com")
        );
        let e = err("s3://b?endpoint=127.0.0.1:3970&region=garage");
        assert!(
            e.contains(
                "endpoint=127.0.0.1:3970 has no scheme: write endpoint=http://127.0.0.1:3970"
            ),
            "{e}"
        );
        assert!(err("s3://").contains("no bucket name"));
        assert!(err("s3:///prefix").contains("no bucket name"));
        assert!(err("s3://b?endpont=http://x").contains("unknown parameter \"endpont\""));
        assert!(err("s3://b?region=").contains("region= is empty"));
        assert!(err("s3://b?endpoint=ftp://x").contains("http:// or https://"));
        assert!(err("s3://b?endpoint=http://x&scheme=http").contains("not both"));
        assert!(err("s3://b?scheme=ftp&endpoint=x").contains("http or https"));
        assert!(err("s3://b?region=a&region=b").contains("twice"));
        assert!(err("s3://key:secret@b").contains("cannot carry a user"));
        // Keys inside endpoint=, in any spelling, are refused and never shown.
        for e in [
            "s3://b?endpoint=http://key:secret@127.0.0.1:3900",
            "s3://b?endpoint=http://secret@127.0.0.1:3900",
            "s3://b?endpoint=http%3A%2F%2Fkey%3Asecret%40h",
            "s3://b?endpoint=key:secret@h:1&scheme=http",
            "s3://b?endpoint=key:secret@h:1",
        ] {
            let m = err(e);
            assert!(!m.contains("secret"), "{e}: {m}");
            assert!(m.contains("***"), "{e}: {m}");
        }
        let u = StoreLocation::S3 {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: Some("http://k:secret@h".into()),
            region: None,
            profile: None,
        };
        assert!(!format!("{u:?}").contains("secret"));
        assert!(!err("s3://key:secret@b").contains("secret@"));
        assert!(err("s3://b/a//c").contains("bad prefix"));
    }

    #[test]
    fn cloud_and_memory() {
        assert_eq!(
            ok("gs://bkt/p").location,
            StoreLocation::Gcs {
                bucket: "bkt".into(),
                prefix: "p".into()
            }
        );
        assert_eq!(
            ok("az://ctr").location,
            StoreLocation::Azure {
                container: "ctr".into(),
                prefix: String::new()
            }
        );
        assert!(err("gs://").contains("no bucket"));
        // Found by the store_url fuzzer: an escape in the name and an empty port were kept.
        assert!(err("Gs://%Gs://%23x").contains("bucket name \"%Gs\" has '%'"));
        assert!(err("s3://b:/p").contains("cannot carry a user, password or port"));
        assert!(err("az://ctr%21").contains("container name \"ctr%21\" has '%'"));
        assert!(err("gs://b?region=x").contains("unknown parameter \"region\" for gs://"));
        assert_eq!(ok("memory://").location, StoreLocation::Memory);
        assert!(err("memory://x").contains("no name"));
    }

    #[test]
    fn http() {
        let u = ok("https://cache.nixos.org/");
        assert!(
            matches!(&u.location, StoreLocation::Http { base } if base.as_str() == "https://cache.nixos.org/")
        );
        assert!(!u.is_writable());
        let u = ok("http://127.0.0.1:8080/sub/dir/?priority=30");
        assert!(
            matches!(&u.location, StoreLocation::Http { base } if base.as_str() == "http://127.0.0.1:8080/sub/dir")
        );
        assert_eq!(u.settings.priority, Some(30));
        let u = ok("https://user:hunter2@cache.example/");
        assert!(!u.as_str().contains("hunter2"));
        assert!(!format!("{u:?}").contains("hunter2"));
        // A user name alone is a token as often as not.
        let u = ok("https://t0ken@cache.example/nix");
        assert_eq!(u.as_str(), "https://***@cache.example/nix");
        assert!(!format!("{u:?}").contains("t0ken"));
        // Parameters no store URL takes are refused without their values.
        let e = err("https://cache.example/?access_token=hunter2&priority=1");
        assert!(
            e.contains("access_token=***&priority=1") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(!err("https://u:hunter2@cache.example/#x").contains("hunter2"));
        assert!(err("https://user:hunter2@cache.example/?foo=1").contains("***"));
        assert!(!err("https://user:hunter2@cache.example/?foo=1").contains("hunter2"));
    }

    #[test]
    fn nix_settings_are_typed_or_refused() {
        let u = ok(
            "s3://b?endpoint=http://x:1&region=garage&secret-key=team.sec&compression=xz\
                    &compression-level=9&write-nar-listing=false&parallel-compression=0\
                    &want-mass-query=no&priority=30&narinfo-compression=zstd&ls-compression=xz\
                    &log-compression=bzip2",
        );
        assert_eq!(
            u.settings,
            StoreSettings {
                secret_key: Some("team.sec".into()),
                compression: Some(Compression::Xz),
                compression_level: Some(9),
                write_nar_listing: Some(false),
                parallel_compression: Some(false),
                want_mass_query: Some(false),
                priority: Some(30),
                narinfo_compression: Some(Compression::Zstd),
                ls_compression: Some(Compression::Xz),
                log_compression: Some(Compression::Bzip2),
            }
        );
        let info = u.settings.cache_info("/nix/store");
        assert_eq!(
            (info.priority, info.want_mass_query),
            (Some(30), Some(false))
        );
        assert_eq!(ok("file:///c").settings, StoreSettings::default());
        let info = StoreSettings::default().cache_info("/x");
        assert_eq!(
            (info.priority, info.want_mass_query),
            (Some(40), Some(true))
        );
        // Refused Nix settings name themselves and what is honoured.
        let e = err("file:///c?local-nar-cache=/tmp");
        assert!(e.contains("local-nar-cache= is not supported"), "{e}");
        assert!(e.contains("secret-key, compression"), "{e}");
        assert!(err("s3://b?secret-keys=a,b").contains("secret-keys= is not supported"));
        // Bad values name the setting.
        assert!(err("file:///c?compression=lz4").contains("compression=lz4"));
        assert!(err("file:///c?priority=high").contains("priority=high is not a number"));
        assert!(err("file:///c?write-nar-listing=maybe").contains("not a boolean"));
        assert!(err("file:///c?secret-key=").contains("secret-key= is empty"));
        assert!(err("file:///c?compression=xz&compression=zstd").contains("twice"));
    }

    #[test]
    fn a_setting_set_is_checked_as_the_query_checks_it() {
        let mut u = ok("s3://b?endpoint=http://x:1&ls-compression=br&priority=30");
        // Over the query's own, and beside the others.
        u.set_setting("ls-compression", "zstd", GivenAs::CommandLine)
            .unwrap();
        u.set_setting("narinfo-compression", "none", GivenAs::Query)
            .unwrap();
        assert_eq!(u.settings.ls_compression, Some(Compression::Zstd));
        assert_eq!(u.settings.narinfo_compression, Some(Compression::None));
        assert_eq!(u.settings.priority, Some(30));
        assert_eq!(
            u.as_str(),
            "s3://b?endpoint=http://x:1&ls-compression=br&priority=30"
        );
        let set = |u: &mut StoreUrl, name: &str, value: &str, given: GivenAs| {
            let before = u.clone();
            let e = u.set_setting(name, value, given).unwrap_err();
            assert!(matches!(e, StoreError::BadUrl { .. }), "{e:?}");
            assert_eq!(*u, before, "a refused setting changes nothing");
            e.to_string()
        };
        // A bad value: the parser's sentence, naming the setting as given.
        let e = set(&mut u, "log-compression", "lz4", GivenAs::CommandLine);
        assert!(
            e.contains("--log-compression=lz4: expected none, zstd"),
            "{e}"
        );
        let e = set(&mut u, "priority", "high", GivenAs::Query);
        assert_eq!(
            e,
            "bad store URL \"s3://b?endpoint=http://x:1&ls-compression=br&priority=30\": \
             priority=high is not a number"
        );
        // Names that are not settings: refused as the query refuses them.
        let e = set(&mut u, "local-nar-cache", "/tmp", GivenAs::Query);
        assert!(e.contains("local-nar-cache= is not supported"), "{e}");
        let e = set(&mut u, "endpoint", "http://y:2", GivenAs::CommandLine);
        assert!(
            e.contains("endpoint is not a setting cachecore honours"),
            "{e}"
        );
        // A local directory, given as a path or file://, refuses what it cannot keep, with the
        // sentence a file:// URL's query gets; "none" and other settings it takes.
        for dir in ["/srv/cache", "file:///srv/cache"] {
            let mut d = ok(dir);
            let e = set(&mut d, "narinfo-compression", "zstd", GivenAs::Query);
            assert_eq!(
                e.split_once(": ").unwrap().1,
                err("file:///srv/cache?narinfo-compression=zstd")
                    .split_once(": ")
                    .unwrap()
                    .1
            );
            let e = set(&mut d, "log-compression", "br", GivenAs::CommandLine);
            assert!(
                e.contains(&format!("bad store URL \"{dir}\": --log-compression needs a store that keeps each object's Content-Encoding")),
                "{e}"
            );
            d.set_setting("ls-compression", "none", GivenAs::CommandLine)
                .unwrap();
            d.set_setting("write-nar-listing", "false", GivenAs::Query)
                .unwrap();
            assert_eq!(d.settings.write_nar_listing, Some(false));
        }
    }

    #[test]
    fn other_schemes() {
        assert!(err("ssh://host").contains("not a binary cache"));
        assert!(err("ftp://host/x").contains("unknown scheme ftp://"));
    }
}
