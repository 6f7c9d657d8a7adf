//! The binary cache commands' flags, each run for real and checked by its effect (with Nix as
//! the oracle where it has one): `init --priority/--no-mass-query`, `push --level/--no-listing/
//! --no-closure`, `copy --jobs/--recompress/--level`, `verify --jobs`, `--trusted-key FILE`,
//! `store-path --store-dir`, `key generate` with names it must refuse, `info` on a cache that
//! was never initialised. `flags_are_tested.rs` fails when a flag has no test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// `NAME: value` of a `key: value` text (narinfo, nix-cache-info).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// The narinfos of `cache` (file name, text), sorted by name.
fn narinfos(cache: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The narinfo of `store_path` in `cache`.
fn narinfo_of(cache: &Path, store_path: &str) -> String {
    let base = store_path.rsplit('/').next().unwrap();
    let file = cache.join(format!("{}.narinfo", &base[..32]));
    fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `verify` of `cache` with `args` succeeded and said "no problems".
#[track_caller]
fn assert_verifies(cache: &str, args: &[&str]) {
    let mut all = vec!["verify", cache];
    all.extend_from_slice(args);
    let out = cachecore_output(&all, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("no problems"),
        "`cachecore {}`: {}\n{stderr}",
        all.join(" "),
        out.status
    );
}

/// A directory of `size` bytes of text (compresses well, differently at each zstd level).
fn text_dir(parent: &Path, name: &str, size: usize) -> std::path::PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    let mut text = String::new();
    let mut i = 0u64;
    while text.len() < size {
        let r = splitmix(i);
        text.push_str(&format!(
            "line {i}: {} {} {}\n",
            r % 977,
            ["alpha", "beta", "gamma", "delta"][(r % 4) as usize],
            r % 13
        ));
        i += 1;
    }
    fs::write(dir.join("data.txt"), text).unwrap();
    dir
}

#[test]
fn init_writes_priority_and_mass_query() {
    let tmp = tempdir();
    let chosen = tmp.path().join("chosen");
    cachecore_ok(
        &[
            "init",
            path_str(&chosen),
            "--priority",
            "55",
            "--no-mass-query",
        ],
        b"",
    );
    let info = fs::read_to_string(chosen.join("nix-cache-info")).unwrap();
    assert_eq!(field(&info, "StoreDir"), Some("/nix/store"), "{info}");
    assert_eq!(field(&info, "Priority"), Some("55"), "{info}");
    assert_eq!(field(&info, "WantMassQuery"), Some("0"), "{info}");

    let default = tmp.path().join("default");
    cachecore_ok(&["init", path_str(&default)], b"");
    let info = fs::read_to_string(default.join("nix-cache-info")).unwrap();
    assert_eq!(field(&info, "Priority"), Some("40"), "{info}");
    assert_eq!(field(&info, "WantMassQuery"), Some("1"), "{info}");
}

#[test]
fn info_on_a_cache_never_initialised() {
    let tmp = tempdir();
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = cachecore_str(&["info", path_str(&empty)]);
    assert_eq!(
        out,
        "(no nix-cache-info: not initialised)\nPaths: 0\nNarBytes: 0\nFileBytes: 0"
    );
    // Reading it wrote nothing.
    assert!(files_under(&empty).is_empty(), "{:?}", files_under(&empty));
}

#[test]
fn push_level_sets_the_zstd_level() {
    let tmp = tempdir();
    let src = text_dir(tmp.path(), "cachecore-flags-text", 3 << 20);
    let sizes: Vec<u64> = ["1", "19"]
        .iter()
        .map(|level| {
            let cache = tmp.path().join(format!("level-{level}"));
            let path = cachecore_str(&[
                "push",
                path_str(&cache),
                "--add",
                path_str(&src),
                "--level",
                level,
                "--quiet",
            ]);
            assert_verifies(path_str(&cache), &[]);
            let info = narinfo_of(&cache, &path);
            assert_eq!(field(&info, "Compression"), Some("zstd"), "{info}");
            field(&info, "FileSize").unwrap().parse().unwrap()
        })
        .collect();
    assert!(
        sizes[1] < sizes[0],
        "level 19 gave {} bytes, level 1 {} bytes",
        sizes[1],
        sizes[0]
    );
    // A level zstd does not have is refused before anything is written.
    let cache = tmp.path().join("level-99");
    let err = assert_clean_error(
        &cachecore_output(
            &[
                "push",
                path_str(&cache),
                "--add",
                path_str(&src),
                "--level",
                "99",
            ],
            b"",
        ),
        "push --level 99",
    );
    assert!(err.contains("99"), "{err}");
    assert!(
        !cache.exists() || narinfos(&cache).is_empty(),
        "a refused push wrote {:?}",
        files_under(&cache)
    );
}

#[test]
fn push_no_listing_writes_no_ls() {
    let tmp = tempdir();
    let src = text_dir(tmp.path(), "cachecore-flags-listing", 1000);
    let with = tmp.path().join("with");
    let without = tmp.path().join("without");
    let path = cachecore_str(&["push", path_str(&with), "--add", path_str(&src), "--quiet"]);
    cachecore_ok(
        &[
            "push",
            path_str(&without),
            "--add",
            path_str(&src),
            "--no-listing",
            "--quiet",
        ],
        b"",
    );
    let hash = &path.rsplit('/').next().unwrap()[..32];
    let ls = format!("{hash}.ls");
    assert!(files_under(&with).contains(&ls), "{:?}", files_under(&with));
    assert!(
        !files_under(&without).iter().any(|f| f.ends_with(".ls")),
        "{:?}",
        files_under(&without)
    );
    // `ls` of the path still works without a listing (the NAR is read instead).
    assert_eq!(
        cachecore_str(&["ls", path_str(&without), &path]),
        cachecore_str(&["ls", path_str(&with), &path])
    );
}

#[test]
fn push_no_closure_needs_the_references_there_first() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let (liba, libb, app) = (
        closure[0].as_str(),
        closure[1].as_str(),
        closure[2].as_str(),
    );
    let cache = tmp.path().join("cache");
    let url = path_str(&cache);

    // Into an empty cache, the app alone cannot go: its references are missing.
    let err = assert_clean_error(
        &cachecore_output(&["push", url, app, "--no-closure"], b""),
        "push --no-closure into an empty cache",
    );
    assert!(
        err.contains(liba) || err.contains(libb),
        "the error names no missing reference: {err}"
    );
    assert!(
        !cache.exists() || narinfos(&cache).is_empty(),
        "a refused push published {:?}",
        narinfos(&cache)
    );

    // liba has no references; libb needs liba; then the app: each alone, in that order.
    for (path, total) in [(liba, 1), (libb, 2), (app, 3)] {
        cachecore_ok(&["push", url, path, "--no-closure", "--quiet"], b"");
        assert_eq!(narinfos(&cache).len(), total, "after pushing {path} alone");
    }
    assert_verifies(url, &[app]);
}

#[test]
fn copy_jobs_recompress_and_level() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap().as_str();
    let (secret, public) = nix_generate_key(tmp.path(), "cachecore-flags-1");
    let zstd = tmp.path().join("zstd");
    cachecore_ok(
        &[
            "push",
            path_str(&zstd),
            app,
            "--key",
            path_str(&secret),
            "--quiet",
        ],
        b"",
    );

    // --recompress none, one object at a time.
    let none = tmp.path().join("none");
    cachecore_ok(
        &[
            "copy",
            path_str(&zstd),
            path_str(&none),
            app,
            "--recompress",
            "none",
            "--jobs",
            "1",
            "--quiet",
        ],
        b"",
    );
    for p in &closure {
        let info = narinfo_of(&none, p);
        assert_eq!(field(&info, "Compression"), Some("none"), "{info}");
        assert!(field(&info, "URL").unwrap().ends_with(".nar"), "{info}");
        // An uncompressed NAR's file is the NAR.
        assert_eq!(field(&info, "FileSize"), field(&info, "NarSize"), "{info}");
    }
    // The signatures still hold (they sign the NAR, not its compression): Nix substitutes it.
    assert_nix_substitutes(
        &format!("file://{}", none.display()),
        &tmp.path().join("from-none"),
        &closure,
        &public,
    );

    // Back to zstd at level 19, everything.
    let again = tmp.path().join("again");
    cachecore_ok(
        &[
            "copy",
            path_str(&none),
            path_str(&again),
            "--all",
            "--recompress",
            "zstd",
            "--level",
            "19",
            "--quiet",
        ],
        b"",
    );
    for p in &closure {
        let info = narinfo_of(&again, p);
        assert_eq!(field(&info, "Compression"), Some("zstd"), "{info}");
        assert!(field(&info, "URL").unwrap().ends_with(".nar.zst"), "{info}");
    }
    assert_verifies(path_str(&again), &["--trusted-key", &public]);

    // --level without --recompress is refused by the parser.
    let out = cachecore_output(
        &[
            "copy",
            path_str(&zstd),
            path_str(&again),
            "--all",
            "--level",
            "3",
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--recompress"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verify_jobs_and_trusted_key_files() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap().as_str();
    let (secret, public) = nix_generate_key(tmp.path(), "cachecore-flags-2");
    let (_, other) = nix_generate_key(tmp.path(), "cachecore-flags-other-2");
    let cache = tmp.path().join("cache");
    let url = path_str(&cache);
    cachecore_ok(
        &["push", url, app, "--key", path_str(&secret), "--quiet"],
        b"",
    );
    // Public keys in files, as `nix key convert-secret-to-public` prints them, with a newline.
    let key_file = tmp.path().join("trusted.pub");
    fs::write(&key_file, format!("{public}\n")).unwrap();
    let other_file = tmp.path().join("other.pub");
    fs::write(&other_file, format!("{other}\n")).unwrap();

    for jobs in ["1", "8"] {
        assert_verifies(url, &["--jobs", jobs, "--trusted-key", path_str(&key_file)]);
    }
    // Trusting only another key: every path is reported, exit 1.
    let out = cachecore_output(
        &[
            "verify",
            url,
            "--jobs",
            "2",
            "--trusted-key",
            path_str(&other_file),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    for p in &closure {
        assert!(report.contains(p.as_str()), "{p} not reported:\n{report}");
    }

    // pull takes the file too, and refuses the other key's file.
    let dest = tmp.path().join("pulled");
    cachecore_ok(
        &[
            "pull",
            url,
            app,
            path_str(&dest),
            "--trusted-key",
            path_str(&key_file),
        ],
        b"",
    );
    assert_same_tree(Path::new(app), &dest);
    let refused = tmp.path().join("refused");
    let err = assert_clean_error(
        &cachecore_output(
            &[
                "pull",
                url,
                app,
                path_str(&refused),
                "--trusted-key",
                path_str(&other_file),
            ],
            b"",
        ),
        "pull with another key trusted",
    );
    assert!(err.contains(app), "{err}");
    assert!(
        !refused.exists(),
        "a refused pull left {}",
        refused.display()
    );
}

#[test]
fn store_path_store_dir_equals_nix_with_that_store_dir() {
    let tmp = tempdir();
    let src = text_dir(tmp.path(), "cachecore-flags-sd", 100);
    let store_dir = tmp.path().join("other-store");
    let ours = cachecore_str(&[
        "store-path",
        path_str(&src),
        "--store-dir",
        path_str(&store_dir),
    ]);
    // Nix with its store directory elsewhere (a store of its own under the temp directory).
    let theirs = String::from_utf8(nix_ok(
        nix_command("nix-store")
            .env("NIX_STORE_DIR", &store_dir)
            .env("NIX_STATE_DIR", tmp.path().join("state"))
            .env("NIX_LOG_DIR", tmp.path().join("log"))
            .arg("--add")
            .arg(&src),
        b"",
    ))
    .unwrap();
    assert_eq!(ours, theirs.trim_end());
    assert!(
        ours.starts_with(&format!("{}/", store_dir.display())),
        "{ours}"
    );
    // And it differs from the path in /nix/store.
    let default = cachecore_str(&["store-path", path_str(&src)]);
    assert_ne!(default[default.len() - 40..], ours[ours.len() - 40..]);
}

#[test]
fn key_generate_refuses_bad_names() {
    let tmp = tempdir();
    for name in ["", "has:colon", "has space", "new\nline"] {
        let out_file = tmp.path().join("never-written.sk");
        let err = assert_clean_error(
            &cachecore_output(
                &["key", "generate", name, "--out", path_str(&out_file)],
                b"",
            ),
            &format!("key generate {name:?}"),
        );
        assert!(
            err.contains(&format!("{name:?}")),
            "the error does not name {name:?}: {err}"
        );
        assert!(!out_file.exists(), "{name:?}: a key file was written");
    }
}
