//! Directories: temporary ones Nix builders can read, the fixture tree with every kind of entry
//! the NAR tests run on, and comparing trees as NAR sees them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::data::pseudo_random_bytes;
use crate::nar::NarBuilder;

/// A fresh directory under /tmp, world-readable (Nix builders run as nixbld users).
pub fn tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("cachecore-test-")
        .tempdir_in("/tmp")
        .expect("cannot create a temporary directory under /tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `p` as UTF-8 (test paths always are).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Every file under `dir` (not directories), relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What a tree holds, as NAR sees it: regular files (contents, executable bit), symlinks
/// (targets) and directories (entry sets, recursively).
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Regular { executable: bool, contents: Vec<u8> },
    Symlink(Vec<u8>),
    Directory(BTreeMap<Vec<u8>, Node>),
}

/// Reads a tree without following symlinks.
pub fn read_tree(path: &Path) -> Node {
    let meta = fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
    let ft = meta.file_type();
    if ft.is_symlink() {
        Node::Symlink(fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec())
    } else if ft.is_file() {
        Node::Regular {
            executable: meta.permissions().mode() & 0o100 != 0,
            contents: fs::read(path).unwrap(),
        }
    } else if ft.is_dir() {
        let mut entries = BTreeMap::new();
        for entry in fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            entries.insert(
                entry.file_name().as_bytes().to_vec(),
                read_tree(&entry.path()),
            );
        }
        Node::Directory(entries)
    } else {
        panic!(
            "{} is neither a file, a symlink nor a directory",
            path.display()
        );
    }
}

/// Compares two trees; on mismatch names the first differing path.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    fn walk(rel: &str, e: &Node, a: &Node, problems: &mut Vec<String>) {
        match (e, a) {
            (Node::Directory(de), Node::Directory(da)) => {
                let ke: Vec<_> = de.keys().collect();
                let ka: Vec<_> = da.keys().collect();
                if ke != ka {
                    let show = |k: &[&Vec<u8>]| -> Vec<String> {
                        k.iter()
                            .map(|n| String::from_utf8_lossy(n).into_owned())
                            .collect()
                    };
                    problems.push(format!(
                        "{rel}/: entries differ:\n  expected {:?}\n  actual   {:?}",
                        show(&ke),
                        show(&ka)
                    ));
                }
                for (name, ne) in de {
                    if let Some(na) = da.get(name) {
                        walk(
                            &format!("{rel}/{}", String::from_utf8_lossy(name)),
                            ne,
                            na,
                            problems,
                        );
                    }
                }
            }
            (
                Node::Regular {
                    executable: xe,
                    contents: ce,
                },
                Node::Regular {
                    executable: xa,
                    contents: ca,
                },
            ) => {
                if xe != xa {
                    problems.push(format!("{rel}: executable bit: expected {xe}, got {xa}"));
                }
                if ce != ca {
                    problems.push(format!(
                        "{rel}: contents differ ({} vs {} bytes)",
                        ce.len(),
                        ca.len()
                    ));
                }
            }
            (Node::Symlink(te), Node::Symlink(ta)) => {
                if te != ta {
                    problems.push(format!(
                        "{rel}: symlink target: expected {:?}, got {:?}",
                        String::from_utf8_lossy(te),
                        String::from_utf8_lossy(ta)
                    ));
                }
            }
            _ => problems.push(format!("{rel}: different kinds: expected {e:?}, got {a:?}")),
        }
    }
    let mut problems = Vec::new();
    walk(".", &read_tree(expected), &read_tree(actual), &mut problems);
    assert!(
        problems.is_empty(),
        "tree {} differs from {}:\n{}",
        actual.display(),
        expected.display(),
        problems.join("\n")
    );
}

/// Every regular file under `root`, as (NAR subpath with `/` separators, contents).
pub fn regular_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_str().unwrap().to_owned();
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                walk(&entry.path(), &sub, out);
            } else if ft.is_file() {
                out.push((sub, fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// The fixture tree

/// Writes `contents` to `path` with permission bits `mode`.
pub fn write_mode(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Names for the entry-order checks: byte order differs from locale and case-folded order.
pub const SORTING_NAMES: &[&str] = &[
    "B", "a", "_", "Z10", "Z9", "A", "b", "ä", "é", "e", "a.b", "a-b", "ab", "aa", "0", "10", "9",
    "~", "-", ".x", "Ä", "z", "zz", "名", "a b", "a_b", "A_B", "aB", "Ab",
];

/// Exotic names, all legal in a NAR (no `/`, NUL, `.` or `..`).
pub const EXOTIC_NAMES: &[&str] = &[
    "a b",
    "ü—名",
    "!#$%&'()+,;=@[]^_{}~",
    "...",
    "..a",
    ".hidden",
    "-leading-dash",
    " leading space",
    "trailing space ",
    "tab\there",
    "new\nline",
    "back\\slash",
    "quote\"s",
    "*?<>|",
    "emoji 😀",
];

/// Builds `parent/fixture-tree`, a directory with every kind of entry. The root name is a
/// valid store path name, the inner names are not restricted.
pub fn make_fixture_tree(parent: &Path) -> PathBuf {
    let root = parent.join("fixture-tree");
    fs::create_dir(&root).unwrap();
    let p = |rel: &str| root.join(rel);

    write_mode(&p("empty"), b"", 0o644);
    write_mode(&p("exec.sh"), b"#!/bin/sh\necho hello\n", 0o755);
    write_mode(&p("exec-user-only"), b"x", 0o744);
    write_mode(&p("readonly"), b"read only\n", 0o444);
    write_mode(&p("empty-exec"), b"", 0o755);
    write_mode(&p("content.txt"), b"some content\nwith two lines\n", 0o644);
    // Files of every size around the 8-byte padding boundary.
    fs::create_dir(p("pad")).unwrap();
    for size in 0..=17 {
        write_mode(
            &p(&format!("pad/size-{size:02}")),
            &pseudo_random_bytes(size, size as u64 + 7),
            if size % 3 == 0 { 0o755 } else { 0o644 },
        );
    }
    // A bigger file, not a multiple of 8 bytes, with every byte value.
    write_mode(
        &p("big.bin"),
        &pseudo_random_bytes((1 << 20) + 3, 42),
        0o644,
    );
    // A file that looks like a NAR token stream.
    write_mode(
        &p("nar-lookalike"),
        &NarBuilder::new()
            .magic()
            .str("(")
            .str("type")
            .str(")")
            .finish(),
        0o644,
    );

    fs::create_dir(p("links")).unwrap();
    symlink("../content.txt", p("links/relative")).unwrap();
    symlink("/etc/hostname", p("links/absolute")).unwrap();
    symlink("nowhere/at/all", p("links/dangling")).unwrap();
    symlink("../deep", p("links/to-dir")).unwrap();
    symlink("loop", p("links/loop")).unwrap();
    symlink("../names/ü—名", p("links/unicode-target")).unwrap();
    symlink(".", p("links/dot")).unwrap();
    symlink("a b/c d", p("links/space target")).unwrap();

    fs::create_dir(p("empty-dir")).unwrap();
    fs::create_dir_all(p("dir-with-empty/inner-empty")).unwrap();

    // 30 levels of directories.
    let mut deep = p("deep");
    for level in 0..30 {
        deep.push(format!("d{level:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    write_mode(&deep.join("leaf"), b"at the bottom\n", 0o644);
    symlink("../d28", deep.join("up")).unwrap();

    fs::create_dir(p("names")).unwrap();
    for (i, name) in EXOTIC_NAMES.iter().enumerate() {
        write_mode(
            &p("names").join(name),
            name.as_bytes(),
            if i % 2 == 0 { 0o644 } else { 0o755 },
        );
    }
    fs::create_dir(p("names/dir ü—名 !#$%&'()+,;=@[]^_{}~")).unwrap();
    write_mode(
        &p("names/dir ü—名 !#$%&'()+,;=@[]^_{}~/inside"),
        b"inside\n",
        0o644,
    );
    // The longest name Linux allows (255 bytes), and one of 249 (padding of 7).
    write_mode(&p("names").join("L".repeat(255)), b"long name", 0o644);
    write_mode(&p("names").join("M".repeat(249)), b"", 0o644);
    // A hard link: NAR stores it as a second regular file.
    fs::hard_link(p("content.txt"), p("names/hard-link")).unwrap();

    fs::create_dir(p("sorting")).unwrap();
    for (i, name) in SORTING_NAMES.iter().enumerate() {
        let path = p("sorting").join(name);
        match i % 3 {
            0 => write_mode(&path, name.as_bytes(), 0o644),
            1 => symlink(name, &path).unwrap(),
            _ => {
                fs::create_dir(&path).unwrap();
                write_mode(&path.join(name), b"", 0o644);
            }
        }
    }
    // Many entries in one directory.
    fs::create_dir(p("many")).unwrap();
    for i in (0..300).rev() {
        write_mode(
            &p(&format!("many/f{i}")),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }

    // Make everything world-readable for nixbld builders (files keep their x bits).
    make_world_readable(&root);
    root
}

/// Gives every directory 0755 and every file read bits for all (nixbld builders read them).
pub fn make_world_readable(path: &Path) {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = meta.permissions().mode();
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        for entry in fs::read_dir(path).unwrap() {
            make_world_readable(&entry.unwrap().path());
        }
    } else {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o444)).unwrap();
    }
}

/// The roots every NAR test runs on: the fixture tree and single-entry roots.
pub fn make_all_roots(parent: &Path) -> Vec<PathBuf> {
    let tree = make_fixture_tree(parent);
    write_mode(&parent.join("single-file"), b"just one file\n", 0o644);
    write_mode(&parent.join("single-exec"), b"#!/bin/sh\n", 0o755);
    write_mode(&parent.join("empty-file"), b"", 0o644);
    symlink("fixture-tree/content.txt", parent.join("root-link")).unwrap();
    symlink("/does/not/exist", parent.join("dangling-root-link")).unwrap();
    fs::create_dir(parent.join("empty-root-dir")).unwrap();
    fs::set_permissions(
        parent.join("empty-root-dir"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    vec![
        tree.clone(),
        parent.join("single-file"),
        parent.join("single-exec"),
        parent.join("empty-file"),
        parent.join("root-link"),
        parent.join("dangling-root-link"),
        parent.join("empty-root-dir"),
        tree.join("deep"),
        tree.join("names"),
        tree.join("big.bin"),
    ]
}
