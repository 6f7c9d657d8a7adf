//! What a STORE argument opens: commands that read (and `serve`) never create a store, and a
//! missing one is one sentence naming where they looked (exit 4), with nothing left behind;
//! `init`, `push` and `copy`'s destination create a local directory, say so, and refuse an
//! argument that reads like a mistyped URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::*;

/// `cachecore ARGS` run in `dir`, whatever its outcome.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = cachecore_command();
    cmd.current_dir(dir).args(args);
    run_with_stdin(&mut cmd, b"")
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const STORE_PATH: &str = "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12";

#[test]
fn read_commands_and_serve_create_nothing_and_name_where_they_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    // A real cache to copy into, so that only the source is missing.
    fs::create_dir(work.join("dest")).unwrap();
    cachecore_ok(&["init", path_str(&work.join("dest"))], b"");
    let before = names(&work);
    for store in ["cahce", "http//127.0.0.1:4510", "127.0.0.1:4510", "./a/b/c"] {
        let commands: Vec<Vec<&str>> = vec![
            vec!["info", store],
            vec!["ls", store],
            vec!["ls", store, STORE_PATH],
            vec![
                "cat",
                store,
                "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12/bin/hello",
            ],
            vec!["verify", store],
            vec!["pull", store, STORE_PATH, "out", "--no-check-sigs"],
            vec!["copy", store, "dest", "--all"],
            vec!["serve", store, "--listen", "127.0.0.1:0"],
            vec!["roots", "list", store],
            vec!["gc", store, "--dry-run"],
        ];
        for args in commands {
            let what = args.join(" ");
            let out = run_in(&work, &args);
            let line = assert_clean_error(&out, &what);
            assert_eq!(out.status.code(), Some(4), "`{what}`: {line}");
            // Where it looked: the argument made absolute (`//` and `./` read as one `/`).
            let looked: std::path::PathBuf = work.join(store).components().collect();
            assert!(
                line.contains(&format!("no binary cache at {store}"))
                    && line.contains(&looked.display().to_string())
                    && line.contains("does not exist"),
                "`{what}` should say where it looked: {line}"
            );
            if store.contains(":4510") {
                assert!(
                    line.contains("(did you mean http://127.0.0.1:4510?)"),
                    "`{what}` should give the likely URL: {line}"
                );
            }
            assert_eq!(names(&work), before, "`{what}` left something behind");
        }
    }
}

#[test]
fn init_push_and_copy_create_a_directory_and_say_so_but_refuse_a_mistyped_url() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let tree = tmp.path().join("doc");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("README"), b"hello\n").unwrap();
    let tree = path_str(&tree);

    for store in [
        "http//127.0.0.1:4510",
        "127.0.0.1:4510",
        "localhost:8080",
        "https:cache.example.org",
    ] {
        for args in [
            vec!["push", store, "--add", tree],
            vec!["init", store],
            vec!["copy", "memory://", store, "--all"],
        ] {
            let what = args.join(" ");
            let out = run_in(&work, &args);
            let line = assert_clean_error(&out, &what);
            assert_eq!(out.status.code(), Some(2), "`{what}`: {line}");
            assert!(
                line.contains("looks like a mistyped URL") && line.contains("did you mean http"),
                "`{what}`: {line}"
            );
            assert!(
                names(&work).is_empty(),
                "`{what}` created {:?}",
                names(&work)
            );
        }
    }

    // A push that fails creates nothing.
    let out = run_in(
        &work,
        &["push", "new-cache", "--add", tree, "--level", "99"],
    );
    assert_clean_error(&out, "push --level 99");
    assert!(names(&work).is_empty(), "{:?}", names(&work));

    // A directory that is not there yet: created, and said so.
    let out = run_in(&work, &["push", "new-cache", "--add", tree]);
    assert_cachecore_ok(&out, &["push"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "created a new cache in {} (it did not exist)",
            work.join("new-cache").display()
        )),
        "{stderr}"
    );
    assert!(work.join("new-cache/nix-cache-info").is_file());
    // Not again once it exists.
    let out = run_in(&work, &["push", "new-cache", "--add", tree]);
    assert_cachecore_ok(&out, &["push"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created a new cache"));
    // Reading it now works.
    let out = run_in(&work, &["info", "new-cache"]);
    assert_cachecore_ok(&out, &["info"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paths: 1"));

    // `init` and `copy` create too; a directory really named like a host:port is used once it
    // exists (only a missing one reads as a typo).
    let out = run_in(&work, &["init", "fresh"]);
    assert_cachecore_ok(&out, &["init"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("created a new cache in"));
    let out = run_in(&work, &["copy", "new-cache", "copied", "--all", "--quiet"]);
    assert_cachecore_ok(&out, &["copy"]);
    assert!(work.join("copied/nix-cache-info").is_file());
    fs::create_dir(work.join("127.0.0.1:4510")).unwrap();
    let out = run_in(&work, &["push", "127.0.0.1:4510", "--add", tree, "--quiet"]);
    assert_cachecore_ok(&out, &["push"]);
}
