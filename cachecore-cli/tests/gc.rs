//! `cachecore roots` and `cachecore gc` end to end: real Nix builds two closures that share
//! dependencies, cachecore (or plain `nix copy`) pushes them to a local directory cache, one is
//! rooted, gc runs; real Nix then substitutes the rooted closure with signatures required, the
//! other's own paths are gone, the shared ones stay, and `cachecore verify` passes after every
//! step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;

/// Builds `shared`, `one`, `two`, `app1` (→ shared, one) and `app2` (→ shared, two).
fn build(dir: &Path) -> [String; 5] {
    let refs = |deps: &str| format!("/bin/mkdir $out; echo {deps} > $out/refs");
    let out = nix_build_scripts(
        dir,
        &[
            (
                "gcshared",
                "/bin/mkdir $out; echo shared > $out/f".to_owned(),
            ),
            ("gcone", "/bin/mkdir $out; echo one > $out/f".to_owned()),
            ("gctwo", "/bin/mkdir $out; echo two > $out/f".to_owned()),
            ("gcapp1", refs("${gcshared} ${gcone}")),
            ("gcapp2", refs("${gcshared} ${gctwo}")),
        ],
    );
    out.try_into().unwrap()
}

fn verify(cache: &str, public: &str) {
    cachecore_ok(&["verify", cache, "--trusted-key", public], b"");
}

fn in_cache(cache: &Path, path: &str) -> bool {
    let hash = &Path::new(path).file_name().unwrap().to_str().unwrap()[..32];
    cache.join(format!("{hash}.narinfo")).exists()
}

/// Asserts that the narinfos of `kept` are in the cache and those of `gone` are not; `context`
/// (a GC report, say) goes with the failure.
fn assert_left(cache: &Path, kept: &[&String], gone: &[&String], context: &dyn std::fmt::Display) {
    for p in kept {
        assert!(in_cache(cache, p), "{p} is gone: {context}");
    }
    for p in gone {
        assert!(!in_cache(cache, p), "{p} is still there: {context}");
    }
}

fn nar_count(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("nar")).map_or(0, |d| d.count())
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

#[test]
fn gc_keeps_the_rooted_closure_and_collects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let [shared, one, two, app1, app2] = build(dir.path());
    let (secret, public) = nix_generate_key(dir.path(), "gc-test-1");
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    cachecore_ok(
        &[
            "push",
            cache,
            "--key",
            secret.to_str().unwrap(),
            &app1,
            &app2,
            "--quiet",
        ],
        b"",
    );
    verify(cache, &public);
    assert_eq!(nar_count(&cache_dir), 5);

    // No root: refused, nothing deleted.
    let out = cachecore_output(&["gc", cache], b"");
    assert!(assert_clean_error(&out, "gc without roots").contains("--allow-empty-roots"));
    cachecore_ok(
        &[
            "roots",
            "add",
            cache,
            "per-user/alice/app1",
            &app1,
            "--host",
            "builder-1",
        ],
        b"",
    );
    let listed = json(&cachecore_ok(&["roots", "list", cache, "--json"], b""));
    assert_eq!(listed[0]["name"], "per-user/alice/app1");
    assert_eq!(listed[0]["revisions"][0]["paths"][0], app1.as_str());

    // Dry run: the plan, nothing deleted.
    let plan = json(&cachecore_ok(&["gc", cache, "--dry-run", "--json"], b""));
    assert_eq!(
        plan["narinfos_deleted"].as_array().unwrap().len(),
        2,
        "{plan}"
    );
    assert!(in_cache(&cache_dir, &app2) && in_cache(&cache_dir, &two));

    // A run with a short grace: narinfos go, their NARs wait in a tombstone.
    let report = json(&cachecore_ok(
        &["gc", cache, "--grace", "1s", "--json"],
        b"",
    ));
    assert_eq!(
        report["narinfos_deleted"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_eq!(
        report["tombstoned"].as_array().unwrap().len(),
        4,
        "{report}"
    ); // 2 NARs, 2 .ls
    assert!(!in_cache(&cache_dir, &app2) && !in_cache(&cache_dir, &two));
    for p in [&shared, &one, &app1] {
        assert!(in_cache(&cache_dir, p), "{p}");
    }
    assert_eq!(nar_count(&cache_dir), 5);
    verify(cache, &public);

    // After the grace, the next run deletes the NARs.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let report = json(&cachecore_ok(
        &["gc", cache, "--grace", "1s", "--json"],
        b"",
    ));
    assert_eq!(
        report["objects_deleted"].as_array().unwrap().len(),
        4,
        "{report}"
    );
    assert!(report["narinfos_deleted"].as_array().unwrap().is_empty());
    assert_eq!(nar_count(&cache_dir), 3);
    assert!(
        !cache_dir.join(".cachecore/gc").exists()
            || std::fs::read_dir(cache_dir.join(".cachecore/gc"))
                .unwrap()
                .count()
                == 0
    );
    verify(cache, &public);

    // Real Nix substitutes the rooted closure, signatures required; app2 is gone.
    let fresh = dir.path().join("fresh");
    let out = nix_copy_from_file_checking_sigs(&cache_dir, &fresh, &app1, &public);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out =
        nix_copy_from_file_checking_sigs(&cache_dir, &dir.path().join("fresh2"), &app2, &public);
    assert!(!out.status.success());

    // Trashing the root and collecting only what trashed roots reach takes app1's own paths.
    cachecore_ok(
        &[
            "roots",
            "remove",
            cache,
            "per-user/alice/app1",
            "--host",
            "builder-1",
        ],
        b"",
    );
    cachecore_ok(
        &[
            "roots",
            "restore",
            cache,
            "per-user/alice/app1",
            "--host",
            "builder-1",
        ],
        b"",
    );
    cachecore_ok(
        &[
            "roots",
            "remove",
            cache,
            "per-user/alice/app1",
            "--host",
            "builder-1",
        ],
        b"",
    );
    let report = json(&cachecore_ok(
        &["gc", cache, "--only-trashed", "--force", "--json"],
        b"",
    ));
    assert_eq!(
        report["narinfos_deleted"].as_array().unwrap().len(),
        3,
        "{report}"
    );
    assert_eq!(nar_count(&cache_dir), 0);
    verify(cache, &public);
}

#[test]
fn gc_collects_a_cache_written_by_nix_copy() {
    let dir = tempfile::tempdir().unwrap();
    let [shared, one, two, app1, app2] = build(dir.path());
    let (secret, public) = nix_generate_key(dir.path(), "gc-test-2");
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    let params = format!("compression=zstd&secret-key={}", secret.display());
    nix_copy_to_file(&cache_dir, &params, &[&app1, &app2]);
    verify(cache, &public);
    cachecore_ok(
        &[
            "roots",
            "add",
            cache,
            "app2",
            &app2,
            "--keep",
            "2",
            "--store-dir",
            "/nix/store",
        ],
        b"",
    );
    let out = cachecore_output(&["gc", cache, "--store-dir", "/gnu/store"], b"");
    assert!(assert_clean_error(&out, "gc --store-dir /gnu/store").contains("/gnu/store"));
    let report = json(&cachecore_ok(
        &[
            "gc",
            cache,
            "--force",
            "--json",
            "--failed-uploads-older-than",
            "1h",
            "--jobs",
            "2",
        ],
        b"",
    ));
    assert_eq!(
        report["narinfos_deleted"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_left(&cache_dir, &[&shared, &two, &app2], &[&one, &app1], &report);
    assert_eq!(nar_count(&cache_dir), 3);
    verify(cache, &public);
    let out =
        nix_copy_from_file_checking_sigs(&cache_dir, &dir.path().join("fresh"), &app2, &public);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Paths pushed recently stay with --older-than, whatever the roots say.
    let report = json(&cachecore_ok(
        &[
            "gc",
            cache,
            "--older-than",
            "30d",
            "--allow-empty-roots",
            "--dry-run",
            "--json",
        ],
        b"",
    ));
    assert!(
        report["narinfos_deleted"].as_array().unwrap().is_empty(),
        "{report}"
    );
}

#[test]
fn a_root_that_does_not_parse_stops_gc() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    cachecore_ok(&["init", cache.to_str().unwrap()], b"");
    std::fs::create_dir_all(cache.join("gcroots/h")).unwrap();
    std::fs::write(cache.join("gcroots/h/r"), "cachecore-gcroot 9\n").unwrap();
    let out = cachecore_output(&["gc", cache.to_str().unwrap(), "--allow-empty-roots"], b"");
    let err = assert_clean_error(&out, "gc with a broken root");
    assert!(
        err.contains("gcroots/h/r line 1") && err.contains("nothing was deleted"),
        "{err}"
    );
    let out = cachecore_output(&["gc", cache.to_str().unwrap(), "--grace", "3x"], b"");
    assert_eq!(out.status.code(), Some(2));
}

/// Index objects of a local directory cache.
fn index_objects(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("index")).map_or(0, |d| d.count())
}

/// `gc --dry-run --json` keeping everything: how many paths came from the push index, how many
/// from narinfos, and the index problems.
fn gc_sources(cache: &str) -> (u64, u64, Vec<serde_json::Value>) {
    let r = json(&cachecore_ok(
        &[
            "gc",
            cache,
            "--older-than",
            "30d",
            "--allow-empty-roots",
            "--dry-run",
            "--json",
        ],
        b"",
    ));
    assert!(r["narinfos_deleted"].as_array().unwrap().is_empty(), "{r}");
    (
        r["from_index"].as_u64().unwrap(),
        r["from_narinfos"].as_u64().unwrap(),
        r["index_problems"].as_array().unwrap().clone(),
    )
}

#[test]
fn the_push_index_is_read_by_gc_and_ls_compacted_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let [shared, one, two, app1, app2] = build(dir.path());
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    // app1's closure through cachecore (indexed), app2's own paths by plain `nix copy` (not).
    cachecore_ok(&["push", cache, &app1, "--quiet"], b"");
    assert_eq!(index_objects(&cache_dir), 1);
    nix_copy_to_file(&cache_dir, "compression=zstd", &[&app2]);
    let listed = String::from_utf8(cachecore_ok(&["ls", cache], b"")).unwrap();
    let mut expected = vec![&shared, &one, &two, &app1, &app2];
    expected.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), expected);
    assert_eq!(gc_sources(cache), (3, 2, vec![]));

    cachecore_ok(&["index", "compact", cache, "--jobs", "2"], b"");
    assert_eq!(index_objects(&cache_dir), 1);
    assert_eq!(gc_sources(cache), (5, 0, vec![]));

    // An entry that disagrees with its narinfo (a NAR the cache lacks): reported, the narinfo
    // wins.
    let base = Path::new(&app2).file_name().unwrap().to_str().unwrap();
    let bad = format!(
        "cachecore-index 1\n{base}\tnar/{}.nar\t1\t-\t1\t-\t-\t\n",
        "1".repeat(52)
    );
    std::fs::write(cache_dir.join("index/9999999999-00000000000000ff"), bad).unwrap();
    let (from_index, from_narinfos, problems) = gc_sources(cache);
    assert_eq!((from_index, from_narinfos), (5, 0));
    assert!(
        problems.len() == 1 && problems[0].as_str().unwrap().contains("disagrees"),
        "{problems:?}"
    );

    cachecore_ok(&["index", "rebuild", cache, "--jobs", "2"], b"");
    assert_eq!(index_objects(&cache_dir), 1);
    assert_eq!(gc_sources(cache), (5, 0, vec![]));
    let listed_again = String::from_utf8(cachecore_ok(&["ls", cache], b"")).unwrap();
    assert_eq!(listed_again, listed);
}

/// The FileSize of `path`'s narinfo in a local directory cache.
fn file_size(cache: &Path, path: &str) -> u64 {
    let hash = &Path::new(path).file_name().unwrap().to_str().unwrap()[..32];
    let text = std::fs::read_to_string(cache.join(format!("{hash}.narinfo"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("FileSize: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn gc_max_size_keeps_the_newest_closures_and_delete_unparseable_deletes_bad_narinfos() {
    let dir = tempfile::tempdir().unwrap();
    let [shared, one, two, app1, app2] = build(dir.path());
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    cachecore_ok(&["push", cache, &app1, "--quiet"], b"");
    // Push times are read to the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    cachecore_ok(&["push", cache, &app2, "--quiet"], b"");
    // Room for app2's closure (shared was pushed with app1, but app2 needs it).
    let room: u64 = [&shared, &two, &app2]
        .iter()
        .map(|p| file_size(&cache_dir, p))
        .sum();
    let report = json(&cachecore_ok(
        &["gc", cache, "--max-size", &room.to_string(), "--json"],
        b"",
    ));
    let mut deleted: Vec<String> = report["narinfos_deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    deleted.sort();
    let key = |p: &str| {
        format!(
            "{}.narinfo",
            &Path::new(p).file_name().unwrap().to_str().unwrap()[..32]
        )
    };
    let mut expected = vec![key(&one), key(&app1)];
    expected.sort();
    assert_eq!(deleted, expected, "{report}");
    for p in [&shared, &two, &app2] {
        assert!(in_cache(&cache_dir, p), "{p}");
    }
    let out = cachecore_output(&["gc", cache, "--max-size", "5X"], b"");
    assert_eq!(out.status.code(), Some(2));

    // A narinfo that does not parse: kept and reported, deleted with --delete-unparseable.
    let junk = cache_dir.join(format!("{}.narinfo", "0".repeat(32)));
    std::fs::write(&junk, "not a narinfo\n").unwrap();
    let big = ["gc", cache, "--max-size", "1T", "--json"];
    let report = json(&cachecore_ok(&big, b""));
    assert_eq!(
        report["unparseable"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(junk.exists());
    let report = json(&cachecore_ok(
        &[
            "gc",
            cache,
            "--max-size",
            "1T",
            "--delete-unparseable",
            "--json",
        ],
        b"",
    ));
    assert_eq!(report["unparseable_deleted"], 1, "{report}");
    assert!(!junk.exists());
    for p in [&shared, &two, &app2] {
        assert!(in_cache(&cache_dir, p), "{p}");
    }
}

#[test]
fn roots_sync_publishes_a_gcroots_directory_and_trashes_what_left_it() {
    let dir = tempfile::tempdir().unwrap();
    let [shared, one, two, app1, app2] = build(dir.path());
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    // `roots` works on a cache that exists (only init, push and copy create one).
    cachecore_ok(&["init", cache], b"");
    // As Nix keeps them: auto/<x> -> ./result -> the store path; a profile directory with a
    // generation link.
    let gcroots = dir.path().join("gcroots");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(gcroots.join("auto")).unwrap();
    std::fs::create_dir_all(&profiles).unwrap();
    let result = dir.path().join("result");
    std::os::unix::fs::symlink(&app1, &result).unwrap();
    std::os::unix::fs::symlink(&result, gcroots.join("auto/abc")).unwrap();
    std::os::unix::fs::symlink(&app2, profiles.join("profile-1-link")).unwrap();
    std::os::unix::fs::symlink("profile-1-link", profiles.join("profile")).unwrap();
    std::os::unix::fs::symlink(&profiles, gcroots.join("profiles")).unwrap();
    // A stale root (its result deleted) is left out.
    std::os::unix::fs::symlink(dir.path().join("gone"), gcroots.join("auto/stale")).unwrap();
    let gcroots_arg = gcroots.to_str().unwrap();
    cachecore_ok(
        &[
            "roots",
            "sync",
            cache,
            "--host",
            "laptop",
            "--gcroots-dir",
            gcroots_arg,
            "--push",
            "--store-dir",
            "/nix/store",
        ],
        b"",
    );
    for p in [&shared, &one, &two, &app1, &app2] {
        assert!(in_cache(&cache_dir, p), "{p} not pushed");
    }
    let listed = json(&cachecore_ok(&["roots", "list", cache, "--json"], b""));
    let mut names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["auto/abc", "profiles/profile", "profiles/profile-1-link"]
    );
    // app1's result goes: its root moves to the trash, and gc collects what only it kept.
    std::fs::remove_file(&result).unwrap();
    cachecore_ok(
        &[
            "roots",
            "sync",
            cache,
            "--host",
            "laptop",
            "--gcroots-dir",
            gcroots_arg,
        ],
        b"",
    );
    assert!(cache_dir.join("gctrash/laptop/auto%2Fabc").is_file());
    let trashed = std::fs::read_to_string(cache_dir.join("gctrash/laptop/auto%2Fabc")).unwrap();
    assert!(trashed.contains("trashed "), "{trashed}");
    cachecore_ok(&["gc", cache, "--force"], b"");
    assert_left(
        &cache_dir,
        &[&shared, &two, &app2],
        &[&one, &app1],
        &"after gc --force",
    );
}

#[test]
fn roots_sync_watch_follows_root_changes_until_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    cachecore_ok(&["init", cache], b"");
    let gcroots = dir.path().join("gcroots");
    let project = dir.path().join("project");
    std::fs::create_dir_all(gcroots.join("auto")).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    // Links into the store are followed by name: the paths need not exist here.
    let store_path =
        |c: char, name: &str| format!("/nix/store/{}-{name}", c.to_string().repeat(32));
    std::os::unix::fs::symlink(store_path('a', "a"), gcroots.join("auto/a")).unwrap();
    let stderr = dir.path().join("watch.log");
    let mut child = cachecore_command()
        .args([
            "roots",
            "sync",
            cache,
            "--host",
            "w",
            "--watch",
            "--gcroots-dir",
        ])
        .arg(&gcroots)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let limit = std::time::Duration::from_secs(30);
    let root = |name: &str| cache_dir.join("gcroots/w").join(name);
    let trashed = |name: &str| cache_dir.join("gctrash/w").join(name);
    wait_until("the first sync", limit, || {
        root("auto%2Fa").is_file().then_some(())
    });
    // A build's result appears: auto/b → project/result → the store.
    std::os::unix::fs::symlink(store_path('b', "b"), project.join("result")).unwrap();
    std::os::unix::fs::symlink(project.join("result"), gcroots.join("auto/b")).unwrap();
    wait_until("auto/b published", limit, || {
        root("auto%2Fb").is_file().then_some(())
    });
    // The result is deleted, outside the GC roots directory: the root goes to the trash.
    std::fs::remove_file(project.join("result")).unwrap();
    wait_until("auto/b trashed", limit, || {
        (trashed("auto%2Fb").is_file() && !root("auto%2Fb").exists()).then_some(())
    });
    // A root replaced in place (as `ln -sfn` does, by a rename) is published again.
    std::os::unix::fs::symlink(store_path('c', "c"), gcroots.join("auto/a.new")).unwrap();
    std::fs::rename(gcroots.join("auto/a.new"), gcroots.join("auto/a")).unwrap();
    wait_until("auto/a replaced", limit, || {
        std::fs::read_to_string(root("auto%2Fa"))
            .unwrap()
            .contains(&store_path('c', "c"))
            .then_some(())
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "--watch ended by itself"
    );
    // Ctrl-C stops it cleanly.
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_with_timeout(&mut child, limit, "roots sync --watch after SIGINT");
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert_eq!(log.matches("interrupted").count(), 1, "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("watching"), "{log}");
}

#[test]
fn serve_record_access_makes_gc_max_size_keep_what_nix_read() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let [shared, one, two, app1, app2] = build(dir.path());
    let (secret, public) = nix_generate_key(dir.path(), "gc-test-access");
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    let key = secret.to_str().unwrap();
    cachecore_ok(&["push", cache, "--key", key, &app1, "--quiet"], b"");
    // Push times and access times are kept to the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    cachecore_ok(&["push", cache, "--key", key, &app2, "--quiet"], b"");
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // Real Nix reads app1's closure through `serve --record-access`; app2 was pushed later but
    // nobody reads it.
    let mut serve = cachecore_command()
        .args(["serve", cache, "--listen", "127.0.0.1:0", "--record-access"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("cachecore serve: listening on ")
        .unwrap_or_else(|| panic!("serve printed {line:?}"))
        .to_owned();
    let out = nix_copy_from_checking_sigs(&url, &dir.path().join("fresh/store"), &app1, &public);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing is written on the request path; the record is written when serve stops (and
    // at most once a minute while it runs).
    let records = cache_dir.join(".cachecore/access");
    assert!(!records.exists() || std::fs::read_dir(&records).unwrap().count() == 0);
    let status = std::process::Command::new("kill")
        .arg(serve.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_with_timeout(&mut serve, std::time::Duration::from_secs(30), "serve");
    assert!(status.success(), "serve exited with {status}");
    let record = std::fs::read_dir(&records)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(record.path()).unwrap();
    let hash = |p: &str| Path::new(p).file_name().unwrap().to_str().unwrap()[..32].to_owned();
    for p in [&shared, &one, &app1] {
        assert!(text.contains(&hash(p)), "{p} not in {text}");
    }
    assert!(!text.contains(&hash(&app2)), "{text}");

    // Room for one closure: the one read last stays, though app2's was pushed after it.
    let room: u64 = [&shared, &one, &app1]
        .iter()
        .map(|p| file_size(&cache_dir, p))
        .sum();
    let report = json(&cachecore_ok(
        &[
            "gc",
            cache,
            "--max-size",
            &room.to_string(),
            "--force",
            "--json",
        ],
        b"",
    ));
    assert_eq!(report["read_paths"], 3, "{report}");
    assert_left(&cache_dir, &[&shared, &one, &app1], &[&two, &app2], &report);
    verify(cache, &public);
    // --unused-for: everything here was pushed or read within the hour.
    let report = json(&cachecore_ok(
        &["gc", cache, "--unused-for", "1h", "--dry-run", "--json"],
        b"",
    ));
    assert!(
        report["narinfos_deleted"].as_array().unwrap().is_empty(),
        "{report}"
    );
}

#[test]
fn gc_why_names_the_root_that_keeps_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let [shared, one, two, app1, app2] = build(dir.path());
    let (secret, _) = nix_generate_key(dir.path(), "gc-test-why");
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    let key = secret.to_str().unwrap();
    cachecore_ok(&["push", cache, "--key", key, &app1, &app2, "--quiet"], b"");
    cachecore_ok(
        &["roots", "add", cache, "app1", &app1, "--host", "builder-1"],
        b"",
    );
    let hash = |p: &str| Path::new(p).file_name().unwrap().to_str().unwrap()[..32].to_owned();
    let out = cachecore_ok(
        &[
            "gc", cache, "--why", &app1, "--why", &shared, "--why", &two, "--force",
        ],
        b"",
    );
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{app1}: kept: named by GC root builder-1/app1"),
            format!(
                "{shared}: kept: in the closure of {}, named by GC root builder-1/app1: {} -> {}",
                hash(&app1),
                hash(&app1),
                hash(&shared)
            ),
            format!(
                "{two}: deleted: no root, lease or option keeps it or anything referring to it"
            ),
        ],
        "{out}"
    );
    // --why plans and prints; it deletes nothing, --force or not.
    for p in [&shared, &one, &two, &app1, &app2] {
        assert!(in_cache(&cache_dir, p), "{p}");
    }
    // A path kept by a push time names it.
    let out = cachecore_ok(&["gc", cache, "--why", &two, "--older-than", "1h"], b"");
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with(&format!("{two}: kept: ")) && out.contains("within older_than (1h)"),
        "{out}"
    );
}

/// `--unused-for D` keeps what was pushed or read within D, with its closure: two closures
/// pushed more than D ago, one of them read since (an access record as `serve --record-access`
/// writes it, format in `cachecore::gc::access`) — the read one stays, the other goes; the same
/// run before the record keeps neither, and a longer D keeps both.
#[test]
fn gc_unused_for_keeps_what_was_read_or_pushed_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let [shared, one, two, app1, app2] = build(dir.path());
    let (secret, public) = nix_generate_key(dir.path(), "gc-test-unused");
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    let key = secret.to_str().unwrap();
    cachecore_ok(&["push", cache, "--key", key, &app1, &app2, "--quiet"], b"");
    // Push times are kept to the second: after 3.1 s every push is more than 2 s old.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let deleted = |args: &[&str]| -> usize {
        let plan = json(&cachecore_ok(
            &[&["gc", cache, "--dry-run", "--json"][..], args].concat(),
            b"",
        ));
        plan["narinfos_deleted"].as_array().unwrap().len()
    };
    // Nothing read: no push is within 2 s, so all five would go; all were pushed within the hour.
    assert_eq!(deleted(&["--unused-for", "2s"]), 5);
    assert_eq!(deleted(&["--unused-for", "1h"]), 0);

    // app1 read just now (only its own narinfo: its closure is kept with it).
    let hash = |p: &str| Path::new(p).file_name().unwrap().to_str().unwrap()[..32].to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let records = cache_dir.join(".cachecore/access");
    std::fs::create_dir_all(&records).unwrap();
    std::fs::write(
        records.join(format!("{now}-00000000000000a1")),
        format!("cachecore-access 1\n{} {now}\n", hash(&app1)),
    )
    .unwrap();
    let report = json(&cachecore_ok(
        &["gc", cache, "--unused-for", "2s", "--force", "--json"],
        b"",
    ));
    assert_eq!(
        report["narinfos_deleted"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_left(&cache_dir, &[&shared, &one, &app1], &[&two, &app2], &report);
    verify(cache, &public);
}

/// `roots add --store-dir` and `roots sync --store-dir`: a cache for another store directory
/// (its nix-cache-info's StoreDir) gets roots naming paths there; without the flag, `add`
/// refuses those paths and `sync` refuses the cache, naming its store directory.
#[test]
fn roots_store_dir_names_paths_of_another_store_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("gnu/store");
    let app = store.join("0123456789abcdfghijklmnpqrsvwxyz-app");
    let tool = store.join("zyxwvsrqpnmlkjihgfdcba9876543210-tool");
    for p in [&app, &tool] {
        std::fs::create_dir_all(p).unwrap();
    }
    let (store_arg, app_arg, tool_arg) = (
        store.to_str().unwrap(),
        app.to_str().unwrap(),
        tool.to_str().unwrap(),
    );
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    cachecore_ok(&["init", cache], b"");
    std::fs::write(
        cache_dir.join("nix-cache-info"),
        format!("StoreDir: {store_arg}\nWantMassQuery: 1\nPriority: 40\n"),
    )
    .unwrap();
    let rooted = |host: &str| -> Vec<String> {
        let listed = json(&cachecore_ok(&["roots", "list", cache, "--json"], b""));
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["host"] == host)
            .map(|r| r["revisions"][0]["paths"][0].as_str().unwrap().to_owned())
            .collect()
    };

    let out = cachecore_output(
        &["roots", "add", cache, "app", app_arg, "--host", "h1"],
        b"",
    );
    let line = assert_clean_error(&out, "roots add of a path outside /nix/store");
    assert!(line.contains(app_arg), "{line}");
    assert!(rooted("h1").is_empty());
    cachecore_ok(
        &[
            "roots",
            "add",
            cache,
            "app",
            app_arg,
            "--host",
            "h1",
            "--store-dir",
            store_arg,
        ],
        b"",
    );
    assert_eq!(rooted("h1"), [app_arg]);

    let gcroots = dir.path().join("gcroots");
    std::fs::create_dir_all(&gcroots).unwrap();
    std::os::unix::fs::symlink(&tool, gcroots.join("tool")).unwrap();
    let gcroots_arg = gcroots.to_str().unwrap();
    let sync = [
        "roots",
        "sync",
        cache,
        "--host",
        "h2",
        "--gcroots-dir",
        gcroots_arg,
    ];
    let out = cachecore_output(&sync, b"");
    let line = assert_clean_error(&out, "roots sync to a cache of another store directory");
    assert!(
        line.contains(&format!(
            "is a cache for store directory {store_arg}, not /nix/store"
        )),
        "{line}"
    );
    assert!(rooted("h2").is_empty());
    cachecore_ok(&[&sync[..], &["--store-dir", store_arg]].concat(), b"");
    assert_eq!(rooted("h2"), [tool_arg]);
}
