//! `cachecore push` straight into a real S3 server (Garage, started per test), and real Nix
//! 2.8 substituting from that bucket. This Nix has no `s3://` support, so it reads the bucket the
//! way a plain HTTP binary cache is read: through Garage's website endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::garage::Garage;
use common::*;

/// `cachecore ARGS` with the Garage key in the environment (and no other AWS setup).
fn cachecore_s3(garage: &Garage, args: &[&str]) -> std::process::Output {
    let mut cmd = cachecore_command();
    cmd.args(args)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(garage.env());
    run_with_stdin(&mut cmd, b"")
}

fn cachecore_s3_ok(garage: &Garage, args: &[&str]) -> std::process::Output {
    let out = cachecore_s3(garage, args);
    assert_cachecore_ok(&out, args);
    out
}

#[test]
fn pushed_to_garage_and_substituted_by_nix_over_http() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap();
    let (secret, public) = nix_generate_key(tmp.path(), "cachecore-s3-1");
    let garage = Garage::start();
    let web = garage.serve_website();
    let s3 = garage.url("");

    // Push the closure into the bucket over the S3 API, signed.
    cachecore_s3_ok(
        &garage,
        &[
            "push",
            &s3,
            path_str(&tmp.path().join("result")),
            "--key",
            path_str(&secret),
        ],
    );

    // Nix substitutes the whole closure from the bucket, served over HTTP, into a fresh store,
    // requiring our signature; what it registers matches the local store. With another key
    // trusted, it refuses the bucket.
    assert_nix_substitutes(&web, tmp.path(), &closure, &public);
    let fresh = tmp.path().join("fresh-store");
    assert_same_tree(Path::new(app), &fresh.join(app.trim_start_matches('/')));

    // cachecore verifies the bucket over S3; a second push finds everything there.
    cachecore_s3_ok(&garage, &["verify", &s3, "--trusted-key", &public]);
    let again = cachecore_s3_ok(&garage, &["push", &s3, app]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("0 paths pushed") && stderr.contains("3 already"),
        "{stderr}"
    );

    // A NAR of 25 MiB of incompressible bytes streams straight to its final key in several
    // multipart parts (no staging copy); Nix substitutes it from the bucket, signed.
    let big = tmp.path().join("big");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(big.join("data"), pseudo_random_bytes(25 << 20, 7)).unwrap();
    cachecore_s3_ok(
        &garage,
        &[
            "push",
            &s3,
            "--add",
            path_str(&big),
            "--name",
            "cachecore-s3-big",
            "--key",
            path_str(&secret),
        ],
    );
    let big_path = cachecore_str(&["store-path", path_str(&big), "--name", "cachecore-s3-big"]);
    let big_path = big_path.trim();
    let fresh_big = tmp.path().join("fresh-big");
    let res = nix_copy_from_checking_sigs(&web, &fresh_big, big_path, &public);
    assert!(
        res.status.success(),
        "nix copy of the large NAR from the bucket failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_same_tree(&big, &fresh_big.join(big_path.trim_start_matches('/')));
    cachecore_s3_ok(
        &garage,
        &["verify", &s3, big_path, "--trusted-key", &public],
    );
}
