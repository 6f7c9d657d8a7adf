//! Invariants of the store URL parser, for any string: it never panics; it is deterministic;
//! and what it understood, written back as a canonical URL (every part percent-encoded where
//! needed, the location's parameters and the settings in the query), parses to the same
//! location and settings — the parser reads each part the same way however it is spelled.
#![no_main]

use cachecore::store::{StoreLocation, StoreSettings, StoreUrl};
use libfuzzer_sys::fuzz_target;

/// The settings as query parameters, in Nix's spelling.
fn setting_pairs(s: &StoreSettings) -> Option<Vec<(&'static str, String)>> {
    let flag = |b: bool| if b { "true" } else { "false" }.to_owned();
    let mut out = Vec::new();
    if let Some(p) = &s.secret_key {
        out.push(("secret-key", p.to_str()?.to_owned()));
    }
    if let Some(c) = s.compression {
        out.push(("compression", c.name().to_owned()));
    }
    if let Some(l) = s.compression_level {
        out.push(("compression-level", l.to_string()));
    }
    if let Some(b) = s.write_nar_listing {
        out.push(("write-nar-listing", flag(b)));
    }
    if let Some(b) = s.parallel_compression {
        out.push(("parallel-compression", flag(b)));
    }
    if let Some(b) = s.want_mass_query {
        out.push(("want-mass-query", flag(b)));
    }
    if let Some(p) = s.priority {
        out.push(("priority", p.to_string()));
    }
    for (key, method) in [
        ("narinfo-compression", s.narinfo_compression),
        ("ls-compression", s.ls_compression),
        ("log-compression", s.log_compression),
    ] {
        if let Some(m) = method {
            out.push((key, m.name().to_owned()));
        }
    }
    Some(out)
}

/// `scheme://name/prefix?params&settings`, built with the `url` crate (which encodes).
fn canonical(url: &StoreUrl) -> Option<String> {
    let settings = setting_pairs(&url.settings)?;
    let with_query = |mut u: url::Url, params: &[(&str, &Option<String>)]| {
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in params {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
            for (k, v) in &settings {
                q.append_pair(k, v);
            }
        }
        if u.query() == Some("") {
            u.set_query(None);
        }
        u.to_string()
    };
    // The prefix percent-encoded by hand (`Url::set_path` on an s3:// URL takes a `#` in it
    // as the start of a fragment), `/` kept as the separator.
    let bucket_url = |scheme: &str, bucket: &str, prefix: &str| {
        let mut path = String::new();
        for b in prefix.bytes() {
            if b == b'/' || b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                path.push(char::from(b));
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        let sep = if path.is_empty() { "" } else { "/" };
        url::Url::parse(&format!("{scheme}://{bucket}{sep}{path}")).ok()
    };
    Some(match &url.location {
        // A plain path keeps `..` as the OS resolves it (through symlinks); a file:// URL drops
        // dot segments as RFC 3986 says. The two spellings agree only without them.
        StoreLocation::Local { dir }
            if dir.components().any(|c| {
                matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir)
            }) =>
        {
            return None
        }
        StoreLocation::Local { dir } => with_query(url::Url::from_file_path(dir).ok()?, &[]),
        StoreLocation::S3 { bucket, prefix, endpoint, region, profile } => with_query(
            bucket_url("s3", bucket, prefix)?,
            &[("endpoint", endpoint), ("region", region), ("profile", profile)],
        ),
        StoreLocation::Gcs { bucket, prefix } => with_query(bucket_url("gs", bucket, prefix)?, &[]),
        StoreLocation::Azure { container, prefix } => {
            with_query(bucket_url("az", container, prefix)?, &[])
        }
        StoreLocation::Memory => with_query(url::Url::parse("memory://").ok()?, &[]),
        StoreLocation::Http { base } => with_query(base.clone(), &[]),
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(url) = StoreUrl::parse(text) else { return };
    let twice = StoreUrl::parse(text).expect("parsed once, parses twice");
    assert!(twice == url, "not deterministic: {text:?}");
    let Some(written) = canonical(&url) else { return };
    let again = StoreUrl::parse(&written).unwrap_or_else(|e| {
        panic!("{text:?} parsed as {:?}, but its canonical form {written:?} does not: {e}", url.location)
    });
    assert_eq!(again.location, url.location, "{text:?} → {written:?}");
    assert_eq!(again.settings, url.settings, "{text:?} → {written:?}");
});
