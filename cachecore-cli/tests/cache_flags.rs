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

/// A directory `name` holding one file `f` with `text` in it.
fn small_dir(parent: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("f"), text).unwrap();
    dir
}

#[test]
fn push_quiet_prints_nothing_where_a_push_prints_a_line_per_path() {
    let tmp = tempdir();
    let src = small_dir(tmp.path(), "cachecore-flags-quiet", "quiet\n");
    let loud = cachecore_output(
        &[
            "push",
            path_str(&tmp.path().join("loud")),
            "--add",
            path_str(&src),
        ],
        b"",
    );
    assert!(loud.status.success(), "{loud:?}");
    let path = String::from_utf8(loud.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&loud.stderr);
    assert!(
        stderr.contains(&format!("pushed {}", path.trim())),
        "{stderr}"
    );
    let quiet = cachecore_output(
        &[
            "push",
            path_str(&tmp.path().join("quiet")),
            "--add",
            path_str(&src),
            "--quiet",
        ],
        b"",
    );
    assert!(quiet.status.success(), "{quiet:?}");
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    // What it was asked for is still printed (stdout), and pushed.
    assert_eq!(String::from_utf8(quiet.stdout).unwrap(), path);
    assert_verifies(path_str(&tmp.path().join("quiet")), &[]);
}

#[test]
fn copy_level_sets_the_zstd_level_of_recompressed_nars() {
    let tmp = tempdir();
    let src = text_dir(tmp.path(), "cachecore-flags-copy-level", 3 << 20);
    let from = tmp.path().join("from");
    let path = cachecore_str(&[
        "push",
        path_str(&from),
        "--add",
        path_str(&src),
        "--compression",
        "none",
        "--quiet",
    ]);
    // --compression none: the object is the NAR itself.
    let info = narinfo_of(&from, &path);
    assert_eq!(field(&info, "Compression"), Some("none"), "{info}");
    assert_eq!(field(&info, "FileSize"), field(&info, "NarSize"), "{info}");
    let sizes: Vec<u64> = ["1", "19"]
        .iter()
        .map(|level| {
            let to = tmp.path().join(format!("level-{level}"));
            cachecore_ok(
                &[
                    "copy",
                    path_str(&from),
                    path_str(&to),
                    "--all",
                    "--recompress",
                    "zstd",
                    "--level",
                    level,
                    "--quiet",
                ],
                b"",
            );
            assert_verifies(path_str(&to), &[]);
            let info = narinfo_of(&to, &path);
            assert_eq!(field(&info, "Compression"), Some("zstd"), "{info}");
            field(&info, "FileSize").unwrap().parse().unwrap()
        })
        .collect();
    assert!(
        sizes[1] < sizes[0],
        "copied at level 19: {} bytes, at level 1: {} bytes",
        sizes[1],
        sizes[0]
    );
}

#[test]
fn pull_no_check_sigs_takes_the_unsigned_path_pull_otherwise_refuses() {
    let tmp = tempdir();
    let src = small_dir(tmp.path(), "cachecore-flags-unsigned", "unsigned\n");
    let cache = tmp.path().join("cache");
    let path = cachecore_str(&["push", path_str(&cache), "--add", path_str(&src), "--quiet"]);
    let refused = tmp.path().join("refused");
    let err = assert_clean_error(
        &cachecore_output(&["pull", path_str(&cache), &path, path_str(&refused)], b""),
        "pull of an unsigned path",
    );
    assert!(
        err.contains(&path) || err.contains("--trusted-key"),
        "{err}"
    );
    assert!(
        !refused.exists(),
        "a refused pull left {}",
        refused.display()
    );
    let dest = tmp.path().join("pulled");
    cachecore_ok(
        &[
            "pull",
            path_str(&cache),
            &path,
            path_str(&dest),
            "--no-check-sigs",
        ],
        b"",
    );
    assert_same_tree(&src, &dest);
}

/// Without --verify, `cat` reads the file's bytes alone and cannot see a change elsewhere in
/// the NAR; with it, the whole NAR is checked and nothing is printed.
#[test]
fn cat_verify_checks_the_whole_nar_before_printing() {
    let tmp = tempdir();
    let src = tmp.path().join("cachecore-flags-cat");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), "the file asked for\n").unwrap();
    // Another file, far from the first in the NAR (ranged reads of `a` never reach it).
    let mut other = pseudo_random_bytes(8 << 20, 3);
    other[4 << 20..(4 << 20) + 12].copy_from_slice(b"CHANGED-HERE");
    fs::write(src.join("z"), &other).unwrap();
    let cache = tmp.path().join("cache");
    let path = cachecore_str(&[
        "push",
        path_str(&cache),
        "--add",
        path_str(&src),
        "--compression",
        "none",
        "--quiet",
    ]);
    let info = narinfo_of(&cache, &path);
    let object = cache.join(field(&info, "URL").unwrap());
    let mut nar = fs::read(&object).unwrap();
    let at = nar.windows(12).position(|w| w == b"CHANGED-HERE").unwrap();
    nar[at] ^= 0x20;
    fs::write(&object, &nar).unwrap();

    let file = format!("{path}/a");
    assert_eq!(
        cachecore_str(&["cat", path_str(&cache), &file]),
        "the file asked for"
    );
    let out = cachecore_output(&["cat", path_str(&cache), &file, "--verify"], b"");
    let err = assert_clean_error(&out, "cat --verify of a path whose NAR changed");
    assert!(err.contains(&path), "{err}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
}

/// A NAR object no narinfo names (a killed push's) is kept while younger than
/// --failed-uploads-older-than and deleted once older.
#[test]
fn gc_failed_uploads_older_than_sets_when_orphaned_nars_go() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let url = path_str(&cache);
    cachecore_ok(&["init", url], b"");
    fs::create_dir(cache.join("nar")).unwrap();
    let orphan = cache.join(format!("nar/{}.nar.zst", "1".repeat(52)));
    fs::write(&orphan, vec![7u8; 1000]).unwrap();
    let gc = |age: &str| {
        cachecore_ok(
            &[
                "gc",
                url,
                "--allow-empty-roots",
                "--force",
                "--failed-uploads-older-than",
                age,
            ],
            b"",
        )
    };
    gc("1h");
    assert!(
        orphan.exists(),
        "an orphan younger than an hour was deleted"
    );
    // Modification times are read to the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    gc("0s");
    assert!(!orphan.exists(), "an orphan older than 0s was kept");
}

/// `roots add/remove/restore --host` name the host's root (`gcroots/<host>/…`); `roots add
/// --keep N` keeps N revisions; `gc --only-trashed` deletes what trashed roots reach and
/// leaves paths no root ever named.
#[test]
fn roots_host_and_keep_and_gc_only_trashed() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let url = path_str(&cache);
    let push = |name: &str| {
        let dir = small_dir(tmp.path(), &format!("cachecore-roots-{name}"), name);
        cachecore_str(&["push", url, "--add", path_str(&dir), "--quiet"])
    };
    let (a, b, c) = (push("a"), push("b"), push("c"));
    let host = "cachecore-flags-host";
    cachecore_ok(&["roots", "add", url, "app", &a, "--host", host], b"");
    cachecore_ok(&["roots", "add", url, "kept", &c, "--host", host], b"");
    assert!(cache.join(format!("gcroots/{host}/app")).is_file());

    // Another host (this machine's, without --host) has no such root.
    let out = cachecore_output(&["roots", "remove", url, "app"], b"");
    assert_clean_error(&out, "roots remove of another host's root");
    assert!(cache.join(format!("gcroots/{host}/app")).is_file());
    cachecore_ok(&["roots", "remove", url, "app", "--host", host], b"");
    assert!(!cache.join(format!("gcroots/{host}/app")).exists());
    assert!(cache.join(format!("gctrash/{host}/app")).is_file());
    cachecore_ok(&["roots", "restore", url, "app", "--host", host], b"");
    assert!(cache.join(format!("gcroots/{host}/app")).is_file());
    assert!(!cache.join(format!("gctrash/{host}/app")).exists());
    cachecore_ok(&["roots", "remove", url, "app", "--host", host], b"");

    let deleted = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["gc", url, "--json"];
        all.extend_from_slice(args);
        let report: serde_json::Value = serde_json::from_slice(&cachecore_ok(&all, b"")).unwrap();
        let mut keys: Vec<String> = report["narinfos_deleted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        keys.sort();
        keys
    };
    let key = |p: &str| format!("{}.narinfo", &p.rsplit('/').next().unwrap()[..32]);
    let mut a_and_b = vec![key(&a), key(&b)];
    a_and_b.sort();
    assert_eq!(deleted(&["--dry-run"]), a_and_b);
    assert_eq!(deleted(&["--dry-run", "--only-trashed"]), vec![key(&a)]);
    assert_eq!(deleted(&["--only-trashed", "--force"]), vec![key(&a)]);
    assert!(!cache.join(key(&a)).exists());
    assert!(cache.join(key(&b)).exists() && cache.join(key(&c)).exists());

    // --keep 2: a series keeps its last two revisions; without --keep, a root is replaced.
    let revisions = |name: &str| -> Vec<Vec<String>> {
        let listed: serde_json::Value =
            serde_json::from_slice(&cachecore_ok(&["roots", "list", url, "--json"], b"")).unwrap();
        let root = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no root {name}: {listed}"));
        let mut revs: Vec<Vec<String>> = root["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["paths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        revs.sort();
        revs
    };
    for p in [&b, &c] {
        cachecore_ok(
            &[
                "roots", "add", url, "series", p, "--host", host, "--keep", "2",
            ],
            b"",
        );
        cachecore_ok(&["roots", "add", url, "plain", p, "--host", host], b"");
    }
    let mut both = vec![vec![b.clone()], vec![c.clone()]];
    both.sort();
    assert_eq!(revisions("series"), both);
    assert_eq!(revisions("plain"), vec![vec![c.clone()]]);
}

/// `--jobs N` of the commands that read NARs: with every NAR download held at a gate in front
/// of a cache served over HTTP, `verify --jobs 6` and `copy --jobs 6` have six under way at
/// once — more than the default 4 allows, so a command ignoring the flag never gets there.
#[test]
fn verify_jobs_and_copy_jobs_set_how_many_nars_are_read_at_once() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let paths: Vec<String> = (0..8)
        .map(|i| {
            let dir = small_dir(
                tmp.path(),
                &format!("cachecore-jobs-{i}"),
                &format!("{i}\n"),
            );
            cachecore_str(&["push", path_str(&cache), "--add", path_str(&dir), "--quiet"])
        })
        .collect();
    let server = common::http_server::HttpServer::serve(&cache);
    for command in ["verify", "copy"] {
        let gate = common::gate::Gate::start(server.url().strip_prefix("http://").unwrap());
        gate.hold(common::gate::Stop::Request, |r| {
            r.line.starts_with("GET /nar/")
        });
        let url = gate.url();
        let to = tmp.path().join(format!("copied-by-{command}"));
        let mut args: Vec<&str> = match command {
            "verify" => vec!["verify", &url, "--jobs", "6"],
            _ => vec!["copy", &url, path_str(&to), "--jobs", "6", "--quiet"],
        };
        args.extend(paths.iter().map(String::as_str));
        let mut child = cachecore_command()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let held = gate.wait_held(6, std::time::Duration::from_secs(60));
        let _ = child.kill();
        let _ = child.wait();
        gate.discard();
        assert_eq!(
            held.len(),
            6,
            "`{command} --jobs 6` read more NARs at once than it allows: {held:#?}"
        );
    }
}

/// A cache of 24 small paths at `prefix` in `garage` (pushed to a directory under `tmp`, then
/// copied there, which indexes them); its URL.
fn garage_cache_of_24_paths(tmp: &Path, garage: &common::garage::Garage, prefix: &str) -> String {
    let cache = tmp.join("cache");
    for i in 0..24 {
        let dir = small_dir(tmp, &format!("cachecore-index-{i}"), &format!("{i}\n"));
        cachecore_ok(
            &["push", path_str(&cache), "--add", path_str(&dir), "--quiet"],
            b"",
        );
    }
    let store = garage.url(prefix);
    let copy = ["copy", path_str(&cache), &store, "--all", "--quiet"];
    let out = cachecore_command()
        .args(copy)
        .envs(garage.env())
        .output()
        .unwrap();
    assert_cachecore_ok(&out, &copy);
    store
}

/// Runs `cachecore SUBCOMMAND STORE FLAGS…` on `store` in `garage` through a gate that holds
/// every narinfo GET, waits until `n` are held and half a second more, stops it, and returns how
/// many were held at most.
fn narinfo_reads_held_at_once(
    garage: &common::garage::Garage,
    store: &str,
    subcommand: &[&str],
    flags: &[&str],
    n: usize,
) -> usize {
    let gate = common::gate::Gate::start(garage.endpoint.strip_prefix("http://").unwrap());
    gate.hold(common::gate::Stop::Request, |r| {
        r.method == "GET" && r.target.split('?').next().unwrap().ends_with(".narinfo")
    });
    let gated = store.replace(&garage.endpoint, &gate.url());
    let mut child = cachecore_command()
        .args(subcommand)
        .arg(&gated)
        .args(flags)
        .envs(garage.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    gate.wait_held(n, std::time::Duration::from_secs(60));
    // A moment for one more, which must not come.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let held = gate.held();
    let _ = child.kill();
    let _ = child.wait();
    gate.discard();
    held
}

/// `gc --jobs N` and `index compact --jobs N` read N narinfos at once: in a Garage cache whose
/// push index was deleted (so both read every narinfo), with every narinfo read held at a gate
/// in front of Garage, `--jobs 20` has twenty under way — more than the default 16 allows — and
/// no more.
#[test]
fn gc_jobs_and_index_compact_jobs_set_how_many_narinfos_are_read_at_once() {
    let tmp = tempdir();
    let garage = common::garage::Garage::start();
    let store = garage_cache_of_24_paths(tmp.path(), &garage, "gc-jobs");
    let index = garage.keys("gc-jobs/index/");
    assert!(!index.is_empty(), "copy wrote no index object");
    for key in &index {
        garage.delete_object(key);
    }
    for (subcommand, flags) in [
        (
            &["gc"][..],
            &["--dry-run", "--allow-empty-roots", "--jobs", "20"][..],
        ),
        (&["index", "compact"], &["--jobs", "20"]),
    ] {
        assert_eq!(
            narinfo_reads_held_at_once(&garage, &store, subcommand, flags, 20),
            20,
            "`{} {}` read more narinfos at once than it allows",
            subcommand.join(" "),
            flags.join(" ")
        );
    }
}

/// `index rebuild --jobs N` reads N narinfos at once: with every narinfo read held at a gate in
/// front of Garage, `--jobs 20` has twenty under way — more than the default 16 allows — and no
/// more.
#[test]
fn index_rebuild_jobs_sets_how_many_narinfos_are_read_at_once() {
    let tmp = tempdir();
    let garage = common::garage::Garage::start();
    let store = garage_cache_of_24_paths(tmp.path(), &garage, "index-jobs");
    assert_eq!(
        narinfo_reads_held_at_once(
            &garage,
            &store,
            &["index", "rebuild"],
            &["--jobs", "20"],
            20
        ),
        20,
        "`index rebuild --jobs 20` read more narinfos at once than it allows"
    );
}
