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
    for p in [&shared, &two, &app2] {
        assert!(in_cache(&cache_dir, p), "{p}");
    }
    for p in [&one, &app1] {
        assert!(!in_cache(&cache_dir, p), "{p}");
    }
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
    for p in [&shared, &two, &app2] {
        assert!(in_cache(&cache_dir, p), "{p}");
    }
    for p in [&one, &app1] {
        assert!(!in_cache(&cache_dir, p), "{p}");
    }
}
