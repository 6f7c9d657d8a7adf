//! The `.ls` listing Nix writes next to a narinfo: a NAR's tree as JSON, with each regular file's
//! `narOffset` so a reader can fetch one file by range.
//!
//! ```json
//! {"version":1,"root":{"type":"directory","entries":{
//!   "bin":{"type":"directory","entries":{"app":{"type":"regular","size":5,"executable":true,"narOffset":400}}},
//!   "lib":{"type":"symlink","target":"bin"}}}}
//! ```
//!
//! `"executable"` appears only when true and `"narOffset"` only when known, as in Nix's output.
//! Names and symlink targets are JSON strings: bytes that are not UTF-8 are replaced by U+FFFD
//! (Nix's own output is not valid JSON there either). Of two names that become equal that way,
//! the listing keeps the last. Parsed listings are checked like NARs: entry names must be valid
//! NAR names.
//!
//! Parsing uses serde_json, whose recursion limit (128) caps parsed listings at 63 nested
//! directories; deeper ones are reported as invalid JSON.

use std::collections::BTreeMap;
use std::io::Read;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::reader::{Event, ReadError, Reader};
use super::wire;
use crate::untrusted::Untrusted;

/// A NAR listing (`{"version":1,"root":...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub root: ListingNode,
}

/// One node of a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ListingNode {
    Regular {
        size: u64,
        #[serde(skip_serializing_if = "is_false")]
        executable: bool,
        /// NAR offset of the first content byte; `None` when the listing did not say.
        #[serde(rename = "narOffset", skip_serializing_if = "Option::is_none")]
        nar_offset: Option<u64>,
    },
    Symlink {
        target: String,
    },
    Directory {
        entries: BTreeMap<String, ListingNode>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A NAR's tree with names and symlink targets exactly as the NAR holds them (bytes: Nix
/// requires no encoding), for a reader that must show them as they are (the mount). A
/// [`ListingNode`] is what a listing's JSON can say; this is what a NAR says.
///
/// ```
/// use cachecore::nar::{self, ExactNode, ListingNode};
/// # let dir = tempfile::tempdir().unwrap();
/// # let pkg = dir.path().join("pkg");
/// # std::fs::create_dir(&pkg).unwrap();
/// use std::os::unix::ffi::OsStrExt as _;
/// std::fs::write(pkg.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "x").unwrap();
/// let mut bytes = Vec::new();
/// nar::dump(&pkg, &mut bytes).unwrap();
/// let tree = ExactNode::from_nar(&bytes[..]).unwrap();
/// let ExactNode::Directory { entries } = &tree else { panic!() };
/// assert!(entries.contains_key(&b"caf\xe9"[..]));
/// // A listing cannot say it: the name comes out with U+FFFD.
/// let ListingNode::Directory { entries } = ListingNode::from(tree) else { panic!() };
/// assert!(entries.contains_key("caf\u{FFFD}"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExactNode {
    Regular {
        size: u64,
        executable: bool,
        /// NAR offset of the first content byte (`None` only when made from a listing that did
        /// not say).
        nar_offset: Option<u64>,
    },
    Symlink {
        target: Vec<u8>,
    },
    Directory {
        entries: BTreeMap<Vec<u8>, ExactNode>,
    },
}

impl ExactNode {
    /// The tree of a NAR, validating all of it (see [`Reader`]).
    pub fn from_nar(nar: impl Read) -> Result<ExactNode, ReadError> {
        let mut reader = Reader::new(nar);
        // Open directories' entries, and the names of the entries whose node is being read.
        let mut dirs: Vec<Vec<(Vec<u8>, ExactNode)>> = Vec::new();
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut root = None;
        while let Some(event) = reader.next()? {
            let node = match event {
                Event::File {
                    executable,
                    size,
                    nar_offset,
                } => ExactNode::Regular {
                    size,
                    executable,
                    nar_offset: Some(nar_offset),
                },
                Event::Symlink { target } => ExactNode::Symlink {
                    target: target.to_vec(),
                },
                Event::DirectoryStart => {
                    dirs.push(Vec::new());
                    continue;
                }
                Event::Entry { name } => {
                    names.push(name.to_vec());
                    continue;
                }
                Event::EntryEnd => continue,
                Event::DirectoryEnd => ExactNode::Directory {
                    entries: dirs.pop().unwrap_or_default().into_iter().collect(),
                },
            };
            match (names.pop(), dirs.last_mut()) {
                (Some(name), Some(dir)) => dir.push((name, node)),
                _ => root = Some(node),
            }
        }
        // The reader only ends after a complete root node.
        Ok(root.unwrap_or(ExactNode::Directory {
            entries: BTreeMap::new(),
        }))
    }
}

impl From<ListingNode> for ExactNode {
    fn from(node: ListingNode) -> ExactNode {
        match node {
            ListingNode::Regular {
                size,
                executable,
                nar_offset,
            } => ExactNode::Regular {
                size,
                executable,
                nar_offset,
            },
            ListingNode::Symlink { target } => ExactNode::Symlink {
                target: target.into_bytes(),
            },
            ListingNode::Directory { entries } => ExactNode::Directory {
                entries: entries
                    .into_iter()
                    .map(|(name, child)| (name.into_bytes(), child.into()))
                    .collect(),
            },
        }
    }
}

/// What a listing can say of the tree: names and targets that are not UTF-8 get U+FFFD (see
/// [`Listing::may_have_lost_bytes`]).
impl From<ExactNode> for ListingNode {
    fn from(node: ExactNode) -> ListingNode {
        match node {
            ExactNode::Regular {
                size,
                executable,
                nar_offset,
            } => ListingNode::Regular {
                size,
                executable,
                nar_offset,
            },
            ExactNode::Symlink { target } => ListingNode::Symlink {
                target: String::from_utf8_lossy(&target).into_owned(),
            },
            ExactNode::Directory { entries } => ListingNode::Directory {
                entries: entries
                    .into_iter()
                    .map(|(name, child)| {
                        (String::from_utf8_lossy(&name).into_owned(), child.into())
                    })
                    .collect(),
            },
        }
    }
}

/// A listing that cannot be parsed; `path` is a JSON Pointer (RFC 6901) to the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListingError {
    #[error("listing is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("listing at {}: unsupported version {} (expected 1)", Untrusted(.path), Untrusted(.found))]
    UnsupportedVersion { path: String, found: String },
    #[error("listing at {}: unknown node type {}", Untrusted(.path), Untrusted(.found))]
    UnknownNodeType { path: String, found: String },
    #[error("listing at {}: missing {field:?}", Untrusted(or_top(.path)))]
    MissingField { path: String, field: &'static str },
    #[error("listing at {}: expected {expected}", Untrusted(or_top(.path)))]
    WrongType {
        path: String,
        expected: &'static str,
    },
    #[error("listing at {}: invalid entry name {name:?} ({reason})", Untrusted(.path))]
    InvalidName {
        path: String,
        name: String,
        reason: &'static str,
    },
}

fn or_top(path: &str) -> &str {
    if path.is_empty() {
        "top level"
    } else {
        path
    }
}

impl Listing {
    /// Parses a listing from JSON.
    ///
    /// ```
    /// use cachecore::nar::{Listing, ListingNode};
    /// let json = br#"{"version":1,"root":{"type":"directory","entries":{
    ///     "bin":{"type":"directory","entries":{"hello":{"type":"regular","size":13,"executable":true,"narOffset":400}}},
    ///     "lib":{"type":"symlink","target":"bin"}}}}"#;
    /// let listing = Listing::parse(json).unwrap();
    /// let hello = listing.get("/bin/hello").unwrap();
    /// assert_eq!(*hello, ListingNode::Regular { size: 13, executable: true, nar_offset: Some(400) });
    /// assert!(matches!(listing.get("lib"), Some(ListingNode::Symlink { target }) if target == "bin"));
    /// assert!(Listing::parse(br#"{"version":2,"root":{}}"#).is_err());
    /// ```
    pub fn parse(json: &[u8]) -> Result<Listing, ListingError> {
        let value: Value = serde_json::from_slice(json).map_err(ListingError::Json)?;
        Listing::from_value(&value)
    }

    /// Builds the listing of a NAR, validating all of it (see [`Reader`]).
    ///
    /// ```
    /// use cachecore::nar::{self, Listing};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::create_dir(dir.path().join("pkg")).unwrap();
    /// # std::fs::write(dir.path().join("pkg/hello"), "hi\n").unwrap();
    /// let mut bytes = Vec::new();
    /// let packed = nar::pack(&dir.path().join("pkg"), &mut bytes).unwrap();
    /// // Reading the NAR back gives the listing `pack` made, offsets included.
    /// assert_eq!(Listing::from_nar(&bytes[..]).unwrap(), packed);
    /// assert!(Listing::from_nar(&bytes[..bytes.len() - 8]).is_err()); // truncated
    /// ```
    pub fn from_nar(nar: impl Read) -> Result<Listing, ReadError> {
        Ok(Listing {
            root: ExactNode::from_nar(nar)?.into(),
        })
    }

    /// Whether a name or symlink target holds U+FFFD, the character that stands for bytes
    /// that are not UTF-8: a listing is JSON text, so the names of a NAR whose names are not
    /// all UTF-8 (Nix allows any bytes but `/` and NUL) cannot be written in one exactly, and a
    /// listing written from such a NAR lost them (cachecore's push wrote U+FFFD, and now writes
    /// no listing for such a NAR; Nix writes the raw bytes, which no JSON parser takes). A
    /// reader that must show names exactly builds the tree from the NAR instead
    /// ([`ExactNode::from_nar`]).
    ///
    /// ```
    /// use cachecore::nar::Listing;
    /// let exact = Listing::parse(br#"{"version":1,"root":{"type":"directory","entries":{
    ///     "caf\u00e9":{"type":"regular","size":1,"narOffset":232}}}}"#).unwrap();
    /// assert!(!exact.may_have_lost_bytes());
    /// let lossy = Listing::parse(br#"{"version":1,"root":{"type":"directory","entries":{
    ///     "caf\ufffd":{"type":"regular","size":1,"narOffset":232}}}}"#).unwrap();
    /// assert!(lossy.may_have_lost_bytes());
    /// ```
    pub fn may_have_lost_bytes(&self) -> bool {
        fn lost(node: &ListingNode) -> bool {
            match node {
                ListingNode::Regular { .. } => false,
                ListingNode::Symlink { target } => target.contains('\u{FFFD}'),
                ListingNode::Directory { entries } => entries
                    .iter()
                    .any(|(name, child)| name.contains('\u{FFFD}') || lost(child)),
            }
        }
        lost(&self.root)
    }

    /// The node at `path` ("bin/app"; a leading "/" and empty components are ignored, so ""
    /// and "/" are the root). Symlinks are not followed.
    pub fn get(&self, path: &str) -> Option<&ListingNode> {
        let mut node = &self.root;
        for name in path.split('/').filter(|c| !c.is_empty()) {
            match node {
                ListingNode::Directory { entries } => node = entries.get(name)?,
                _ => return None,
            }
        }
        Some(node)
    }

    /// The node at `path` (as [`get`](Self::get) finds it) read straight out of a listing's
    /// JSON without building the rest: entries off the way are skipped (their JSON syntax is
    /// still checked, nothing else), so reading one file's node out of a listing of thousands
    /// costs a scan of the text and no allocation per entry. What is on the way is checked as
    /// [`parse`](Self::parse) checks it: the version, each directory's entry named on the way,
    /// and the node found. `Ok(None)` when there is no such node.
    ///
    /// ```
    /// use cachecore::nar::{Listing, ListingNode};
    /// let json = br#"{"version":1,"root":{"type":"directory","entries":{
    ///     "bin":{"type":"directory","entries":{"app":{"type":"regular","size":5,"narOffset":400}}},
    ///     "lib":{"type":"symlink","target":"bin"}}}}"#;
    /// let node = Listing::parse_node(json, "bin/app").unwrap();
    /// assert_eq!(node, Some(ListingNode::Regular { size: 5, executable: false, nar_offset: Some(400) }));
    /// assert_eq!(Listing::parse_node(json, "bin/none").unwrap(), None);
    /// assert_eq!(Listing::parse_node(json, "lib/app").unwrap(), None);
    /// ```
    pub fn parse_node(json: &[u8], path: &str) -> Result<Option<ListingNode>, ListingError> {
        let names: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut de = serde_json::Deserializer::from_slice(json);
        let found = serde::de::DeserializeSeed::deserialize(TopSeed { names: &names }, &mut de)
            .map_err(ListingError::Json)?;
        de.end().map_err(ListingError::Json)?;
        found
    }

    /// Every node with its path ("" for the root, then "bin", "bin/app", ...), depth first in
    /// NAR order (entries sorted).
    pub fn walk(&self) -> Walk<'_> {
        Walk {
            stack: vec![(String::new(), &self.root)],
        }
    }

    /// Checks that this listing describes `nar`: the same nodes at the same paths, in NAR
    /// order, with the same types, sizes, executable bits, symlink targets and — where the
    /// listing gives one — `narOffset`s. Streams: reads the NAR only as far as the first
    /// difference and builds nothing of it, so memory is this listing's plus the reader's.
    /// `Ok(Err(_))` names the first difference; `Err(_)` is a NAR that does not read.
    ///
    /// ```
    /// use cachecore::nar::{self, Listing};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::create_dir(dir.path().join("pkg")).unwrap();
    /// # std::fs::write(dir.path().join("pkg/hello"), "hi\n").unwrap();
    /// let mut bytes = Vec::new();
    /// let listing = nar::pack(&dir.path().join("pkg"), &mut bytes).unwrap();
    /// assert_eq!(listing.check_nar(&bytes[..]).unwrap(), Ok(()));
    /// let forged = Listing::parse(br#"{"version":1,"root":{"type":"directory","entries":{
    ///     "hello":{"type":"symlink","target":"/etc/shadow"}}}}"#).unwrap();
    /// let wrong = forged.check_nar(&bytes[..]).unwrap().unwrap_err();
    /// assert_eq!(wrong.to_string(), "the listing has \"hello\": a symlink to \"/etc/shadow\" \
    ///     where the NAR has \"hello\": a regular file of 3 bytes at NAR offset 232");
    /// ```
    pub fn check_nar(&self, nar: impl Read) -> Result<Result<(), ListingMismatch>, ReadError> {
        let mut listed = self.walk();
        let mut reader = Reader::new(nar);
        let mut names: Vec<String> = Vec::new();
        while let Some(event) = reader.next()? {
            let actual = match event {
                Event::File {
                    executable,
                    size,
                    nar_offset,
                } => ListingNode::Regular {
                    size,
                    executable,
                    nar_offset: Some(nar_offset),
                },
                Event::Symlink { target } => ListingNode::Symlink {
                    target: String::from_utf8_lossy(target).into_owned(),
                },
                Event::DirectoryStart => ListingNode::Directory {
                    entries: BTreeMap::new(),
                },
                Event::Entry { name } => {
                    names.push(String::from_utf8_lossy(name).into_owned());
                    continue;
                }
                Event::EntryEnd => {
                    names.pop();
                    continue;
                }
                Event::DirectoryEnd => continue,
            };
            let path = names.join("/");
            let next = listed.next();
            if !next
                .as_ref()
                .is_some_and(|(p, node)| *p == path && describes(node, &actual))
            {
                return Ok(Err(ListingMismatch {
                    listed: next.map_or_else(nothing_more, |(p, n)| describe(&p, n)),
                    actual: describe(&path, &actual),
                }));
            }
        }
        Ok(match listed.next() {
            None => Ok(()),
            Some((p, node)) => Err(ListingMismatch {
                listed: describe(&p, node),
                actual: nothing_more(),
            }),
        })
    }

    fn from_value(value: &Value) -> Result<Listing, ListingError> {
        let mut path = String::new();
        let obj = as_object(value, &path)?;
        let version = field(obj, "version", &path)?;
        if version.as_u64() != Some(1) {
            return Err(ListingError::UnsupportedVersion {
                path: "/version".into(),
                found: version.to_string(),
            });
        }
        let root = field(obj, "root", &path)?;
        path.push_str("/root");
        Ok(Listing {
            root: node_from_value(root, &mut path)?,
        })
    }
}

/// Where a [`Listing`] says something other than its NAR (see [`Listing::check_nar`]): the
/// first node, in NAR order, that differs, as each side has it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the listing has {listed} where the NAR has {actual}")]
pub struct ListingMismatch {
    /// The listing's node there (`"bin/app": a regular file of …`), or "nothing more".
    pub listed: String,
    /// The NAR's node there, or "nothing more".
    pub actual: String,
}

/// Whether the listed node is the NAR's `actual` one, entries aside (the walk compares them
/// one by one); a `narOffset` the listing leaves out is not compared.
fn describes(listed: &ListingNode, actual: &ListingNode) -> bool {
    match (listed, actual) {
        (
            ListingNode::Regular {
                size,
                executable,
                nar_offset,
            },
            ListingNode::Regular {
                size: s,
                executable: x,
                nar_offset: o,
            },
        ) => size == s && executable == x && (nar_offset.is_none() || nar_offset == o),
        (ListingNode::Symlink { target }, ListingNode::Symlink { target: t }) => target == t,
        (ListingNode::Directory { .. }, ListingNode::Directory { .. }) => true,
        _ => false,
    }
}

/// One node for a [`ListingMismatch`]; names and targets quoted and escaped (they are a
/// cache's text), long ones cut short.
fn describe(path: &str, node: &ListingNode) -> String {
    let at = if path.is_empty() {
        "the root".to_owned()
    } else {
        format!("{:?}", crate::narinfo::excerpt(path))
    };
    match node {
        ListingNode::Regular {
            size,
            executable,
            nar_offset,
        } => {
            let x = if *executable {
                "an executable"
            } else {
                "a regular"
            };
            let offset = nar_offset.map_or(String::new(), |o| format!(" at NAR offset {o}"));
            format!("{at}: {x} file of {size} bytes{offset}")
        }
        ListingNode::Symlink { target } => {
            format!("{at}: a symlink to {:?}", crate::narinfo::excerpt(target))
        }
        ListingNode::Directory { .. } => format!("{at}: a directory"),
    }
}

fn nothing_more() -> String {
    "nothing more".to_owned()
}

/// `{"version":1,"root":…}`, looking for the node at `names` under the root.
struct TopSeed<'a> {
    names: &'a [&'a str],
}

/// What a seed found: the node (or `None`), or a listing error found on the way (kept apart
/// from JSON errors, which serde reports with their position).
type Found = Result<Option<ListingNode>, ListingError>;

impl<'de> serde::de::DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopSeed<'_> {
    type Value = Found;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a listing object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut version = None;
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "version" => version = Some(map.next_value::<Value>()?),
                "root" => {
                    found = Some(map.next_value_seed(NodeSeed {
                        names: self.names,
                        path: "/root".to_owned(),
                    })?)
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let Some(version) = version else {
            return Ok(Err(ListingError::MissingField {
                path: String::new(),
                field: "version",
            }));
        };
        if version.as_u64() != Some(1) {
            return Ok(Err(ListingError::UnsupportedVersion {
                path: "/version".into(),
                found: version.to_string(),
            }));
        }
        Ok(found.unwrap_or(Err(ListingError::MissingField {
            path: String::new(),
            field: "root",
        })))
    }
}

/// A node, looking for `names` under it; with no names left, the node itself (parsed whole).
struct NodeSeed<'a> {
    names: &'a [&'a str],
    /// JSON Pointer of the node, for errors.
    path: String,
}

impl<'de> serde::de::DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        let Some((first, rest)) = self.names.split_first() else {
            let value = Value::deserialize(d)?;
            let mut path = self.path;
            return Ok(node_from_value(&value, &mut path).map(Some));
        };
        d.deserialize_map(DirSeed {
            name: first,
            rest,
            path: self.path,
        })
    }
}

/// A node that must be a directory with an entry `name`, under which `rest` is looked for.
struct DirSeed<'a> {
    name: &'a str,
    rest: &'a [&'a str],
    path: String,
}

impl<'de> serde::de::Visitor<'de> for DirSeed<'_> {
    type Value = Found;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a listing node object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut kind = None;
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "type" => kind = Some(map.next_value::<Value>()?),
                "entries" => {
                    let mut path = self.path.clone();
                    path.push_str("/entries");
                    found = Some(map.next_value_seed(EntriesSeed {
                        name: self.name,
                        rest: self.rest,
                        path,
                    })?)
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        match kind.as_ref().map(Value::as_str) {
            // Not a directory (or not a node): nothing is under it, as `Listing::get` says.
            Some(Some("directory")) => Ok(found.unwrap_or(Err(ListingError::MissingField {
                path: self.path,
                field: "entries",
            }))),
            Some(Some("regular" | "symlink")) => Ok(Ok(None)),
            Some(other) => Ok(Err(ListingError::UnknownNodeType {
                path: format!("{}/type", self.path),
                found: other.map_or_else(|| "a non-string".to_owned(), str::to_owned),
            })),
            None => Ok(Err(ListingError::MissingField {
                path: self.path,
                field: "type",
            })),
        }
    }
}

/// A directory's `entries`, looking for `name`.
struct EntriesSeed<'a> {
    name: &'a str,
    rest: &'a [&'a str],
    path: String,
}

impl<'de> serde::de::DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntriesSeed<'_> {
    type Value = Found;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a directory's entries object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Ok(None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key.as_ref() != self.name {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            if let Some(reason) = wire::name_problem(key.as_bytes()) {
                map.next_value::<serde::de::IgnoredAny>()?;
                found = Err(ListingError::InvalidName {
                    path: self.path.clone(),
                    name: key.into_owned(),
                    reason,
                });
                continue;
            }
            let mut path = self.path.clone();
            push_segment(&mut path, &key);
            // Of two equal names, the last one counts, as in `Listing::parse`.
            found = map.next_value_seed(NodeSeed {
                names: self.rest,
                path,
            })?;
        }
        Ok(found)
    }
}

/// Iterator over a listing's nodes; see [`Listing::walk`].
#[derive(Debug)]
pub struct Walk<'a> {
    /// Nodes still to visit, the next on top.
    stack: Vec<(String, &'a ListingNode)>,
}

impl<'a> Iterator for Walk<'a> {
    type Item = (String, &'a ListingNode);

    fn next(&mut self) -> Option<Self::Item> {
        let (path, node) = self.stack.pop()?;
        if let ListingNode::Directory { entries } = node {
            for (name, child) in entries.iter().rev() {
                let child_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                self.stack.push((child_path, child));
            }
        }
        Some((path, node))
    }
}

fn as_object<'v>(value: &'v Value, path: &str) -> Result<&'v Map<String, Value>, ListingError> {
    value.as_object().ok_or_else(|| ListingError::WrongType {
        path: path.into(),
        expected: "an object",
    })
}

fn field<'v>(
    obj: &'v Map<String, Value>,
    name: &'static str,
    path: &str,
) -> Result<&'v Value, ListingError> {
    obj.get(name).ok_or_else(|| ListingError::MissingField {
        path: path.into(),
        field: name,
    })
}

/// Appends a JSON Pointer segment.
fn push_segment(path: &mut String, segment: &str) {
    path.push('/');
    for c in segment.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn wrong(path: &str, segment: &str, expected: &'static str) -> ListingError {
    let mut path = path.to_owned();
    push_segment(&mut path, segment);
    ListingError::WrongType { path, expected }
}

fn node_from_value(value: &Value, path: &mut String) -> Result<ListingNode, ListingError> {
    let obj = as_object(value, path)?;
    let kind = field(obj, "type", path)?;
    match kind.as_str() {
        Some("regular") => {
            let size = field(obj, "size", path)?
                .as_u64()
                .ok_or_else(|| wrong(path, "size", "a non-negative integer"))?;
            let executable = match obj.get("executable") {
                None => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| wrong(path, "executable", "a boolean"))?,
            };
            let nar_offset = match obj.get("narOffset") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or_else(|| wrong(path, "narOffset", "a non-negative integer"))?,
                ),
            };
            Ok(ListingNode::Regular {
                size,
                executable,
                nar_offset,
            })
        }
        Some("symlink") => {
            let target = field(obj, "target", path)?
                .as_str()
                .ok_or_else(|| wrong(path, "target", "a string"))?;
            Ok(ListingNode::Symlink {
                target: target.to_owned(),
            })
        }
        Some("directory") => {
            let entries = field(obj, "entries", path)?
                .as_object()
                .ok_or_else(|| wrong(path, "entries", "an object"))?;
            let len = path.len();
            path.push_str("/entries");
            let mut out = BTreeMap::new();
            for (name, child) in entries {
                if let Some(reason) = wire::name_problem(name.as_bytes()) {
                    return Err(ListingError::InvalidName {
                        path: path.clone(),
                        name: name.clone(),
                        reason,
                    });
                }
                let len = path.len();
                push_segment(path, name);
                out.insert(name.clone(), node_from_value(child, path)?);
                path.truncate(len);
            }
            path.truncate(len);
            Ok(ListingNode::Directory { entries: out })
        }
        _ => {
            let mut path = path.clone();
            path.push_str("/type");
            Err(ListingError::UnknownNodeType {
                path,
                found: kind.to_string(),
            })
        }
    }
}

impl Serialize for Listing {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Listing", 2)?;
        st.serialize_field("version", &1)?;
        st.serialize_field("root", &self.root)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Listing::from_value(&value).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ListingNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        node_from_value(&value, &mut String::new()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::reader::tests::{nar, sample};
    use super::*;

    /// The listing built from the NAR Nix 2.8 dumped is the `.ls` Nix wrote for it, offsets
    /// included, and the NAR is the one its narinfo (written by the same `nix copy`) describes.
    #[test]
    fn a_nar_and_the_listing_nix_wrote_for_it_agree() {
        let nar_bytes = include_bytes!("../../testdata/nix-2.8.nar");
        let ours = Listing::from_nar(&nar_bytes[..]).unwrap();
        let nix = Listing::parse(include_bytes!("../../testdata/nix-2.8.ls")).unwrap();
        assert_eq!(ours, nix);
        let narinfo =
            crate::narinfo::NarInfo::parse(include_str!("../../testdata/nix-2.8-signed.narinfo"))
                .unwrap();
        assert_eq!(narinfo.nar_size, nar_bytes.len() as u64);
        assert_eq!(
            narinfo.nar_hash,
            crate::hash::Hash::digest(crate::hash::HashAlgo::Sha256, nar_bytes)
        );
    }

    /// Every way a listing can differ from its NAR is found, as the first difference in NAR
    /// order; a listing without offsets still matches.
    #[test]
    fn check_nar_finds_each_difference() {
        let nar = sample();
        let json = |root: &str| {
            Listing::parse(format!(r#"{{"version":1,"root":{root}}}"#).as_bytes()).unwrap()
        };
        let a = r#""a":{"type":"regular","size":10,"executable":true,"narOffset":264}"#;
        let b = r#""b":{"type":"directory","entries":{"c":{"type":"symlink","target":"../a"}}}"#;
        let d = r#""d":{"type":"regular","size":0,"narOffset":824}"#;
        let dir = |entries: &[&str]| {
            format!(
                r#"{{"type":"directory","entries":{{{}}}}}"#,
                entries.join(",")
            )
        };
        assert_eq!(json(&dir(&[a, b, d])).check_nar(&nar[..]).unwrap(), Ok(()));
        let no_offsets = dir(&[a, b, d])
            .replace(r#","narOffset":264"#, "")
            .replace(r#","narOffset":824"#, "");
        assert_eq!(json(&no_offsets).check_nar(&nar[..]).unwrap(), Ok(()));
        let a264 = "at NAR offset 264";
        let d824 = r#""d": a regular file of 0 bytes at NAR offset 824"#;
        let cases = [
            // An invented entry among the real ones, and after them.
            (
                dir(&[a, r#""aa":{"type":"symlink","target":"/etc/shadow"}"#, b, d]),
                r#""aa": a symlink to "/etc/shadow""#.to_owned(),
                r#""b": a directory"#.to_owned(),
            ),
            (
                dir(&[a, b, d, r#""e":{"type":"regular","size":1}"#]),
                r#""e": a regular file of 1 bytes"#.to_owned(),
                "nothing more".to_owned(),
            ),
            // An entry left out.
            (
                dir(&[a, d]),
                d824.to_owned(),
                r#""b": a directory"#.to_owned(),
            ),
            (dir(&[a, b]), "nothing more".to_owned(), d824.to_owned()),
            // Size, executable bit, offset, symlink target.
            (
                dir(&[&a.replace("10", "11"), b, d]),
                format!(r#""a": an executable file of 11 bytes {a264}"#),
                format!(r#""a": an executable file of 10 bytes {a264}"#),
            ),
            (
                dir(&[&a.replace(r#""executable":true,"#, ""), b, d]),
                format!(r#""a": a regular file of 10 bytes {a264}"#),
                format!(r#""a": an executable file of 10 bytes {a264}"#),
            ),
            (
                dir(&[a, b, &d.replace("824", "8")]),
                d824.replace("824", "8"),
                d824.to_owned(),
            ),
            (
                dir(&[a, &b.replace("../a", "/etc/shadow"), d]),
                r#""b/c": a symlink to "/etc/shadow""#.to_owned(),
                r#""b/c": a symlink to "../a""#.to_owned(),
            ),
        ];
        for (root, listed, actual) in cases {
            let wrong = json(&root).check_nar(&nar[..]).unwrap().unwrap_err();
            assert_eq!((wrong.listed, wrong.actual), (listed, actual), "{root}");
        }
        // Another type at the root; a NAR that does not read is an error, not a mismatch.
        let file = json(r#"{"type":"regular","size":10}"#)
            .check_nar(&nar[..])
            .unwrap()
            .unwrap_err();
        assert_eq!(file.actual, "the root: a directory");
        assert!(json(&dir(&[a, b, d]))
            .check_nar(&nar[..nar.len() - 8])
            .is_err());
    }

    #[test]
    fn from_nar_and_json_shape() {
        let listing = Listing::from_nar(&sample()[..]).unwrap();
        let json = serde_json::to_string(&listing).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"root":{"type":"directory","entries":{"a":{"type":"regular","size":10,"executable":true,"narOffset":264},"b":{"type":"directory","entries":{"c":{"type":"symlink","target":"../a"}}},"d":{"type":"regular","size":0,"narOffset":824}}}}"#
        );
        assert_eq!(Listing::parse(json.as_bytes()).unwrap(), listing);
        assert_eq!(serde_json::from_str::<Listing>(&json).unwrap(), listing);
    }

    #[test]
    fn get_paths() {
        let listing = Listing::from_nar(&sample()[..]).unwrap();
        assert_eq!(listing.get(""), Some(&listing.root));
        assert_eq!(listing.get("/"), Some(&listing.root));
        assert!(
            matches!(listing.get("/b/c"), Some(ListingNode::Symlink { target }) if target == "../a")
        );
        assert!(matches!(
            listing.get("b//c/"),
            Some(ListingNode::Symlink { .. })
        ));
        assert!(matches!(
            listing.get("a"),
            Some(ListingNode::Regular {
                size: 10,
                executable: true,
                ..
            })
        ));
        assert_eq!(listing.get("a/x"), None);
        assert_eq!(listing.get("b/c/x"), None);
        assert_eq!(listing.get("zzz"), None);
    }

    #[test]
    fn parse_node_finds_what_get_finds() {
        let listing = Listing::from_nar(&sample()[..]).unwrap();
        let json = serde_json::to_vec(&listing).unwrap();
        for (path, node) in listing.walk() {
            assert_eq!(
                Listing::parse_node(&json, &path).unwrap().as_ref(),
                Some(node),
                "{path}"
            );
        }
        for absent in ["a/x", "b/c/x", "zzz", "b/zzz", "d/x"] {
            assert_eq!(
                Listing::parse_node(&json, absent).unwrap(),
                None,
                "{absent}"
            );
        }
        // Keys in any order, and the last of two equal names.
        let reordered = br#"{"root":{"entries":{"f":{"type":"regular","size":1},"f":{"size":2,"type":"regular","narOffset":9}},"type":"directory"},"version":1}"#;
        assert_eq!(
            Listing::parse_node(reordered, "f").unwrap(),
            Some(ListingNode::Regular {
                size: 2,
                executable: false,
                nar_offset: Some(9)
            })
        );
        // What is on the way is checked; what is off the way is only scanned.
        let bad =
            |json: &[u8], path: &str| Listing::parse_node(json, path).unwrap_err().to_string();
        assert!(bad(
            br#"{"version":2,"root":{"type":"directory","entries":{}}}"#,
            "a"
        )
        .contains("version"));
        assert!(bad(br#"{"version":1,"root":{"type":"pipe"}}"#, "a").contains("pipe"));
        assert!(bad(br#"{"version":1,"root":{"type":"directory","entries":{"..":{"type":"regular","size":1}}}}"#, "..").contains(".."));
        assert!(bad(br#"{"version":1,"root":{"type":"directory","entries":{"f":{"type":"regular","size":-1}}}}"#, "f").contains("size"));
        assert!(bad(
            br#"{"version":1,"root":{"type":"directory","entries":{"f":{"type":"regular"}}}"#,
            "f"
        )
        .contains("line"));
        let off_the_way = br#"{"version":1,"root":{"type":"directory","entries":{"g":{"type":"weird"},"f":{"type":"regular","size":3}}}}"#;
        assert!(Listing::parse_node(off_the_way, "f").unwrap().is_some());
    }

    #[test]
    fn walk_in_nar_order() {
        let listing = Listing::from_nar(&sample()[..]).unwrap();
        let paths: Vec<String> = listing.walk().map(|(p, _)| p).collect();
        assert_eq!(paths, ["", "a", "b", "b/c", "d"]);
        for (path, node) in listing.walk() {
            assert_eq!(listing.get(&path), Some(node));
        }
    }

    #[test]
    fn lossy_names() {
        let data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"\xfe",
            b"node",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"1",
            b")",
            b")",
            b"entry",
            b"(",
            b"name",
            b"\xff",
            b"node",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"2",
            b")",
            b")",
            b")",
        ]);
        let listing = Listing::from_nar(&data[..]).unwrap();
        let ListingNode::Directory { entries } = &listing.root else {
            panic!()
        };
        assert_eq!(entries.len(), 1);
        assert!(
            matches!(entries.get("\u{fffd}"), Some(ListingNode::Symlink { target }) if target == "2")
        );
    }

    #[test]
    fn parse_errors_name_the_path() {
        let cases: &[(&str, &str)] = &[
            ("{", "listing is not valid JSON"),
            ("[]", "listing at top level: expected an object"),
            (
                r#"{"root":{}}"#,
                "listing at top level: missing \"version\"",
            ),
            (
                r#"{"version":2,"root":{}}"#,
                "listing at /version: unsupported version 2 (expected 1)",
            ),
            (r#"{"version":1}"#, "listing at top level: missing \"root\""),
            (
                r#"{"version":1,"root":{"type":"directory","entries":{"a/b":{"type":"fifo"}}}}"#,
                "listing at /root/entries: invalid entry name \"a/b\" (contains '/')",
            ),
            (
                r#"{"version":1,"root":{"type":"directory","entries":{"x":{"type":"directory","entries":{"y~":{"type":"fifo"}}}}}}"#,
                "listing at /root/entries/x/entries/y~0/type: unknown node type \"fifo\"",
            ),
            (
                r#"{"version":1,"root":{"type":"regular","size":-1}}"#,
                "listing at /root/size: expected a non-negative integer",
            ),
            (
                r#"{"version":1,"root":{"type":"regular","size":1,"executable":"yes"}}"#,
                "listing at /root/executable: expected a boolean",
            ),
            (
                r#"{"version":1,"root":{"type":"symlink"}}"#,
                "listing at /root: missing \"target\"",
            ),
            (
                r#"{"version":1,"root":{"type":"directory","entries":[]}}"#,
                "listing at /root/entries: expected an object",
            ),
        ];
        for (json, msg) in cases {
            let e = Listing::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with(msg), "{json}: {e}");
        }
    }

    fn nested_listing(depth: usize) -> Listing {
        let mut node = ListingNode::Directory {
            entries: BTreeMap::new(),
        };
        for _ in 1..depth {
            node = ListingNode::Directory {
                entries: BTreeMap::from([("d".to_string(), node)]),
            };
        }
        Listing { root: node }
    }

    #[test]
    fn json_depth_limit() {
        // serde_json's recursion limit (128) bounds parsed listings; documented in the module.
        for (depth, ok) in [(63, true), (64, false), (crate::nar::MAX_DEPTH, false)] {
            let listing = nested_listing(depth);
            let json = serde_json::to_vec(&listing).unwrap();
            match Listing::parse(&json) {
                Ok(parsed) => assert!(ok && parsed == listing, "{depth}"),
                Err(e) => assert!(!ok && matches!(e, ListingError::Json(_)), "{depth}: {e}"),
            }
        }
    }

    #[test]
    fn optional_fields() {
        let l = Listing::parse(br#"{"version":1,"root":{"type":"regular","size":3,"extra":1}}"#)
            .unwrap();
        assert_eq!(
            l.root,
            ListingNode::Regular {
                size: 3,
                executable: false,
                nar_offset: None
            }
        );
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"version":1,"root":{"type":"regular","size":3}}"#
        );
    }
}
