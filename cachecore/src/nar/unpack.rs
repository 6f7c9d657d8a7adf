//! Unpacking a NAR into a new filesystem tree, all or nothing.
//!
//! The tree is built in a hidden sibling of the destination (`.<name>.tmp-<pid>-<n>`) and renamed
//! into place only after the whole NAR has been read and validated; on any error the temporary
//! tree is removed, so no half-written result is left behind.
//!
//! Nothing is written outside the destination: names are validated by the [`Reader`] (no `/`,
//! not `.` or `..`), and every file, directory and symlink is created exclusively (`O_EXCL`,
//! `mkdir`, `symlink`), so an existing path — a symlink included — is never followed or
//! overwritten. Symlinks are created as-is and never followed.
//!
//! Files get mode 0o644, or 0o755 if executable, and directories 0o755 (less the umask).
//! Contents are streamed through a 256 KiB buffer; 4 KiB blocks of zeros (aligned in the file)
//! become holes, so sparse files stay sparse.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::reader::{Event, ReadError, Reader};
use super::wire;

const BUFFER: usize = 256 * 1024;
const BLOCK: usize = 4096;

/// Why a NAR could not be unpacked. Nothing is left at the destination in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    #[error("cannot unpack to {}: it already exists", .path.display())]
    DestinationExists { path: PathBuf },
    #[error("cannot unpack to {}: not a path with a file name", .path.display())]
    InvalidDestination { path: PathBuf },
    #[error(transparent)]
    Nar(#[from] ReadError),
    /// Creating (or renaming into place) a file, directory or symlink failed. The path is
    /// where it would have ended up.
    #[error("cannot create {}: {source}", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Unpacks the NAR read from `input` to `dest`, which must not exist (its parent must).
///
/// ```
/// use cachecore::nar;
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::create_dir(src.path().join("bin")).unwrap();
/// # std::fs::write(src.path().join("bin/hello"), "hi\n").unwrap();
/// let mut bytes = Vec::new();
/// nar::pack(src.path(), &mut bytes).unwrap();
/// let out = tempfile::tempdir().unwrap();
/// nar::unpack(&bytes[..], &out.path().join("copy")).unwrap();
/// assert_eq!(std::fs::read_to_string(out.path().join("copy/bin/hello")).unwrap(), "hi\n");
/// // `dest` must not exist: nothing is ever overwritten.
/// assert!(nar::unpack(&bytes[..], &out.path().join("copy")).is_err());
/// ```
pub fn unpack(input: impl Read, dest: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(dest) {
        Ok(_) => {
            return Err(UnpackError::DestinationExists {
                path: dest.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(UnpackError::Create {
                path: dest.to_path_buf(),
                source,
            })
        }
    }
    let Some(name) = dest.file_name() else {
        return Err(UnpackError::InvalidDestination {
            path: dest.to_path_buf(),
        });
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut guard = TempGuard { path: None };
    let mut unpacker = Unpacker {
        reader: Reader::new(input),
        dest,
        path: PathBuf::new(),
        tmp_len: 0,
        target: Vec::new(),
        buf: vec![0; BUFFER],
    };
    let tmp = unpacker.run(parent, name, &mut guard)?;
    // Re-check: `rename` would replace a file or an empty directory created meanwhile.
    if fs::symlink_metadata(dest).is_ok() {
        return Err(UnpackError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    fs::rename(&tmp, dest).map_err(|source| UnpackError::Create {
        path: dest.to_path_buf(),
        source,
    })?;
    guard.path = None;
    Ok(())
}

/// Removes the temporary tree unless disarmed.
struct TempGuard {
    path: Option<PathBuf>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // `remove_dir_all` does not follow symlinks.
            let _ = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(_) => Ok(()),
            };
        }
    }
}

fn temp_name(name: &OsStr, attempt: u32) -> OsString {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Keep the temporary name within NAME_MAX (255).
    let bytes = name.as_bytes();
    let short = OsStr::from_bytes(&bytes[..bytes.len().min(200)]);
    let mut tmp = OsString::from(".");
    tmp.push(short);
    tmp.push(format!(".tmp-{}-{n}-{attempt}", std::process::id()));
    tmp
}

struct Unpacker<'d, R> {
    reader: Reader<R>,
    dest: &'d Path,
    /// Path of the node being created (inside the temporary tree).
    path: PathBuf,
    /// Length of the temporary root's path, to report errors under `dest`.
    tmp_len: usize,
    /// The target of the symlink being created.
    target: Vec<u8>,
    buf: Vec<u8>,
}

impl<R: Read> Unpacker<'_, R> {
    /// Unpacks into a new temporary sibling of `dest`, registered in `guard`; returns its path.
    fn run(
        &mut self,
        parent: &Path,
        name: &OsStr,
        guard: &mut TempGuard,
    ) -> Result<PathBuf, UnpackError> {
        let first = match self.reader.next()? {
            Some(event) => created(event, &mut self.target),
            // Unreachable: the reader does not end before a root node.
            None => Created::Other,
        };
        // Create the root under a fresh temporary name.
        let mut attempt = 0;
        let file = loop {
            self.path = parent.join(temp_name(name, attempt));
            self.tmp_len = self.path.as_os_str().len();
            match self.create(first) {
                Ok(file) => break file,
                Err(UnpackError::Create { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists && attempt < 100 =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let tmp = self.path.clone();
        guard.path = Some(tmp.clone());
        if let Some(file) = file {
            self.write_contents(file)?;
        }
        while let Some(event) = self.reader.next()? {
            match event {
                Event::Entry { name } => {
                    if wire::name_problem(name).is_some() {
                        // The reader already rejects these; never join such a name.
                        return Err(self.create_error(io::ErrorKind::InvalidData.into()));
                    }
                    self.path.push(OsStr::from_bytes(name));
                }
                Event::EntryEnd => {
                    self.path.pop();
                }
                Event::DirectoryEnd => {}
                event => {
                    let node = created(event, &mut self.target);
                    if let Some(file) = self.create(node)? {
                        self.write_contents(file)?;
                    }
                }
            }
        }
        Ok(tmp)
    }

    /// Creates the node at `self.path` exclusively; a regular file is returned open for writing.
    fn create(&mut self, node: Created) -> Result<Option<File>, UnpackError> {
        let result = match node {
            Created::Directory => DirBuilder::new()
                .mode(0o755)
                .create(&self.path)
                .map(|()| None),
            Created::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&self.target), &self.path)
                    .map(|()| None)
            }
            Created::File { executable } => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if executable { 0o755 } else { 0o644 })
                .open(&self.path)
                .map(Some),
            Created::Other => Err(io::ErrorKind::InvalidData.into()),
        };
        result.map_err(|e| self.create_error(e))
    }

    fn write_contents(&mut self, file: File) -> Result<(), UnpackError> {
        let mut out = SparseFile {
            file,
            pos: 0,
            hole: 0,
        };
        loop {
            let n = self.reader.read_contents(&mut self.buf)?;
            if n == 0 {
                break;
            }
            out.write(&self.buf[..n]).map_err(|e| self.write_error(e))?;
        }
        out.finish().map_err(|e| self.write_error(e))
    }

    /// Where the current path would be under `dest`.
    fn final_path(&self) -> PathBuf {
        let path = self.path.as_os_str().as_bytes();
        let rel = &path[self.tmp_len.min(path.len())..];
        let rel = OsStr::from_bytes(rel.strip_prefix(b"/").unwrap_or(rel));
        if rel.is_empty() {
            self.dest.to_path_buf()
        } else {
            self.dest.join(rel)
        }
    }

    fn create_error(&self, source: io::Error) -> UnpackError {
        UnpackError::Create {
            path: self.final_path(),
            source,
        }
    }

    fn write_error(&self, source: io::Error) -> UnpackError {
        UnpackError::Write {
            path: self.final_path(),
            source,
        }
    }
}

/// A node to create, from its first event; a symlink's target is copied to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Created {
    File { executable: bool },
    Symlink,
    Directory,
    Other,
}

fn created(event: Event<'_>, target: &mut Vec<u8>) -> Created {
    match event {
        Event::File { executable, .. } => Created::File { executable },
        Event::Symlink { target: t } => {
            target.clear();
            target.extend_from_slice(t);
            Created::Symlink
        }
        Event::DirectoryStart => Created::Directory,
        _ => Created::Other,
    }
}

/// Writes a file, turning aligned all-zero blocks into holes.
struct SparseFile {
    file: File,
    /// Logical size written so far (holes included).
    pos: u64,
    /// Zero bytes skipped but not yet materialised by a seek.
    hole: u64,
}

impl SparseFile {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut i = 0;
        let mut run_start = 0;
        while i < data.len() {
            // The next block ends at a BLOCK boundary of the file offset.
            let at = self.pos + i as u64;
            let len = (BLOCK - (at % BLOCK as u64) as usize).min(data.len() - i);
            let block = &data[i..i + len];
            // Partial blocks occur only at the edges of `data`; skipping their zeros too lets
            // a block split across two calls still become a hole.
            if is_zero(block) {
                self.write_run(&data[run_start..i])?;
                self.hole += len as u64;
                run_start = i + len;
            }
            i += len;
        }
        self.write_run(&data[run_start..])?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn write_run(&mut self, run: &[u8]) -> io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        if self.hole > 0 {
            let hole = i64::try_from(self.hole).map_err(|_| io::Error::other("file too large"))?;
            self.file.seek(SeekFrom::Current(hole))?;
            self.hole = 0;
        }
        self.file.write_all(run)
    }

    fn finish(self) -> io::Result<()> {
        if self.hole > 0 {
            self.file.set_len(self.pos)?;
        }
        Ok(())
    }
}

fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::super::pack::{pack, tests::make_tree};
    use super::super::reader::tests::{nar, sample};
    use super::*;

    /// Compares two trees: types, contents, executable bits, symlink targets.
    fn assert_same_tree(a: &Path, b: &Path) {
        let (ma, mb) = (
            fs::symlink_metadata(a).unwrap(),
            fs::symlink_metadata(b).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", b.display());
        if ma.is_symlink() {
            assert_eq!(fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
        } else if ma.is_file() {
            assert_eq!(
                fs::read(a).unwrap(),
                fs::read(b).unwrap(),
                "{}",
                b.display()
            );
            assert_eq!(ma.mode() & 0o100, mb.mode() & 0o100, "{}", b.display());
        } else {
            let names = |p: &Path| {
                let mut v: Vec<_> = fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                v.sort();
                v
            };
            let (na, nb) = (names(a), names(b));
            assert_eq!(na, nb);
            for n in na {
                assert_same_tree(&a.join(&n), &b.join(&n));
            }
        }
    }

    fn dir_entries(p: &Path) -> Vec<OsString> {
        fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        make_tree(&src);
        let mut data = Vec::new();
        pack(&src, &mut data).unwrap();
        let dest = tmp.path().join("dest");
        unpack(&data[..], &dest).unwrap();
        assert_same_tree(&src, &dest);
        assert_eq!(
            fs::metadata(dest.join("exe")).unwrap().permissions().mode() & 0o111,
            0o111 & !umask()
        );
        let mut again = Vec::new();
        pack(&dest, &mut again).unwrap();
        assert_eq!(data, again);
        // Only src and dest: no temporary left.
        assert_eq!(dir_entries(tmp.path()).len(), 2);
    }

    fn umask() -> u32 {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o777)
            .open(&p)
            .unwrap();
        !fs::metadata(&p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn file_and_symlink_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"",
            b"contents",
            b"hi",
            b")",
        ]);
        unpack(&data[..], &tmp.path().join("f")).unwrap();
        assert_eq!(fs::read(tmp.path().join("f")).unwrap(), b"hi");
        assert_ne!(
            fs::metadata(tmp.path().join("f")).unwrap().mode() & 0o100,
            0
        );
        let data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"/etc/passwd",
            b")",
        ]);
        unpack(&data[..], &tmp.path().join("l")).unwrap();
        assert_eq!(
            fs::read_link(tmp.path().join("l")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(dir_entries(tmp.path()).len(), 2);
    }

    #[test]
    fn refuses_existing_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("d");
        fs::create_dir(&dest).unwrap();
        let e = unpack(&sample()[..], &dest).unwrap_err();
        assert!(matches!(e, UnpackError::DestinationExists { .. }), "{e}");
        let link = tmp.path().join("dangling");
        std::os::unix::fs::symlink("nowhere", &link).unwrap();
        let e = unpack(&sample()[..], &link).unwrap_err();
        assert!(matches!(e, UnpackError::DestinationExists { .. }), "{e}");
        assert!(!tmp.path().join("nowhere").exists());
        let e = unpack(&sample()[..], Path::new("/")).unwrap_err();
        assert!(matches!(e, UnpackError::DestinationExists { .. }), "{e}");
        let e = unpack(&sample()[..], &tmp.path().join("no/parent")).unwrap_err();
        assert!(matches!(e, UnpackError::Create { .. }), "{e}");
    }

    #[test]
    fn leaves_nothing_on_corrupt_nar() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("d");
        let data = sample();
        // Every truncation, and a corruption near the end.
        let mut corrupt = data.clone();
        let n = corrupt.len();
        corrupt[n - 20] = 1;
        let mut inputs: Vec<Vec<u8>> = (0..data.len()).map(|n| data[..n].to_vec()).collect();
        inputs.push(corrupt);
        let mut trailing = data.clone();
        trailing.push(0);
        inputs.push(trailing);
        for input in inputs {
            let e = unpack(&input[..], &dest).unwrap_err();
            assert!(matches!(e, UnpackError::Nar(_)), "{e}");
            assert!(
                dir_entries(tmp.path()).is_empty(),
                "{e}: {:?}",
                dir_entries(tmp.path())
            );
        }
        unpack(&data[..], &dest).unwrap();
    }

    #[test]
    fn unsorted_names_cannot_overwrite() {
        // A duplicate name is rejected before anything is written over the first one.
        let tmp = tempfile::tempdir().unwrap();
        let data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"a",
            b"node",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"/etc",
            b")",
            b")",
            b"entry",
            b"(",
            b"name",
            b"a",
            b"node",
            b"(",
            b"type",
            b"directory",
            b")",
            b")",
            b")",
        ]);
        let e = unpack(&data[..], &tmp.path().join("d")).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert!(dir_entries(tmp.path()).is_empty());
    }

    #[test]
    fn sparse_files() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("big");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let mut out = OpenOptions::new().write(true).open(&src).unwrap();
        out.seek(SeekFrom::Start(5000)).unwrap();
        out.write_all(b"data in the middle").unwrap();
        drop(out);
        let mut data = Vec::new();
        pack(&src, &mut data).unwrap();
        let dest = tmp.path().join("copy");
        unpack(&data[..], &dest).unwrap();
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dest).unwrap());
        let m = fs::metadata(&dest).unwrap();
        assert_eq!(m.len(), 64 << 20);
        // Holes: only on a filesystem that keeps them, which `src` (made with set_len, a hole
        // wherever the filesystem allows one) shows.
        let holes_kept = fs::metadata(&src).unwrap().blocks() * 512 < 1 << 20;
        if holes_kept {
            assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
        } else {
            eprintln!(
                "sparse_files: {} does not keep holes, so whether unpack made them is not checked",
                tmp.path().display()
            );
        }
    }

    #[test]
    fn zero_blocks() {
        assert!(is_zero(&[0; BLOCK]));
        let mut b = [0; BLOCK];
        b[BLOCK - 1] = 1;
        assert!(!is_zero(&b));
        // Unaligned writes of zeros and data in pieces.
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let mut f = SparseFile {
            file: File::create(&p).unwrap(),
            pos: 0,
            hole: 0,
        };
        let mut expect = Vec::new();
        for (len, byte) in [(100, 1u8), (10_000, 0), (3, 2), (9000, 0), (BLOCK * 3, 0)] {
            let chunk = vec![byte; len];
            f.write(&chunk).unwrap();
            expect.extend_from_slice(&chunk);
        }
        f.finish().unwrap();
        assert_eq!(fs::read(&p).unwrap(), expect);
    }
}
