//! Bad input of every kind: each reader fails cleanly (one `cachecore: error:` line naming the NAR
//! byte offset, non-zero exit), never panics, and `nar unpack` leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Read as _;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cachecore::narinfo::NarInfo;
use common::*;

// ---------------------------------------------------------------------------------------------
// Corrupt NARs
// ---------------------------------------------------------------------------------------------

/// A corrupt NAR and the byte offset its error must report.
struct Case {
    name: String,
    nar: Vec<u8>,
    offset: u64,
}

fn case(name: impl Into<String>, nar: Vec<u8>, offset: usize) -> Case {
    Case {
        name: name.into(),
        nar,
        offset: offset as u64,
    }
}

/// A valid start: the root directory and its first entry, a file named `0` (which sorts before
/// every other name used here).
fn prefix() -> NarBuilder {
    NarBuilder::new()
        .magic()
        .begin_dir()
        .entry("0")
        .regular(false, b"zero\n")
        .end_entry()
}

/// `prefix()` then `entry ( name` — the offset returned is where the name token starts.
fn at_next_name() -> (NarBuilder, usize) {
    let b = prefix().strs(&["entry", "(", "name"]);
    let at = b.offset();
    (b, at)
}

fn corrupt_nars() -> Vec<Case> {
    let mut cases = Vec::new();

    // Magic.
    let b = NarBuilder::new().str("nix-archive-2").begin_dir().end_dir();
    cases.push(case("bad magic", b.finish(), 0));
    let b = NarBuilder::new()
        .str("nix-archive-1x")
        .begin_dir()
        .end_dir();
    cases.push(case("magic with a different length", b.finish(), 0));
    cases.push(case(
        "text, not a NAR",
        b"hello, world! this is not a NAR at all.\n".to_vec(),
        0,
    ));
    cases.push(case(
        "huge first length",
        NarBuilder::new().len_field(u64::MAX).raw(&[0; 32]).finish(),
        0,
    ));
    let mut nar = prefix().end_dir().finish();
    nar[21] = b'!'; // padding after "nix-archive-1"
    cases.push(case("non-zero padding in the magic", nar, 21));

    // Entry order.
    let b = prefix()
        .entry("b")
        .regular(false, b"b")
        .end_entry()
        .strs(&["entry", "(", "name"]);
    let at = b.offset();
    let b = b
        .str("a")
        .str("node")
        .regular(false, b"a")
        .end_entry()
        .end_dir();
    cases.push(case("entries out of order (b, a)", b.finish(), at));
    let b = prefix()
        .entry("Z9")
        .regular(false, b"")
        .end_entry()
        .strs(&["entry", "(", "name"]);
    let at = b.offset();
    let b = b
        .str("Z10")
        .str("node")
        .regular(false, b"")
        .end_entry()
        .end_dir();
    cases.push(case("entries out of order (Z9, Z10)", b.finish(), at));
    let b = prefix()
        .entry("a")
        .regular(false, b"")
        .end_entry()
        .strs(&["entry", "(", "name"]);
    let at = b.offset();
    let b = b
        .str("B")
        .str("node")
        .regular(false, b"")
        .end_entry()
        .end_dir();
    cases.push(case("entries out of order (a, B)", b.finish(), at));
    let b = prefix()
        .entry("dup")
        .regular(false, b"1")
        .end_entry()
        .strs(&["entry", "(", "name"]);
    let at = b.offset();
    let b = b
        .str("dup")
        .str("node")
        .regular(false, b"2")
        .end_entry()
        .end_dir();
    cases.push(case("duplicate entry", b.finish(), at));
    let (b, at) = at_next_name();
    let b = b
        .str("0")
        .str("node")
        .regular(false, b"again")
        .end_entry()
        .end_dir();
    cases.push(case("duplicate of the first entry", b.finish(), at));

    // Oversized length fields.
    let (b, at) = at_next_name();
    cases.push(case(
        "name length 2^62",
        b.len_field(1 << 62).raw(b"abcdefgh").finish(),
        at,
    ));
    let (b, at) = at_next_name();
    cases.push(case(
        "name length 2^64-1",
        b.len_field(u64::MAX).raw(b"abcdefgh").finish(),
        at,
    ));
    let (b, at) = at_next_name();
    cases.push(case(
        "name longer than the limit",
        b.str(&"n".repeat(cachecore::nar::MAX_NAME_LEN + 1))
            .str("node")
            .regular(false, b"")
            .end_entry()
            .end_dir()
            .finish(),
        at,
    ));
    let b = prefix().entry("t").strs(&["("]);
    let at = b.offset();
    cases.push(case(
        "\"type\" token length 2^62",
        b.len_field(1 << 62).raw(&[0; 64]).finish(),
        at,
    ));
    let b = prefix().entry("t").strs(&["(", "type"]);
    let at = b.offset();
    cases.push(case(
        "node type length 2^62",
        b.len_field(1 << 62).raw(&[0; 64]).finish(),
        at,
    ));
    let b = prefix()
        .entry("t")
        .strs(&["(", "type", "symlink", "target"]);
    let at = b.offset();
    cases.push(case(
        "symlink target length 2^62",
        b.len_field(1 << 62).raw(&[0; 64]).finish(),
        at,
    ));
    let b = prefix()
        .entry("t")
        .strs(&["(", "type", "regular", "contents"])
        .len_field(1 << 62)
        .raw(&[7; 64]);
    let end = b.offset();
    cases.push(case(
        "file contents length 2^62 (input ends)",
        b.finish(),
        end,
    ));
    let b = prefix()
        .entry("t")
        .strs(&["(", "type", "regular", "contents"])
        .len_field(1000)
        .raw(&[7; 64]);
    let end = b.offset();
    cases.push(case("file shorter than its length", b.finish(), end));

    // Traversal and invalid names.
    for name in [
        &b".."[..],
        b".",
        b"a/b",
        b"/",
        b"/etc",
        b"../../../../../../tmp/cachecore-e2e-evil",
        b"",
        b"a\0b",
    ] {
        let (b, at) = at_next_name();
        let b = b
            .bytes(name)
            .str("node")
            .regular(false, b"evil\n")
            .end_entry()
            .end_dir();
        cases.push(case(
            format!("entry named {:?}", String::from_utf8_lossy(name)),
            b.finish(),
            at,
        ));
    }
    let (b, at) = at_next_name();
    let b = b
        .bytes(b"..")
        .str("node")
        .begin_dir()
        .entry("escaped")
        .regular(false, b"evil\n")
        .end_entry()
        .end_dir()
        .end_entry()
        .end_dir();
    cases.push(case(
        "directory named \"..\" with a file inside",
        b.finish(),
        at,
    ));
    for target in [&b""[..], b"a\0b"] {
        let b = prefix()
            .entry("t")
            .strs(&["(", "type", "symlink", "target"]);
        let at = b.offset();
        let b = b.bytes(target).str(")").end_entry().end_dir();
        cases.push(case(
            format!("symlink target {:?}", String::from_utf8_lossy(target)),
            b.finish(),
            at,
        ));
    }

    // Non-zero padding.
    let (b, at) = at_next_name();
    let b = b
        .len_field(1)
        .raw(b"a\0\0\x01\0\0\0\0")
        .str("node")
        .regular(false, b"")
        .end_entry()
        .end_dir();
    cases.push(case(
        "non-zero padding after a name",
        b.finish(),
        at + 8 + 3,
    ));
    let b = prefix()
        .entry("f")
        .strs(&["(", "type", "regular", "contents"]);
    let at = b.offset();
    let b = b
        .len_field(5)
        .raw(b"hello\0\0\xff")
        .str(")")
        .end_entry()
        .end_dir();
    cases.push(case(
        "non-zero padding after contents",
        b.finish(),
        at + 8 + 7,
    ));
    let b = prefix()
        .entry("f")
        .strs(&["(", "type", "regular", "contents"])
        .len_field(0)
        .raw(b"\0\0\0\0\0\0\0\0");
    let at = b.offset();
    let b = b.str(")").end_entry().end_dir();
    // An empty file has no padding: the 8 zero bytes are read as the next token (length 0), not ")".
    cases.push(case("padding after empty contents", b.finish(), at - 8));

    // Structure.
    let b = prefix().entry("f").strs(&["(", "type"]);
    let at = b.offset();
    cases.push(case(
        "unknown node type",
        b.str("fifo").str(")").end_entry().end_dir().finish(),
        at,
    ));
    let b = prefix().entry("f").strs(&["(", "type", "regular"]);
    let at = b.offset();
    cases.push(case(
        "unknown file field",
        b.str("colour")
            .str("blue")
            .str(")")
            .end_entry()
            .end_dir()
            .finish(),
        at,
    ));
    let b = prefix()
        .entry("f")
        .strs(&["(", "type", "regular", "executable"]);
    let at = b.offset();
    cases.push(case(
        "executable with a value",
        b.str("yes")
            .str("contents")
            .bytes(b"")
            .str(")")
            .end_entry()
            .end_dir()
            .finish(),
        at,
    ));
    let b = prefix().strs(&["entry", "(", "name", "f"]);
    let at = b.offset();
    cases.push(case(
        "entry without node",
        b.str(")").end_dir().finish(),
        at,
    ));
    let b = prefix();
    let at = b.offset();
    cases.push(case(
        "garbage in a directory",
        b.str("garbage").end_dir().finish(),
        at,
    ));
    let b = NarBuilder::new().magic();
    let at = b.offset();
    cases.push(case(
        "no opening parenthesis",
        b.strs(&["type", "regular", "contents"])
            .bytes(b"")
            .str(")")
            .finish(),
        at,
    ));
    let b = prefix().end_dir();
    let at = b.offset();
    cases.push(case("data after the end", b.str("(").finish(), at));
    let b = prefix().end_dir();
    let at = b.offset();
    cases.push(case("one byte after the end", b.raw(b"\0").finish(), at));

    // Truncation: several prefixes of a valid NAR; the error is where the input ends.
    let valid = small_valid_nar();
    for len in [
        0,
        1,
        7,
        8,
        13,
        16,
        23,
        24,
        40,
        100,
        valid.len() / 2,
        valid.len() - 9,
        valid.len() - 8,
        valid.len() - 1,
    ] {
        cases.push(case(
            format!("truncated to {len} of {} bytes", valid.len()),
            valid[..len].to_vec(),
            len,
        ));
    }
    cases
}

/// stderr names `offset` as "byte N" or "offset N".
fn mentions_offset(stderr: &str, offset: u64) -> bool {
    ["byte ", "offset ", "byte: ", "offset: "].iter().any(|p| {
        let needle = format!("{p}{offset}");
        stderr
            .match_indices(&needle)
            .any(|(i, m)| !stderr[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

#[track_caller]
fn assert_nar_error(out: &std::process::Output, what: &str, c: &Case) {
    let line = assert_clean_error(out, &format!("{what} <{}>", c.name));
    assert!(
        mentions_offset(&line, c.offset),
        "`{what}` on a NAR with {}: the error should name NAR byte {}, got:\n{line}",
        c.name,
        c.offset
    );
}

#[test]
fn the_nar_builder_makes_valid_nars() {
    // Sanity check of the helper against real Nix: what it builds, Nix restores.
    let dir = tempdir();
    let nar = small_valid_nar();
    let dest = dir.path().join("restored");
    nix_ok(nix_command("nix-store").arg("--restore").arg(&dest), &nar);
    assert_same_bytes(
        "nix-store --dump of the restored helper NAR",
        &nar,
        &nix_dump(&dest),
    );
    let b = prefix()
        .entry("b")
        .regular(false, b"b")
        .end_entry()
        .end_dir()
        .finish();
    let dest = dir.path().join("restored2");
    nix_ok(nix_command("nix-store").arg("--restore").arg(&dest), &b);
    assert_same_bytes("nix-store --dump of prefix()", &b, &nix_dump(&dest));
}

#[test]
fn unpack_rejects_corrupt_nars_and_leaves_nothing_behind() {
    for c in corrupt_nars() {
        let work = tempdir();
        let parent = work.path().join("parent");
        let cwd = work.path().join("cwd");
        fs::create_dir(&parent).unwrap();
        fs::create_dir(&cwd).unwrap();
        let dest = parent.join("dest");
        let mut cmd = cachecore_command();
        cmd.args(["nar", "unpack"]).arg(&dest).current_dir(&cwd);
        let out = run_with_stdin(&mut cmd, &c.nar);
        assert_nar_error(&out, "cachecore nar unpack DEST", &c);
        assert!(
            fs::symlink_metadata(&dest).is_err(),
            "`nar unpack` of a NAR with {} left {} behind",
            c.name,
            dest.display()
        );
        for d in [&parent, &cwd] {
            let left: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(
                left.is_empty(),
                "`nar unpack` of a NAR with {} left {left:?} in {}",
                c.name,
                d.display()
            );
        }
        let left: Vec<_> = fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left.len(),
            2,
            "`nar unpack` of a NAR with {} wrote {left:?}",
            c.name
        );
        assert!(
            !Path::new("/tmp/cachecore-e2e-evil").exists(),
            "traversal escaped: /tmp/cachecore-e2e-evil"
        );
    }
}

#[test]
fn ls_rejects_corrupt_nars() {
    let dir = tempdir();
    for (i, c) in corrupt_nars().into_iter().enumerate() {
        let file = dir.path().join(format!("corrupt-{i}.nar"));
        fs::write(&file, &c.nar).unwrap();
        let f = path_str(&file);
        assert_nar_error(
            &cachecore_output(&["nar", "ls", f], b""),
            "cachecore nar ls FILE",
            &c,
        );
        assert_nar_error(
            &cachecore_output(&["nar", "ls", "--json", f], b""),
            "cachecore nar ls --json FILE",
            &c,
        );
        assert_nar_error(
            &cachecore_output(&["nar", "ls", "--json", "-"], &c.nar),
            "cachecore nar ls --json -",
            &c,
        );
    }
}

#[test]
fn cat_rejects_corrupt_nars_when_the_file_is_after_the_damage() {
    let dir = tempdir();
    for (i, c) in corrupt_nars().into_iter().enumerate() {
        let file = dir.path().join(format!("corrupt-{i}.nar"));
        fs::write(&file, &c.nar).unwrap();
        // "zz" would come after the damage (and is not there): the reader must hit the damage.
        // (Data after the end of the root is not before "zz" in the tree: a reader may report
        // "not found" there; the next test covers it.)
        if c.name.contains("after the end") {
            continue;
        }
        let out = cachecore_output(&["nar", "cat", path_str(&file), "zz"], b"");
        assert_nar_error(&out, "cachecore nar cat FILE zz", &c);
        let out = cachecore_output(&["nar", "cat", "-", "zz"], &c.nar);
        assert_nar_error(&out, "cachecore nar cat - zz", &c);
    }
}

#[test]
fn cat_rejects_corrupt_nars_even_when_the_file_is_before_the_damage() {
    // A damaged archive is an error even if the wanted file ("0", the first entry) came before
    // the damage. (`nix nar cat` parses the whole NAR first, so Nix 2.8 rejects most of these
    // too; it accepts unsorted or duplicate names, an entry without node and trailing data.)
    let dir = tempdir();
    let mut accepted = Vec::new();
    let mut missed = Vec::new();
    for (i, c) in corrupt_nars().into_iter().enumerate() {
        let file = dir.path().join(format!("corrupt-{i}.nar"));
        fs::write(&file, &c.nar).unwrap();
        let out = cachecore_output(&["nar", "cat", path_str(&file), "0"], b"");
        if out.status.success() {
            accepted.push(c.name.clone());
            continue;
        }
        let line = assert_clean_error(&out, &format!("cachecore nar cat FILE 0 <{}>", c.name));
        if !mentions_offset(&line, c.offset) {
            missed.push(format!("{}: {line}", c.name));
        }
    }
    assert!(
        accepted.is_empty() && missed.is_empty(),
        "`cachecore nar cat FILE 0` does not see damage after the entry it looks for.\n\
         It printed the first file and exited 0 for {} corrupt NARs:\n  {}\n\
         It failed without naming the damage's NAR byte for {} corrupt NARs:\n  {}",
        accepted.len(),
        accepted.join("\n  "),
        missed.len(),
        missed.join("\n  ")
    );
}

#[test]
fn library_readers_reject_every_truncation_without_panicking() {
    // Every prefix of a real NAR (from nix-store --dump), in-process.
    let dir = tempdir();
    let tree = dir.path().join("t");
    fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    fs::write(tree.join("a"), b"hello\n").unwrap();
    fs::write(tree.join("sub/deeper/b"), b"12345678").unwrap();
    std::os::unix::fs::symlink("../a", tree.join("sub/link")).unwrap();
    fs::create_dir(tree.join("sub/empty")).unwrap();
    let nar = nix_dump(&tree);
    assert!(cachecore::nar::Listing::from_nar(&nar[..]).is_ok());
    for len in 0..nar.len() {
        let err = cachecore::nar::Listing::from_nar(&nar[..len]).expect_err(&format!(
            "Listing::from_nar accepted a NAR truncated to {len} bytes"
        ));
        assert_eq!(err.offset, len as u64, "prefix {len}: {err}");
        let mut reader = cachecore::nar::Reader::new(&nar[..len]);
        let err = loop {
            match reader.next() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("Reader accepted a NAR truncated to {len} bytes"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.offset, len as u64, "prefix {len}: {err}");
    }
    // Every prefix through the CLI, in steps (each is a process).
    for len in (0..nar.len()).step_by(29) {
        let c = case(format!("truncated to {len}"), nar[..len].to_vec(), len);
        assert_nar_error(
            &cachecore_output(&["nar", "ls", "--json", "-"], &c.nar),
            "cachecore nar ls --json -",
            &c,
        );
        let dest = dir.path().join(format!("u{len}"));
        let out = cachecore_output(
            &["nar".as_ref(), "unpack".as_ref(), dest.as_os_str()],
            &c.nar,
        );
        assert_nar_error(&out, "cachecore nar unpack", &c);
        assert!(fs::symlink_metadata(&dest).is_err());
    }
}

#[test]
fn nesting_beyond_the_limit_is_an_error_not_a_stack_overflow() {
    let depth = cachecore::nar::MAX_DEPTH + 1;
    let mut b = NarBuilder::new().magic();
    for _ in 0..depth - 1 {
        b = b.begin_dir().entry("d");
    }
    let start = b.offset();
    b = b.begin_dir();
    let end = b.offset();
    for _ in 0..depth - 1 {
        b = b.end_dir().end_entry();
    }
    let nar = b.end_dir().finish();
    let dir = tempdir();
    for args in [
        vec!["nar", "ls", "--json", "-"],
        vec!["nar", "cat", "-", "x"],
    ] {
        let out = cachecore_output(&args, &nar);
        let line = assert_clean_error(&out, &args.join(" "));
        assert!(
            (start..=end).any(|o| mentions_offset(&line, o as u64)),
            "expected an offset in {start}..={end}: {line}"
        );
    }
    let dest = dir.path().join("deep");
    let out = cachecore_output(&["nar".as_ref(), "unpack".as_ref(), dest.as_os_str()], &nar);
    assert_clean_error(&out, "nar unpack (too deep)");
    assert!(fs::symlink_metadata(&dest).is_err());
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn unpack_refuses_an_existing_destination() {
    let dir = tempdir();
    let nar = small_valid_nar();
    let existing_dir = dir.path().join("existing-dir");
    fs::create_dir(&existing_dir).unwrap();
    fs::write(existing_dir.join("keep"), b"keep me").unwrap();
    let existing_file = dir.path().join("existing-file");
    fs::write(&existing_file, b"keep me too").unwrap();
    let dangling = dir.path().join("dangling-link");
    std::os::unix::fs::symlink(dir.path().join("link-target"), &dangling).unwrap();
    for dest in [&existing_dir, &existing_file, &dangling] {
        let out = cachecore_output(&["nar".as_ref(), "unpack".as_ref(), dest.as_os_str()], &nar);
        assert_clean_error(&out, &format!("cachecore nar unpack {}", dest.display()));
    }
    assert_eq!(fs::read(existing_dir.join("keep")).unwrap(), b"keep me");
    assert_eq!(fs::read_dir(&existing_dir).unwrap().count(), 1);
    assert_eq!(fs::read(&existing_file).unwrap(), b"keep me too");
    assert!(
        !dir.path().join("link-target").exists(),
        "unpack followed a dangling symlink at DEST"
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        3,
        "unpack left something behind"
    );
}

#[test]
fn cat_and_ls_errors_on_valid_nars() {
    let dir = tempdir();
    let file = dir.path().join("ok.nar");
    fs::write(&file, small_valid_nar()).unwrap();
    let f = path_str(&file);
    for sub in ["d", "missing", "d/missing", "a/below-a-file", ""] {
        let out = cachecore_output(&["nar", "cat", f, sub], b"");
        assert_clean_error(&out, &format!("cachecore nar cat ok.nar {sub:?}"));
    }
    assert_eq!(cachecore_ok(&["nar", "cat", f, "a"], b""), b"hello\n");
    assert_eq!(cachecore_ok(&["nar", "cat", f, "d/e"], b""), b"");
    let missing = dir.path().join("no-such.nar");
    for args in [
        vec!["nar", "ls", path_str(&missing)],
        vec!["nar", "cat", path_str(&missing), "a"],
    ] {
        let line = assert_clean_error(&cachecore_output(&args, b""), &args.join(" "));
        assert!(
            line.contains(path_str(&missing)),
            "the error should name the file: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Packing what NAR cannot hold
// ---------------------------------------------------------------------------------------------

#[test]
fn pack_of_a_socket_or_fifo_errors_naming_the_path() {
    let dir = tempdir();
    let socket = dir.path().join("the-socket");
    let _listener = UnixListener::bind(&socket).unwrap();
    let fifo = dir.path().join("the-fifo");
    nix_ok(std::process::Command::new("mkfifo").arg(&fifo), b"");
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("a-file"), b"x").unwrap();
    let nested_fifo = tree.join("sub/nested-fifo");
    nix_ok(std::process::Command::new("mkfifo").arg(&nested_fifo), b"");
    let tree2 = dir.path().join("tree2");
    fs::create_dir(&tree2).unwrap();
    let nested_socket = tree2.join("nested-socket");
    let _listener2 = UnixListener::bind(&nested_socket).unwrap();
    let missing = dir.path().join("does-not-exist");

    for (root, bad) in [
        (&socket, &socket),
        (&fifo, &fifo),
        (&tree, &nested_fifo),
        (&tree2, &nested_socket),
        (&missing, &missing),
    ] {
        for args in [
            vec!["nar", "pack", path_str(root)],
            vec!["nar", "hash", path_str(root)],
            vec!["store-path", path_str(root)],
        ] {
            // A FIFO must not be opened (that would block): a time limit turns a hang into a
            // failure.
            let out = cachecore_output_within(&args, b"", Duration::from_secs(30));
            let line = assert_clean_error(&out, &args.join(" "));
            assert!(
                line.contains(path_str(bad)),
                "`cachecore {}` should name {} in its error: {line}",
                args.join(" "),
                bad.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Broken pipes
// ---------------------------------------------------------------------------------------------

fn read_some_then_hang_up(args: &[&str], stdin_file: Option<&Path>) {
    let mut cmd = cachecore_command();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match stdin_file {
        Some(f) => cmd.stdin(fs::File::open(f).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = child.stderr.take().unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(120), &args.join(" "));
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(
        status.success() && err.is_empty(),
        "`cachecore {} | head -c 10` should exit 0 quietly, got {status} with stderr:\n{err}",
        args.join(" ")
    );
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = tempdir();
    let big = dir.path().join("big");
    fs::create_dir(&big).unwrap();
    let f = fs::File::create(big.join("sparse")).unwrap();
    f.set_len(256 << 20).unwrap();
    for i in 0..50 {
        fs::write(
            big.join(format!("file-{i}")),
            pseudo_random_bytes(100_000, i),
        )
        .unwrap();
    }
    read_some_then_hang_up(&["nar", "pack", path_str(&big)], None);

    let nar = dir.path().join("big.nar");
    let mut cmd = cachecore_command();
    cmd.args(["nar", "pack"])
        .arg(&big)
        .stdout(fs::File::create(&nar).unwrap());
    assert!(cmd.status().unwrap().success());
    read_some_then_hang_up(&["nar", "cat", path_str(&nar), "sparse"], None);
    read_some_then_hang_up(&["nar", "cat", "-", "sparse"], Some(&nar));
}

// ---------------------------------------------------------------------------------------------
// Narinfos and keys
// ---------------------------------------------------------------------------------------------

/// A narinfo as Nix 2.8 writes it (signed).
const GOOD_NARINFO: &str = "StorePath: /nix/store/fs8bajs33aqk7cqm4lcxbnzlzdnyhwic-app
URL: nar/0namy1w9ycfkmw3l90nxm3hhb11w7143dz2i6mdjx1813y4vnlic.nar.zst
Compression: zstd
FileHash: sha256:0namy1w9ycfkmw3l90nxm3hhb11w7143dz2i6mdjx1813y4vnlic
FileSize: 302
NarHash: sha256:0k6akix1i69mljniibjkq4ry7gn9zhwz5iiq3rapfplgnxwz994c
NarSize: 968
References: dlhhly0yxixif2c1zvnncbxl990msjq3-liba gjwcd5yla7ygqf6n3i1yavpf9i3sf5p5-libb
Deriver: lfrq941qsm8hpvgd5d2klgn9r6akvkgl-app.drv
Sig: test-1:XJ/AvKKr9ZklrQzcQOrjKcHYkucjT3EYg3F1oKTDKua8gEtdkARw8rCD1tGU/N0AKJoolft7F001p9IvBp3oAw==
";

fn replace_line(field: &str, with: &str) -> String {
    GOOD_NARINFO
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{field}:")) {
                with.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn without_line(field: &str) -> String {
    GOOD_NARINFO
        .lines()
        .filter(|l| !l.starts_with(&format!("{field}:")))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn malformed_narinfos_are_errors_not_panics() {
    let good = NarInfo::parse(GOOD_NARINFO).unwrap();
    assert_eq!(good.to_string(), GOOD_NARINFO);

    // (what, narinfo, what the error must say: the field it names)
    let mut bad: Vec<(String, String, &str)> = vec![
        ("empty".into(), String::new(), "required field StorePath is missing"),
        ("blank lines".into(), "\n\n\n".into(), "required field StorePath is missing"),
        ("no colon".into(), replace_line("URL", "URL nar/x.nar"), "\"URL nar/x.nar\" is not a `Key: value` line"),
        ("missing StorePath".into(), without_line("StorePath"), "required field StorePath is missing"),
        ("missing URL".into(), without_line("URL"), "required field URL is missing"),
        ("missing NarHash".into(), without_line("NarHash"), "required field NarHash is missing"),
        ("missing NarSize".into(), without_line("NarSize"), "required field NarSize is missing"),
        ("StorePath not a path".into(), replace_line("StorePath", "StorePath: hello"), "field StorePath"),
        ("StorePath short hash".into(), replace_line("StorePath", "StorePath: /nix/store/abc-app"), "field StorePath"),
        ("StorePath bad hash char".into(), replace_line("StorePath", "StorePath: /nix/store/es8bajs33aqk7cqm4lcxbnzlzdnyhwic-app"), "field StorePath"),
        ("StorePath bad name".into(), replace_line("StorePath", "StorePath: /nix/store/fs8bajs33aqk7cqm4lcxbnzlzdnyhwic-a{p}p"), "field StorePath"),
        ("StorePath empty name".into(), replace_line("StorePath", "StorePath: /nix/store/fs8bajs33aqk7cqm4lcxbnzlzdnyhwic-"), "field StorePath"),
        ("NarHash unknown algo".into(), replace_line("NarHash", "NarHash: sha999:0k6akix1i69mljniibjkq4ry7gn9zhwz5iiq3rapfplgnxwz994c"), "field NarHash"),
        ("NarHash short".into(), replace_line("NarHash", "NarHash: sha256:0k6akix"), "field NarHash"),
        ("NarHash bad char".into(), replace_line("NarHash", "NarHash: sha256:ek6akix1i69mljniibjkq4ry7gn9zhwz5iiq3rapfplgnxwz994c"), "field NarHash"),
        ("NarHash empty".into(), replace_line("NarHash", "NarHash: "), "field NarHash"),
        ("NarSize negative".into(), replace_line("NarSize", "NarSize: -1"), "field NarSize"),
        ("NarSize fraction".into(), replace_line("NarSize", "NarSize: 1.5"), "field NarSize"),
        ("NarSize overflow".into(), replace_line("NarSize", "NarSize: 18446744073709551616"), "field NarSize"),
        ("NarSize empty".into(), replace_line("NarSize", "NarSize:"), "field NarSize"),
        ("FileSize text".into(), replace_line("FileSize", "FileSize: big"), "field FileSize"),
        ("FileHash bad".into(), replace_line("FileHash", "FileHash: sha256:!!"), "field FileHash"),
        ("duplicate StorePath".into(), format!("{GOOD_NARINFO}StorePath: /nix/store/fs8bajs33aqk7cqm4lcxbnzlzdnyhwic-app\n"), "field StorePath appears twice"),
        ("duplicate NarHash".into(), format!("{GOOD_NARINFO}NarHash: sha256:0k6akix1i69mljniibjkq4ry7gn9zhwz5iiq3rapfplgnxwz994c\n"), "field NarHash appears twice"),
        ("bad reference".into(), replace_line("References", "References: not-a-store-path"), "field References"),
        ("full path reference".into(), replace_line("References", "References: /nix/store/dlhhly0yxixif2c1zvnncbxl990msjq3-liba"), "field References"),
        ("bad deriver".into(), replace_line("Deriver", "Deriver: x"), "field Deriver"),
        ("CA garbage".into(), format!("{GOOD_NARINFO}CA: bogus:xyz\n"), "field CA"),
    ];
    bad.push((
        "a 4 MiB line".into(),
        format!("StorePath: {}\n", "x".repeat(4 << 20)),
        "line 1: field StorePath",
    ));
    for (what, text, needle) in &bad {
        let result = std::panic::catch_unwind(|| NarInfo::parse(text));
        match result {
            Err(_) => panic!("NarInfo::parse panicked on a narinfo with {what}"),
            Ok(Ok(info)) => panic!("NarInfo::parse accepted a narinfo with {what}: {info:?}"),
            Ok(Err(e)) => assert!(
                e.to_string().contains(needle),
                "the error for a narinfo with {what} does not say {needle:?}: {e}"
            ),
        }
    }
    assert!(NarInfo::parse_bytes(b"StorePath: /nix/store/\xff\xfe-x\nURL: x\n").is_err());
}

#[test]
fn narinfos_that_nix_accepts_parse() {
    // Checked with Nix 2.8 (`nix path-info --store file://…` on an edited cache): Nix stores
    // `Sig:` values as opaque strings (an unverifiable one is just not counted), reads
    // `Deriver: unknown-deriver` as "no deriver", and ignores unknown fields.
    let mut rejected = Vec::new();
    for (what, text) in [
        (
            "a Sig line without key name",
            replace_line("Sig", "Sig: garbage-sig"),
        ),
        (
            "a Sig line that is not base64",
            replace_line("Sig", "Sig: test-1:!!!not base64!!!"),
        ),
        (
            "a Sig line too short",
            replace_line("Sig", "Sig: test-1:AAAA"),
        ),
        (
            "Deriver: unknown-deriver",
            replace_line("Deriver", "Deriver: unknown-deriver"),
        ),
        ("an unknown field", format!("{GOOD_NARINFO}Foo: bar\n")),
    ] {
        let parsed = std::panic::catch_unwind(|| NarInfo::parse(&text))
            .unwrap_or_else(|_| panic!("NarInfo::parse panicked on a narinfo with {what}"));
        match parsed {
            Err(e) => rejected.push(format!("{what}: {e}")),
            Ok(info) => {
                if what.starts_with("Deriver") {
                    assert_eq!(
                        info.deriver, None,
                        "Nix reads unknown-deriver as no deriver"
                    );
                }
            }
        }
    }
    assert!(
        rejected.is_empty(),
        "NarInfo::parse rejects narinfos that Nix 2.8 accepts:\n{}",
        rejected.join("\n")
    );
}

#[test]
fn mutated_narinfos_never_panic_and_reprint_stably() {
    let problems = std::cell::RefCell::new(Vec::<String>::new());
    let check = |text: &str, what: &str| {
        let parsed = std::panic::catch_unwind(|| NarInfo::parse(text))
            .unwrap_or_else(|_| panic!("NarInfo::parse panicked on {what}: {text:?}"));
        if let Ok(info) = parsed {
            let printed = info.to_string();
            match NarInfo::parse(&printed) {
                Err(e) => problems.borrow_mut().push(format!(
                    "{what}: cachecore cannot parse what it printed ({e}): {printed:?}"
                )),
                Ok(again) if again != info => problems.borrow_mut().push(format!(
                    "{what}: parse(print(x)) != x\n    input   {text:?}\n    printed {printed:?}"
                )),
                Ok(again) if again.to_string() != printed => problems
                    .borrow_mut()
                    .push(format!("{what}: printing is not stable: {printed:?}")),
                Ok(_) => {}
            }
        }
    };
    let g = GOOD_NARINFO;
    for (i, _) in g.char_indices() {
        check(&g[..i], &format!("prefix of {i} bytes"));
        check(
            &format!("{}{}", &g[..i], &g[i + 1..]),
            &format!("byte {i} deleted"),
        );
        for c in [":", " ", "\n", "x", "0", "/", "-", "\r"] {
            check(
                &format!("{}{c}{}", &g[..i], &g[i + 1..]),
                &format!("byte {i} replaced by {c:?}"),
            );
        }
    }
    let lines: Vec<&str> = g.lines().collect();
    for i in 0..lines.len() {
        let mut l = lines.clone();
        l.insert(i, lines[i]);
        check(&(l.join("\n") + "\n"), &format!("line {i} duplicated"));
        let mut l = lines.clone();
        l.swap(i, (i + 3) % lines.len());
        check(
            &(l.join("\n") + "\n"),
            &format!("lines {i} and {} swapped", (i + 3) % lines.len()),
        );
    }
    // Random bytes, as bytes and as text (lossily: every seed runs), and random lines of
    // narinfo-like text (field names, colons, hashes' characters).
    let words = [
        "StorePath: ",
        "URL: ",
        "NarHash: ",
        "NarSize: ",
        "References: ",
        "Sig: ",
        "CA: ",
        "/nix/store/",
        "sha256:",
        "fs8bajs33aqk7cqm4lcxbnzlzdnyhwic-app",
        "\n",
        ":",
        " ",
        "0",
    ];
    for seed in 0..200u64 {
        let noise = pseudo_random_bytes(200, seed);
        let parsed =
            std::panic::catch_unwind(|| NarInfo::parse_bytes(&noise)).unwrap_or_else(|_| {
                panic!("NarInfo::parse_bytes panicked on random bytes (seed {seed})")
            });
        assert!(
            parsed.is_err(),
            "random bytes (seed {seed}) parsed as a narinfo"
        );
        check(
            &String::from_utf8_lossy(&noise),
            &format!("random bytes (seed {seed})"),
        );
        let mut rng = Xorshift::new(seed);
        let text: String = (0..40)
            .map(|_| words[rng.below(words.len() as u64) as usize])
            .collect();
        check(&text, &format!("random narinfo words (seed {seed})"));
    }
    let problems = problems.into_inner();
    assert!(
        problems.is_empty(),
        "{} mutated narinfos do not survive parse → print → parse:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn key_public_rejects_garbage_cleanly() {
    let dir = tempdir();
    let b64_64 =
        "XJ/AvKKr9ZklrQzcQOrjKcHYkucjT3EYg3F1oKTDKua8gEtdkARw8rCD1tGU/N0AKJoolft7F001p9IvBp3oAw==";
    let b64_32 = "YRawVmJllFXa6WKE5/y7816gw4Tj4RS4ZE/kl6LXWcA=";
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("newline", b"\n".to_vec()),
        ("text", b"garbage".to_vec()),
        ("name only", b"test-1:".to_vec()),
        ("no name", format!(":{b64_64}").into_bytes()),
        ("not base64", b"test-1:!!!not-base64!!!".to_vec()),
        (
            "a public key (32 bytes)",
            format!("test-1:{b64_32}").into_bytes(),
        ),
        (
            "64 bytes minus a char",
            format!("test-1:{}", &b64_64[1..]).into_bytes(),
        ),
        ("binary", pseudo_random_bytes(96, 5)),
        ("non-UTF-8", b"test-1:\xff\xfe\xfd".to_vec()),
        ("1 MiB of a", vec![b'a'; 1 << 20]),
    ];
    for (i, (what, bytes)) in garbage.iter().enumerate() {
        let file = dir.path().join(format!("garbage-{i}"));
        fs::write(&file, bytes).unwrap();
        let line = assert_clean_error(
            &cachecore_output(&["key", "public", path_str(&file)], b""),
            &format!("cachecore key public <{what}>"),
        );
        assert!(
            line.len() < 1000,
            "error for {what} is {} bytes long",
            line.len()
        );
        // A secret must not be echoed back.
        assert!(
            !line.contains(&b64_64[1..20]),
            "the error for {what} echoes the key: {line}"
        );
        assert_clean_error(
            &cachecore_output(&["key", "public"], bytes),
            &format!("cachecore key public < <{what}>"),
        );
    }
    let missing = dir.path().join("missing.sk");
    let line = assert_clean_error(
        &cachecore_output(&["key", "public", path_str(&missing)], b""),
        "cachecore key public <missing file>",
    );
    assert!(line.contains(path_str(&missing)), "{line}");
}
