//! `cachecore key generate|public` against `nix key generate-secret|convert-secret-to-public`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};

use common::*;

#[test]
fn generate_out_writes_a_0600_file_nix_understands() {
    let dir = tempdir();
    let file = dir.path().join("secret.key");
    let out = cachecore_output(
        &[
            "key",
            "generate",
            "cache.example.org-1",
            "--out",
            path_str(&file),
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "with --out the secret must not go to stdout"
    );
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "secret key file mode is {mode:o}");

    let secret = fs::read(&file).unwrap();
    assert!(
        secret.starts_with(b"cache.example.org-1:"),
        "{}",
        String::from_utf8_lossy(&secret)
    );
    let nix_public = nix_public_key(&secret);
    assert!(nix_public.starts_with("cache.example.org-1:"));
    // `key public` prints what Nix prints (Nix adds no newline; cachecore ends the line).
    assert_eq!(
        cachecore_str(&["key", "public", path_str(&file)]),
        nix_public
    );
    assert_eq!(
        String::from_utf8(cachecore_ok(&["key", "public"], &secret))
            .unwrap()
            .trim_end_matches('\n'),
        nix_public,
        "`cachecore key public` from stdin"
    );
    // The public key printed on stderr at generation time is the same.
    assert_eq!(
        String::from_utf8(out.stderr)
            .unwrap()
            .trim_end_matches('\n'),
        nix_public
    );
}

#[test]
fn generate_to_stdout() {
    let out = cachecore_output(&["key", "generate", "test-2"], b"");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with(b"test-2:"));
    assert_eq!(
        String::from_utf8(out.stderr)
            .unwrap()
            .trim_end_matches('\n'),
        nix_public_key(&out.stdout)
    );
    // Two keys differ.
    let again = cachecore_ok(&["key", "generate", "test-2"], b"");
    assert_ne!(out.stdout, again);
}

#[test]
fn generate_refuses_to_overwrite() {
    let dir = tempdir();
    let file = dir.path().join("existing");
    fs::write(&file, b"precious").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let out = cachecore_output(&["key", "generate", "k", "--out", path_str(&file)], b"");
    let line = assert_clean_error(&out, "cachecore key generate k --out EXISTING");
    assert!(
        line.contains(path_str(&file)),
        "the error should name the file: {line}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(fs::read(&file).unwrap(), b"precious");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // Nor through a symlink, even a dangling one.
    let target = dir.path().join("target");
    let link = dir.path().join("link");
    symlink(&target, &link).unwrap();
    let out = cachecore_output(&["key", "generate", "k", "--out", path_str(&link)], b"");
    assert_clean_error(&out, "cachecore key generate k --out DANGLING-SYMLINK");
    assert!(
        !target.exists(),
        "key generate wrote through a dangling symlink"
    );
    // Nor into a directory.
    let out = cachecore_output(
        &["key", "generate", "k", "--out", path_str(dir.path())],
        b"",
    );
    assert_clean_error(&out, "cachecore key generate k --out DIR");
}

#[test]
fn public_of_nix_generated_keys_equals_nix() {
    let dir = tempdir();
    for name in [
        "test-1",
        "cache.example.org-1",
        "a",
        "name_with.dots-and-dashes-42",
    ] {
        let (file, public) = nix_generate_key(dir.path(), name);
        assert_eq!(
            cachecore_str(&["key", "public", path_str(&file)]),
            public,
            "`cachecore key public` of a key from `nix key generate-secret --key-name {name}`"
        );
        let secret = fs::read(&file).unwrap();
        // A trailing newline (as from `echo`) is tolerated by Nix; cachecore must agree.
        let mut with_newline = secret.clone();
        with_newline.push(b'\n');
        assert_eq!(nix_public_key(&with_newline), public);
        assert_eq!(
            String::from_utf8(cachecore_ok(&["key", "public"], &with_newline))
                .unwrap()
                .trim_end_matches('\n'),
            public
        );
    }
}
