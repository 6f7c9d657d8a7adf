//! The `<hash>.narinfo` file: what a binary cache says about one store path.
//!
//! Every field Nix writes is parsed into a typed value; fields we do not know are kept in order and
//! written back after the known ones. Serializing a narinfo Nix wrote gives back the same bytes.
//!
//! ```
//! use cachecore::narinfo::NarInfo;
//! let text = "StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n\
//! URL: nar/0a6hxwr0wv6xr8ak1nczcbvrzrz1m7mwd5r4c4yqbl4vpnn2sshx.nar.zst\n\
//! Compression: zstd\n\
//! FileHash: sha256:0a6hxwr0wv6xr8ak1nczcbvrzrz1m7mwd5r4c4yqbl4vpnn2sshx\n\
//! FileSize: 50184\n\
//! NarHash: sha256:1sj0vx2bq4q6c3dh8s1lk2whbp5gqxf7q1ri2k8b6fcmh0rbz5ap\n\
//! NarSize: 226552\n\
//! References: 7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n";
//! let info = NarInfo::parse(text).unwrap();
//! assert_eq!(info.nar_size, 226552);
//! assert_eq!(info.to_string(), text);
//! ```

use std::fmt::{self, Write as _};

use crate::hash::{self, Hash, HashAlgo};
use crate::signing::{PublicKey, Signature, Signer};
use crate::store_path::{self, StoreDir, StorePath};

/// The largest `NarSize` or `FileSize` accepted: 2^50 bytes (1 PiB). Far above any real store
/// path (S3 caps one object at 5 TiB), and low enough that 16,384 such sizes add up without
/// overflowing a `u64`, so totals cannot wrap; a larger value can only be hostile or corrupt.
pub const MAX_SIZE: u64 = 1 << 50;

/// The largest narinfo file readers accept: 1 MiB, room for about 15,000 references (real
/// narinfos are under 10 KiB). A cache serving a larger one is refused without reading it whole.
pub const MAX_NARINFO_BYTES: u64 = 1 << 20;

/// The longest value of a single-valued field (`StorePath`, `URL`, hashes, sizes, ...): longer
/// values are refused without being quoted.
const MAX_FIELD_LEN: usize = 4096;

/// Quotes a cache's text in a message (kept here, where it was first needed).
pub use crate::untrusted::excerpt;

/// What went wrong, and on which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("narinfo line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number (0 when the problem concerns the whole file).
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    #[error("\"{0}\" is not a `Key: value` line")]
    NotKeyValue(String),
    #[error("field {0} appears twice")]
    Duplicate(&'static str),
    #[error("required field {0} is missing")]
    Missing(&'static str),
    #[error("field {field}: {source}")]
    StorePath {
        field: &'static str,
        source: store_path::ParseError,
    },
    #[error("field {field}: {source}")]
    Hash {
        field: &'static str,
        source: hash::ParseError,
    },
    #[error("field {field}: \"{value}\" is not a non-negative integer")]
    Integer { field: &'static str, value: String },
    #[error("field {field}: {value} is larger than the {MAX_SIZE} bytes (2^50) cachecore accepts")]
    TooLarge { field: &'static str, value: u64 },
    #[error("field {field}: its value is {len} bytes long (at most {max} are accepted)")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("field CA: \"{0}\" is not `text:<hash>` or `fixed:[r:]<hash>`")]
    ContentAddress(String),
    #[error("the file is not valid UTF-8")]
    NotUtf8,
}

/// How a content-addressed path's address was computed (the `CA:` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentAddress {
    /// `text:<hash>`: a flat text file such as a `.drv`.
    Text(Hash),
    /// `fixed:<hash>` (flat file) or `fixed:r:<hash>` (NAR serialisation).
    Fixed { recursive: bool, hash: Hash },
}

impl ContentAddress {
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(h) = s.strip_prefix("text:") {
            return Hash::parse(h).ok().map(ContentAddress::Text);
        }
        let fixed = s.strip_prefix("fixed:")?;
        let (recursive, h) = match fixed.strip_prefix("r:") {
            Some(h) => (true, h),
            None => (false, fixed),
        };
        Hash::parse(h)
            .ok()
            .map(|hash| ContentAddress::Fixed { recursive, hash })
    }
}

impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentAddress::Text(h) => write!(f, "text:{h}"),
            ContentAddress::Fixed {
                recursive: true,
                hash,
            } => write!(f, "fixed:r:{hash}"),
            ContentAddress::Fixed {
                recursive: false,
                hash,
            } => write!(f, "fixed:{hash}"),
        }
    }
}

/// A parsed narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_dir: StoreDir,
    /// `StorePath`.
    pub store_path: StorePath,
    /// `URL`: where the (compressed) NAR is, relative to the cache root.
    pub url: String,
    /// `Compression`; Nix assumes `bzip2` when absent.
    pub compression: Option<String>,
    /// `FileHash`: hash of the compressed file.
    pub file_hash: Option<Hash>,
    /// `FileSize`: size of the compressed file.
    pub file_size: Option<u64>,
    /// `NarHash`: sha256 of the uncompressed NAR.
    pub nar_hash: Hash,
    /// `NarSize`: size of the uncompressed NAR.
    pub nar_size: u64,
    /// `References`, in file order (Nix writes them sorted).
    pub references: Vec<StorePath>,
    /// `Deriver`.
    pub deriver: Option<StorePath>,
    /// The file said `Deriver: unknown-deriver`, which Nix reads as no deriver; kept so the file
    /// prints back as it was.
    pub unknown_deriver: bool,
    /// `System`.
    pub system: Option<String>,
    /// `Sig`, one per line, as written. Nix accepts any text here and ignores what does not
    /// verify; so do we ([`Signature::parse`] reads one).
    pub signatures: Vec<String>,
    /// `CA`.
    pub ca: Option<ContentAddress>,
    /// Fields cachecore does not know, in file order.
    pub extra: Vec<(String, String)>,
}

/// The longest store path base name: a 32-character hash part, a dash, a 211-character name.
const MAX_BASE_NAME_LEN: usize = store_path::HASH_PART_LEN + 1 + store_path::MAX_NAME_LEN;

fn err(line: usize, kind: ParseErrorKind) -> ParseError {
    ParseError { line, kind }
}

impl NarInfo {
    /// A narinfo with the required fields and nothing else.
    ///
    /// ```
    /// use cachecore::hash::{Hash, HashAlgo};
    /// use cachecore::narinfo::NarInfo;
    /// use cachecore::store_path::{StoreDir, StorePath};
    /// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// let nar_hash = Hash::digest(HashAlgo::Sha256, b"the NAR");
    /// let mut info = NarInfo::new(StoreDir::default(), path, "nar/hello.nar".into(), nar_hash, 7);
    /// info.compression = Some("none".into());
    /// let text = info.to_string();
    /// assert!(text.starts_with("StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n"));
    /// assert!(text.contains("\nNarSize: 7\n"));
    /// assert_eq!(NarInfo::parse(&text).unwrap(), info);
    /// ```
    pub fn new(
        store_dir: StoreDir,
        store_path: StorePath,
        url: String,
        nar_hash: Hash,
        nar_size: u64,
    ) -> Self {
        NarInfo {
            store_dir,
            store_path,
            url,
            compression: None,
            file_hash: None,
            file_size: None,
            nar_hash,
            nar_size,
            references: Vec::new(),
            deriver: None,
            unknown_deriver: false,
            system: None,
            signatures: Vec::new(),
            ca: None,
            extra: Vec::new(),
        }
    }

    /// Parses raw bytes (must be UTF-8).
    ///
    /// ```
    /// use cachecore::narinfo::{NarInfo, ParseErrorKind};
    /// let e = NarInfo::parse_bytes(b"StorePath: /nix/store/\xff\n").unwrap_err();
    /// assert_eq!(e.kind, ParseErrorKind::NotUtf8);
    /// let e = NarInfo::parse_bytes(b"URL: nar/x.nar\n").unwrap_err();
    /// assert_eq!((e.line, e.kind), (0, ParseErrorKind::Missing("StorePath")));
    /// ```
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        std::str::from_utf8(bytes)
            .map_err(|_| err(0, ParseErrorKind::NotUtf8))
            .and_then(Self::parse)
    }

    /// Parses the text of a narinfo file.
    ///
    /// ```
    /// use cachecore::narinfo::{NarInfo, ParseErrorKind};
    /// let text = "StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n\
    /// URL: nar/0a6hxwr0wv6xr8ak1nczcbvrzrz1m7mwd5r4c4yqbl4vpnn2sshx.nar.zst\n\
    /// Compression: zstd\n\
    /// NarHash: sha256:1sj0vx2bq4q6c3dh8s1lk2whbp5gqxf7q1ri2k8b6fcmh0rbz5ap\n\
    /// NarSize: 226552\n\
    /// References: 7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n";
    /// let info = NarInfo::parse(text).unwrap();
    /// assert_eq!(info.store_path.name(), "hello-2.12");
    /// assert_eq!(info.compression.as_deref(), Some("zstd"));
    /// assert_eq!(info.nar_size, 226552);
    /// assert_eq!(info.references, [info.store_path.clone()]);
    /// assert_eq!(info.to_string(), text); // written back as Nix writes it
    /// // Every required field must be there.
    /// let e = NarInfo::parse("StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n")
    ///     .unwrap_err();
    /// assert!(matches!(e.kind, ParseErrorKind::Missing(_)));
    /// ```
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut store_path: Option<(StoreDir, StorePath)> = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut unknown_deriver = false;
        let mut system = None;
        let mut signatures = Vec::new();
        let mut ca = None;
        let mut extra = Vec::new();

        // Split on `\n` only, as Nix does: a `\r` belongs to the value.
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            if raw.is_empty() {
                continue;
            }
            let (key, value) = raw
                .split_once(':')
                .map(|(k, v)| (k, v.strip_prefix(' ').unwrap_or(v)))
                .ok_or_else(|| err(line, ParseErrorKind::NotKeyValue(excerpt(raw))))?;
            let single_valued = !matches!(key, "References" | "Sig") && !key.is_empty();
            if single_valued && value.len() > MAX_FIELD_LEN {
                return Err(err(
                    line,
                    ParseErrorKind::TooLong {
                        field: excerpt(key),
                        len: value.len(),
                        max: MAX_FIELD_LEN,
                    },
                ));
            }
            fn set<T>(
                slot: &mut Option<T>,
                line: usize,
                field: &'static str,
                value: T,
            ) -> Result<(), ParseError> {
                if slot.replace(value).is_some() {
                    return Err(err(line, ParseErrorKind::Duplicate(field)));
                }
                Ok(())
            }
            let path_err = |field, source| err(line, ParseErrorKind::StorePath { field, source });
            let hash_field = |field: &'static str| {
                Hash::parse(value)
                    .map_err(|source| err(line, ParseErrorKind::Hash { field, source }))
            };
            let int_field = |field: &'static str| {
                value.parse::<u64>().map_err(|_| {
                    err(
                        line,
                        ParseErrorKind::Integer {
                            field,
                            value: excerpt(value),
                        },
                    )
                })
            };
            let size_field = |field: &'static str| {
                let n = int_field(field)?;
                if n > MAX_SIZE {
                    return Err(err(line, ParseErrorKind::TooLarge { field, value: n }));
                }
                Ok(n)
            };
            match key {
                "StorePath" => {
                    let (dir, base) = value.rsplit_once('/').ok_or_else(|| {
                        path_err(
                            "StorePath",
                            store_path::ParseError::NotInStore {
                                path: value.to_owned(),
                                store_dir: "/…".into(),
                            },
                        )
                    })?;
                    let path =
                        StorePath::from_base_name(base).map_err(|e| path_err("StorePath", e))?;
                    set(
                        &mut store_path,
                        line,
                        "StorePath",
                        (StoreDir::new(dir), path),
                    )?;
                }
                "URL" => set(&mut url, line, "URL", value.to_owned())?,
                "Compression" => set(&mut compression, line, "Compression", value.to_owned())?,
                "FileHash" => set(&mut file_hash, line, "FileHash", hash_field("FileHash")?)?,
                "FileSize" => set(&mut file_size, line, "FileSize", size_field("FileSize")?)?,
                "NarHash" => set(&mut nar_hash, line, "NarHash", hash_field("NarHash")?)?,
                "NarSize" => set(&mut nar_size, line, "NarSize", size_field("NarSize")?)?,
                "References" => {
                    let refs = value
                        .split(' ')
                        .filter(|r| !r.is_empty())
                        .map(|r| {
                            if r.len() > MAX_BASE_NAME_LEN {
                                return Err(err(
                                    line,
                                    ParseErrorKind::TooLong {
                                        field: "References".to_owned(),
                                        len: r.len(),
                                        max: MAX_BASE_NAME_LEN,
                                    },
                                ));
                            }
                            StorePath::from_base_name(r).map_err(|e| path_err("References", e))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    set(&mut references, line, "References", refs)?;
                }
                "Deriver"
                    if value == "unknown-deriver" && deriver.is_none() && !unknown_deriver =>
                {
                    unknown_deriver = true;
                }
                "Deriver" => {
                    if unknown_deriver {
                        return Err(err(line, ParseErrorKind::Duplicate("Deriver")));
                    }
                    let d = StorePath::from_base_name(value).map_err(|e| path_err("Deriver", e))?;
                    set(&mut deriver, line, "Deriver", d)?;
                }
                "System" => set(&mut system, line, "System", value.to_owned())?,
                "Sig" => signatures.push(value.to_owned()),
                "CA" => {
                    let parsed = ContentAddress::parse(value)
                        .ok_or_else(|| err(line, ParseErrorKind::ContentAddress(excerpt(value))))?;
                    set(&mut ca, line, "CA", parsed)?;
                }
                _ => extra.push((key.to_owned(), value.to_owned())),
            }
        }

        let missing = |field| err(0, ParseErrorKind::Missing(field));
        let (store_dir, store_path) = store_path.ok_or_else(|| missing("StorePath"))?;
        Ok(NarInfo {
            store_dir,
            store_path,
            url: url.ok_or_else(|| missing("URL"))?,
            compression,
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or_else(|| missing("NarHash"))?,
            nar_size: nar_size.ok_or_else(|| missing("NarSize"))?,
            references: references.unwrap_or_default(),
            deriver,
            unknown_deriver,
            system,
            signatures,
            ca,
            extra,
        })
    }

    /// The compression of the NAR file, defaulting to `bzip2` as Nix does.
    ///
    /// ```
    /// use cachecore::hash::{Hash, HashAlgo};
    /// use cachecore::narinfo::NarInfo;
    /// use cachecore::store_path::{StoreDir, StorePath};
    /// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// let mut info = NarInfo::new(StoreDir::default(), path, "nar/x.nar.bz2".into(),
    ///     Hash::digest(HashAlgo::Sha256, b"nar"), 3);
    /// assert_eq!(info.compression, None);
    /// assert_eq!(info.compression_or_default(), "bzip2");
    /// info.compression = Some("zstd".into());
    /// assert_eq!(info.compression_or_default(), "zstd");
    /// ```
    pub fn compression_or_default(&self) -> &str {
        self.compression.as_deref().unwrap_or("bzip2")
    }

    /// The text Nix signs: `1;<store path>;<NarHash>;<NarSize>;<references, comma-separated>`.
    ///
    /// References are full paths in Nix's set order (sorted by base name).
    ///
    /// ```
    /// use cachecore::narinfo::NarInfo;
    /// let info = NarInfo::parse("StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n\
    /// URL: nar/0a6hxwr0wv6xr8ak1nczcbvrzrz1m7mwd5r4c4yqbl4vpnn2sshx.nar.zst\n\
    /// NarHash: sha256:1sj0vx2bq4q6c3dh8s1lk2whbp5gqxf7q1ri2k8b6fcmh0rbz5ap\n\
    /// NarSize: 226552\n\
    /// References: 7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n").unwrap();
    /// assert_eq!(info.fingerprint().unwrap(),
    ///     "1;/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12;\
    ///      sha256:1sj0vx2bq4q6c3dh8s1lk2whbp5gqxf7q1ri2k8b6fcmh0rbz5ap;226552;\
    ///      /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12");
    /// ```
    pub fn fingerprint(&self) -> Result<String, FingerprintError> {
        fingerprint(
            &self.store_dir,
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Signs with `signer`, replacing an earlier signature under the same key name.
    ///
    /// ```
    /// use cachecore::hash::{Hash, HashAlgo};
    /// use cachecore::{narinfo::NarInfo, signing::SecretKey};
    /// use cachecore::store_path::{StoreDir, StorePath};
    /// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// let mut info = NarInfo::new(StoreDir::default(), path, "nar/x.nar".into(),
    ///     Hash::digest(HashAlgo::Sha256, b"nar"), 3);
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// info.sign(&key).unwrap();
    /// info.sign(&key).unwrap(); // signing again replaces the signature
    /// assert_eq!(info.signatures.len(), 1);
    /// assert!(info.signatures[0].starts_with("cache.example.org-1:"));
    /// assert_eq!(info.valid_signatures(&[key.public_key()]).count(), 1);
    /// ```
    pub fn sign(&mut self, signer: &dyn Signer) -> Result<(), FingerprintError> {
        let sig = signer.sign(self.fingerprint()?.as_bytes());
        self.signatures
            .retain(|s| s.split_once(':').map(|(name, _)| name) != Some(sig.key_name()));
        self.signatures.push(sig.to_string());
        Ok(())
    }

    /// The signatures that one of `keys` verifies (malformed `Sig` lines verify nothing).
    ///
    /// ```
    /// use cachecore::narinfo::NarInfo;
    /// use cachecore::signing::{PublicKey, SecretKey};
    /// # let text = "StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12\n\
    /// # URL: nar/x.nar\nNarHash: sha256:1sj0vx2bq4q6c3dh8s1lk2whbp5gqxf7q1ri2k8b6fcmh0rbz5ap\n\
    /// # NarSize: 226552\n";
    /// let mut info = NarInfo::parse(text).unwrap();
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// info.sign(&key).unwrap();
    /// info.signatures.push("garbage".into()); // kept as written, verifies nothing
    /// let trusted: Vec<PublicKey> = vec![key.public_key()];
    /// let valid: Vec<_> = info.valid_signatures(&trusted).collect();
    /// assert_eq!(valid.len(), 1);
    /// assert_eq!(valid[0].key_name(), "cache.example.org-1");
    /// // Tampering with what the signature covers voids it.
    /// info.nar_size += 1;
    /// assert_eq!(info.valid_signatures(&trusted).count(), 0);
    /// ```
    pub fn valid_signatures<'a>(
        &'a self,
        keys: &'a [PublicKey],
    ) -> impl Iterator<Item = Signature> + 'a {
        let fp = self.fingerprint().ok();
        self.signatures.iter().filter_map(move |text| {
            let sig = Signature::parse(text).ok()?;
            let fp = fp.as_deref()?;
            keys.iter()
                .any(|k| k.verify(fp.as_bytes(), &sig))
                .then_some(sig)
        })
    }
}

/// The fingerprint cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("narinfo of {store_path}: NarHash must be sha256 to be signed, found {found}")]
pub struct FingerprintError {
    pub store_path: String,
    pub found: HashAlgo,
}

/// The one place the signature fingerprint is computed.
///
/// ```
/// use cachecore::hash::{Hash, HashAlgo};
/// use cachecore::narinfo::fingerprint;
/// use cachecore::store_path::{StoreDir, StorePath};
/// let lib = StorePath::from_base_name("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-lib").unwrap();
/// let app = StorePath::from_base_name("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app").unwrap();
/// let nar_hash = Hash::parse("sha256:1sj0vx2bq4q6c3dh8s1lk2whbp5gqxf7q1ri2k8b6fcmh0rbz5ap").unwrap();
/// // References are sorted and deduplicated.
/// let refs = [app.clone(), lib.clone(), app.clone()];
/// let fp = fingerprint(&StoreDir::default(), &app, &nar_hash, 42, &refs).unwrap();
/// assert_eq!(fp, "1;/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app;\
///     sha256:1sj0vx2bq4q6c3dh8s1lk2whbp5gqxf7q1ri2k8b6fcmh0rbz5ap;42;\
///     /nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-lib,/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app");
/// // Only a sha256 NarHash can be signed.
/// let sha1 = Hash::digest(HashAlgo::Sha1, b"");
/// assert!(fingerprint(&StoreDir::default(), &app, &sha1, 42, &[]).is_err());
/// ```
pub fn fingerprint(
    store_dir: &StoreDir,
    store_path: &StorePath,
    nar_hash: &Hash,
    nar_size: u64,
    references: &[StorePath],
) -> Result<String, FingerprintError> {
    if nar_hash.algo() != HashAlgo::Sha256 {
        return Err(FingerprintError {
            store_path: store_path.to_string(),
            found: nar_hash.algo(),
        });
    }
    let mut refs: Vec<&StorePath> = references.iter().collect();
    refs.sort();
    refs.dedup();
    let mut out = format!(
        "1;{};{};{};",
        store_dir.full_path(store_path),
        nar_hash,
        nar_size
    );
    for (i, r) in refs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&store_dir.full_path(r));
    }
    Ok(out)
}

impl fmt::Display for NarInfo {
    /// Writes the fields in the order Nix writes them, then unknown fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(512);
        // `write!` into a String cannot fail.
        let _ = writeln!(
            s,
            "StorePath: {}",
            self.store_dir.full_path(&self.store_path)
        );
        let _ = writeln!(s, "URL: {}", self.url);
        if let Some(c) = &self.compression {
            let _ = writeln!(s, "Compression: {c}");
        }
        if let Some(h) = &self.file_hash {
            let _ = writeln!(s, "FileHash: {h}");
        }
        if let Some(n) = self.file_size {
            let _ = writeln!(s, "FileSize: {n}");
        }
        let _ = writeln!(s, "NarHash: {}", self.nar_hash);
        let _ = writeln!(s, "NarSize: {}", self.nar_size);
        s.push_str("References:");
        if self.references.is_empty() {
            s.push(' ');
        }
        for r in &self.references {
            let _ = write!(s, " {r}");
        }
        s.push('\n');
        if let Some(d) = &self.deriver {
            let _ = writeln!(s, "Deriver: {d}");
        } else if self.unknown_deriver {
            s.push_str("Deriver: unknown-deriver\n");
        }
        if let Some(sys) = &self.system {
            let _ = writeln!(s, "System: {sys}");
        }
        for sig in &self.signatures {
            let _ = writeln!(s, "Sig: {sig}");
        }
        if let Some(ca) = &self.ca {
            let _ = writeln!(s, "CA: {ca}");
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "{k}: {v}");
        }
        f.write_str(&s)
    }
}

impl std::str::FromStr for NarInfo {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SecretKey;

    // Written and signed by Nix 2.8 (`nix copy --to file://…?secret-key=…`), key `test-1`.
    const NIX_WRITTEN: &str = include_str!("../testdata/nix-2.8-signed.narinfo");
    const NIX_PUBLIC: &str = "test-1:xPe4Rj2jXu16EVbSMTFKoMLWgatPQ7R2QiplrGwlfdI=";

    #[test]
    fn round_trip() {
        let info = NarInfo::parse(NIX_WRITTEN).unwrap();
        assert!(info.references.is_empty());
        assert_eq!(info.nar_size, 1424);
        assert!(matches!(
            info.ca,
            Some(ContentAddress::Fixed {
                recursive: true,
                ..
            })
        ));
        assert_eq!(info.to_string(), NIX_WRITTEN);
    }

    #[test]
    fn malformed_signatures_are_kept_and_never_verify() {
        let text = NIX_WRITTEN.replace("CA: ", "Sig: nonsense\nCA: ");
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.to_string(), text);
        let keys = [PublicKey::parse(NIX_PUBLIC).unwrap()];
        assert_eq!(info.valid_signatures(&keys).count(), 1);
    }

    #[test]
    fn quirks_print_back() {
        let text =
            NIX_WRITTEN.replace("References: \n", "References: \nDeriver: unknown-deriver\n");
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!((info.deriver.as_ref(), info.unknown_deriver), (None, true));
        assert_eq!(info.to_string(), text);
        // A lone `\r` is part of the value, and stays so through a round trip.
        let without_ca = NIX_WRITTEN.split("CA: ").next().unwrap_or_default();
        let cr = format!("{}\r", without_ca.trim_end());
        let info = NarInfo::parse(&cr).unwrap();
        assert_eq!(NarInfo::parse(&info.to_string()).unwrap(), info);
    }

    #[test]
    fn unknown_fields_kept() {
        let text = format!("{NIX_WRITTEN}X-Custom: hello: world\n");
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.extra, vec![("X-Custom".into(), "hello: world".into())]);
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn nix_signature_verifies() {
        let info = NarInfo::parse(NIX_WRITTEN).unwrap();
        let keys = [PublicKey::parse(NIX_PUBLIC).unwrap()];
        assert_eq!(info.valid_signatures(&keys).count(), 1);
        let mut tampered = info.clone();
        tampered.store_path =
            StorePath::from_base_name("lx5i78a4izwk2qj1nq8rdc07y8zrwy90-empty").unwrap();
        assert_eq!(tampered.valid_signatures(&keys).count(), 0);
    }

    #[test]
    fn sign_and_verify() {
        let mut info = NarInfo::parse(NIX_WRITTEN).unwrap();
        info.signatures.clear();
        assert_eq!(
            info.fingerprint().unwrap(),
            "1;/nix/store/rd3brlp6js96f3fybsyb9kv4cfac7b0a-t;\
             sha256:0vfgshfvqnjjiwlnqm2k5p56ilqr3gawyqxiraasqhiy762cqpw0;1424;"
        );
        let key = SecretKey::generate("k-1").unwrap();
        info.sign(&key).unwrap();
        info.sign(&key).unwrap();
        assert_eq!(info.signatures.len(), 1);
        let reparsed = NarInfo::parse(&info.to_string()).unwrap();
        let keys = [key.public_key()];
        assert_eq!(reparsed.valid_signatures(&keys).count(), 1);
        let mut tampered = reparsed.clone();
        tampered.nar_size += 1;
        assert_eq!(tampered.valid_signatures(&keys).count(), 0);
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            (
                NIX_WRITTEN.replace("NarSize: 1424", "NarSize: -1"),
                "line 7: field NarSize",
            ),
            (
                NIX_WRITTEN.replace("FileSize: 1424", "FileSize 1424"),
                "line 5: \"FileSize 1424\" is not",
            ),
            (
                NIX_WRITTEN.replace("URL: nar/", "URL: nar/\nURL: x"),
                "line 3: field URL appears twice",
            ),
            (
                NIX_WRITTEN.replace("NarHash: sha256:0", "NarHash: sha256:e"),
                "line 6: field NarHash",
            ),
            (
                NIX_WRITTEN.replace("References: ", "References: nope"),
                "line 8: field References",
            ),
            (
                NIX_WRITTEN.replace("StorePath: /nix/store/rd3", "StorePath: rd3"),
                "line 1: field StorePath",
            ),
            (
                NIX_WRITTEN.replace("NarSize: 1424\n", ""),
                "required field NarSize is missing",
            ),
            (
                NIX_WRITTEN.replace("CA: fixed", "CA: weird"),
                "line 10: field CA",
            ),
        ];
        for (text, expected) in cases {
            let e = NarInfo::parse(&text).expect_err(expected).to_string();
            assert!(e.contains(expected), "{e:?} should contain {expected:?}");
        }
        assert!(NarInfo::parse_bytes(b"\xff").is_err());
    }

    #[test]
    fn absurd_sizes_and_long_values_are_refused_without_quoting_them_whole() {
        let at_cap = NIX_WRITTEN.replace("NarSize: 1424", &format!("NarSize: {MAX_SIZE}"));
        assert_eq!(NarInfo::parse(&at_cap).unwrap().nar_size, MAX_SIZE);
        for field in ["NarSize", "FileSize"] {
            let text = NIX_WRITTEN.replace(
                &format!("{field}: 1424"),
                &format!("{field}: 18446744073709551615"),
            );
            let e = NarInfo::parse(&text).unwrap_err();
            assert!(
                matches!(
                    e.kind,
                    ParseErrorKind::TooLarge {
                        value: u64::MAX,
                        ..
                    }
                ),
                "{e}"
            );
        }
        let long = "x".repeat(1 << 20);
        for text in [
            format!("{NIX_WRITTEN}{long}\n"),
            NIX_WRITTEN.replace("URL: nar/", &format!("URL: nar/{long}")),
            NIX_WRITTEN.replace("References: ", &format!("References: {long}")),
            NIX_WRITTEN.replace("NarSize: 1424", &format!("NarSize: 1{long}")),
        ] {
            let e = NarInfo::parse(&text).unwrap_err().to_string();
            assert!(e.len() < 200, "{} bytes: {}", e.len(), &e[..200]);
        }
    }
}
