//! Exit statuses through the real binary: a script can tell "the cache is bad" (1) from "bad
//! usage or input" (2), "could not check" (3), "not found" (4), "refused" (5) and "local
//! failure" (6), and `--help` lists them. No Nix needed: caches are filled with `push --add`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Runs `cachecore args`, checks one clean error line, and returns the exit code.
fn status_of(args: &[&str]) -> i32 {
    let out = cachecore_output(args, b"");
    assert_no_panic(&out, &args.join(" "));
    out.status
        .code()
        .unwrap_or_else(|| panic!("`cachecore {}` was killed: {out:?}", args.join(" ")))
}

fn failing(args: &[&str], want: i32) -> String {
    let out = cachecore_output(args, b"");
    let what = args.join(" ");
    let stderr = assert_clean_error(&out, &what);
    assert_eq!(
        out.status.code(),
        Some(want),
        "`cachecore {what}`: exit status (stderr: {stderr})"
    );
    stderr
}

/// A signed cache in `dir/cache` holding one tree pushed with `--add`; returns the cache,
/// its public key and the store path.
fn small_cache(dir: &Path) -> (String, String, String) {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/file"), b"hello\n".repeat(1000)).unwrap();
    let key = dir.join("k.sec");
    let out = cachecore_output(
        &["key", "generate", "exit-test-1", "--out", path_str(&key)],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8(out.stderr).unwrap().trim().to_owned();
    let cache = dir.join("cache");
    let path = String::from_utf8(cachecore_ok(
        &[
            "push",
            path_str(&cache),
            "--add",
            path_str(&tree),
            "--key",
            path_str(&key),
            "--quiet",
        ],
        b"",
    ))
    .unwrap()
    .trim()
    .to_owned();
    (cache.display().to_string(), public, path)
}

#[test]
fn help_lists_the_exit_statuses() {
    let help = cachecore_str(&["--help"]);
    assert!(help.contains("Exit status:"), "{help}");
    for line in [
        "0  success",
        "1  the cache is bad",
        "2  bad usage or input",
        "3  could not check",
        "4  not found",
        "5  refused",
        "6  local failure",
    ] {
        assert!(help.contains(line), "--help lacks {line:?}:\n{help}");
    }
}

#[test]
fn each_kind_of_failure_has_its_status() {
    let dir = tempdir();
    let (cache, public, path) = small_cache(dir.path());
    assert_eq!(status_of(&["verify", &cache, "--trusted-key", &public]), 0);

    // 2: bad usage (clap) and bad input (a URL no backend takes, a malformed key).
    assert_eq!(status_of(&["verify"]), 2);
    failing(&["info", "ssh://somewhere"], 2);
    failing(&["verify", &cache, "--trusted-key", "no-colon-here"], 2);

    // 4: the path asked for is not in the cache.
    let absent = format!("/nix/store/{}-absent", "0".repeat(32));
    let dest = dir.path().join("pulled");
    failing(
        &["pull", &cache, &absent, path_str(&dest), "--no-check-sigs"],
        4,
    );

    // 1: signed by another key (untrusted).
    let other = cachecore_output(&["key", "generate", "other-1"], b"");
    let other_public = String::from_utf8(other.stderr).unwrap().trim().to_owned();
    let e = failing(
        &[
            "pull",
            &cache,
            &path,
            path_str(&dest),
            "--trusted-key",
            &other_public,
        ],
        1,
    );
    assert!(e.contains("trusted"), "{e}");
    let out = cachecore_output(&["verify", &cache, "--trusted-key", &other_public], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // 5: refused — the pull destination exists.
    fs::create_dir(&dest).unwrap();
    failing(
        &[
            "pull",
            &cache,
            &path,
            path_str(&dest),
            "--trusted-key",
            &public,
        ],
        5,
    );
    fs::remove_dir(&dest).unwrap();

    // 1: the cache is bad — its NAR flipped (verify reports it, pull refuses it).
    let nar = walk_files(&Path::new(&cache).join("nar"));
    assert_eq!(nar.len(), 1, "{nar:?}");
    let mut bytes = fs::read(&nar[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&nar[0], &bytes).unwrap();
    let out = cachecore_output(&["verify", &cache], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    failing(
        &[
            "pull",
            &cache,
            &path,
            path_str(&dest),
            "--trusted-key",
            &public,
        ],
        1,
    );
    assert!(!dest.exists());

    // 3: could not check — nothing listens at the endpoint.
    let unreachable = "http://127.0.0.1:1/";
    let e = failing(&["verify", unreachable, &path], 3);
    assert!(e.contains("cannot reach"), "{e}");

    // 6: a local failure — the output cannot be written.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = cachecore_command()
        .args(["nar", "pack", path_str(dir.path())])
        .stdout(full)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{out:?}");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
