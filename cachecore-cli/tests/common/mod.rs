//! Helpers of the CLI's end-to-end tests: running the `cachecore` binary and checking how it
//! fails. Everything the library's tests share too (real Nix, Garage, HTTP servers, fixture
//! trees, byte generators, the NAR builder, peak memory) lives in the dev-only crate
//! `cachecore-testkit`, re-exported here so that test files keep `mod common;` and `use
//! common::*;`.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::time::Duration;

pub use cachecore_testkit::*;

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

/// Runs `cachecore ARGS` with a time limit (for inputs that could block, like FIFOs).
pub fn cachecore_output_within<S: AsRef<OsStr>>(
    args: &[S],
    stdin: &[u8],
    limit: Duration,
) -> Output {
    run_within(cachecore_command().args(args), stdin, limit)
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
