//! NAR packing, hashing, naming and unpacking, checked byte for byte against real Nix
//! (`nix-store --dump`, `nix-hash`, `nix-store --add`, `nix store add-path`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn pack_equals_nix_store_dump() {
    let dir = tempdir();
    for root in make_all_roots(dir.path()) {
        let expected = nix_dump(&root);
        let actual = cachecore_ok(&["nar".as_ref(), "pack".as_ref(), root.as_os_str()], b"");
        assert_same_bytes(
            &format!(
                "`cachecore nar pack {}` vs `nix-store --dump`",
                root.display()
            ),
            &expected,
            &actual,
        );
    }
}

/// `nar pack` and `nar cat` into a pipe (where a NAR usually goes) and into a file: the same
/// bytes as Nix's, and the pipe grown to 256 KiB (the pipe is ours, so its
/// capacity can be read back after the child is done with it).
#[test]
fn pack_and_cat_into_a_pipe_equal_nix_and_grow_the_pipe() {
    let dir = tempdir();
    let tree = make_fixture_tree(dir.path());
    // Several MiB, so that the writes are full ones.
    let big = pseudo_random_bytes(5 << 20, 7);
    fs::write(tree.join("big.bin"), &big).unwrap();
    let expected = nix_dump(&tree);
    let nar_file = dir.path().join("tree.nar");
    fs::write(&nar_file, &expected).unwrap();
    let wanted = fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap()
        .min(256 << 10);
    let default = {
        let (r, _w) = std::io::pipe().unwrap();
        rustix::pipe::fcntl_getpipe_size(&r).unwrap()
    };
    assert!(
        default < wanted,
        "this machine's pipes already hold {default} bytes"
    );

    let runs: [(&[&std::ffi::OsStr], &[u8]); 2] = [
        (
            &["nar".as_ref(), "pack".as_ref(), tree.as_os_str()],
            &expected,
        ),
        (
            &[
                "nar".as_ref(),
                "cat".as_ref(),
                nar_file.as_os_str(),
                "big.bin".as_ref(),
            ],
            &big,
        ),
    ];
    for (args, want) in runs {
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        let shown = format!("`cachecore {}`", shown.join(" "));
        let mut child = cachecore_command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut pipe = child.stdout.take().unwrap();
        let mut got = Vec::new();
        pipe.read_to_end(&mut got).unwrap();
        assert!(child.wait().unwrap().success(), "{shown} failed");
        assert_same_bytes(&format!("{shown} into a pipe"), want, &got);
        let capacity = rustix::pipe::fcntl_getpipe_size(&pipe).unwrap();
        assert!(
            capacity >= wanted,
            "{shown} left its stdout pipe at {capacity} bytes (default {default}); it should grow it to {wanted}"
        );

        let file = dir.path().join("out");
        let status = cachecore_command()
            .args(args)
            .stdout(File::create(&file).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{shown} > file failed");
        assert_same_bytes(
            &format!("{shown} into a file"),
            want,
            &fs::read(&file).unwrap(),
        );
    }
}

/// Into a pipe, `nar pack` moves large files' pages with splice(2) rather than reading and
/// writing them: checked with strace (the bytes spliced are those of the large files, at
/// least), and the NAR is Nix's byte for byte — executables, sizes around the 8-byte padding,
/// small files and symlinks between them.
#[test]
fn pack_into_a_pipe_splices_large_files_and_equals_nix() {
    let dir = tempdir();
    let tree = make_fixture_tree(dir.path());
    let large = tree.join("large");
    fs::create_dir(&large).unwrap();
    let mut large_bytes = 0;
    for (i, size) in [
        (1 << 16) - 1,
        1 << 16,
        (1 << 16) + 1,
        3 << 20,
        (5 << 20) + 5,
    ]
    .into_iter()
    .enumerate()
    {
        let mode = if i % 2 == 0 { 0o755 } else { 0o644 };
        write_mode(
            &large.join(format!("f{i}")),
            &pseudo_random_bytes(size, i as u64),
            mode,
        );
        write_mode(&large.join(format!("f{i}-small")), b"between\n", 0o644);
        std::os::unix::fs::symlink(format!("f{i}"), large.join(format!("f{i}-link"))).unwrap();
        large_bytes += size as u64;
    }
    let expected = nix_dump(&tree);
    let trace = dir.path().join("strace.out");
    let mut child = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=splice", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_cachecore"))
        .args(["nar", "pack"])
        .arg(&tree)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("this test needs strace");
    let mut got = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "`cachecore nar pack` failed"
    );
    assert_same_bytes("`cachecore nar pack` into a pipe", &expected, &got);
    // `splice(3, NULL, 1, NULL, 262144, 0) = 262144`
    let trace = fs::read_to_string(&trace).unwrap();
    let spliced: u64 = trace
        .lines()
        .filter(|l| l.contains("splice("))
        .filter_map(|l| l.rsplit_once("= ")?.1.trim().parse::<u64>().ok())
        .sum();
    assert!(
        spliced >= (3 << 20) + (5 << 20) + 5 && spliced <= large_bytes + (1 << 20) + 3,
        "{spliced} bytes spliced; the large files hold {large_bytes} bytes:\n{trace}"
    );
}

/// A file cut short while `nar pack` moves it into a pipe: an error naming it and both sizes,
/// as when it is read and written.
#[test]
fn pack_into_a_pipe_of_a_file_shrinking_meanwhile_fails_naming_it() {
    let dir = tempdir();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    write_mode(&tree.join("a"), b"first\n", 0o644);
    let big = tree.join("big");
    write_mode(&big, &pseudo_random_bytes(8 << 20, 3), 0o644);
    let mut child = cachecore_command()
        .args(["nar".as_ref(), "pack".as_ref(), tree.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    // 64 KiB read: `big` is being copied, and its first 2 MiB cannot all have gone (the pipe
    // holds at most 256 KiB).
    let mut start = vec![0; 1 << 16];
    pipe.read_exact(&mut start).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let mut rest = Vec::new();
    pipe.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let line = assert_clean_error(&out, "nar pack of a file cut short");
    assert!(
        line.contains(&format!(
            "{} changed while being packed ({} bytes when opened, {} bytes when read)",
            big.display(),
            8 << 20,
            2 << 20
        )),
        "{line}"
    );
}

#[test]
fn hash_equals_nix_hash() {
    let dir = tempdir();
    for root in make_all_roots(dir.path()) {
        let expected = nix_hash(&root);
        let nar_size = nix_dump(&root).len();
        let root_s = path_str(&root);
        assert_eq!(
            cachecore_str(&["nar", "hash", "--bare", root_s]),
            expected,
            "`cachecore nar hash --bare {root_s}` vs `nix-hash --type sha256 --base32`"
        );
        assert_eq!(
            cachecore_str(&["nar", "hash", root_s]),
            format!("sha256:{expected}"),
            "`cachecore nar hash {root_s}`"
        );
        assert_eq!(
            cachecore_str(&["nar", "hash", "--size", root_s]),
            format!("sha256:{expected} {nar_size}"),
            "`cachecore nar hash --size {root_s}` (size = length of `nix-store --dump`)"
        );
        assert_eq!(
            cachecore_str(&["nar", "hash", "--bare", "--size", root_s]),
            format!("{expected} {nar_size}"),
            "`cachecore nar hash --bare --size {root_s}`"
        );
    }
}

#[test]
fn store_path_equals_nix_store_add() {
    let dir = tempdir();
    let mut wrong = Vec::new();
    for root in make_all_roots(dir.path()) {
        let expected = nix_store_add(&root);
        let root_s = path_str(&root);
        let out = cachecore_output(&["store-path", root_s], b"");
        assert_no_panic(&out, "cachecore store-path");
        let actual = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
        if !out.status.success() || actual != expected {
            wrong.push(format!(
                "`cachecore store-path {root_s}`: expected {expected} (nix-store --add), got \
                 {actual:?} (exit {}, stderr {:?})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "store paths differ from Nix's:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn store_path_with_name_equals_nix_store_add_path_name() {
    let dir = tempdir();
    let tree = make_fixture_tree(dir.path());
    let file = tree.join("content.txt");
    for (path, name) in [
        (&tree, "another-name"),
        (&tree, "with.dots_and+plus=equals?"),
        (&file, "renamed-file"),
    ] {
        let expected = nix(
            "nix",
            &["store", "add-path", "--name", name, path_str(path)],
        );
        assert_eq!(
            cachecore_str(&["store-path", path_str(path), "--name", name]),
            expected,
            "`cachecore store-path {} --name {name}` vs `nix store add-path --name {name}`",
            path.display()
        );
    }
}

#[test]
fn unpack_of_nix_dump_recreates_the_tree() {
    let dir = tempdir();
    let out = tempdir();
    for (i, root) in make_all_roots(dir.path()).into_iter().enumerate() {
        let nar = nix_dump(&root);
        let dest = out.path().join(format!("unpacked-{i}"));
        cachecore_ok(&["nar".as_ref(), "unpack".as_ref(), dest.as_os_str()], &nar);
        assert_same_tree(&root, &dest);
        // And the unpacked tree packs back to the very same bytes, as Nix dumps it.
        assert_same_bytes(
            &format!(
                "`nix-store --dump` of {} after `cachecore nar unpack`",
                root.display()
            ),
            &nar,
            &nix_dump(&dest),
        );
    }
}

#[test]
fn nix_restore_of_cachecore_pack_recreates_the_tree() {
    let dir = tempdir();
    let out = tempdir();
    let tree = make_fixture_tree(dir.path());
    let nar = cachecore_ok(&["nar".as_ref(), "pack".as_ref(), tree.as_os_str()], b"");
    let dest = out.path().join("restored");
    nix_ok(nix_command("nix-store").arg("--restore").arg(&dest), &nar);
    assert_same_tree(&tree, &dest);
}

#[test]
fn cat_prints_every_file_of_a_nix_dump() {
    let dir = tempdir();
    let tree = make_fixture_tree(dir.path());
    let nar_file = dir.path().join("tree.nar");
    fs::write(&nar_file, nix_dump(&tree)).unwrap();
    let nar_s = path_str(&nar_file);
    let files = regular_files(&tree);
    assert!(files.len() > 300, "fixture has {} files", files.len());
    for (sub, contents) in &files {
        let out = cachecore_ok(&["nar", "cat", nar_s, sub], b"");
        assert_same_bytes(&format!("`cachecore nar cat NAR {sub:?}`"), contents, &out);
    }
    // A few through stdin (`-`), and with a leading slash as `nix nar cat` accepts.
    let nar = fs::read(&nar_file).unwrap();
    for (sub, contents) in files.iter().step_by(37) {
        let out = cachecore_ok(&["nar", "cat", "-", sub], &nar);
        assert_same_bytes(&format!("`cachecore nar cat - {sub:?}`"), contents, &out);
        let expected = nix_ok(
            nix_command("nix").args(["nar", "cat", nar_s, &format!("/{sub}")]),
            b"",
        );
        assert_same_bytes(
            &format!("`nix nar cat NAR /{sub}` vs file"),
            &expected,
            contents,
        );
    }
    // A root that is a single file: the empty subpath is the file itself.
    let single = dir.path().join("single.nar");
    fs::write(&single, nix_dump(&tree.join("content.txt"))).unwrap();
    assert_same_bytes(
        "`cachecore nar cat single.nar \"\"`",
        &fs::read(tree.join("content.txt")).unwrap(),
        &cachecore_ok(&["nar", "cat", path_str(&single), ""], b""),
    );
}

// ---------------------------------------------------------------------------------------------
// A multi-GiB sparse file: streaming, sizes above 2^32, bounded memory.
// ---------------------------------------------------------------------------------------------

/// 4 GiB + 4099 bytes: crosses 2^32, and is not a multiple of 8 (the NAR pads it).
const SPARSE_SIZE: u64 = (4 << 30) + 4099;
const PEAK_RSS_LIMIT_KIB: u64 = 32 * 1024;

fn make_sparse_file(path: &Path) {
    let f = File::create(path).unwrap();
    f.set_len(SPARSE_SIZE).unwrap();
    for (offset, data) in [
        (0, &b"start"[..]),
        (4095, b"page boundary"),
        ((1 << 30) - 3, b"1 GiB boundary"),
        ((1 << 31) - 1, b"2 GiB"),
        ((1 << 32) - 7, b"across 4 GiB"),
        (SPARSE_SIZE - 4, b"end!"),
    ] {
        f.write_all_at(data, offset).unwrap();
    }
    f.sync_all().unwrap();
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read error: {e}"),
        }
    }
    n
}

/// Compares two children's stdout streams chunk by chunk (never holding more than a chunk of
/// each), returning the common length.
fn compare_streams(expected: &mut Child, actual: &mut Child, what: &str) -> u64 {
    const CHUNK: usize = 1 << 20;
    let mut e_out = expected.stdout.take().unwrap();
    let mut a_out = actual.stdout.take().unwrap();
    let mut e_buf = vec![0u8; CHUNK];
    let mut a_buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let ne = fill(&mut e_out, &mut e_buf);
        let na = fill(&mut a_out, &mut a_buf);
        if e_buf[..ne] != a_buf[..na] {
            let _ = expected.kill();
            let _ = actual.kill();
            let first = e_buf[..ne]
                .iter()
                .zip(&a_buf[..na])
                .position(|(x, y)| x != y)
                .unwrap_or(ne.min(na));
            panic!(
                "{what}: streams differ at offset {} (Nix chunk {ne} bytes, cachecore chunk {na} \
                 bytes at offset {offset}); Nix: {:02x?}, cachecore: {:02x?}",
                offset + first as u64,
                &e_buf[first..ne.min(first + 16)],
                &a_buf[first..na.min(first + 16)],
            );
        }
        offset += ne as u64;
        if ne < CHUNK {
            return offset;
        }
    }
}

#[test]
fn sparse_multi_gib_file_streams_like_nix_in_bounded_memory() {
    let dir = tempdir();
    let big = dir.path().join("sparse-big");
    make_sparse_file(&big);

    // The hash, under GNU time to check its memory too.
    let time = gnu_time();
    let hash_time = dir.path().join("hash.time");
    let mut cmd = std::process::Command::new(time);
    cmd.args(["-f", "%M", "-o"])
        .arg(&hash_time)
        .arg(env!("CARGO_BIN_EXE_cachecore"))
        .args(["nar", "hash", "--bare", "--size"])
        .arg(&big);
    let out = run_with_stdin(&mut cmd, b"");
    assert!(out.status.success(), "cachecore nar hash failed: {out:?}");
    // magic (24) + "(" "type" "regular" "contents" (4 × 16) + length (8) + data + ")" (16).
    let expected_size = 24 + 4 * 16 + 8 + SPARSE_SIZE.next_multiple_of(8) + 16;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        format!("{} {expected_size}", nix_hash(&big)),
        "`cachecore nar hash --bare --size` of a {SPARSE_SIZE}-byte sparse file vs nix-hash"
    );
    let hash_rss = peak_rss_kib(&hash_time);

    // The NAR itself: both streams compared chunk by chunk as they are produced.
    let pack_time = dir.path().join("pack.time");
    let mut nix_dump = nix_command("nix-store")
        .arg("--dump")
        .arg(&big)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("these tests need real Nix: cannot run nix-store (apt-get install -y nix-bin)");
    let mut ours = std::process::Command::new(time)
        .args(["-f", "%M", "-o"])
        .arg(&pack_time)
        .arg(env!("CARGO_BIN_EXE_cachecore"))
        .args(["nar", "pack"])
        .arg(&big)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let len = compare_streams(
        &mut nix_dump,
        &mut ours,
        "`cachecore nar pack` vs `nix-store --dump`",
    );
    let s1 = wait_with_timeout(&mut nix_dump, Duration::from_secs(600), "nix-store --dump");
    let s2 = wait_with_timeout(&mut ours, Duration::from_secs(600), "cachecore nar pack");
    assert!(
        s1.success() && s2.success(),
        "nix-store --dump: {s1}, cachecore nar pack: {s2}"
    );
    assert_eq!(len, expected_size, "NAR length");
    let pack_rss = peak_rss_kib(&pack_time);
    eprintln!("peak RSS: cachecore nar pack {pack_rss} KiB, cachecore nar hash {hash_rss} KiB");

    assert!(
        pack_rss <= PEAK_RSS_LIMIT_KIB,
        "`cachecore nar pack` of a {SPARSE_SIZE}-byte file peaked at {pack_rss} KiB RSS \
         (limit {PEAK_RSS_LIMIT_KIB} KiB)"
    );
    assert!(
        hash_rss <= PEAK_RSS_LIMIT_KIB,
        "`cachecore nar hash` of a {SPARSE_SIZE}-byte file peaked at {hash_rss} KiB RSS \
         (limit {PEAK_RSS_LIMIT_KIB} KiB)"
    );
}
