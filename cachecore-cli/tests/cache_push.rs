//! End-to-end tests of the binary cache commands against real Nix 2.8: what `cachecore push`
//! writes, Nix substitutes (with signatures required); what `nix copy` writes, cachecore
//! verifies and pulls; corruption is found; a killed push leaves no broken closure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// `nix path-info --json` of `path` in `store` (a chroot store directory, or None for the
/// local store), as a JSON value.
fn path_info(store: Option<&Path>, path: &str) -> serde_json::Value {
    let mut cmd = nix_command("nix");
    cmd.args(["path-info", "--json"]);
    if let Some(s) = store {
        cmd.arg("--store").arg(s);
    }
    cmd.arg(path);
    let out = nix_ok(&mut cmd, b"");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v[0].clone()
}

fn cache_url(dir: &Path) -> String {
    dir.display().to_string()
}

/// Every narinfo in `cache` has its NAR object and the narinfos of its references.
fn assert_closed(cache: &Path) {
    for entry in fs::read_dir(cache).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".narinfo") {
            continue;
        }
        let info =
            cachecore::narinfo::NarInfo::parse(&fs::read_to_string(entry.path()).unwrap()).unwrap();
        let nar = cache.join(&info.url);
        let size = fs::metadata(&nar)
            .unwrap_or_else(|_| panic!("{name} names {} which is missing", info.url))
            .len();
        assert_eq!(Some(size), info.file_size, "{name}: FileSize");
        for r in &info.references {
            assert!(
                cache.join(format!("{}.narinfo", r.hash_part())).exists(),
                "{name}: reference {r} missing"
            );
        }
    }
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
    let fresh = tmp.path().join("fresh-store");
    let res = nix_copy_from_file_checking_sigs(&cache, &fresh, app, &public);
    assert!(
        res.status.success(),
        "nix copy --from failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    for p in &closure {
        let ours = path_info(Some(&fresh), p);
        let local = path_info(None, p);
        assert_eq!(ours["narHash"], local["narHash"], "{p}");
        assert_eq!(ours["references"], local["references"], "{p}");
    }
    // With another trusted key, Nix refuses.
    let (_, other) = nix_generate_key(tmp.path(), "someone-else-1");
    let refused = nix_copy_from_file_checking_sigs(&cache, &tmp.path().join("fresh2"), app, &other);
    assert!(
        !refused.status.success(),
        "nix accepted paths signed by another key"
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
    for compression in ["xz", "zstd", "none"] {
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
fn killed_push_leaves_no_broken_closure_and_resumes() {
    let tmp = tempdir();
    // A closure whose root refers to a large path, so the push is killed while NARs upload.
    let big_dir = tmp.path().join("cachecore-e2e-big");
    fs::create_dir(&big_dir).unwrap();
    for i in 0..6 {
        fs::write(
            big_dir.join(format!("blob{i}")),
            pseudo_random_bytes(24 << 20, i),
        )
        .unwrap();
    }
    let big = nix_store_add(&big_dir);
    let big = big.trim();
    let expr = tmp.path().join("top.nix");
    fs::write(
        &expr,
        format!(
            "derivation {{ name = \"cachecore-e2e-top\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
             args = [ \"-c\" \"echo {big} > $out\" ]; }}"
        ),
    )
    .unwrap();
    let top = nix(
        "nix-build",
        &[
            path_str(&expr),
            "--no-out-link",
            "--option",
            "substituters",
            "",
        ],
    );
    let top = top.trim().to_owned();
    let cache = tmp.path().join("cache");
    for delay_ms in [150u64, 400, 900] {
        let mut child = cachecore_command()
            .args([
                "push",
                &cache_url(&cache),
                &top,
                "--compression",
                "xz",
                "--jobs",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert_closed(&cache);
    }
    // Running it again finishes what is missing, and the result is whole.
    cachecore_ok(&["push", &cache_url(&cache), &top], b"");
    assert_closed(&cache);
    cachecore_ok(&["verify", &cache_url(&cache)], b"");
    let _: PathBuf = cache;
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
