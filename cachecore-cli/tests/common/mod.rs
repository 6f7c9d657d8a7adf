//! Helpers shared by the end-to-end tests: running real Nix (which must be installed — a missing
//! `nix` binary fails the test, it never skips it), running the `cachecore` binary, building
//! fixture trees, comparing bytes and trees, and crafting NARs token by token.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

// The library's tests start Garage (a real S3 server) the same way; one copy of that code.
#[path = "../../../cachecore/tests/common/garage.rs"]
pub mod garage;
#[path = "../../../cachecore/tests/common/net.rs"]
pub mod net;

// ---------------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------------

/// A fresh directory under /tmp, world-readable (Nix builders run as nixbld users).
pub fn tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("cachecore-e2e-")
        .tempdir_in("/tmp")
        .expect("cannot create a temporary directory under /tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Running Nix
// ---------------------------------------------------------------------------------------------

/// A command for one of Nix's programs (`nix`, `nix-store`, `nix-hash`, `nix-build`), with
/// `NIX_REMOTE=local` (single-user store, no daemon). `nix` gets `nix-command` enabled.
pub fn nix_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("NIX_REMOTE", "local");
    if program == "nix" {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

fn shell_quote(a: &OsStr) -> String {
    let s = a.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` (a Nix program) with `stdin` and returns its output, whatever its exit status.
/// Panics with a clear message when the program is not installed: these tests need real Nix.
pub fn nix_output(cmd: &mut Command, stdin: &[u8]) -> Output {
    let what = describe(cmd);
    let mut child = match cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "these tests need real Nix, but `{}` was not found on PATH ({e}); \
             install it with `apt-get install -y nix-bin` (Debian's Nix 2.8)",
            cmd.get_program().to_string_lossy()
        ),
        Err(e) => panic!("cannot run `{what}`: {e}"),
    };
    feed_and_collect(&mut child, stdin, &what)
}

/// Runs a Nix program that must succeed; returns its stdout.
pub fn nix_ok(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let what = describe(cmd);
    let out = nix_output(cmd, stdin);
    assert!(
        out.status.success(),
        "`{what}` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `nix_ok` for a program and its arguments, returning stdout as a string without the final
/// newline.
pub fn nix(program: &str, args: &[&str]) -> String {
    let out = nix_ok(nix_command(program).args(args), b"");
    String::from_utf8(out)
        .expect("Nix printed non-UTF-8")
        .trim_end_matches('\n')
        .to_owned()
}

/// `nix-store --dump PATH`.
pub fn nix_dump(path: &Path) -> Vec<u8> {
    nix_ok(nix_command("nix-store").arg("--dump").arg(path), b"")
}

/// `nix-hash --type sha256 --base32 PATH`.
pub fn nix_hash(path: &Path) -> String {
    nix(
        "nix-hash",
        &["--type", "sha256", "--base32", path_str(path)],
    )
}

/// `nix-store --add PATH` (really adds the path to /nix/store).
pub fn nix_store_add(path: &Path) -> String {
    nix("nix-store", &["--add", path_str(path)])
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `nix key generate-secret --key-name NAME`, written to `dir/NAME.sk`; returns (secret file,
/// public key).
pub fn nix_generate_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let secret = nix_ok(
        nix_command("nix").args(["key", "generate-secret", "--key-name", name]),
        b"",
    );
    let file = dir.join(format!("{name}.sk"));
    fs::write(&file, &secret).unwrap();
    let public = nix_public_key(&secret);
    (file, public)
}

/// `nix key convert-secret-to-public < secret`, without the final newline (Nix prints none).
pub fn nix_public_key(secret: &[u8]) -> String {
    let out = nix_ok(
        nix_command("nix").args(["key", "convert-secret-to-public"]),
        secret,
    );
    String::from_utf8(out)
        .unwrap()
        .trim_end_matches('\n')
        .to_owned()
}

/// The derivation of TESTING-WITH-REAL-PARTS.md: `app` depends on `liba` and `libb`, `libb` on
/// `liba`. Builds it with nix-build and returns the closure (`nix-store -qR`), `app` last.
pub fn build_closure(dir: &Path) -> Vec<String> {
    let expr = dir.join("closure.nix");
    fs::write(
        &expr,
        r#"let mk = name: deps: derivation {
  inherit name; system = "x86_64-linux"; builder = "/bin/sh";
  args = [ "-c" ''
    /bin/mkdir -p $out/bin
    for d in ${toString deps}; do echo "$d" >> $out/deps; done
    echo ${name} > $out/bin/${name}; /bin/chmod +x $out/bin/${name}
    /bin/ln -s ../deps $out/bin/link
  '' ]; };
  a = mk "cachecore-e2e-liba" []; b = mk "cachecore-e2e-libb" [ a ];
in mk "cachecore-e2e-app" [ a b ]
"#,
    )
    .unwrap();
    fs::set_permissions(&expr, fs::Permissions::from_mode(0o644)).unwrap();
    let result = dir.join("result");
    let app = nix(
        "nix-build",
        &[
            path_str(&expr),
            "-o",
            path_str(&result),
            // No network here: do not ask cache.nixos.org first.
            "--option",
            "substituters",
            "",
        ],
    );
    let closure: Vec<String> = nix("nix-store", &["-qR", &app])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(closure.len(), 3, "unexpected closure {closure:?}");
    assert_eq!(closure.last(), Some(&app));
    closure
}

/// `nix path-info --json PATH` in `store` (a chroot store directory, or None for the local
/// store): the path's JSON object.
pub fn nix_path_info(store: Option<&Path>, path: &str) -> serde_json::Value {
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

/// Real Nix substitutes `closure` (its root last) from the binary cache at `from` into a fresh
/// chroot store under `dir`, requiring a signature by `public_key`, and registers every path
/// with the local store's NarHash, NarSize and references; with another key trusted instead,
/// Nix refuses the cache.
#[track_caller]
pub fn assert_nix_substitutes(from: &str, dir: &Path, closure: &[String], public_key: &str) {
    let root = closure.last().expect("a closure has a root");
    let fresh = dir.join("fresh-store");
    let res = nix_copy_from_checking_sigs(from, &fresh, root, public_key);
    assert!(
        res.status.success(),
        "nix copy --from {from} failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    for p in closure {
        let ours = nix_path_info(Some(&fresh), p);
        let local = nix_path_info(None, p);
        for field in ["narHash", "narSize", "references"] {
            assert_eq!(ours[field], local[field], "{field} of {p} from {from}");
        }
    }
    let other = nix_public_key(&nix_ok(
        nix_command("nix").args(["key", "generate-secret", "--key-name", "someone-else-1"]),
        b"",
    ));
    let refused = nix_copy_from_checking_sigs(from, &dir.join("fresh-other-key"), root, &other);
    assert!(
        !refused.status.success(),
        "nix accepted paths from {from} signed by a key it does not trust"
    );
}

/// `nix copy --to 'file://DIR?PARAMS' PATHS...`.
pub fn nix_copy_to_file(dir: &Path, params: &str, paths: &[&str]) {
    let url = if params.is_empty() {
        format!("file://{}", dir.display())
    } else {
        format!("file://{}?{params}", dir.display())
    };
    let mut cmd = nix_command("nix");
    cmd.args(["copy", "--to", &url]).args(paths);
    nix_ok(&mut cmd, b"");
}

/// `nix copy --from file://CACHE --to STORE PATH --option require-sigs true --option
/// trusted-public-keys KEYS`: the output, successful or not.
pub fn nix_copy_from_file_checking_sigs(
    cache: &Path,
    chroot_store: &Path,
    path: &str,
    trusted_keys: &str,
) -> Output {
    nix_copy_from_checking_sigs(
        &format!("file://{}", cache.display()),
        chroot_store,
        path,
        trusted_keys,
    )
}

/// `nix copy --from URL --to STORE PATH --option require-sigs true --option
/// trusted-public-keys KEYS`, for any binary cache URL Nix reads (`file://`, `http://`): the
/// output, successful or not. Nix's narinfo disk cache is kept in STORE's parent directory, so
/// nothing an earlier run cached for the same URL is used.
pub fn nix_copy_from_checking_sigs(
    from: &str,
    chroot_store: &Path,
    path: &str,
    trusted_keys: &str,
) -> Output {
    let mut cmd = nix_command("nix");
    if let Some(parent) = chroot_store.parent() {
        cmd.env("XDG_CACHE_HOME", parent.join("nix-client-cache"));
    }
    cmd.arg("copy")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(chroot_store)
        .arg(path)
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", trusted_keys])
        .args(["--option", "substituters", ""]);
    nix_output(&mut cmd, b"")
}

// ---------------------------------------------------------------------------------------------
// Running cachecore
// ---------------------------------------------------------------------------------------------

pub fn cachecore_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachecore"));
    cmd.env("NIX_REMOTE", "local");
    cmd
}

/// Runs `cachecore ARGS` with `stdin`, whatever its exit status.
pub fn cachecore_output<S: AsRef<OsStr>>(args: &[S], stdin: &[u8]) -> Output {
    let mut cmd = cachecore_command();
    cmd.args(args);
    run_with_stdin(&mut cmd, stdin)
}

pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    feed_and_collect(&mut child, stdin, &what)
}

/// Runs `cachecore ARGS`, which must succeed; returns stdout.
pub fn cachecore_ok<S: AsRef<OsStr>>(args: &[S], stdin: &[u8]) -> Vec<u8> {
    let out = cachecore_output(args, stdin);
    assert_cachecore_ok(&out, args);
    out.stdout
}

/// `cachecore ARGS` gave `out`: it must have succeeded, without a panic.
#[track_caller]
pub fn assert_cachecore_ok<S: AsRef<OsStr>>(out: &Output, args: &[S]) {
    let shown: Vec<String> = args.iter().map(|a| shell_quote(a.as_ref())).collect();
    assert!(
        out.status.success(),
        "`cachecore {}` failed ({}):\n{}",
        shown.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_panic(out, &shown.join(" "));
}

/// `cachecore_ok` with stdout as a string without its final newline.
pub fn cachecore_str<S: AsRef<OsStr>>(args: &[S]) -> String {
    String::from_utf8(cachecore_ok(args, b""))
        .expect("cachecore printed non-UTF-8")
        .trim_end_matches('\n')
        .to_owned()
}

/// Writes `stdin` and reads stdout and stderr from threads (so a child that does not read its
/// input cannot deadlock us) and waits, with a generous time limit so a hung child fails the
/// test instead of hanging it.
fn feed_and_collect(child: &mut Child, stdin: &[u8], what: &str) -> Output {
    collect_with_timeout(child, stdin, what, Duration::from_secs(300))
}

pub fn collect_with_timeout(
    child: &mut Child,
    stdin: &[u8],
    what: &str,
    limit: Duration,
) -> Output {
    let input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let mut input = input;
        // The child may exit without reading everything: a broken pipe is fine here.
        let _ = input.write_all(&data);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait_with_timeout(child, limit, what);
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    writer.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs `cachecore ARGS` with a time limit (for inputs that could block, like FIFOs).
pub fn cachecore_output_within<S: AsRef<OsStr>>(
    args: &[S],
    stdin: &[u8],
    limit: Duration,
) -> Output {
    let mut cmd = cachecore_command();
    cmd.args(args);
    let what = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    collect_with_timeout(&mut child, stdin, &what, limit)
}

/// Waits for `child`, killing it and failing the test after `limit`.
pub fn wait_with_timeout(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {limit:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stderr must not show a Rust panic.
pub fn assert_no_panic(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "`{what}` panicked:\n{stderr}"
    );
    // 101 is the exit status of a panicking Rust program; a signal (None) is a crash.
    assert!(
        out.status.code().is_some() && out.status.code() != Some(101),
        "`{what}` crashed or panicked ({}):\n{stderr}",
        out.status
    );
}

/// A clean failure: non-zero exit, no panic, exactly one line on stderr starting
/// `cachecore: error:`. Returns that line.
pub fn assert_clean_error(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_no_panic(out, what);
    assert!(
        !out.status.success(),
        "`{what}` should have failed but exited {}; stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.starts_with("cachecore: error:"),
        "`{what}`: stderr should start with `cachecore: error:` but is:\n{stderr:?}"
    );
    assert_eq!(
        stderr.trim_end_matches('\n').lines().count(),
        1,
        "`{what}`: the error should be one line, got:\n{stderr}"
    );
    stderr.trim_end_matches('\n').to_owned()
}

// ---------------------------------------------------------------------------------------------
// Comparing
// ---------------------------------------------------------------------------------------------

/// Asserts two byte strings are equal; on mismatch, reports the lengths, the first differing
/// offset and a hex dump of both sides around it.
#[track_caller]
pub fn assert_same_bytes(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let from = first.saturating_sub(32) & !7;
    let dump = |bytes: &[u8]| -> String {
        let to = (first + 48).min(bytes.len());
        let from = from.min(to);
        bytes[from..to]
            .chunks(8)
            .enumerate()
            .map(|(i, chunk)| {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                let text: String = chunk
                    .iter()
                    .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
                    .collect();
                format!("  {:>10}: {:<24} {}", from + i * 8, hex.join(" "), text)
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{what}: bytes differ (expected {} bytes, got {} bytes); first difference at offset \
         {first}\nexpected (Nix):\n{}\nactual (cachecore):\n{}",
        expected.len(),
        actual.len(),
        dump(expected),
        dump(actual)
    );
}

/// What a tree holds, as NAR sees it: regular files (contents, executable bit), symlinks
/// (targets) and directories (entry sets, recursively).
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Regular { executable: bool, contents: Vec<u8> },
    Symlink(Vec<u8>),
    Directory(BTreeMap<Vec<u8>, Node>),
}

/// Reads a tree without following symlinks.
pub fn read_tree(path: &Path) -> Node {
    let meta = fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
    let ft = meta.file_type();
    if ft.is_symlink() {
        Node::Symlink(fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec())
    } else if ft.is_file() {
        Node::Regular {
            executable: meta.permissions().mode() & 0o100 != 0,
            contents: fs::read(path).unwrap(),
        }
    } else if ft.is_dir() {
        let mut entries = BTreeMap::new();
        for entry in fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            entries.insert(
                entry.file_name().as_bytes().to_vec(),
                read_tree(&entry.path()),
            );
        }
        Node::Directory(entries)
    } else {
        panic!(
            "{} is neither a file, a symlink nor a directory",
            path.display()
        );
    }
}

/// Compares two trees; on mismatch names the first differing path.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    fn walk(rel: &str, e: &Node, a: &Node, problems: &mut Vec<String>) {
        match (e, a) {
            (Node::Directory(de), Node::Directory(da)) => {
                let ke: Vec<_> = de.keys().collect();
                let ka: Vec<_> = da.keys().collect();
                if ke != ka {
                    let show = |k: &[&Vec<u8>]| -> Vec<String> {
                        k.iter()
                            .map(|n| String::from_utf8_lossy(n).into_owned())
                            .collect()
                    };
                    problems.push(format!(
                        "{rel}/: entries differ:\n  expected {:?}\n  actual   {:?}",
                        show(&ke),
                        show(&ka)
                    ));
                }
                for (name, ne) in de {
                    if let Some(na) = da.get(name) {
                        walk(
                            &format!("{rel}/{}", String::from_utf8_lossy(name)),
                            ne,
                            na,
                            problems,
                        );
                    }
                }
            }
            (
                Node::Regular {
                    executable: xe,
                    contents: ce,
                },
                Node::Regular {
                    executable: xa,
                    contents: ca,
                },
            ) => {
                if xe != xa {
                    problems.push(format!("{rel}: executable bit: expected {xe}, got {xa}"));
                }
                if ce != ca {
                    problems.push(format!(
                        "{rel}: contents differ ({} vs {} bytes)",
                        ce.len(),
                        ca.len()
                    ));
                }
            }
            (Node::Symlink(te), Node::Symlink(ta)) => {
                if te != ta {
                    problems.push(format!(
                        "{rel}: symlink target: expected {:?}, got {:?}",
                        String::from_utf8_lossy(te),
                        String::from_utf8_lossy(ta)
                    ));
                }
            }
            _ => problems.push(format!("{rel}: different kinds: expected {e:?}, got {a:?}")),
        }
    }
    let mut problems = Vec::new();
    walk(".", &read_tree(expected), &read_tree(actual), &mut problems);
    assert!(
        problems.is_empty(),
        "tree {} differs from {}:\n{}",
        actual.display(),
        expected.display(),
        problems.join("\n")
    );
}

/// Every regular file under `root`, as (NAR subpath with `/` separators, contents).
pub fn regular_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_str().unwrap().to_owned();
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                walk(&entry.path(), &sub, out);
            } else if ft.is_file() {
                out.push((sub, fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift), so fixtures are identical on every run.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write_mode(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Names for the entry-order checks: byte order differs from locale and case-folded order.
pub const SORTING_NAMES: &[&str] = &[
    "B", "a", "_", "Z10", "Z9", "A", "b", "ä", "é", "e", "a.b", "a-b", "ab", "aa", "0", "10", "9",
    "~", "-", ".x", "Ä", "z", "zz", "名", "a b", "a_b", "A_B", "aB", "Ab",
];

/// Exotic names, all legal in a NAR (no `/`, NUL, `.` or `..`).
pub const EXOTIC_NAMES: &[&str] = &[
    "a b",
    "ü—名",
    "!#$%&'()+,;=@[]^_{}~",
    "...",
    "..a",
    ".hidden",
    "-leading-dash",
    " leading space",
    "trailing space ",
    "tab\there",
    "new\nline",
    "back\\slash",
    "quote\"s",
    "*?<>|",
    "emoji 😀",
];

/// Builds `parent/fixture-tree`, a directory with every kind of entry. The root name is a
/// valid store path name, the inner names are not restricted.
pub fn make_fixture_tree(parent: &Path) -> PathBuf {
    let root = parent.join("fixture-tree");
    fs::create_dir(&root).unwrap();
    let p = |rel: &str| root.join(rel);

    write_mode(&p("empty"), b"", 0o644);
    write_mode(&p("exec.sh"), b"#!/bin/sh\necho hello\n", 0o755);
    write_mode(&p("exec-user-only"), b"x", 0o744);
    write_mode(&p("readonly"), b"read only\n", 0o444);
    write_mode(&p("empty-exec"), b"", 0o755);
    write_mode(&p("content.txt"), b"some content\nwith two lines\n", 0o644);
    // Files of every size around the 8-byte padding boundary.
    fs::create_dir(p("pad")).unwrap();
    for size in 0..=17 {
        write_mode(
            &p(&format!("pad/size-{size:02}")),
            &pseudo_random_bytes(size, size as u64 + 7),
            if size % 3 == 0 { 0o755 } else { 0o644 },
        );
    }
    // A bigger file, not a multiple of 8 bytes, with every byte value.
    write_mode(
        &p("big.bin"),
        &pseudo_random_bytes((1 << 20) + 3, 42),
        0o644,
    );
    // A file that looks like a NAR token stream.
    write_mode(
        &p("nar-lookalike"),
        &NarBuilder::new()
            .magic()
            .str("(")
            .str("type")
            .str(")")
            .finish(),
        0o644,
    );

    fs::create_dir(p("links")).unwrap();
    symlink("../content.txt", p("links/relative")).unwrap();
    symlink("/etc/hostname", p("links/absolute")).unwrap();
    symlink("nowhere/at/all", p("links/dangling")).unwrap();
    symlink("../deep", p("links/to-dir")).unwrap();
    symlink("loop", p("links/loop")).unwrap();
    symlink("../names/ü—名", p("links/unicode-target")).unwrap();
    symlink(".", p("links/dot")).unwrap();
    symlink("a b/c d", p("links/space target")).unwrap();

    fs::create_dir(p("empty-dir")).unwrap();
    fs::create_dir_all(p("dir-with-empty/inner-empty")).unwrap();

    // 30 levels of directories.
    let mut deep = p("deep");
    for level in 0..30 {
        deep.push(format!("d{level:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    write_mode(&deep.join("leaf"), b"at the bottom\n", 0o644);
    symlink("../d28", deep.join("up")).unwrap();

    fs::create_dir(p("names")).unwrap();
    for (i, name) in EXOTIC_NAMES.iter().enumerate() {
        write_mode(
            &p("names").join(name),
            name.as_bytes(),
            if i % 2 == 0 { 0o644 } else { 0o755 },
        );
    }
    fs::create_dir(p("names/dir ü—名 !#$%&'()+,;=@[]^_{}~")).unwrap();
    write_mode(
        &p("names/dir ü—名 !#$%&'()+,;=@[]^_{}~/inside"),
        b"inside\n",
        0o644,
    );
    // The longest name Linux allows (255 bytes), and one of 249 (padding of 7).
    write_mode(&p("names").join("L".repeat(255)), b"long name", 0o644);
    write_mode(&p("names").join("M".repeat(249)), b"", 0o644);
    // A hard link: NAR stores it as a second regular file.
    fs::hard_link(p("content.txt"), p("names/hard-link")).unwrap();

    fs::create_dir(p("sorting")).unwrap();
    for (i, name) in SORTING_NAMES.iter().enumerate() {
        let path = p("sorting").join(name);
        match i % 3 {
            0 => write_mode(&path, name.as_bytes(), 0o644),
            1 => symlink(name, &path).unwrap(),
            _ => {
                fs::create_dir(&path).unwrap();
                write_mode(&path.join(name), b"", 0o644);
            }
        }
    }
    // Many entries in one directory.
    fs::create_dir(p("many")).unwrap();
    for i in (0..300).rev() {
        write_mode(
            &p(&format!("many/f{i}")),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }

    // Make everything world-readable for nixbld builders (files keep their x bits).
    make_world_readable(&root);
    root
}

fn make_world_readable(path: &Path) {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = meta.permissions().mode();
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        for entry in fs::read_dir(path).unwrap() {
            make_world_readable(&entry.unwrap().path());
        }
    } else {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o444)).unwrap();
    }
}

/// The roots every NAR test runs on: the fixture tree and single-entry roots.
pub fn make_all_roots(parent: &Path) -> Vec<PathBuf> {
    let tree = make_fixture_tree(parent);
    write_mode(&parent.join("single-file"), b"just one file\n", 0o644);
    write_mode(&parent.join("single-exec"), b"#!/bin/sh\n", 0o755);
    write_mode(&parent.join("empty-file"), b"", 0o644);
    symlink("fixture-tree/content.txt", parent.join("root-link")).unwrap();
    symlink("/does/not/exist", parent.join("dangling-root-link")).unwrap();
    fs::create_dir(parent.join("empty-root-dir")).unwrap();
    fs::set_permissions(
        parent.join("empty-root-dir"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    vec![
        tree.clone(),
        parent.join("single-file"),
        parent.join("single-exec"),
        parent.join("empty-file"),
        parent.join("root-link"),
        parent.join("dangling-root-link"),
        parent.join("empty-root-dir"),
        tree.join("deep"),
        tree.join("names"),
        tree.join("big.bin"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Crafting NARs by hand
// ---------------------------------------------------------------------------------------------

/// Builds a NAR token by token: each string is a u64 little-endian length, the bytes, and zero
/// padding to a multiple of 8. `offset()` gives the position of the next token, for checking
/// the offsets errors report.
#[derive(Debug, Default, Clone)]
pub struct NarBuilder {
    bytes: Vec<u8>,
}

impl NarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current length (where the next token starts).
    pub fn offset(&self) -> usize {
        self.bytes.len()
    }

    /// A string token.
    pub fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    /// A byte-string token.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.bytes
            .extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(b);
        self.bytes.resize(self.bytes.len().next_multiple_of(8), 0);
        self
    }

    /// Several string tokens.
    pub fn strs(mut self, ss: &[&str]) -> Self {
        for s in ss {
            self = self.str(s);
        }
        self
    }

    /// Raw bytes, not framed.
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.bytes.extend_from_slice(b);
        self
    }

    /// A bare length field (for lying about lengths).
    pub fn len_field(mut self, n: u64) -> Self {
        self.bytes.extend_from_slice(&n.to_le_bytes());
        self
    }

    pub fn magic(self) -> Self {
        self.str("nix-archive-1")
    }

    /// `( type regular [executable ""] contents <data> )`.
    pub fn regular(self, executable: bool, data: &[u8]) -> Self {
        let b = self.strs(&["(", "type", "regular"]);
        let b = if executable {
            b.strs(&["executable", ""])
        } else {
            b
        };
        b.str("contents").bytes(data).str(")")
    }

    /// `( type symlink target <t> )`.
    pub fn symlink(self, target: &str) -> Self {
        self.strs(&["(", "type", "symlink", "target", target, ")"])
    }

    /// `entry ( name <n> node` — the caller adds the node, then `end_entry`.
    pub fn entry(self, name: &str) -> Self {
        self.strs(&["entry", "(", "name", name, "node"])
    }

    pub fn end_entry(self) -> Self {
        self.str(")")
    }

    pub fn begin_dir(self) -> Self {
        self.strs(&["(", "type", "directory"])
    }

    pub fn end_dir(self) -> Self {
        self.str(")")
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// A small valid NAR: a directory with a file, an executable, a symlink and a subdirectory.
pub fn small_valid_nar() -> Vec<u8> {
    NarBuilder::new()
        .magic()
        .begin_dir()
        .entry("a")
        .regular(false, b"hello\n")
        .end_entry()
        .entry("b")
        .regular(true, b"#!/bin/sh\n")
        .end_entry()
        .entry("c")
        .symlink("a")
        .end_entry()
        .entry("d")
        .begin_dir()
        .entry("e")
        .regular(false, b"")
        .end_entry()
        .end_dir()
        .end_entry()
        .end_dir()
        .finish()
}

// ---------------------------------------------------------------------------------------------
// Process memory
// ---------------------------------------------------------------------------------------------

/// GNU time (`/usr/bin/time`), needed to measure peak memory. Missing is a test failure.
pub fn gnu_time() -> &'static str {
    let path = "/usr/bin/time";
    assert!(
        Path::new(path).exists(),
        "these tests need GNU time at {path} to measure peak memory: apt-get install -y time"
    );
    path
}
