//! Packing a filesystem tree into a NAR, byte-for-byte as `nix-store --dump` does.
//!
//! Regular files (executable iff the owner-execute bit is set), symlinks (target stored as-is,
//! never followed) and directories (entries sorted bytewise). Other file types, unreadable
//! files, and files that change size while being read are errors naming the path; the NAR
//! written so far is then incomplete and must be discarded.
//!
//! Contents are read straight into the writer's 1 MiB output buffer: memory stays bounded
//! whatever the file sizes, and no byte is copied twice.

use std::ffi::OsString;
use std::fs::{self, File, FileType};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::listing::{Listing, ListingNode};
use super::wire;
use super::writer::{self, FileError, FileSink, Node};

/// Output buffer; file contents are read into it directly.
const BUFFER: usize = 1 << 20;

/// Why a tree could not be packed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// Opening, reading, listing or stat-ing a file failed.
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot pack {}: it is a {kind}; a NAR holds only regular files, directories and symlinks", .path.display())]
    UnsupportedType { path: PathBuf, kind: &'static str },
    #[error("{} changed while being packed ({detail})", .path.display())]
    Changed { path: PathBuf, detail: String },
    /// A name, symlink target or nesting depth that the NAR format (or its limits) rejects.
    #[error("cannot pack {}: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write NAR: {0}")]
    Write(io::Error),
}

/// Packs the tree at `path` (not following a symlink there) as a NAR into `out`, and returns
/// its listing. `out` is buffered internally and flushed at the end.
///
/// ```
/// use cachecore::nar::{self, ListingNode};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("pkg")).unwrap();
/// std::fs::write(dir.path().join("pkg/hello"), "hi\n").unwrap();
/// std::os::unix::fs::symlink("hello", dir.path().join("pkg/greeting")).unwrap();
/// let mut bytes = Vec::new();
/// let listing = nar::pack(&dir.path().join("pkg"), &mut bytes).unwrap();
/// let Some(ListingNode::Regular { size: 3, nar_offset: Some(at), .. }) = listing.get("hello") else {
///     panic!("{listing:?}");
/// };
/// assert_eq!(&bytes[*at as usize..][..3], b"hi\n");
/// assert!(matches!(listing.get("greeting"), Some(ListingNode::Symlink { target }) if target == "hello"));
/// ```
pub fn pack(path: &Path, mut out: impl Write) -> Result<Listing, PackError> {
    let node = writer::open_with_capacity(&mut out, BUFFER).map_err(PackError::Write)?;
    let root = pack_tree::<WithListing, _>(path, node, None)?;
    Ok(Listing { root })
}

/// Like [`pack`] without building the listing; returns the NAR's size in bytes.
///
/// ```
/// use cachecore::nar;
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
/// let mut bytes = Vec::new();
/// let size = nar::dump(&dir.path().join("hello"), &mut bytes).unwrap();
/// assert_eq!(size, bytes.len() as u64);
/// // The same bytes as `pack` writes.
/// let mut packed = Vec::new();
/// nar::pack(&dir.path().join("hello"), &mut packed).unwrap();
/// assert_eq!(bytes, packed);
/// ```
pub fn dump(path: &Path, out: impl Write) -> Result<u64, PackError> {
    let mut out = Counting { w: out, n: 0 };
    let node = writer::open_with_capacity(&mut out, BUFFER).map_err(PackError::Write)?;
    pack_tree::<NoListing, _>(path, node, None)?;
    Ok(out.n)
}

/// Like [`dump`] into an output that takes the contents of regular files from the files
/// themselves ([`FileSink`]), from the size it asks for on. Such a file that turns out shorter
/// or longer than when it was opened is [`PackError::Changed`], as with [`dump`].
///
/// ```
/// use std::io::{self, Read, Write};
/// use cachecore::nar::{self, writer::FileSink};
/// /// Takes files of 4 bytes and more with read(2) itself (a pipe could splice(2) them).
/// struct Files(Vec<u8>, usize);
/// impl Write for Files {
///     fn write(&mut self, b: &[u8]) -> io::Result<usize> { self.0.write(b) }
///     fn flush(&mut self) -> io::Result<()> { Ok(()) }
/// }
/// impl FileSink for Files {
///     fn write_file_from(&self) -> Option<u64> { Some(4) }
///     fn write_file(&mut self, mut file: &std::fs::File, len: u64) -> io::Result<u64> {
///         self.1 += 1;
///         io::copy(&mut file.take(len), &mut self.0)
///     }
/// }
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::create_dir(dir.path().join("pkg")).unwrap();
/// std::fs::write(dir.path().join("pkg/big"), "four").unwrap();
/// std::fs::write(dir.path().join("pkg/small"), "3\n").unwrap();
/// let mut out = Files(Vec::new(), 0);
/// let size = nar::dump_to(&dir.path().join("pkg"), &mut out).unwrap();
/// assert_eq!(out.1, 1); // "big" alone was handed over
/// let mut bytes = Vec::new();
/// nar::dump(&dir.path().join("pkg"), &mut bytes).unwrap();
/// assert_eq!((out.0, size), (bytes.clone(), bytes.len() as u64));
/// ```
pub fn dump_to(path: &Path, out: impl FileSink) -> Result<u64, PackError> {
    let mut out = Counting { w: out, n: 0 };
    let node = writer::open_moving_files(&mut out, BUFFER).map_err(PackError::Write)?;
    pack_tree::<NoListing, _>(path, node, None)?;
    Ok(out.n)
}

/// Like [`pack`], and calls `file_start` with the NAR offset at which each regular file's
/// entry begins, before any byte of that entry reaches `out`, so a compressor further down can
/// end a frame there (see [`crate::seekable::Boundaries`]). Offsets come in increasing order.
///
/// ```
/// use cachecore::nar::{self, ListingNode};
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::create_dir(dir.path().join("pkg")).unwrap();
/// # std::fs::write(dir.path().join("pkg/a"), "first\n").unwrap();
/// # std::fs::write(dir.path().join("pkg/b"), "second\n").unwrap();
/// let mut bytes = Vec::new();
/// let mut starts = Vec::new();
/// let listing = nar::pack_marking_files(&dir.path().join("pkg"), &mut bytes,
///     &mut |at: u64| starts.push(at)).unwrap();
/// assert_eq!(starts.len(), 2); // one mark per regular file, in order
/// assert!(starts[0] < starts[1]);
/// // Each file's entry begins before its contents.
/// let Some(ListingNode::Regular { nar_offset: Some(a), .. }) = listing.get("a") else { panic!() };
/// assert!(starts[0] < *a);
/// ```
pub fn pack_marking_files(
    path: &Path,
    mut out: impl Write,
    file_start: &mut dyn FnMut(u64),
) -> Result<Listing, PackError> {
    let node = writer::open_with_capacity(&mut out, BUFFER).map_err(PackError::Write)?;
    let root = pack_tree::<WithListing, _>(path, node, Some(file_start))?;
    Ok(Listing { root })
}

/// What is built alongside the NAR.
trait Tree {
    type Node;
    type Dir;
    fn file(size: u64, executable: bool, nar_offset: u64) -> Self::Node;
    fn symlink(target: &[u8]) -> Self::Node;
    fn dir() -> Self::Dir;
    fn add(dir: &mut Self::Dir, name: OsString, node: Self::Node);
    fn close(dir: Self::Dir) -> Self::Node;
}

struct WithListing;

impl Tree for WithListing {
    type Node = ListingNode;
    /// Entries in NAR order; collected into a map when the directory closes.
    type Dir = Vec<(String, ListingNode)>;
    fn file(size: u64, executable: bool, nar_offset: u64) -> ListingNode {
        ListingNode::Regular {
            size,
            executable,
            nar_offset: Some(nar_offset),
        }
    }
    fn symlink(target: &[u8]) -> ListingNode {
        ListingNode::Symlink {
            target: String::from_utf8_lossy(target).into_owned(),
        }
    }
    fn dir() -> Self::Dir {
        Vec::new()
    }
    fn add(dir: &mut Self::Dir, name: OsString, node: ListingNode) {
        let name = name
            .into_string()
            .unwrap_or_else(|name| name.to_string_lossy().into_owned());
        dir.push((name, node));
    }
    fn close(entries: Self::Dir) -> ListingNode {
        // Sorted input makes this a linear bulk build.
        ListingNode::Directory {
            entries: entries.into_iter().collect(),
        }
    }
}

struct NoListing;

impl Tree for NoListing {
    type Node = ();
    type Dir = ();
    fn file(_: u64, _: bool, _: u64) {}
    fn symlink(_: &[u8]) {}
    fn dir() {}
    fn add(_: &mut (), _: OsString, _: ()) {}
    fn close(_: ()) {}
}

/// Counts the bytes written through it.
struct Counting<W> {
    w: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl<W: FileSink> FileSink for Counting<W> {
    fn write_file_from(&self) -> Option<u64> {
        self.w.write_file_from()
    }
    fn write_file(&mut self, file: &File, len: u64) -> io::Result<u64> {
        let n = self.w.write_file(file, len)?;
        self.n += n;
        Ok(n)
    }
}

/// Packs the tree at `root` as the NAR `node`.
fn pack_tree<T: Tree, W: Write>(
    root: &Path,
    node: Node<'_, W>,
    file_start: Option<&mut dyn FnMut(u64)>,
) -> Result<T::Node, PackError> {
    let meta = fs::symlink_metadata(root).map_err(|e| read_error(root, e))?;
    let mut packer = Packer {
        path: root.to_path_buf(),
        depth: 0,
        file_start,
    };
    packer.node::<T, _>(node, meta.file_type())
}

fn read_error(path: &Path, source: io::Error) -> PackError {
    PackError::Read {
        path: path.to_path_buf(),
        source,
    }
}

struct Packer<'h> {
    /// The path of the node being packed.
    path: PathBuf,
    /// Directories open above it.
    depth: usize,
    /// Told where each regular file's entry starts.
    file_start: Option<&'h mut dyn FnMut(u64)>,
}

impl Packer<'_> {
    fn node<T: Tree, W: Write>(
        &mut self,
        node: Node<'_, W>,
        ft: FileType,
    ) -> Result<T::Node, PackError> {
        if ft.is_file() {
            self.file::<T, W>(node)
        } else if ft.is_dir() {
            self.directory::<T, W>(node)
        } else if ft.is_symlink() {
            let target = fs::read_link(&self.path).map_err(|e| read_error(&self.path, e))?;
            let target = target.as_os_str().as_bytes();
            if let Some(reason) = wire::target_problem(target) {
                return Err(self.invalid(format!("symlink target is {reason}")));
            }
            node.symlink(target).map_err(PackError::Write)?;
            Ok(T::symlink(target))
        } else {
            let kind = if ft.is_socket() {
                "socket"
            } else if ft.is_fifo() {
                "FIFO"
            } else if ft.is_char_device() {
                "character device"
            } else if ft.is_block_device() {
                "block device"
            } else {
                "file of unknown type"
            };
            Err(PackError::UnsupportedType {
                path: self.path.clone(),
                kind,
            })
        }
    }

    fn file<T: Tree, W: Write>(&mut self, node: Node<'_, W>) -> Result<T::Node, PackError> {
        let mut file = File::open(&self.path).map_err(|e| read_error(&self.path, e))?;
        // Size and mode of what was opened, not of what the directory listing saw.
        let meta = file.metadata().map_err(|e| read_error(&self.path, e))?;
        if !meta.is_file() {
            return Err(self.changed("it is no longer a regular file".into()));
        }
        let (size, executable) = (meta.len(), meta.mode() & 0o100 != 0);
        if let Some(file_start) = self.file_start.as_mut() {
            file_start(node.offset());
        }
        let nar_offset = node
            .regular_file(executable, size, &mut file)
            .map_err(|e| match e {
                FileError::Read(e) => read_error(&self.path, e),
                FileError::Write(e) => PackError::Write(e),
                FileError::TooShort { actual } => self.changed(format!(
                    "{size} bytes when opened, {actual} bytes when read"
                )),
                FileError::TooLong => {
                    self.changed(format!("{size} bytes when opened, more when read"))
                }
            })?;
        Ok(T::file(size, executable, nar_offset))
    }

    fn directory<T: Tree, W: Write>(&mut self, node: Node<'_, W>) -> Result<T::Node, PackError> {
        if self.depth >= wire::MAX_DEPTH {
            return Err(self.invalid(format!(
                "directories nested deeper than {} levels",
                wire::MAX_DEPTH
            )));
        }
        let mut entries: Vec<(OsString, FileType)> = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(|e| read_error(&self.path, e))? {
            let entry = entry.map_err(|e| read_error(&self.path, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| read_error(&entry.path(), e))?;
            entries.push((entry.file_name(), ft));
        }
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

        let mut dir = node.directory().map_err(PackError::Write)?;
        let mut tree = T::dir();
        self.depth += 1;
        for (name, ft) in entries {
            self.path.push(&name);
            if let Some(reason) = wire::name_problem(name.as_bytes()) {
                return Err(self.invalid(format!("name is {reason}")));
            }
            let child = dir.entry(name.as_bytes()).map_err(PackError::Write)?;
            let child = self.node::<T, W>(child, ft)?;
            T::add(&mut tree, name, child);
            self.path.pop();
        }
        self.depth -= 1;
        dir.close().map_err(PackError::Write)?;
        Ok(T::close(tree))
    }

    fn invalid(&self, reason: String) -> PackError {
        PackError::Invalid {
            path: self.path.clone(),
            reason,
        }
    }

    fn changed(&self, detail: String) -> PackError {
        PackError::Changed {
            path: self.path.clone(),
            detail,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::super::reader::tests::trace;
    use super::*;

    /// A tree with every kind of node and some awkward names.
    pub(crate) fn make_tree(root: &Path) {
        fs::create_dir(root).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        fs::write(root.join("seven"), b"1234567").unwrap();
        fs::write(root.join("eight"), b"12345678").unwrap();
        fs::write(root.join("exe"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("exe"), fs::Permissions::from_mode(0o755)).unwrap();
        // Owner-execute alone counts; group/other-execute alone does not.
        fs::write(root.join("u-x"), b"u").unwrap();
        fs::set_permissions(root.join("u-x"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("g-x"), b"g").unwrap();
        fs::set_permissions(root.join("g-x"), fs::Permissions::from_mode(0o654)).unwrap();
        fs::create_dir(root.join("empty-dir")).unwrap();
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("a/b/c/deep"), vec![7u8; 300_000]).unwrap();
        fs::write(root.join("Zebra"), b"upper case sorts first").unwrap();
        fs::write(root.join("ünïcødé ✓"), b"utf8").unwrap();
        fs::write(root.join("a-b"), b"prefix order").unwrap();
        symlink("seven", root.join("rel-link")).unwrap();
        symlink("/nix/store/does-not-exist", root.join("abs-link")).unwrap();
        symlink("../../nowhere", root.join("a/dangling")).unwrap();
        symlink("a", root.join("dir-link")).unwrap();
    }

    #[test]
    fn file_marks_point_at_each_file_entry_before_its_bytes_are_written() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        make_tree(&root);
        let mut nar = Vec::new();
        let mut marks = Vec::new();
        let mut written_at_mark = Vec::new();
        {
            let counter = std::cell::Cell::new(0u64);
            struct Counted<'a>(&'a mut Vec<u8>, &'a std::cell::Cell<u64>);
            impl Write for Counted<'_> {
                fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                    self.0.extend_from_slice(b);
                    self.1.set(self.1.get() + b.len() as u64);
                    Ok(b.len())
                }
                fn flush(&mut self) -> io::Result<()> {
                    Ok(())
                }
            }
            let listing = pack_marking_files(&root, Counted(&mut nar, &counter), &mut |o| {
                marks.push(o);
                written_at_mark.push(counter.get());
            })
            .unwrap();
            assert_eq!(listing, pack(&root, io::sink()).unwrap());
        }
        let entry: &[u8] = b"\x05\0\0\0\0\0\0\0entry\0\0\0";
        let files = nar
            .windows(16)
            .filter(|w| *w == b"\x07\0\0\0\0\0\0\0regular\0")
            .count();
        assert_eq!(marks.len(), files, "one mark per regular file");
        assert!(marks.windows(2).all(|w| w[0] < w[1]), "{marks:?}");
        for (m, w) in marks.iter().zip(&written_at_mark) {
            let m = *m as usize;
            assert_eq!(&nar[m..m + entry.len()], entry, "mark {m}");
            assert!(
                *w <= m as u64,
                "mark {m} came after {w} bytes had been written"
            );
        }
    }

    #[test]
    fn pack_then_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        make_tree(&root);
        let mut nar = Vec::new();
        let listing = pack(&root, &mut nar).unwrap();
        let t = trace(&nar).unwrap();
        assert!(t.contains(&"symlink \"../../nowhere\"".to_string()));
        assert_eq!(listing, Listing::from_nar(&nar[..]).unwrap());
        let mut nar2 = Vec::new();
        assert_eq!(dump(&root, &mut nar2).unwrap(), nar.len() as u64);
        assert_eq!(nar, nar2);
        let (hash, size) = crate::nar::hash_path(&root).unwrap();
        assert_eq!(
            (hash, size),
            (
                crate::hash::Hash::digest(crate::hash::HashAlgo::Sha256, &nar),
                nar.len() as u64
            )
        );

        let exe = |p: &str| match listing.get(p) {
            Some(ListingNode::Regular { executable, .. }) => *executable,
            other => panic!("{p}: {other:?}"),
        };
        assert!(exe("exe"));
        assert!(exe("u-x"));
        assert!(!exe("g-x"));
        assert!(!exe("seven"));
        let Some(ListingNode::Regular {
            nar_offset: Some(off),
            size: 300_000,
            ..
        }) = listing.get("a/b/c/deep")
        else {
            panic!()
        };
        assert_eq!(&nar[*off as usize..][..300_000], &vec![7u8; 300_000][..]);
        let ListingNode::Directory { entries } = &listing.root else {
            panic!()
        };
        let names: Vec<&str> = entries.keys().map(|s| s.as_str()).collect();
        assert_eq!(names[0], "Zebra");
        assert_eq!(names[1], "a");
        assert_eq!(names[2], "a-b");
    }

    #[test]
    fn single_file_and_symlink_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"hello").unwrap();
        let mut nar = Vec::new();
        pack(&f, &mut nar).unwrap();
        assert_eq!(trace(&nar).unwrap()[0], "file x=false size=5 at=96");
        let l = tmp.path().join("l");
        symlink("f", &l).unwrap();
        let mut nar = Vec::new();
        pack(&l, &mut nar).unwrap();
        assert_eq!(trace(&nar).unwrap(), ["symlink \"f\""]);
    }

    #[test]
    fn unsupported_and_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        fs::create_dir(&root).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        let e = pack(&root, io::sink()).unwrap_err();
        assert!(
            matches!(&e, PackError::UnsupportedType { path, kind: "socket" } if path.ends_with("t/sock")),
            "{e}"
        );
        drop(sock);
        let e = pack(&tmp.path().join("missing"), io::sink()).unwrap_err();
        assert!(matches!(e, PackError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
    }

    /// Runs `f` on a thread of its own whose effective capabilities lack `CAP_DAC_OVERRIDE` and
    /// `CAP_DAC_READ_SEARCH` (capabilities are per thread on Linux), so file modes bind even when
    /// the tests run as root, as they do in CI.
    fn without_dac_override<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut sets = capabilities(None).unwrap();
                sets.effective -= CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
                set_capabilities(None, sets).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    #[test]
    fn unreadable_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("secret"), b"x").unwrap();
        fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        let e = without_dac_override(|| {
            assert!(
                File::open(root.join("secret")).is_err(),
                "mode 000 still readable"
            );
            pack(&root, io::sink()).unwrap_err()
        });
        assert!(
            matches!(&e, PackError::Read { path, .. } if path.ends_with("secret")),
            "{e}"
        );
        assert!(e.to_string().contains("secret"), "{e}");
    }

    /// A [`FileSink`] that takes files of 1000 bytes and more by reading them itself (as a pipe
    /// splices them), at most 64 KiB a call, after letting `meddle` act before each call (an
    /// error from it is the call's).
    struct Handed<'m> {
        out: Vec<u8>,
        calls: usize,
        meddle: &'m mut dyn FnMut(usize) -> io::Result<()>,
    }

    impl Write for Handed<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.out.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl FileSink for Handed<'_> {
        fn write_file_from(&self) -> Option<u64> {
            Some(1000)
        }
        fn write_file(&mut self, mut file: &File, len: u64) -> io::Result<u64> {
            self.calls += 1;
            (self.meddle)(self.calls)?;
            io::copy(
                &mut io::Read::take(&mut file, len.min(1 << 16)),
                &mut self.out,
            )
        }
    }

    /// `dump_to` a [`Handed`] of `root`: the output, the calls, and the result.
    fn dump_handed(
        root: &Path,
        meddle: &mut dyn FnMut(usize) -> io::Result<()>,
    ) -> (Vec<u8>, usize, Result<u64, PackError>) {
        let mut sink = Handed {
            out: Vec::new(),
            calls: 0,
            meddle,
        };
        let result = dump_to(root, &mut sink);
        (sink.out, sink.calls, result)
    }

    #[test]
    fn files_handed_to_the_output_give_the_same_nar() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        make_tree(&root);
        for size in [999, 1000, 1001, 65_536, 200_003] {
            fs::write(root.join(format!("s{size}")), vec![size as u8; size]).unwrap();
        }
        fs::set_permissions(root.join("s1001"), fs::Permissions::from_mode(0o755)).unwrap();
        let mut nar = Vec::new();
        let size = dump(&root, &mut nar).unwrap();
        let (out, calls, result) = dump_handed(&root, &mut |_| Ok(()));
        assert_eq!(result.unwrap(), size);
        assert!(out == nar, "the NAR differs");
        // s1000, s1001, s65536 in one call each, s200003 and a/b/c/deep (300,000) in four
        // and five; s999 and the small files read and written.
        assert_eq!(calls, 1 + 1 + 1 + 4 + 5);
        // An output that fails a call has the rest read and written, with the same result.
        let (out, calls, result) = dump_handed(&root, &mut |call| match call {
            2 | 5 => Err(io::Error::other("cannot splice here")),
            _ => Ok(()),
        });
        assert_eq!(result.unwrap(), size);
        assert!(out == nar, "the NAR differs after a failed call");
        assert!(calls < 11, "{calls}");
    }

    #[test]
    fn a_file_handed_to_the_output_that_shrinks_or_grows_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        make_tree(&root);
        let deep = root.join("a/b/c/deep");
        let open = || fs::OpenOptions::new().write(true).open(&deep).unwrap();
        // Cut after the first 64 KiB went, whether the rest is handed over or, after a failed
        // call, read and written.
        for fail in [false, true] {
            fs::write(&deep, vec![7u8; 300_000]).unwrap();
            let (_, _, result) = dump_handed(&root, &mut |call| {
                if call == 2 {
                    open().set_len(100_000)?;
                    if fail {
                        return Err(io::Error::other("cannot splice here"));
                    }
                }
                Ok(())
            });
            let e = result.unwrap_err();
            assert!(
                matches!(&e, PackError::Changed { path, .. } if *path == deep),
                "{e}"
            );
            assert!(
                e.to_string()
                    .ends_with("(300000 bytes when opened, 100000 bytes when read)"),
                "{e}"
            );
        }
        // Grown before its last bytes went.
        fs::write(&deep, vec![7u8; 300_000]).unwrap();
        let (_, _, result) = dump_handed(&root, &mut |call| {
            if call == 5 {
                io::Write::write_all(
                    &mut fs::OpenOptions::new().append(true).open(&deep)?,
                    b"more",
                )?;
            }
            Ok(())
        });
        let e = result.unwrap_err();
        assert!(
            matches!(&e, PackError::Changed { path, detail } if *path == deep && detail.contains("more when read")),
            "{e}"
        );
    }

    #[test]
    fn write_errors_are_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("broken pipe"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        make_tree(&root);
        let e = pack(&root, Broken).unwrap_err();
        assert!(matches!(e, PackError::Write(_)), "{e}");
    }
}
