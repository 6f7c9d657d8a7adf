//! Extracting one file or subtree from a NAR stream by path.
//!
//! Paths are `/`-separated names relative to the NAR's root ("bin/app"; a leading `/` and empty
//! components are ignored, so "" is the root). Symlinks inside the NAR are never followed.
//! Because entries are sorted, a missing name is known as soon as a greater one appears. Reading
//! stops as soon as the wanted node has been written; the rest of the NAR is not checked.

use std::io::{self, Read, Write};

use super::reader::{quoted, Event, ReadError, ReadErrorKind, Reader};
use super::writer::{self, Directory, FileError, Node, Source};

const BUFFER: usize = 256 * 1024;

/// Why extracting failed. Paths are shown with a leading `/` ("/" is the root).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    #[error(transparent)]
    Nar(#[from] ReadError),
    #[error("{path} not found in the NAR")]
    NotFound { path: String },
    #[error("{path} is a directory")]
    IsDirectory { path: String },
    #[error("{path} is a symlink to {}", quoted(.target))]
    IsSymlink { path: String, target: Vec<u8> },
    #[error("{path} is a regular file, not a directory")]
    NotADirectory { path: String },
    #[error("cannot write output: {0}")]
    Write(io::Error),
}

/// Writes the contents of the regular file at `subpath` to `out`.
///
/// ```
/// use cachecore::nar::{self, ExtractError};
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::create_dir_all(dir.path().join("pkg/bin")).unwrap();
/// # std::fs::write(dir.path().join("pkg/bin/hello"), "hi\n").unwrap();
/// let mut bytes = Vec::new();
/// nar::pack(&dir.path().join("pkg"), &mut bytes).unwrap();
/// let mut out = Vec::new();
/// nar::cat(&bytes[..], "bin/hello", &mut out).unwrap();
/// assert_eq!(out, b"hi\n");
/// assert!(matches!(nar::cat(&bytes[..], "bin", std::io::sink()), Err(ExtractError::IsDirectory { .. })));
/// assert!(matches!(nar::cat(&bytes[..], "nope", std::io::sink()), Err(ExtractError::NotFound { .. })));
/// ```
pub fn cat(input: impl Read, subpath: &str, out: impl Write) -> Result<(), ExtractError> {
    cat_from(&mut Reader::new(input), subpath, out)
}

fn cat_from<R: Read>(
    reader: &mut Reader<R>,
    subpath: &str,
    mut out: impl Write,
) -> Result<(), ExtractError> {
    let path = Components::new(subpath);
    match find(reader, &path)? {
        Node0::File { .. } => {
            let mut buf = vec![0; BUFFER];
            loop {
                let n = reader.read_contents(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(ExtractError::Write)?;
            }
            out.flush().map_err(ExtractError::Write)
        }
        Node0::Symlink { target } => Err(ExtractError::IsSymlink {
            path: path.display(path.len()),
            target,
        }),
        Node0::Directory => Err(ExtractError::IsDirectory {
            path: path.display(path.len()),
        }),
    }
}

/// Like [`cat`], but reads and validates the whole NAR, as `nix nar cat` does: a damaged
/// archive is an error even if the wanted file comes before the damage (its contents are then
/// already written), and the damage is reported in preference to "not found", "is a
/// directory" and the like.
///
/// ```
/// use cachecore::nar::{self, ExtractError};
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::create_dir(dir.path().join("pkg")).unwrap();
/// # std::fs::write(dir.path().join("pkg/a"), "first\n").unwrap();
/// # std::fs::write(dir.path().join("pkg/b"), "second\n").unwrap();
/// let mut bytes = Vec::new();
/// nar::pack(&dir.path().join("pkg"), &mut bytes).unwrap();
/// let mut out = Vec::new();
/// nar::cat_verified(&bytes[..], "a", &mut out).unwrap();
/// assert_eq!(out, b"first\n");
/// // Damage after `a`: plain `cat` stops before it, `cat_verified` reads on and sees it.
/// let cut = &bytes[..bytes.len() - 8];
/// assert!(nar::cat(cut, "a", std::io::sink()).is_ok());
/// assert!(matches!(nar::cat_verified(cut, "a", std::io::sink()), Err(ExtractError::Nar(_))));
/// ```
pub fn cat_verified(input: impl Read, subpath: &str, out: impl Write) -> Result<(), ExtractError> {
    let mut reader = Reader::new(input);
    let result = cat_from(&mut reader, subpath, out);
    if let Err(ExtractError::Nar(_) | ExtractError::Write(_)) = result {
        return result;
    }
    // Damage anywhere takes precedence over "not found" and the like.
    while reader.next()?.is_some() {}
    result
}

/// Writes the node at `subpath` (file, symlink or directory tree) to `out` as a standalone NAR.
///
/// ```
/// use cachecore::nar::{self, Listing};
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::create_dir_all(dir.path().join("pkg/bin")).unwrap();
/// # std::fs::write(dir.path().join("pkg/bin/hello"), "hi\n").unwrap();
/// let mut bytes = Vec::new();
/// nar::pack(&dir.path().join("pkg"), &mut bytes).unwrap();
/// let mut sub = Vec::new();
/// nar::extract_nar(&bytes[..], "bin", &mut sub).unwrap();
/// // A NAR of its own, `bin` its root: the NAR of that directory.
/// assert!(Listing::from_nar(&sub[..]).unwrap().get("hello").is_some());
/// let mut direct = Vec::new();
/// nar::pack(&dir.path().join("pkg/bin"), &mut direct).unwrap();
/// assert_eq!(sub, direct);
/// ```
pub fn extract_nar(input: impl Read, subpath: &str, out: impl Write) -> Result<(), ExtractError> {
    let mut reader = Reader::new(input);
    let path = Components::new(subpath);
    let first = find(&mut reader, &path)?;
    let node = writer::open(out).map_err(ExtractError::Write)?;
    copy_node(&mut reader, first, node)
}

/// The split subpath.
struct Components<'a>(Vec<&'a str>);

impl<'a> Components<'a> {
    fn new(subpath: &'a str) -> Self {
        Components(subpath.split('/').filter(|c| !c.is_empty()).collect())
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The first `n` components as "/a/b".
    fn display(&self, n: usize) -> String {
        if n == 0 {
            return "/".into();
        }
        self.0.iter().take(n).fold(String::new(), |mut s, c| {
            s.push('/');
            s.push_str(c);
            s
        })
    }
}

/// The first event of a node, owned.
enum Node0 {
    File { executable: bool, size: u64 },
    Symlink { target: Vec<u8> },
    Directory,
}

/// Reads the first event of the next node.
fn node_start<R: Read>(reader: &mut Reader<R>) -> Result<Node0, ExtractError> {
    match reader.next()? {
        Some(Event::File {
            executable, size, ..
        }) => Ok(Node0::File { executable, size }),
        Some(Event::Symlink { target }) => Ok(Node0::Symlink {
            target: target.to_vec(),
        }),
        Some(Event::DirectoryStart) => Ok(Node0::Directory),
        // The reader enforces the grammar, so a node always starts here.
        _ => Err(grammar_error(reader)),
    }
}

fn grammar_error<R: Read>(reader: &Reader<R>) -> ExtractError {
    ExtractError::Nar(ReadError {
        offset: reader.offset(),
        kind: ReadErrorKind::UnexpectedToken {
            expected: "a node",
            found: Vec::new(),
        },
    })
}

fn nar_io_error(offset: u64, e: io::Error) -> ExtractError {
    ExtractError::Nar(ReadError {
        offset,
        kind: ReadErrorKind::Io(e),
    })
}

/// Advances to the node at `path` and returns its first event.
fn find<R: Read>(reader: &mut Reader<R>, path: &Components<'_>) -> Result<Node0, ExtractError> {
    let mut node = node_start(reader)?;
    for (i, want) in path.0.iter().enumerate() {
        match node {
            Node0::Directory => {}
            Node0::File { .. } => {
                return Err(ExtractError::NotADirectory {
                    path: path.display(i),
                })
            }
            Node0::Symlink { target } => {
                return Err(ExtractError::IsSymlink {
                    path: path.display(i),
                    target,
                })
            }
        }
        loop {
            match reader.next()? {
                Some(Event::Entry { name }) => match name.cmp(want.as_bytes()) {
                    std::cmp::Ordering::Less => {
                        skip_node(reader)?;
                        expect_entry_end(reader)?;
                    }
                    std::cmp::Ordering::Equal => break,
                    std::cmp::Ordering::Greater => {
                        return Err(ExtractError::NotFound {
                            path: path.display(i + 1),
                        })
                    }
                },
                Some(Event::DirectoryEnd) => {
                    return Err(ExtractError::NotFound {
                        path: path.display(i + 1),
                    })
                }
                _ => return Err(grammar_error(reader)),
            }
        }
        node = node_start(reader)?;
    }
    Ok(node)
}

/// Skips the next node (contents are skipped by the reader).
fn skip_node<R: Read>(reader: &mut Reader<R>) -> Result<(), ExtractError> {
    let mut depth = 0usize;
    loop {
        match reader.next()? {
            Some(Event::DirectoryStart) => depth += 1,
            Some(Event::DirectoryEnd) => depth = depth.saturating_sub(1),
            Some(
                Event::File { .. } | Event::Symlink { .. } | Event::Entry { .. } | Event::EntryEnd,
            ) => {}
            None => return Err(grammar_error(reader)),
        }
        if depth == 0 {
            return Ok(());
        }
    }
}

fn expect_entry_end<R: Read>(reader: &mut Reader<R>) -> Result<(), ExtractError> {
    match reader.next()? {
        Some(Event::EntryEnd) => Ok(()),
        _ => Err(grammar_error(reader)),
    }
}

fn copy_node<R: Read, W: Write>(
    reader: &mut Reader<R>,
    first: Node0,
    node: Node<'_, W>,
) -> Result<(), ExtractError> {
    match first {
        Node0::File { executable, size } => {
            let result = node.file_from(executable, size, &mut reader.contents(), Source::Stream);
            result.map(drop).map_err(|e| match e {
                // Reading the contents failed: the NAR is bad.
                FileError::Read(e) => {
                    let offset = reader.offset();
                    match e.into_inner().map(|e| e.downcast::<ReadError>()) {
                        Some(Ok(e)) => ExtractError::Nar(*e),
                        Some(Err(e)) => nar_io_error(offset, io::Error::other(e)),
                        None => grammar_error(reader),
                    }
                }
                FileError::Write(e) => ExtractError::Write(e),
                // Cannot happen: the contents reader yields exactly `size` bytes or fails.
                FileError::TooShort { .. } | FileError::TooLong => grammar_error(reader),
            })
        }
        Node0::Symlink { target } => node.symlink(&target).map_err(ExtractError::Write),
        Node0::Directory => {
            let mut dir = node.directory().map_err(ExtractError::Write)?;
            copy_entries(reader, &mut dir)?;
            dir.close().map_err(ExtractError::Write)
        }
    }
}

fn copy_entries<R: Read, W: Write>(
    reader: &mut Reader<R>,
    dir: &mut Directory<'_, W>,
) -> Result<(), ExtractError> {
    loop {
        match reader.next()? {
            Some(Event::Entry { name }) => {
                let child = dir.entry(name).map_err(ExtractError::Write)?;
                let first = node_start(reader)?;
                copy_node(reader, first, child)?;
                expect_entry_end(reader)?;
            }
            Some(Event::DirectoryEnd) => return Ok(()),
            _ => return Err(grammar_error(reader)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::pack::{pack, tests::make_tree};
    use super::super::reader::tests::{nar, sample, trace};
    use super::*;

    fn cat_str(data: &[u8], path: &str) -> Result<Vec<u8>, ExtractError> {
        let mut out = Vec::new();
        cat(data, path, &mut out)?;
        Ok(out)
    }

    #[test]
    fn cat_files() {
        let data = sample();
        assert_eq!(cat_str(&data, "a").unwrap(), b"#!/bin/sh\n");
        assert_eq!(cat_str(&data, "/d").unwrap(), b"");
        let e = cat_str(&data, "b/c").unwrap_err();
        assert_eq!(e.to_string(), "/b/c is a symlink to \"../a\"");
        assert_eq!(
            cat_str(&data, "b").unwrap_err().to_string(),
            "/b is a directory"
        );
        assert_eq!(
            cat_str(&data, "").unwrap_err().to_string(),
            "/ is a directory"
        );
        assert_eq!(
            cat_str(&data, "bb").unwrap_err().to_string(),
            "/bb not found in the NAR"
        );
        assert_eq!(
            cat_str(&data, "0").unwrap_err().to_string(),
            "/0 not found in the NAR"
        );
        assert_eq!(
            cat_str(&data, "z").unwrap_err().to_string(),
            "/z not found in the NAR"
        );
        assert_eq!(
            cat_str(&data, "b/x").unwrap_err().to_string(),
            "/b/x not found in the NAR"
        );
        assert_eq!(
            cat_str(&data, "a/x").unwrap_err().to_string(),
            "/a is a regular file, not a directory"
        );
        assert!(matches!(
            cat_str(&data, "b/c/x").unwrap_err(),
            ExtractError::IsSymlink { .. }
        ));
    }

    #[test]
    fn stops_reading_when_done() {
        // Everything after "a" is garbage: cat still succeeds.
        let data = sample();
        let mut cut = data[..300].to_vec();
        cut.extend_from_slice(b"garbage garbage garbage");
        assert_eq!(cat_str(&cut, "a").unwrap(), b"#!/bin/sh\n");
        let e = cat_verified(&cut[..], "a", io::sink()).unwrap_err();
        assert!(matches!(e, ExtractError::Nar(_)), "{e}");
        let mut trailing = data.clone();
        trailing.push(1);
        assert!(matches!(
            cat_str(&trailing, "zz").unwrap_err(),
            ExtractError::NotFound { .. }
        ));
        for sub in ["zz", "b", "a"] {
            let e = cat_verified(&trailing[..], sub, io::sink()).unwrap_err();
            assert!(matches!(e, ExtractError::Nar(_)), "{e}");
        }
        let e = cat_verified(&data[..], "zz", io::sink()).unwrap_err();
        assert!(matches!(e, ExtractError::NotFound { .. }), "{e}");
        let mut out = Vec::new();
        cat_verified(&data[..], "a", &mut out).unwrap();
        assert_eq!(out, b"#!/bin/sh\n");
        let mut out = Vec::new();
        extract_nar(&cut[..], "a", &mut out).unwrap();
        // But a truncated target file is an error.
        let e = cat_str(&data[..270], "a").unwrap_err();
        assert!(
            matches!(e, ExtractError::Nar(ReadError { offset: 270, .. })),
            "{e}"
        );
        let e = extract_nar(&data[..270], "a", io::sink()).unwrap_err();
        assert!(
            matches!(e, ExtractError::Nar(ReadError { offset: 270, .. })),
            "{e}"
        );
    }

    #[test]
    fn extract_subtrees() {
        let data = sample();
        let mut whole = Vec::new();
        extract_nar(&data[..], "", &mut whole).unwrap();
        assert_eq!(whole, data);
        let mut b = Vec::new();
        extract_nar(&data[..], "b", &mut b).unwrap();
        assert_eq!(
            b,
            nar(&[
                b"nix-archive-1",
                b"(",
                b"type",
                b"directory",
                b"entry",
                b"(",
                b"name",
                b"c",
                b"node",
                b"(",
                b"type",
                b"symlink",
                b"target",
                b"../a",
                b")",
                b")",
                b")",
            ])
        );
        let mut a = Vec::new();
        extract_nar(&data[..], "/a/", &mut a).unwrap();
        assert_eq!(
            trace(&a).unwrap()[..2],
            ["file x=true size=10 at=128", "contents \"#!/bin/sh\\n\""]
        );
    }

    #[test]
    fn extract_from_packed_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        make_tree(&root);
        let mut data = Vec::new();
        pack(&root, &mut data).unwrap();
        let mut sub = Vec::new();
        extract_nar(&data[..], "a", &mut sub).unwrap();
        let mut direct = Vec::new();
        pack(&root.join("a"), &mut direct).unwrap();
        assert_eq!(sub, direct);
        assert_eq!(cat_str(&data, "a/b/c/deep").unwrap(), vec![7u8; 300_000]);
    }
}
