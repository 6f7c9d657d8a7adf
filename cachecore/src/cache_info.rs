//! `nix-cache-info`, the file at the root of a binary cache.
//!
//! ```
//! use cachecore::cache_info::CacheInfo;
//! let info = CacheInfo::parse("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n").unwrap();
//! assert_eq!(info.priority, Some(40));
//! assert_eq!(info.to_string(), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n");
//! ```

use std::fmt;

/// A bad `nix-cache-info`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nix-cache-info line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// The field of `nix-cache-info` in which a `cachecore serve --key` says which key signs what
/// it takes (its public key `name:base64`); Nix ignores fields it does not know. Only the server
/// adds it to what it serves; it is never stored.
pub const SIGNING_KEY_FIELD: &str = "CachecoreSigningKey";

/// The contents of `nix-cache-info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    /// `StoreDir`, the store directory the cache's paths live in.
    pub store_dir: String,
    /// `WantMassQuery`: whether clients may query many paths at once.
    pub want_mass_query: Option<bool>,
    /// `Priority`: lower is preferred by Nix (cache.nixos.org is 40).
    pub priority: Option<u64>,
    /// Fields cachecore does not know, in file order.
    pub extra: Vec<(String, String)>,
}

impl Default for CacheInfo {
    fn default() -> Self {
        CacheInfo {
            store_dir: crate::store_path::DEFAULT_STORE_DIR.to_owned(),
            want_mass_query: Some(true),
            priority: Some(40),
            extra: Vec::new(),
        }
    }
}

impl CacheInfo {
    /// Parses the text of `nix-cache-info`; without a `StoreDir` the store is `/nix/store`, as Nix
    /// assumes.
    ///
    /// ```
    /// use cachecore::cache_info::CacheInfo;
    /// let info = CacheInfo::parse("StoreDir: /gnu/store\nWantMassQuery: 0\nFoo: bar\n").unwrap();
    /// assert_eq!(info.store_dir, "/gnu/store");
    /// assert_eq!(info.want_mass_query, Some(false));
    /// assert_eq!(info.priority, None);
    /// assert_eq!(info.extra, [("Foo".to_string(), "bar".to_string())]);
    /// assert_eq!(CacheInfo::parse("Priority: 10\n").unwrap().store_dir, "/nix/store");
    /// let e = CacheInfo::parse("StoreDir: /nix/store\nWantMassQuery: yes\n").unwrap_err();
    /// assert_eq!(e.line, 2);
    /// ```
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut info = CacheInfo {
            store_dir: String::new(),
            want_mass_query: None,
            priority: None,
            extra: vec![],
        };
        let mut saw_store_dir = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| ParseError { line, reason };
            let (key, value) = raw
                .split_once(':')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| {
                    bad(format!(
                        "\"{}\" is not a `Key: value` line",
                        crate::untrusted::excerpt(raw)
                    ))
                })?;
            match key {
                "StoreDir" => {
                    info.store_dir = value.to_owned();
                    saw_store_dir = true;
                }
                "WantMassQuery" => {
                    info.want_mass_query = Some(match value {
                        "1" => true,
                        "0" => false,
                        _ => {
                            return Err(bad(format!(
                                "WantMassQuery must be 0 or 1, found \"{}\"",
                                crate::untrusted::excerpt(value)
                            )))
                        }
                    })
                }
                "Priority" => {
                    info.priority = Some(value.parse().map_err(|_| {
                        bad(format!(
                            "Priority \"{}\" is not a number",
                            crate::untrusted::excerpt(value)
                        ))
                    })?)
                }
                _ => info.extra.push((key.to_owned(), value.to_owned())),
            }
        }
        if !saw_store_dir {
            // Nix itself defaults to /nix/store here.
            info.store_dir = crate::store_path::DEFAULT_STORE_DIR.to_owned();
        }
        Ok(info)
    }
}

impl fmt::Display for CacheInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StoreDir: {}", self.store_dir)?;
        if let Some(w) = self.want_mass_query {
            writeln!(f, "WantMassQuery: {}", u8::from(w))?;
        }
        if let Some(p) = self.priority {
            writeln!(f, "Priority: {p}")?;
        }
        for (k, v) in &self.extra {
            writeln!(f, "{k}: {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_written() {
        // What `nix copy --to file://…` writes.
        let text = "StoreDir: /nix/store\n";
        let info = CacheInfo::parse(text).unwrap();
        assert_eq!(info.priority, None);
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn errors() {
        let e = CacheInfo::parse("StoreDir: /nix/store\nPriority: high\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(CacheInfo::parse("garbage").is_err());
        assert!(CacheInfo::parse("WantMassQuery: yes").is_err());
    }
}
