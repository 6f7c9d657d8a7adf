//! Key files and key arguments through the real binary: one key per line (blank lines and `#`
//! comments allowed), anything else refused naming the file and the line; secret and public keys
//! never mixed up silently; a secret key never printed back; Nix's own keys accepted; the demo's
//! summary lines (plurals, the nix.conf lines).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// `cachecore key generate NAME --out DIR/NAME.sec`; returns (secret file, public key).
fn generate(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.sec"));
    let out = cachecore_output(&["key", "generate", name, "--out", path_str(&file)], b"");
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8(out.stderr).unwrap().trim().to_owned();
    (file, public)
}

/// `cachecore push CACHE --add TREE --key KEY`.
fn push_add(cache: &Path, tree: &Path, key: &str) -> Output {
    let args = [
        "push",
        path_str(cache),
        "--add",
        path_str(tree),
        "--key",
        key,
    ];
    cachecore_output(&args, b"")
}

/// A small tree pushed with `--add` into `dir/cache`, signed with `secret`; returns the cache.
fn signed_cache(dir: &Path, secret: &Path) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/file"), b"hello\n").unwrap();
    let cache = dir.join("cache");
    let out = push_add(&cache, &tree, path_str(secret));
    assert!(out.status.success(), "{}", stderr(&out));
    cache
}

fn verify(cache: &Path, trusted: &str) -> Output {
    cachecore_output(&["verify", path_str(cache), "--trusted-key", trusted], b"")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No 12-character piece of the secret key's base64 appears in `text`.
#[track_caller]
fn assert_no_secret(secret_file: &Path, text: &str) {
    let secret = fs::read_to_string(secret_file).unwrap();
    let data = secret.trim().split_once(':').unwrap().1;
    for piece in data.as_bytes().windows(12) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(!text.contains(piece), "secret key material printed: {text}");
    }
}

#[test]
fn cargo_output_in_a_public_key_file_is_refused_naming_file_and_line() {
    let dir = tempdir();
    let (secret, public) = generate(dir.path(), "demo-1");
    let cache = signed_cache(dir.path(), &secret);
    // What `cargo run … 2> demo-1.pub` left in the file on a fresh machine (issue 10).
    let polluted = dir.path().join("demo-1.pub");
    fs::write(
        &polluted,
        format!(
            "    Updating crates.io index\n   Compiling cachecore v0.1.0 (/src/cachecore)\n    \
             Finished `release` profile [optimized] target(s) in 1m 02s\n     Running \
             `target/release/cachecore key generate demo-1 --out /tmp/demo-1.sec`\n{public}\n"
        ),
    )
    .unwrap();
    for args in [
        vec![
            "verify",
            path_str(&cache),
            "--trusted-key",
            path_str(&polluted),
        ],
        vec![
            "pull",
            path_str(&cache),
            "/nix/store/00000000000000000000000000000000-x",
            path_str(&dir.path().join("dest")),
            "--trusted-key",
            path_str(&polluted),
        ],
    ] {
        let out = cachecore_output(&args, b"");
        let line = assert_clean_error(&out, &args.join(" "));
        assert!(
            line.contains(&format!(
                "{}, line 1: expected one public key",
                polluted.display()
            )),
            "{line}"
        );
        assert!(line.contains("Updating crates.io index"), "{line}");
        assert!(!dir.path().join("dest").exists());
    }
}

#[test]
fn comments_blank_lines_and_several_keys_per_file() {
    let dir = tempdir();
    let (secret, public) = generate(dir.path(), "team-1");
    let (_, other) = generate(dir.path(), "team-2");
    let cache = signed_cache(dir.path(), &secret);

    // Comments, blank lines, CRLF line ends; the signing key is the second one in the file.
    let file = dir.path().join("team.pub");
    fs::write(
        &file,
        format!("# keys of the team\r\n\r\n{other}\r\n  # rotated in March\n  {public}  \n"),
    )
    .unwrap();
    let out = verify(&cache, path_str(&file));
    assert!(out.status.success(), "{}", stderr(&out));

    // Only the other key: the path is reported, not the file.
    fs::write(&file, format!("{other}\n")).unwrap();
    let out = verify(&cache, path_str(&file));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 path checked in") && stderr(&out).contains(": 1 problem\n"),
        "{}",
        stderr(&out)
    );

    // Two keys on one line (nix.conf style) are not one key per line.
    fs::write(&file, format!("{other} {public}\n")).unwrap();
    let line = assert_clean_error(
        &verify(&cache, path_str(&file)),
        "verify, two keys on a line",
    );
    assert!(
        line.contains(&format!("{}, line 1:", file.display())),
        "{line}"
    );

    // A file of comments only.
    fs::write(&file, "# nothing yet\n").unwrap();
    let line = assert_clean_error(&verify(&cache, path_str(&file)), "verify, no key");
    assert!(line.contains("holds no public key"), "{line}");

    // A secret key file may carry comments too.
    let commented = dir.path().join("commented.sec");
    let text = fs::read_to_string(&secret).unwrap();
    fs::write(
        &commented,
        format!("# team-1, made {}\n\n{text}\n", "today"),
    )
    .unwrap();
    assert_eq!(
        cachecore_str(&["key", "public", path_str(&commented)]),
        public
    );
    // Two secret keys in one file: the second is named, neither is shown.
    let (second, _) = generate(dir.path(), "team-3");
    let two = dir.path().join("two.sec");
    fs::write(
        &two,
        format!("{text}\n{}\n", fs::read_to_string(&second).unwrap()),
    )
    .unwrap();
    let out = cachecore_output(&["key", "public", path_str(&two)], b"");
    let line = assert_clean_error(&out, "key public TWO-SECRETS");
    assert!(
        line.contains(&format!("{}, line 2: a second secret key", two.display())),
        "{line}"
    );
    assert_no_secret(&secret, &line);
    assert_no_secret(&second, &line);
}

#[test]
fn secret_and_public_keys_mixed_up_say_which_is_which_and_never_print_the_secret() {
    let dir = tempdir();
    let (secret, public) = generate(dir.path(), "team-1");
    let cache = signed_cache(dir.path(), &secret);
    let secret_text = fs::read_to_string(&secret).unwrap();

    // The secret key file given as a trusted key.
    let out = verify(&cache, path_str(&secret));
    let line = assert_clean_error(&out, "verify --trusted-key SECRET_FILE");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a wrong key is bad input: {line}"
    );
    assert!(
        line.contains("the secret key `team-1` was given where a public key is needed"),
        "{line}"
    );
    assert!(
        line.contains(&format!("cachecore key public {}", secret.display())),
        "{line}"
    );
    assert_no_secret(&secret, &line);
    assert_no_secret(&secret, &String::from_utf8_lossy(&out.stdout));

    // The secret key itself given as a trusted key.
    let out = verify(&cache, &secret_text);
    let line = assert_clean_error(&out, "verify --trusted-key \"$(cat SECRET_FILE)\"");
    assert!(line.contains("the secret key `team-1` was given"), "{line}");
    assert!(line.contains("cachecore key public"), "{line}");
    assert_no_secret(&secret, &line);

    // The public key file given to sign with.
    let public_file = dir.path().join("team-1.pub");
    fs::write(&public_file, format!("{public}\n")).unwrap();
    let tree = dir.path().join("tree");
    let push = |key: &str| push_add(&dir.path().join("other-cache"), &tree, key);
    let line = assert_clean_error(&push(path_str(&public_file)), "push --key PUBLIC_FILE");
    assert!(
        line.contains(&format!(
            "{}, line 1: the public key `team-1` was given where a secret key is needed",
            public_file.display()
        )),
        "{line}"
    );
    // The public key itself, and the secret key itself, given where a file is expected.
    let line = assert_clean_error(&push(&public), "push --key PUBLIC_KEY");
    assert!(
        line.contains("the public key `team-1` was given where a secret key file is needed"),
        "{line}"
    );
    let out = push(&secret_text);
    let line = assert_clean_error(&out, "push --key \"$(cat SECRET_FILE)\"");
    assert!(
        line.contains(
            "the secret key `team-1` itself was given where the name of a file holding it is expected"
        ),
        "{line}"
    );
    assert_no_secret(&secret, &line);
    assert!(
        !dir.path().join("other-cache").exists(),
        "a refused key must stop the push before anything is written"
    );

    // `key public` of a public key.
    let out = cachecore_output(&["key", "public"], public.as_bytes());
    let line = assert_clean_error(&out, "key public < PUBLIC");
    assert!(
        line.contains(
            "stdin, line 1: the public key `team-1` was given where a secret key is needed"
        ),
        "{line}"
    );
}

#[test]
fn nix_generated_keys_sign_and_verify() {
    let dir = tempdir();
    let (secret, public) = nix_generate_key(dir.path(), "nix-made-1");
    let cache = signed_cache(dir.path(), &secret);
    // Nix prints the public key without a newline; as an argument and as a file.
    let out = verify(&cache, &public);
    assert!(out.status.success(), "{}", stderr(&out));
    let public_file = dir.path().join("nix-made-1.pub");
    fs::write(&public_file, &public).unwrap();
    let out = verify(&cache, path_str(&public_file));
    assert!(out.status.success(), "{}", stderr(&out));
    let narinfo = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .map(|p| fs::read_to_string(p).unwrap())
        .unwrap();
    assert!(narinfo.contains("Sig: nix-made-1:"), "{narinfo}");
    // Nix reads what cachecore signed with Nix's key. A tree added by `--add` is
    // content-addressed, which Nix takes without any signature, so the signature is put to the
    // test on a built (input-addressed) closure: Nix substitutes it requiring the key, and
    // refuses it trusting another.
    let closure = build_closure(dir.path());
    let built = dir.path().join("built-cache");
    let mut args = vec!["push", path_str(&built), "--key", path_str(&secret)];
    args.extend(closure.iter().map(String::as_str));
    let out = cachecore_output(&args, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_nix_substitutes(
        &format!("file://{}", built.display()),
        dir.path(),
        &closure,
        &public,
    );
}

#[test]
fn key_names_that_break_nix_conf_are_refused() {
    let dir = tempdir();
    for (name, says) in [
        ("team key", "whitespace"),
        ("team:1", "contains `:`"),
        ("", "it is empty"),
        ("#1", "starts with `#`"),
    ] {
        let file = dir.path().join("k.sec");
        let out = cachecore_output(&["key", "generate", name, "--out", path_str(&file)], b"");
        let line = assert_clean_error(&out, &format!("key generate {name:?}"));
        assert!(line.contains(says), "{name:?}: {line}");
        assert!(!file.exists(), "{name:?}: a key file was written");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn generate_on_a_terminal_ends_the_secret_key_line() {
    // `script` runs the command on a pseudo-terminal (stdout and stderr both).
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} key generate tty-1", env!("CARGO_BIN_EXE_cachecore")),
        ])
        .arg("/dev/null")
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = shown.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(lines.len(), 2, "{shown:?}");
    assert!(lines.iter().all(|l| l.starts_with("tty-1:")), "{shown:?}");
    let public = String::from_utf8(cachecore_ok(&["key", "public"], lines[0].as_bytes())).unwrap();
    assert_eq!(public.trim_end(), lines[1]);
}

#[test]
fn the_demo_ends_with_the_cache_and_the_nix_conf_lines() {
    let dir = tempdir();
    let (secret, public) = generate(dir.path(), "demo-1");
    let public_file = dir.path().join("demo-1.pub");
    fs::write(&public_file, format!("{public}\n")).unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    let cache = dir.path().join("cache");
    let out = push_add(&cache, &tree, path_str(&secret));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 path pushed ("), "{}", stderr(&out));
    let out = verify(&cache, path_str(&public_file));
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stderr(&out);
    assert!(shown.contains("1 path verified in"), "{shown}");
    assert!(
        shown.contains(&format!(
            "  extra-substituters = file://{}\n",
            cache.display()
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("  extra-trusted-public-keys = {public}\n")),
        "{shown}"
    );
    // Pushing again: the same shape, nothing pushed.
    let out = push_add(&cache, &tree, path_str(&secret));
    assert!(
        stderr(&out).contains("0 paths pushed (") && stderr(&out).contains(", 1 already in"),
        "{}",
        stderr(&out)
    );
}
