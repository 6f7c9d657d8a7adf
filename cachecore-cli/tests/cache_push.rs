//! End-to-end tests of the binary cache commands against real Nix 2.8: what `cachecore push`
//! writes, Nix substitutes (with signatures required); build logs pushed with `--logs` are what
//! `nix log` reads from the cache; what `nix copy` writes, cachecore verifies and pulls;
//! corruption is found, in the cache and in the local store (which must not poison the cache);
//! a push watched while it runs, and killed mid-way, never shows a narinfo without its NAR and
//! its closure, and a second push finishes exactly what is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn cache_url(dir: &Path) -> String {
    dir.display().to_string()
}

/// Every narinfo in `cache` has its NAR object and the narinfos of its references.
fn assert_closed(cache: &Path) {
    if let Err(broken) = closed_narinfos(cache) {
        panic!("{broken}");
    }
}

/// The number of narinfos in `cache` (0 when it does not exist yet) if every one of them has
/// its NAR object, of its FileSize, and the narinfos of all its references; else what is
/// wrong. Safe to call while a push writes into `cache`: objects only ever appear (each at once,
/// by rename), so whatever a narinfo needs and was there when the listing was taken is still
/// there when it is checked.
fn closed_narinfos(cache: &Path) -> Result<usize, String> {
    let Ok(entries) = fs::read_dir(cache) else {
        return Ok(0);
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".narinfo") {
            continue;
        }
        count += 1;
        let text = fs::read_to_string(entry.path()).map_err(|e| format!("{name}: {e}"))?;
        let info = cachecore::narinfo::NarInfo::parse(&text)
            .map_err(|e| format!("{name} does not parse ({e}):\n{text}"))?;
        let size = fs::metadata(cache.join(&info.url))
            .map_err(|_| format!("{name} is visible but its NAR {} is missing", info.url))?
            .len();
        if Some(size) != info.file_size {
            return Err(format!(
                "{name}: FileSize {:?} but {} has {size} bytes",
                info.file_size, info.url
            ));
        }
        for r in &info.references {
            if !cache.join(format!("{}.narinfo", r.hash_part())).exists() {
                return Err(format!(
                    "{name} is visible but the narinfo of its reference {r} is not"
                ));
            }
        }
    }
    Ok(count)
}

#[test]
fn pushed_closure_is_substituted_by_nix_with_signatures_required() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap();
    let (secret, public) = nix_generate_key(tmp.path(), "cachecore-test-1");
    let cache = tmp.path().join("cache");
    let out = cachecore_ok(
        &[
            "push",
            &cache_url(&cache),
            path_str(&tmp.path().join("result")),
            "--key",
            path_str(&secret),
        ],
        b"",
    );
    assert!(
        out.is_empty(),
        "push printed on stdout: {}",
        String::from_utf8_lossy(&out)
    );
    assert_closed(&cache);
    // Listings are written, NARs are seekable zstd.
    for p in &closure {
        let hash = &Path::new(p).file_name().unwrap().to_str().unwrap()[..32];
        assert!(
            cache.join(format!("{hash}.ls")).exists(),
            "no listing for {p}"
        );
        let ni = fs::read_to_string(cache.join(format!("{hash}.narinfo"))).unwrap();
        assert!(ni.contains("Compression: zstd\n"), "{ni}");
        assert!(ni.contains(".nar.zst\n"), "{ni}");
    }

    // Nix substitutes the whole closure into a fresh store, requiring our signature.
    assert_nix_substitutes(
        &format!("file://{}", cache.display()),
        tmp.path(),
        &closure,
        &public,
    );

    // Our own verify agrees; a second push uploads nothing.
    cachecore_ok(
        &["verify", &cache_url(&cache), "--trusted-key", &public],
        b"",
    );
    let again = cachecore_output(&["push", &cache_url(&cache), app], b"");
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("0 paths pushed") && stderr.contains("3 already"),
        "{stderr}"
    );
}

#[test]
fn nix_written_caches_verify_and_pull() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap();
    let (secret, public) = nix_generate_key(tmp.path(), "nix-side-1");
    for compression in ["xz", "zstd", "br", "none"] {
        let cache = tmp.path().join(format!("nix-{compression}"));
        let params = format!("compression={compression}&secret-key={}", secret.display());
        nix_copy_to_file(
            &cache,
            &params,
            &closure.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let out = cachecore_output(
            &["verify", &cache_url(&cache), "--trusted-key", &public],
            b"",
        );
        assert!(
            out.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let dest = tmp.path().join(format!("pulled-{compression}"));
        cachecore_ok(
            &[
                "pull",
                &cache_url(&cache),
                app,
                path_str(&dest),
                "--trusted-key",
                &public,
            ],
            b"",
        );
        assert_same_tree(Path::new(app), &dest);
    }
}

#[test]
fn corruption_is_found_and_nothing_is_unpacked() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap();
    let cache = tmp.path().join("cache");
    cachecore_ok(
        &["push", &cache_url(&cache), app, "--compression", "none"],
        b"",
    );
    // Flip a byte inside app's NAR.
    let hash = &Path::new(app).file_name().unwrap().to_str().unwrap()[..32];
    let ni = cachecore::narinfo::NarInfo::parse(
        &fs::read_to_string(cache.join(format!("{hash}.narinfo"))).unwrap(),
    )
    .unwrap();
    let nar = cache.join(&ni.url);
    let mut bytes = fs::read(&nar).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    fs::write(&nar, &bytes).unwrap();

    let out = cachecore_output(&["verify", &cache_url(&cache)], b"");
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(app.as_str()) && report.contains("mismatch"),
        "{report}"
    );

    let dest = tmp.path().join("pulled");
    let out = cachecore_output(
        &[
            "pull",
            &cache_url(&cache),
            app,
            path_str(&dest),
            "--no-check-sigs",
        ],
        b"",
    );
    let err = assert_clean_error(&out, "pull of a corrupt NAR");
    assert!(err.contains(app.as_str()), "{err}");
    assert!(!dest.exists(), "a corrupt pull left {}", dest.display());
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("pulled"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Copying it is a clean error too, and the destination gets neither its NAR nor its
    // narinfo; what was published there is closed.
    let copied = tmp.path().join("copied");
    let out = cachecore_output(
        &[
            "copy",
            &cache_url(&cache),
            &cache_url(&copied),
            app,
            "--quiet",
        ],
        b"",
    );
    let err = assert_clean_error(&out, "copy of a corrupt NAR");
    assert!(
        err.contains(&ni.url) && err.contains("corrupt") && err.contains("FileHash"),
        "{err}"
    );
    assert!(!copied.join(&ni.url).exists(), "the corrupt NAR was copied");
    assert!(!copied.join(format!("{hash}.narinfo")).exists());
    assert_closed(&copied);
    let staged: Vec<String> = files_under(&copied)
        .into_iter()
        .filter(|f| f.contains("nar/") && !f.ends_with(".nar"))
        .collect();
    assert!(staged.is_empty(), "staging objects left: {staged:?}");

    // A narinfo that does not parse is reported by verify, and is a clean error for pull.
    fs::write(
        cache.join(format!("{hash}.narinfo")),
        "StorePath: nonsense\n",
    )
    .unwrap();
    let out = cachecore_output(&["verify", &cache_url(&cache)], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{hash}.narinfo")));
    let out = cachecore_output(
        &[
            "pull",
            &cache_url(&cache),
            app,
            path_str(&dest),
            "--no-check-sigs",
        ],
        b"",
    );
    assert!(assert_clean_error(&out, "pull of a bad narinfo").contains(&format!("{hash}.narinfo")));
}

#[test]
fn push_add_needs_no_nix_and_matches_nix_store_add() {
    let tmp = tempdir();
    let tree = make_fixture_tree(tmp.path());
    let cache = tmp.path().join("cache");
    let (secret, public) = nix_generate_key(tmp.path(), "add-1");
    let printed = cachecore_str(&[
        "push",
        &cache_url(&cache),
        "--add",
        path_str(&tree),
        "--key",
        path_str(&secret),
    ]);
    let expected = nix_store_add(&tree);
    assert_eq!(printed.trim(), expected.trim());
    let fresh = tmp.path().join("fresh");
    let res = nix_copy_from_file_checking_sigs(&cache, &fresh, expected.trim(), &public);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn copy_between_caches_and_recompress() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap();
    let (secret, public) = nix_generate_key(tmp.path(), "copy-1");
    let a = tmp.path().join("a");
    cachecore_ok(
        &["push", &cache_url(&a), app, "--key", path_str(&secret)],
        b"",
    );
    let b = tmp.path().join("b");
    cachecore_ok(
        &[
            "copy",
            &cache_url(&a),
            &format!("file://{}", b.display()),
            app,
        ],
        b"",
    );
    assert_closed(&b);
    let c = tmp.path().join("c");
    cachecore_ok(
        &[
            "copy",
            &cache_url(&b),
            &cache_url(&c),
            "--all",
            "--recompress",
            "xz",
        ],
        b"",
    );
    assert_closed(&c);
    let ni = fs::read_dir(&c)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
        .unwrap();
    assert!(fs::read_to_string(ni.path())
        .unwrap()
        .contains("Compression: xz"));
    // Signatures survive re-compression: Nix still accepts the closure.
    let res = nix_copy_from_file_checking_sigs(&c, &tmp.path().join("fresh"), app, &public);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    // Brotli (Nix's compression=br): written by cachecore, read by Nix.
    let brotli = tmp.path().join("brotli");
    cachecore_ok(
        &[
            "copy",
            &cache_url(&b),
            &cache_url(&brotli),
            "--all",
            "--recompress",
            "br",
        ],
        b"",
    );
    assert_closed(&brotli);
    assert!(fs::read_dir(&brotli).unwrap().flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .ends_with(".narinfo")
        && fs::read_to_string(e.path())
            .unwrap()
            .contains("Compression: br")));
    assert!(fs::read_dir(brotli.join("nar"))
        .unwrap()
        .flatten()
        .all(|e| e.file_name().to_string_lossy().ends_with(".nar.br")));
    let res =
        nix_copy_from_file_checking_sigs(&brotli, &tmp.path().join("fresh-brotli"), app, &public);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    // ls, cat, info.
    let listed = cachecore_str(&["ls", &cache_url(&c)]);
    for p in &closure {
        assert!(listed.lines().any(|l| l == p), "{p} not in {listed}");
    }
    let inside = cachecore_str(&["ls", &cache_url(&c), app]);
    assert!(inside.contains("bin/cachecore-e2e-app"), "{inside}");
    let content = cachecore_ok(
        &[
            "cat",
            &cache_url(&c),
            &format!("{app}/bin/cachecore-e2e-app"),
        ],
        b"",
    );
    assert_eq!(content, b"cachecore-e2e-app\n");
    let info = cachecore_str(&["info", &cache_url(&c)]);
    assert!(
        info.contains("StoreDir: /nix/store") && info.contains("Paths: 3"),
        "{info}"
    );
}

#[test]
fn bad_stores_and_paths_are_one_clear_sentence() {
    let tmp = tempdir();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "info".into(),
                "s3://bucket?endpoint=http://127.0.0.1:1&region=x".into(),
            ],
            "127.0.0.1:1",
        ),
        (vec!["info".into(), "ftp://nowhere".into()], "ftp://nowhere"),
        (
            vec![
                "push".into(),
                path_str(tmp.path()).into(),
                "/etc/hostname".into(),
            ],
            "/etc/hostname",
        ),
        (
            vec![
                "pull".into(),
                path_str(tmp.path()).into(),
                "not-a-store-path".into(),
                "/tmp/x".into(),
                "--no-check-sigs".into(),
            ],
            "not-a-store-path",
        ),
    ];
    for (args, needle) in cases {
        // Explicit credentials: an S3 client must never fall back to a cloud metadata endpoint here.
        let out = run_with_stdin(
            cachecore_command()
                .args(&args)
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_EC2_METADATA_DISABLED", "true"),
            b"",
        );
        let err = assert_clean_error(&out, &args.join(" "));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `nix log --store URL PATH` with no other substituter: the output, successful or not.
fn nix_log_from(url: &str, path: &str) -> std::process::Output {
    let mut cmd = nix_command("nix");
    cmd.args(["log", "--store", url, path])
        .args(["--option", "substituters", ""]);
    nix_output(&mut cmd, b"")
}

#[test]
fn push_logs_uploads_build_logs_that_nix_log_reads_from_the_cache() {
    let tmp = tempdir();
    let n = nonce();
    // Two fresh derivations (the nonce makes Nix build them, and so keep their logs, on every
    // run), each printing its own lines on stdout and stderr; the second depends on the first.
    let built = nix_build_scripts(
        tmp.path(),
        &[
            (
                "cachecore-e2e-logdep",
                format!("echo logdep-stdout-{n}; echo logdep-stderr-{n} >&2; echo {n} > $out"),
            ),
            (
                "cachecore-e2e-logtop",
                format!(
                    "echo logtop-stdout-{n}; echo logtop-stderr-{n} >&2; \
                     echo ${{cachecore-e2e-logdep}} > $out"
                ),
            ),
        ],
    );
    let cases: Vec<(&str, &str, String)> = vec![
        (&built[0], "logdep", nix("nix-store", &["-qd", &built[0]])),
        (&built[1], "logtop", nix("nix-store", &["-qd", &built[1]])),
    ];
    // The log Nix kept is where we look for it (bzip2 under drvs/, unless this Nix says
    // otherwise); `nix-store -l` reads it from the local store.
    for (path, tag, _) in &cases {
        let local = nix("nix-store", &["-l", path]);
        assert!(local.contains(&format!("{tag}-stdout-{n}")), "{local}");
    }

    // With --logs, pushing the top path uploads both logs of its closure as `log/<drv name>`,
    // and Nix reads them from the cache.
    let cache = tmp.path().join("with-logs");
    cachecore_ok(
        &["push", &cache_url(&cache), &built[1], "--logs", "--quiet"],
        b"",
    );
    assert_closed(&cache);
    let url = format!("file://{}", cache.display());
    for (path, tag, drv) in &cases {
        let drv_name = Path::new(drv).file_name().unwrap().to_str().unwrap();
        let object = cache.join("log").join(drv_name);
        let text = fs::read_to_string(&object)
            .unwrap_or_else(|e| panic!("no build log {} for {path}: {e}", object.display()));
        for line in [format!("{tag}-stdout-{n}"), format!("{tag}-stderr-{n}")] {
            assert!(
                text.lines().any(|l| l == line),
                "{}: no line {line:?} in:\n{text}",
                object.display()
            );
        }
        let out = nix_log_from(&url, path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "nix log --store {url} {path} failed:\n{stderr}"
        );
        assert!(
            stdout.lines().any(|l| l == format!("{tag}-stdout-{n}"))
                && stdout.lines().any(|l| l == format!("{tag}-stderr-{n}")),
            "nix log printed:\n{stdout}"
        );
        // ...and says it got it from the cache (substituters are off, so nowhere else).
        assert!(stderr.contains(&format!("from '{url}'")), "{stderr}");
    }

    // Without --logs, no log object, and Nix finds no log in the cache.
    let bare = tmp.path().join("without-logs");
    cachecore_ok(&["push", &cache_url(&bare), &built[1], "--quiet"], b"");
    assert_closed(&bare);
    let objects = files_under(&bare);
    assert!(
        !objects.iter().any(|f| f.starts_with("log")),
        "a push without --logs wrote {objects:?}"
    );
    let out = nix_log_from(&format!("file://{}", bare.display()), &built[1]);
    assert!(
        !out.status.success(),
        "nix log found a log in a cache pushed without --logs:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// One byte of a file in a store path, changed behind the Nix database's back. Dropping it puts
/// the byte back with the mode and mtime Nix gives store files (0444, 1 s after the epoch), so
/// the store is whole again even when the test fails.
struct CorruptByte {
    file: PathBuf,
    offset: u64,
    original: u8,
}

impl CorruptByte {
    fn new(file: &Path, offset: u64) -> CorruptByte {
        use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap(); // chmod u+w
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .unwrap();
        let mut b = [0u8];
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&[b[0] ^ 0x01]).unwrap();
        CorruptByte {
            file: file.to_owned(),
            offset,
            original: b[0],
        }
    }
}

impl Drop for CorruptByte {
    fn drop(&mut self) {
        use std::io::{Seek as _, SeekFrom, Write as _};
        use std::os::unix::fs::PermissionsExt as _;
        let restored = fs::OpenOptions::new()
            .write(true)
            .open(&self.file)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(self.offset))?;
                f.write_all(&[self.original])?;
                f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1))
            })
            .and_then(|()| fs::set_permissions(&self.file, fs::Permissions::from_mode(0o444)));
        if let Err(e) = restored {
            eprintln!(
                "could not restore {} after corrupting it: {e}; `nix-store --delete` its store \
                 path",
                self.file.display()
            );
        }
    }
}

#[test]
fn corrupt_local_path_fails_the_push_and_publishes_nothing() {
    let tmp = tempdir();
    let n = nonce();
    // Fresh paths only this test uses (the nonce), so corrupting them cannot disturb another
    // test: one NAR small enough to be compressed in memory, one large enough (over 4 MiB) to be
    // streamed to its final key (and abandoned before the upload completes), and one that
    // refers to the small one.
    let built = nix_build_scripts(
        tmp.path(),
        &[
            (
                "cachecore-e2e-corrupt-small",
                format!("/bin/mkdir $out; echo {n} small > $out/data"),
            ),
            (
                "cachecore-e2e-corrupt-big",
                format!(
                    "/bin/mkdir $out; echo {n} > $out/nonce; \
                     /usr/bin/head -c 6000000 /dev/zero > $out/data"
                ),
            ),
            (
                "cachecore-e2e-corrupt-top",
                "echo ${cachecore-e2e-corrupt-small} > $out".to_owned(),
            ),
        ],
    );
    let (small, big, top) = (&built[0], &built[1], &built[2]);
    // The database's NarHash, as `sha256:<nix32>`.
    let expected: Vec<String> = [small, big]
        .iter()
        .map(|p| nix("nix-store", &["--query", "--hash", p]))
        .collect();

    let small_bad = CorruptByte::new(&Path::new(small).join("data"), 3);
    let big_bad = CorruptByte::new(&Path::new(big).join("data"), 3_000_000);
    // Nix's own check agrees that the paths no longer match the database.
    for p in [small, big] {
        let out = nix_output(nix_command("nix-store").args(["--verify-path", p]), b"");
        assert!(!out.status.success(), "nix-store --verify-path {p} passed");
    }

    for (path, expected, what) in [(small, &expected[0], "small"), (big, &expected[1], "big")] {
        let actual = format!("sha256:{}", nix_hash(Path::new(path)));
        assert_ne!(&actual, expected);
        let cache = tmp.path().join(format!("cache-{what}"));
        // --quiet: no progress lines, so the error is all there is on stderr.
        let out = cachecore_output(&["push", &cache_url(&cache), path.as_str(), "--quiet"], b"");
        let err = assert_clean_error(&out, &format!("push of the corrupt {what} path"));
        assert!(
            err.contains(path.as_str()) && err.contains(expected) && err.contains(&actual),
            "the error should name {path}, the database's NarHash {expected} and the hash of \
             what is on disk {actual}; it is:\n{err}"
        );
        // Nothing of the path in the cache: no narinfo, no NAR, no staging object, no listing.
        let objects = files_under(&cache);
        assert_eq!(
            objects,
            ["nix-cache-info"],
            "the failed push of the corrupt {what} path left these objects"
        );
    }

    // A path whose reference is corrupt is not published either.
    let cache = tmp.path().join("cache-top");
    let out = cachecore_output(&["push", &cache_url(&cache), top.as_str(), "--quiet"], b"");
    let err = assert_clean_error(&out, "push of a path whose reference is corrupt");
    assert!(err.contains(small.as_str()), "{err}");
    let narinfos: Vec<String> = files_under(&cache)
        .into_iter()
        .filter(|f| f.ends_with(".narinfo"))
        .collect();
    assert!(narinfos.is_empty(), "published {narinfos:?}");

    // Repaired, the same paths push, into the same caches, and verify.
    drop((small_bad, big_bad));
    for p in [small, big] {
        nix("nix-store", &["--verify-path", p]);
    }
    for (path, what) in [(small, "small"), (big, "big"), (top, "top")] {
        let cache = tmp.path().join(format!("cache-{what}"));
        cachecore_ok(&["push", &cache_url(&cache), path.as_str(), "--quiet"], b"");
        assert_closed(&cache);
        cachecore_ok(&["verify", &cache_url(&cache)], b"");
    }
}

/// Paths in the closure `chain_closure` builds.
const CHAIN_LEN: usize = 200;

/// A closure of `CHAIN_LEN` store paths made at evaluation time with `builtins.toFile` (no
/// builds), each holding pseudo-random text. Paths 0 to 2 are leaves of 1.5, 1.25 and 1 MiB.
/// From path 3 on they form a chain: path k refers to path k-1 and path k-7, and shrinks from
/// about 64 KiB to 4 KiB as k grows; the middle one also refers to the three large leaves. The
/// contents are fixed, so the store paths are the same on every run. A push starts the largest
/// NARs first, so references start uploading before the paths that need them, but with
/// `--jobs 2` a path often finishes before its still-uploading reference and must wait for it.
/// Returns the root, path `CHAIN_LEN - 1`.
fn chain_closure(dir: &Path) -> String {
    let chunks = dir.join("chunks");
    fs::create_dir(&chunks).unwrap();
    for k in 0..CHAIN_LEN {
        let len = match k {
            0 => 1536 << 10,
            1 => 1280 << 10,
            2 => 1024 << 10,
            _ => 4096 + (CHAIN_LEN - 1 - k) * 300,
        };
        // Printable text (Nix strings hold no NUL), about 6.5 bits of entropy a byte, so it
        // compresses slowly.
        let text: Vec<u8> = pseudo_random_bytes(len, 1000 + k as u64)
            .into_iter()
            .map(|b| b'!' + b % 94)
            .collect();
        fs::write(chunks.join(k.to_string()), text).unwrap();
    }
    let expr = dir.join("chain.nix");
    fs::write(
        &expr,
        format!(
            r#"let
  paths = builtins.genList one {CHAIN_LEN};
  one = k: builtins.toFile "cachecore-e2e-chain-${{toString k}}"
    ((if k >= 4 then "${{ref (k - 1)}}\n" else "")
     + (if k >= 10 then "${{ref (k - 7)}}\n" else "")
     + (if k == {CHAIN_LEN} / 2 then "${{ref 0}} ${{ref 1}} ${{ref 2}}\n" else "")
     + builtins.readFile "{chunks}/${{toString k}}");
  ref = builtins.elemAt paths;
in builtins.elemAt paths ({CHAIN_LEN} - 1)
"#,
            chunks = chunks.display()
        ),
    )
    .unwrap();
    let root = nix(
        "nix-instantiate",
        &["--eval", "--read-write-mode", path_str(&expr)],
    );
    let root = root.trim_matches('"').to_owned();
    let closure = nix("nix-store", &["-qR", &root]);
    assert_eq!(closure.lines().count(), CHAIN_LEN, "closure of {root}");
    root
}

// ---------------------------------------------------------------------------------------------
// Where push reads path metadata: the database, else the daemon's socket, else `nix path-info`
// ---------------------------------------------------------------------------------------------

/// `cachecore push` of `root` into a new cache under `tmp` with `env`, which must succeed.
fn push_with_env(tmp: &Path, what: &str, root: &str, env: &[(&str, std::ffi::OsString)]) {
    let cache = tmp.join(format!("cache-{what}"));
    let args = ["push", path_str(&cache), root, "--quiet"];
    let out = cachecore_command()
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .unwrap();
    assert_cachecore_ok(&out, &args);
    assert_closed(&cache);
}

/// Through the CLI, in Nix's environment: with the database readable, push reads it (a daemon
/// socket named by `NIX_DAEMON_SOCKET_PATH` gets no connection, and `nix` is not run); without
/// it, the daemon (a real `nix-daemon`; `nix` is not run); without either, `nix path-info`
/// (the `nix` on `PATH`, a wrapper that logs how it is run).
#[test]
fn push_reads_metadata_from_the_database_then_the_daemon_then_nix_path_info() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap();
    // `nix` on PATH: logs its arguments, then runs the real one on the real store.
    let real_nix = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v nix"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    assert!(!real_nix.is_empty(), "no nix on PATH");
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let log = tmp.path().join("nix-runs.log");
    let wrapper = bin.join("nix");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nunset NIX_STATE_DIR NIX_DAEMON_SOCKET_PATH\n\
             NIX_REMOTE=local exec '{real_nix}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let nix_runs = || fs::read_to_string(&log).unwrap_or_default();
    // A socket that counts the connections it gets (and answers none).
    let socket = tmp.path().join("counting.socket");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(c);
        }
    });
    let no_state = tmp.path().join("no-state");
    fs::create_dir(&no_state).unwrap();

    // 1. The database is readable: it is read; neither the socket nor `nix` is used.
    push_with_env(
        tmp.path(),
        "database",
        root,
        &[
            ("PATH", path.clone().into()),
            ("NIX_REMOTE", "daemon".into()),
            ("NIX_DAEMON_SOCKET_PATH", socket.clone().into()),
        ],
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the database is readable, yet the daemon's socket was tried"
    );
    assert_eq!(nix_runs(), "", "the database is readable, yet nix was run");

    // 2. No database (NIX_STATE_DIR holds none): the daemon answers.
    let daemon = NixDaemon::start();
    push_with_env(
        tmp.path(),
        "daemon",
        root,
        &[
            ("PATH", path.clone().into()),
            ("NIX_REMOTE", "daemon".into()),
            ("NIX_STATE_DIR", no_state.clone().into()),
            ("NIX_DAEMON_SOCKET_PATH", daemon.socket().into()),
        ],
    );
    assert_eq!(nix_runs(), "", "a daemon answers, yet nix was run");

    // 3. Neither: `nix path-info`.
    push_with_env(
        tmp.path(),
        "nix-path-info",
        root,
        &[
            ("PATH", path.into()),
            ("NIX_REMOTE", "daemon".into()),
            ("NIX_STATE_DIR", no_state.into()),
            (
                "NIX_DAEMON_SOCKET_PATH",
                tmp.path().join("absent.socket").into(),
            ),
        ],
    );
    assert!(
        nix_runs().lines().any(|l| l.contains("path-info")),
        "no `nix path-info` run: {:?}",
        nix_runs()
    );
}

// ---------------------------------------------------------------------------------------------
// A push killed at chosen points (kill -9), on a directory through `serve` and on Garage
// ---------------------------------------------------------------------------------------------

/// Where a push is killed: held by a [`Gate`](common::gate::Gate) at the request that starts
/// the step, so the point is reached the same way on any machine.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// Its first NAR upload has begun (nothing of it stored yet).
    FirstNar,
    /// `n` narinfos are out, released one at a time, and the next one's write is held.
    Narinfo(usize),
}

/// A cache a push writes to through a gate: the push's URL (the gate's), and how to count the
/// narinfos the cache holds.
struct GatedCache<'a> {
    push_url: String,
    /// Extra arguments of `cachecore push`.
    push_args: Vec<String>,
    /// The environment of `cachecore push` and `verify`.
    env: Vec<(String, String)>,
    /// The URL `verify` reads the cache at, and the second push writes to (not through the
    /// gate).
    url: String,
    /// The same for the second push (the server's own, for a cache behind `serve`).
    repush_url: String,
    /// The object key a request line is for.
    key_of: &'a dyn Fn(&str) -> String,
    /// The narinfos in the cache; `Err` when one is visible without its NAR or closure.
    narinfos: &'a dyn Fn() -> Result<usize, String>,
}

/// Pushes the chain closure `root` into `cache` through `gate`, kills the push (SIGKILL) at
/// `point`, checks that what is visible is whole, then pushes again and checks that exactly the
/// rest was pushed and the cache verifies.
fn push_killed_at(cache: &GatedCache, gate: &common::gate::Gate, root: &str, point: KillPoint) {
    use std::os::unix::process::ExitStatusExt as _;
    let limit = Duration::from_secs(300);
    let mut child = cachecore_command()
        .args(["push", &cache.push_url, root, "--jobs", "2", "--quiet"])
        .args(&cache.push_args)
        .envs(cache.env.iter().cloned())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stop = |child: &mut std::process::Child, why: String| -> ! {
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        panic!("{why}\npush's stderr:\n{stderr}");
    };
    let expected_left = match point {
        KillPoint::FirstNar => {
            let held = gate.wait_held(1, limit);
            if !held.iter().all(|l| (cache.key_of)(l).starts_with("nar/")) {
                stop(&mut child, format!("held {held:?}, not a NAR upload"));
            }
            0
        }
        KillPoint::Narinfo(n) => {
            // Every state on the way is looked at: n + 1 partial caches.
            for out in 0..=n {
                let held = gate.wait_held(1, limit);
                if !held.iter().all(|l| (cache.key_of)(l).ends_with(".narinfo")) {
                    stop(&mut child, format!("held {held:?}, not a narinfo write"));
                }
                let start = std::time::Instant::now();
                loop {
                    match (cache.narinfos)() {
                        Ok(seen) if seen == out => break,
                        Ok(seen) if seen < out && start.elapsed() < limit => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Ok(seen) => stop(
                            &mut child,
                            format!("{seen} narinfos visible, {out} let out"),
                        ),
                        Err(broken) => stop(&mut child, format!("while the push ran: {broken}")),
                    }
                }
                if out < n {
                    gate.release();
                }
            }
            n
        }
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the push ended by itself: {status:?}"
    );
    gate.discard();
    // Killed: still no narinfo without its NAR and its closure, and exactly those let out.
    let left =
        (cache.narinfos)().unwrap_or_else(|broken| panic!("after kill -9 at {point:?}: {broken}"));
    assert_eq!(left, expected_left, "narinfos after kill -9 at {point:?}");
    let verify = || {
        let out = cachecore_command()
            .args(["verify", &cache.url])
            .envs(cache.env.iter().cloned())
            .output()
            .unwrap();
        assert_cachecore_ok(&out, &["verify", &cache.url]);
    };
    if left > 0 {
        verify();
    }

    // Running it again pushes exactly what is missing; the cache is then whole and verifies.
    gate.open();
    let out = cachecore_command()
        .args(["push", &cache.repush_url, root, "--jobs", "2"])
        .args(&cache.push_args)
        .envs(cache.env.iter().cloned())
        .output()
        .unwrap();
    assert_no_panic(&out, "push after kill -9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "push after kill -9 at {point:?} failed:\n{stderr}"
    );
    assert!(
        stderr.contains(&match CHAIN_LEN - left {
            1 => "1 path pushed".to_owned(),
            n => format!("{n} paths pushed"),
        }) && (left == 0 || stderr.contains(&format!("{left} already"))),
        "after kill -9 at {point:?}: expected {} pushed and {left} already there:\n{stderr}",
        CHAIN_LEN - left
    );
    assert_eq!((cache.narinfos)(), Ok(CHAIN_LEN));
    verify();
}

/// `cachecore serve DIR --token-file TOKEN` on a port the kernel picked, killed on drop; its URL.
struct UploadServer(std::process::Child, String);

impl UploadServer {
    fn start(dir: &Path, token_file: &Path) -> UploadServer {
        use std::io::BufRead as _;
        let mut child = cachecore_command()
            .args([
                "serve",
                path_str(dir),
                "--listen",
                "127.0.0.1:0",
                "--token-file",
            ])
            .arg(token_file)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.trim().strip_prefix("cachecore serve: listening on ") else {
            let _ = child.kill();
            panic!("cachecore serve printed {line:?} instead of its address");
        };
        let url = url.to_owned();
        UploadServer(child, url)
    }
}

impl Drop for UploadServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A push into a directory (through `cachecore serve`, which writes it) killed at its first NAR,
/// before its first narinfo, and with 40% of its narinfos out: every state on the way shows no
/// narinfo without its NAR and its closure, and a second push finishes exactly what is missing.
#[test]
fn killed_mid_push_every_visible_narinfo_has_its_nar_and_closure() {
    let tmp = tempdir();
    let root = chain_closure(tmp.path());
    let token_file = tmp.path().join("token");
    fs::write(&token_file, "push-interrupt-token\n").unwrap();
    for point in [
        KillPoint::FirstNar,
        KillPoint::Narinfo(0),
        KillPoint::Narinfo(CHAIN_LEN * 2 / 5),
    ] {
        let dir = tmp.path().join(format!("cache-{point:?}"));
        fs::create_dir(&dir).unwrap();
        let server = UploadServer::start(&dir, &token_file);
        let hold = |line: &str| {
            let key = line.split_whitespace().nth(1).unwrap_or_default();
            line.starts_with("PUT ") && (key.starts_with("/nar/") || key.ends_with(".narinfo"))
        };
        let gate = common::gate::Gate::start(server.1.strip_prefix("http://").unwrap());
        gate.hold(common::gate::Stop::Request, move |r| {
            hold(r.line) && (matches!(point, KillPoint::Narinfo(_)) != r.line.contains("/nar/"))
        });
        let cache = GatedCache {
            push_url: gate.url(),
            push_args: vec!["--token-file".to_owned(), path_str(&token_file).to_owned()],
            env: Vec::new(),
            url: dir.display().to_string(),
            repush_url: server.1.clone(),
            key_of: &|line| {
                let target = line.split_whitespace().nth(1).unwrap_or_default();
                target
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned()
            },
            narinfos: &|| closed_narinfos(&dir),
        };
        push_killed_at(&cache, &gate, &root, point);
    }
}

/// The same on Garage, pushed straight into the bucket: killed at its first NAR upload and with
/// 10 narinfos out.
#[test]
fn killed_mid_push_to_garage_every_visible_narinfo_has_its_nar_and_closure() {
    let tmp = tempdir();
    let root = chain_closure(tmp.path());
    let garage = common::garage::Garage::start();
    let server = garage.endpoint.strip_prefix("http://").unwrap().to_owned();
    let rt = cachecore::ops::runtime().unwrap();
    for point in [KillPoint::FirstNar, KillPoint::Narinfo(10)] {
        let prefix = format!("{point:?}").replace(['(', ')'], "");
        let s3_key = move |line: &str| -> String {
            let target = line.split_whitespace().nth(1).unwrap_or_default();
            let path = target.split('?').next().unwrap_or_default();
            let key = path
                .trim_start_matches('/')
                .split_once('/')
                .map_or("", |(_, k)| k);
            key.strip_prefix(&format!("{prefix}/"))
                .unwrap_or(key)
                .to_owned()
        };
        let key_of = s3_key.clone();
        let gate = common::gate::Gate::start(&server);
        gate.hold(common::gate::Stop::Request, move |r| {
            let line = r.line;
            let writes = line.starts_with("PUT ") || line.starts_with("POST ");
            let key = key_of(line);
            writes
                && match point {
                    KillPoint::FirstNar => key.starts_with("nar/"),
                    KillPoint::Narinfo(_) => key.ends_with(".narinfo"),
                }
        });
        let prefix = format!("{point:?}").replace(['(', ')'], "");
        let url = garage.url(&prefix);
        let push_url = url.replace(&garage.endpoint, &gate.url());
        let reader = cachecore::store::BinaryCache::open_with_env(&url, &garage.env()).unwrap();
        let narinfos = || -> Result<usize, String> {
            use futures::StreamExt as _;
            let hashes = rt.block_on(reader.list_narinfo_hashes().collect::<Vec<_>>());
            let hashes: Result<Vec<String>, _> = hashes.into_iter().collect();
            hashes.map(|h| h.len()).map_err(|e| e.to_string())
        };
        let cache = GatedCache {
            push_url,
            push_args: Vec::new(),
            env: garage.env(),
            url: url.clone(),
            repush_url: url.clone(),
            key_of: &s3_key,
            narinfos: &narinfos,
        };
        push_killed_at(&cache, &gate, &root, point);
    }
}

/// `--jobs N`: small NARs upload `4 × N` at once. With every NAR upload held at a gate, a push
/// with `--jobs 8` has 32 under way at once — more than the 16 the default (`--jobs 4`) allows,
/// so a push ignoring the flag never gets there.
#[test]
fn push_jobs_sets_how_many_nars_upload_at_once() {
    let tmp = tempdir();
    let root = chain_closure(tmp.path());
    let token_file = tmp.path().join("token");
    fs::write(&token_file, "push-jobs-token\n").unwrap();
    let dir = tmp.path().join("cache");
    fs::create_dir(&dir).unwrap();
    let server = UploadServer::start(&dir, &token_file);
    let gate = common::gate::Gate::start(server.1.strip_prefix("http://").unwrap());
    gate.hold(common::gate::Stop::Request, |r| {
        r.line.starts_with("PUT /nar/")
    });
    let mut child = cachecore_command()
        .args([
            "push",
            &gate.url(),
            &root,
            "--jobs",
            "8",
            "--quiet",
            "--token-file",
        ])
        .arg(&token_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let held = gate.wait_held(32, Duration::from_secs(120));
    let _ = child.kill();
    let _ = child.wait();
    gate.discard();
    assert_eq!(
        held.len(),
        32,
        "more uploads at once than --jobs 8 allows: {held:#?}"
    );
}
