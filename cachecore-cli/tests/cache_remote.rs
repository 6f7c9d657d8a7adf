//! The read commands (`ls`, `cat`, `info`, `verify`, `pull`) through the CLI on caches that are
//! not local directories: a plain `http://` binary cache (a directory served by Python's
//! `http.server`, with `Range:` support) and an S3 bucket (a private Garage). Each must print
//! exactly what it prints for the same cache as a local directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::garage::Garage;
use common::http_server::HttpServer;
use common::*;

/// A cache pushed with the closure of `build_closure`, signed.
struct Pushed {
    tmp: tempfile::TempDir,
    closure: Vec<String>,
    secret: std::path::PathBuf,
    public: String,
}

fn pushed_local() -> (Pushed, std::path::PathBuf) {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let (secret, public) = nix_generate_key(tmp.path(), "cachecore-remote-1");
    let cache = tmp.path().join("cache");
    cachecore_ok(
        &[
            "push",
            path_str(&cache),
            closure.last().unwrap(),
            "--key",
            path_str(&secret),
            "--quiet",
        ],
        b"",
    );
    (
        Pushed {
            tmp,
            closure,
            secret,
            public,
        },
        cache,
    )
}

/// Runs each read command on `url` through `run` and checks its output equals the same
/// command's on the local directory `local`.
fn assert_reads_like_local(
    p: &Pushed,
    local: &Path,
    url: &str,
    label: &str,
    run: &dyn Fn(&[&str]) -> Output,
    listable: bool,
) {
    let app = p.closure.last().unwrap().as_str();
    let local_url = path_str(local);
    let file = format!("{app}/bin/cachecore-e2e-app");
    let checks: Vec<Vec<&str>> = vec![
        vec!["ls", "{}"],
        vec!["ls", "{}", app],
        vec!["ls", "{}", &file],
        vec!["cat", "{}", &file],
        vec!["info", "{}"],
        vec!["verify", "{}", "--trusted-key", &p.public],
        vec![
            "verify",
            "{}",
            app,
            "--jobs",
            "1",
            "--trusted-key",
            &p.public,
        ],
    ];
    for check in checks {
        // The whole cache needs a listing of its narinfos, which plain HTTP does not give.
        let whole_cache = matches!(check[..], ["ls", "{}"] | ["info", "{}"])
            || (check[0] == "verify" && check[2] == "--trusted-key");
        let with = |u: &str| -> Vec<String> {
            check
                .iter()
                .map(|a| {
                    if *a == "{}" {
                        u.to_owned()
                    } else {
                        (*a).to_owned()
                    }
                })
                .collect()
        };
        let remote_args = with(url);
        let remote_refs: Vec<&str> = remote_args.iter().map(String::as_str).collect();
        let out = run(&remote_refs);
        if whole_cache && !listable {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(5),
                "{label}: `{}`: {stderr}",
                check.join(" ")
            );
            assert!(
                stderr.contains("has no listing") && stderr.lines().count() == 1,
                "{label}: `{}`: {stderr}",
                check.join(" ")
            );
            continue;
        }
        assert_cachecore_ok(&out, &remote_refs);
        let want = cachecore_ok(&with(local_url), b"");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&want),
            "{label}: `cachecore {}` prints what it prints for the local directory",
            check.join(" ")
        );
        if check[0] == "verify" {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("no problems"), "{label}: {stderr}");
        }
    }
    // `cat` is the file itself.
    let out = run(&["cat", url, &file]);
    assert_eq!(out.stdout, std::fs::read(&file).unwrap(), "{label}: cat");

    // pull: the tree, checked against the trusted key, equals the store path.
    let dest = p.tmp.path().join(format!("pulled-{label}"));
    let out = run(&[
        "pull",
        url,
        app,
        path_str(&dest),
        "--trusted-key",
        &p.public,
    ]);
    assert_cachecore_ok(&out, &["pull", url, app]);
    assert_same_tree(Path::new(app), &dest);
}

#[test]
fn read_commands_over_http() {
    let (p, cache) = pushed_local();
    let server = HttpServer::serve(&cache);
    assert_reads_like_local(
        &p,
        &cache,
        &server.url(),
        "http",
        &|args| cachecore_output(args, b""),
        false,
    );
    // Writing is refused, naming the URL (`init` of the cache that is there writes nothing,
    // and succeeds).
    let src = p.tmp.path().join("to-push");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "f").unwrap();
    let err = assert_clean_error(
        &cachecore_output(&["push", &server.url(), "--add", path_str(&src)], b""),
        "push over http",
    );
    assert!(
        err.contains(&server.url()) && err.contains("read-only"),
        "{err}"
    );
}

#[test]
fn read_commands_over_s3() {
    let (p, cache) = pushed_local();
    let garage = Garage::start();
    let s3 = garage.url("");
    let run = |args: &[&str]| -> Output {
        let mut cmd = cachecore_command();
        cmd.args(args)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(garage.env());
        run_with_stdin(&mut cmd, b"")
    };
    // The bucket gets the same closure, pushed over S3 with the same key.
    let out = run(&[
        "push",
        &s3,
        p.closure.last().unwrap(),
        "--key",
        path_str(&p.secret),
        "--quiet",
    ]);
    assert_cachecore_ok(&out, &["push", &s3]);
    assert_reads_like_local(&p, &cache, &s3, "s3", &run, true);
}
