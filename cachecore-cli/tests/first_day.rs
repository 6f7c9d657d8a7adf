//! A team's first day, through the real `cachecore` binary, against a directory store and a real
//! S3 server (Garage): Nix's store-URL settings are honoured or refused, an unsigned push and an
//! unchecked verify say so, and `init` says what an existing cache holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::garage::Garage;
use common::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The narinfo files of a directory cache, as text.
fn narinfos(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    v.sort();
    v
}

fn count_with_suffix(cache: &Path, suffix: &str) -> usize {
    fs::read_dir(cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .count()
}

/// `cachecore ARGS` with the Garage key in the environment (and no other AWS setup).
fn cachecore_s3(garage: &Garage, args: &[&str]) -> Output {
    let mut cmd = cachecore_command();
    cmd.args(args)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(garage.env());
    run_with_stdin(&mut cmd, b"")
}

#[track_caller]
fn cachecore_s3_ok(garage: &Garage, args: &[&str]) -> Output {
    let out = cachecore_s3(garage, args);
    assert_cachecore_ok(&out, args);
    out
}

/// Every narinfo is signed by `key_name`, compressed with `method`, and no `.ls` was written.
#[track_caller]
fn assert_signed_xz_without_listings(cache: &Path, n: usize, key_name: &str) {
    let infos = narinfos(cache);
    assert_eq!(infos.len(), n, "{infos:?}");
    for info in &infos {
        assert!(info.contains(&format!("Sig: {key_name}:")), "{info}");
        assert!(info.contains("Compression: xz\n"), "{info}");
        assert!(info.contains(".nar.xz\n"), "{info}");
    }
    assert_eq!(
        count_with_suffix(cache, ".ls"),
        0,
        "write-nar-listing=false"
    );
}

#[test]
fn url_settings_sign_compress_and_skip_listings_in_a_directory_and_nix_accepts_them() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let result = tmp.path().join("result");
    let (secret, public) = nix_generate_key(tmp.path(), "team-1");
    let cache = tmp.path().join("cache");
    let url = format!(
        "file://{}?secret-key={}&compression=xz&write-nar-listing=false&priority=30&want-mass-query=false",
        cache.display(),
        secret.display()
    );
    let out = cachecore_output(&["push", &url, path_str(&result)], b"");
    assert_cachecore_ok(&out, &["push", &url]);
    assert!(!stderr(&out).contains("unsigned"), "{}", stderr(&out));
    assert_signed_xz_without_listings(&cache, 3, "team-1");
    // The first push creates nix-cache-info with the URL's priority and want-mass-query.
    let info = fs::read_to_string(cache.join("nix-cache-info")).unwrap();
    assert!(
        info.contains("Priority: 30\n") && info.contains("WantMassQuery: 0\n"),
        "{info}"
    );
    // Nix substitutes the closure requiring the signature made from secret-key=.
    assert_nix_substitutes(
        &format!("file://{}", cache.display()),
        tmp.path(),
        &closure,
        &public,
    );
    let verified = cachecore_output(&["verify", path_str(&cache), "--trusted-key", &public], b"");
    assert_cachecore_ok(&verified, &["verify"]);
    assert!(
        !stderr(&verified).contains("not checked"),
        "{}",
        stderr(&verified)
    );

    // Options given on the command line override the URL's settings.
    let cache2 = tmp.path().join("cache2");
    let url2 = format!(
        "file://{}?secret-key={}&compression=xz&write-nar-listing=false",
        cache2.display(),
        secret.display()
    );
    cachecore_ok(
        &["push", &url2, path_str(&result), "--compression", "zstd"],
        b"",
    );
    for info in narinfos(&cache2) {
        assert!(info.contains("Compression: zstd\n"), "{info}");
        assert!(info.contains("Sig: team-1:"), "{info}");
    }
    assert_eq!(count_with_suffix(&cache2, ".ls"), 0);
}

#[test]
fn unsigned_push_and_unchecked_verify_say_so() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("hello"), "hello\n").unwrap();
    let out = cachecore_output(&["push", path_str(&cache), "--add", path_str(&src)], b"");
    assert_cachecore_ok(&out, &["push"]);
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("unsigned")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("1 path was pushed unsigned") && warnings[0].contains("--key"),
        "{err}"
    );
    // --quiet prints nothing, the warning included.
    let quiet = cachecore_output(
        &[
            "push",
            "--quiet",
            path_str(&tmp.path().join("c2")),
            "--add",
            path_str(&src),
        ],
        b"",
    );
    assert_cachecore_ok(&quiet, &["push", "--quiet"]);
    assert_eq!(stderr(&quiet), "");

    let verified = cachecore_output(&["verify", path_str(&cache)], b"");
    assert_cachecore_ok(&verified, &["verify"]);
    let err = stderr(&verified);
    assert!(
        err.contains("signatures were not checked")
            && err.contains("1 of the 1 path has no signature"),
        "{err}"
    );
}

#[test]
fn nix_settings_cachecore_cannot_honour_are_refused_by_name() {
    let tmp = tempdir();
    for (setting, url) in [
        (
            "narinfo-compression",
            format!("file://{}/c?narinfo-compression=xz", tmp.path().display()),
        ),
        (
            "secret-keys",
            format!("file://{}/c?secret-keys=a,b", tmp.path().display()),
        ),
        (
            "compression=lz4",
            format!("file://{}/c?compression=lz4", tmp.path().display()),
        ),
    ] {
        let out = cachecore_output(&["push", &url, "--add", path_str(tmp.path())], b"");
        let line = assert_clean_error(&out, &url);
        assert!(line.contains(setting), "{line}");
    }
    // A secret-key= file that does not hold a key is named, its contents are not printed.
    let bogus = tmp.path().join("bogus.sec");
    fs::write(&bogus, "not-a-key-SECRETBYTES").unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let url = format!(
        "file://{}/c?secret-key={}",
        tmp.path().display(),
        bogus.display()
    );
    let out = cachecore_output(&["push", &url, "--add", path_str(&src)], b"");
    let line = assert_clean_error(&out, &url);
    assert!(
        line.contains(path_str(&bogus)) && line.contains("secret-key="),
        "{line}"
    );
    assert!(!line.contains("SECRETBYTES"), "{line}");
}

#[test]
fn init_takes_url_settings_and_says_what_an_existing_cache_holds() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let url = format!(
        "file://{}?priority=30&want-mass-query=false",
        cache.display()
    );
    let out = cachecore_str(&["init", &url]);
    assert!(
        out.contains("Priority: 30") && out.contains("WantMassQuery: 0"),
        "{out}"
    );
    // The command line overrides the URL.
    let other = tmp.path().join("other");
    let out = cachecore_str(&[
        "init",
        &format!("file://{}?priority=30", other.display()),
        "--priority",
        "50",
    ]);
    assert!(out.contains("Priority: 50"), "{out}");

    // Asking again with other settings changes nothing, and says so and how to change it.
    let again = cachecore_output(&["init", path_str(&cache), "--priority", "10"], b"");
    assert_cachecore_ok(&again, &["init"]);
    let err = stderr(&again);
    assert!(
        err.contains("already has a nix-cache-info") && err.contains("--update"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("Priority: 30"));
    let info = fs::read_to_string(cache.join("nix-cache-info")).unwrap();
    assert!(info.contains("Priority: 30"), "{info}");
    // The same settings again: nothing to say.
    let same = cachecore_output(&["init", &url], b"");
    assert_cachecore_ok(&same, &["init"]);
    assert_eq!(stderr(&same), "");
    // --update replaces them.
    let updated = cachecore_str(&["init", path_str(&cache), "--priority", "10", "--update"]);
    assert!(
        updated.contains("Priority: 10") && updated.contains("WantMassQuery: 1"),
        "{updated}"
    );
    let info = fs::read_to_string(cache.join("nix-cache-info")).unwrap();
    assert!(info.contains("Priority: 10\n"), "{info}");
}

#[test]
fn url_settings_sign_and_compress_pushes_to_garage() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let result = tmp.path().join("result");
    let (secret, public) = nix_generate_key(tmp.path(), "team-s3-1");
    let garage = Garage::start();
    let url = format!(
        "{}&secret-key={}&compression=xz&write-nar-listing=false&priority=35",
        garage.url("team"),
        secret.display()
    );
    let out = cachecore_s3_ok(&garage, &["push", &url, path_str(&result)]);
    assert!(!stderr(&out).contains("unsigned"), "{}", stderr(&out));
    let info = cachecore_s3_ok(&garage, &["info", &garage.url("team")]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Priority: 35"), "{info}");
    // The bucket's narinfos, read back through a copy into a directory (objects as they are).
    let copy = tmp.path().join("copy");
    cachecore_s3_ok(
        &garage,
        &["copy", &garage.url("team"), path_str(&copy), "--all"],
    );
    assert_signed_xz_without_listings(&copy, closure.len(), "team-s3-1");
    cachecore_s3_ok(
        &garage,
        &["verify", &garage.url("team"), "--trusted-key", &public],
    );
    // Without the key: the unsigned push is reported, and verify says it checked no signature.
    let plain = garage.url("plain");
    let out = cachecore_s3_ok(&garage, &["push", &plain, path_str(&result)]);
    assert!(
        stderr(&out).contains("3 paths were pushed unsigned"),
        "{}",
        stderr(&out)
    );
    let out = cachecore_s3_ok(&garage, &["verify", &plain]);
    assert!(
        stderr(&out).contains("3 of the 3 paths have no signature"),
        "{}",
        stderr(&out)
    );
    // A refused setting fails before any request.
    let out = cachecore_s3(
        &garage,
        &[
            "push",
            &format!("{plain}&local-nar-cache=/tmp/x"),
            path_str(&result),
        ],
    );
    let line = assert_clean_error(&out, "push local-nar-cache");
    assert!(line.contains("local-nar-cache"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// S3 errors a first day runs into
// ---------------------------------------------------------------------------------------------

#[test]
fn s3_mistakes_get_one_sentence_with_the_fix() {
    let garage = Garage::start();
    let web = garage.serve_website();
    let web_port = web.rsplit(':').next().unwrap().to_owned();
    let s3_port = garage.endpoint.rsplit(':').next().unwrap().to_owned();

    // No region= (an unquoted `&` in a shell drops it too): the server's region, and the fix.
    let url = format!("s3://nixcache?endpoint={}", garage.endpoint);
    let out = cachecore_s3(&garage, &["init", &url]);
    let line = assert_clean_error(&out, "init without region");
    assert!(
        line.contains("the server expects region `garage`; add `&region=garage`"),
        "{line}"
    );
    assert!(
        !line.contains("<?xml") && !line.contains("retries"),
        "{line}"
    );
    // -v (`cachecore --verbose`) adds the server's answer.
    for flag in ["-v", "--verbose"] {
        let out = cachecore_s3(&garage, &[flag, "init", &url]);
        let verbose = stderr(&out);
        assert!(
            verbose.contains("expects region `garage`"),
            "{flag}: {verbose}"
        );
        assert!(verbose.len() > line.len(), "{flag}: {verbose}");
    }

    // An endpoint without a scheme: refused before any request.
    let url = format!("s3://nixcache?endpoint=127.0.0.1:{s3_port}&region=garage");
    let out = cachecore_s3(&garage, &["init", &url]);
    let line = assert_clean_error(&out, "endpoint without scheme");
    assert!(
        line.contains(&format!(
            "endpoint=127.0.0.1:{s3_port} has no scheme: write endpoint=http://127.0.0.1:{s3_port}"
        )),
        "{line}"
    );

    // The website port given as the S3 endpoint: init and push say it is not an S3 API.
    let url = format!("s3://nixcache?endpoint=http://127.0.0.1:{web_port}&region=garage");
    let src = garage.dir().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    for args in [
        vec!["init", url.as_str()],
        vec!["push", url.as_str(), "--add", path_str(&src)],
    ] {
        let out = cachecore_s3(&garage, &args);
        let line = assert_clean_error(&out, &args.join(" "));
        assert!(
            line.contains(&format!("http://127.0.0.1:{web_port} is not an S3 API")),
            "{line}"
        );
        assert!(
            !line.contains("<html") && !line.contains("does not exist"),
            "{line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ./result everywhere
// ---------------------------------------------------------------------------------------------

/// Every command that takes a store path takes what push takes: `./result`, a path inside it,
/// the store path, its base name.
fn result_works_everywhere(store: &str, run: &dyn Fn(&[&str]) -> Output, tmp: &Path, public: &str) {
    let ok = |args: &[&str]| {
        let out = run(args);
        assert_cachecore_ok(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let result = tmp.join("result");
    let result = path_str(&result);
    assert_eq!(
        ok(&["cat", store, &format!("{result}/bin/cachecore-e2e-app")]),
        "cachecore-e2e-app\n"
    );
    // A path inside, with `..` inside the store path, and a link inside it taken as named.
    assert_eq!(
        ok(&[
            "cat",
            store,
            &format!("{result}/bin/../bin/cachecore-e2e-app")
        ]),
        "cachecore-e2e-app\n"
    );
    let listed = ok(&["ls", store, result]);
    assert!(listed.contains("bin/cachecore-e2e-app"), "{listed}");
    let listed = ok(&["ls", store, &format!("{result}/bin")]);
    assert!(listed.contains("link"), "{listed}");
    ok(&["verify", store, result, "--trusted-key", public]);
    let dest = tmp.join(format!("pulled-{}", store.len()));
    ok(&[
        "pull",
        store,
        result,
        path_str(&dest),
        "--trusted-key",
        public,
    ]);
    assert_same_tree(&fs::read_link(tmp.join("result")).unwrap(), &dest);
    let copy = tmp.join(format!("copy-{}", store.len()));
    ok(&["copy", store, path_str(&copy), result]);
    assert_eq!(narinfos(&copy).len(), 3);
    // In the wrong place: a path outside the store says so.
    let out = run(&["cat", store, "/etc/hostname"]);
    let line = assert_clean_error(&out, "cat /etc/hostname");
    assert!(line.contains("not inside /nix/store"), "{line}");
}

#[test]
fn result_links_work_for_every_command_on_a_directory_and_on_garage() {
    let tmp = tempdir();
    build_closure(tmp.path());
    let result = tmp.path().join("result");
    let (secret, public) = nix_generate_key(tmp.path(), "result-1");
    let cache = tmp.path().join("cache");
    cachecore_ok(
        &[
            "push",
            path_str(&cache),
            path_str(&result),
            "--key",
            path_str(&secret),
        ],
        b"",
    );
    result_works_everywhere(
        path_str(&cache),
        &|args| cachecore_output(args, b""),
        tmp.path(),
        &public,
    );

    let garage = Garage::start();
    let url = garage.url("");
    cachecore_s3_ok(
        &garage,
        &["push", &url, path_str(&result), "--key", path_str(&secret)],
    );
    result_works_everywhere(
        &url,
        &|args| cachecore_s3(&garage, args),
        tmp.path(),
        &public,
    );

    // A dangling link (the path is in the cache, not on this machine) works too.
    let app = fs::read_link(&result).unwrap().display().to_string();
    let fake = format!("/nix/store/{}-cachecore-e2e-app", "0".repeat(32));
    let dangling = tmp.path().join("dangling");
    std::os::unix::fs::symlink(&fake, &dangling).unwrap();
    let out = cachecore_output(&["ls", path_str(&cache), path_str(&dangling)], b"");
    let line = assert_clean_error(&out, "ls dangling");
    assert!(
        line.contains(&fake) || line.contains("0000000000"),
        "{line}"
    );
    let real = tmp.path().join("real-link");
    std::os::unix::fs::symlink(&app, &real).unwrap();
    cachecore_ok(&["ls", path_str(&cache), path_str(&real)], b"");
}

// ---------------------------------------------------------------------------------------------
// Small ones
// ---------------------------------------------------------------------------------------------

#[test]
fn usual_mistakes_are_explained() {
    let tmp = tempdir();
    build_closure(tmp.path());
    let result = tmp.path().join("result");
    let cache = tmp.path().join("cache");

    // Arguments the wrong way round.
    for (store, path) in [
        (
            path_str(&result).to_owned(),
            "s3://bucket?endpoint=http://127.0.0.1:1&region=x".to_owned(),
        ),
        (path_str(&result).to_owned(), path_str(&cache).to_owned()),
    ] {
        let out = cachecore_output(&["push", &store, &path], b"");
        let line = assert_clean_error(&out, "push in the wrong order");
        assert!(line.contains("STORE comes first"), "{line}");
    }
    assert!(!result.join("nix-cache-info").exists());

    // A plain directory: --add.
    let plain = tmp.path().join("plain");
    fs::create_dir_all(&plain).unwrap();
    let out = cachecore_output(&["push", path_str(&cache), path_str(&plain)], b"");
    let line = assert_clean_error(&out, "push plain dir");
    assert!(
        line.contains(&format!("--add {}", plain.display())),
        "{line}"
    );

    // ls and verify on a location that is not a cache (a mistyped prefix).
    let typo = tmp.path().join("cahce");
    fs::create_dir_all(&typo).unwrap();
    for cmd in ["ls", "verify"] {
        let out = cachecore_output(&[cmd, path_str(&typo)], b"");
        let line = assert_clean_error(&out, cmd);
        assert!(
            line.contains("is not a binary cache: it has no nix-cache-info"),
            "{line}"
        );
    }

    // Summaries in human sizes, the same shape with --add.
    let out = cachecore_output(&["push", path_str(&cache), path_str(&result)], b"");
    assert_cachecore_ok(&out, &["push"]);
    let err = stderr(&out);
    let summary = err
        .lines()
        .find(|l| l.contains("pushed ("))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        summary.contains(" B of NAR") || summary.contains("KiB of NAR"),
        "{summary}"
    );
    assert!(!summary.contains("NAR bytes"), "{summary}");
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), pseudo_random_bytes(3 << 20, 1)).unwrap();
    let out = cachecore_output(&["push", path_str(&cache), "--add", path_str(&src)], b"");
    assert_cachecore_ok(&out, &["push --add"]);
    let err = stderr(&out);
    let summary = err
        .lines()
        .find(|l| l.contains("pushed ("))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        summary.contains("3.0 MiB of NAR") && summary.contains("already in"),
        "{summary}"
    );

    // Every subcommand that takes a STORE describes it.
    for cmd in ["init", "push", "pull", "verify", "ls", "cat", "info"] {
        let help = cachecore_str(&[cmd, "--help"]);
        assert!(
            help.contains("s3://bucket") && help.contains("secret-key=FILE"),
            "{cmd}:\n{help}"
        );
    }
    let help = cachecore_str(&["copy", "--help"]);
    assert!(help.contains("./result"), "{help}");
    let help = cachecore_str(&["push", "--help"]);
    assert!(
        help.contains("Overrides the store URL's compression="),
        "{help}"
    );
}

#[test]
fn localhost_names_reach_garage_as_curl_does() {
    let tmp = tempdir();
    build_closure(tmp.path());
    let result = tmp.path().join("result");
    let garage = Garage::start();
    let web = garage.serve_website();
    let web_port = web.rsplit(':').next().unwrap().to_owned();
    let s3_port = garage.endpoint.rsplit(':').next().unwrap().to_owned();
    // The S3 API through a *.localhost name (path-style: the host names no bucket).
    let url = format!("s3://nixcache?endpoint=http://garage.localhost:{s3_port}&region=garage");
    cachecore_s3_ok(&garage, &["push", &url, path_str(&result)]);
    // The website endpoint names the bucket by the first label of a *.localhost host.
    let web = format!("http://nixcache.web.garage.localhost:{web_port}");
    let out = cachecore_s3_ok(
        &garage,
        &[
            "cat",
            &web,
            &format!("{}/bin/cachecore-e2e-app", path_str(&result)),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cachecore-e2e-app\n");
    let out = cachecore_s3_ok(&garage, &["verify", &web, path_str(&result)]);
    assert!(
        stderr(&out).contains("3 paths verified"),
        "{}",
        stderr(&out)
    );
}
