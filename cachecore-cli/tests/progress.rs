//! Progress output of the transfer commands: plain lines when stderr is not a terminal (a log
//! file, CI), a bar on a terminal (checked on a pseudo-terminal made by util-linux's `script`),
//! and nothing but errors with `--quiet` either way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsString;
use std::process::Command;

use common::*;

/// Runs `cachecore ARGS` with stdin, stdout and stderr on a pseudo-terminal (`script -qec`);
/// returns what the terminal showed. `script` is part of util-linux; missing is a failure.
fn on_a_terminal(args: &[&str]) -> String {
    let mut line = shell_quote(env!("CARGO_BIN_EXE_cachecore").as_ref());
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(OsString::from(a).as_os_str()));
    }
    let mut cmd = Command::new("/usr/bin/script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env("NIX_REMOTE", "local")
        .env("TERM", "xterm")
        .env("COLUMNS", "120");
    assert!(
        std::path::Path::new("/usr/bin/script").exists(),
        "this test needs `script` from util-linux: apt-get install -y util-linux"
    );
    let out = run_with_stdin(&mut cmd, b"");
    assert!(
        out.status.success(),
        "`cachecore {}` on a terminal failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plain_lines_off_a_terminal_and_a_bar_on_one() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap().as_str();

    // Off a terminal: a plan line, one line per path, the summary.
    let plain = tmp.path().join("plain");
    let out = cachecore_output(&["push", path_str(&plain), app], b"");
    assert_cachecore_ok(&out, &["push"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("3 paths to transfer (") && lines[0].ends_with("0 already there"),
        "{stderr}"
    );
    for p in &closure {
        assert!(
            lines.contains(&format!("pushed {p}").as_str()),
            "no line `pushed {p}`:\n{stderr}"
        );
    }
    // The summary, then (nothing was signed) the warning saying so, then (the directory did
    // not exist) that a new cache was created.
    let n = lines.len();
    assert!(
        n >= 3
            && lines[n - 3].starts_with("3 paths pushed")
            && lines[n - 2].starts_with("warning: 3 paths were pushed unsigned")
            && lines[n - 1].starts_with("created a new cache in "),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "terminal control characters in plain output: {stderr:?}"
    );

    // On a terminal: the same per-path lines and summary, drawn above a bar that is cleared at
    // the end (control sequences), and no plan line (the bar shows the plan).
    let bar = tmp.path().join("bar");
    let shown = on_a_terminal(&["push", path_str(&bar), app]);
    for p in &closure {
        assert!(
            shown.contains(&format!("pushed {p}")),
            "no `pushed {p}` on the terminal:\n{shown:?}"
        );
    }
    assert!(shown.contains("3 paths pushed"), "{shown:?}");
    assert!(!shown.contains("paths to transfer ("), "{shown:?}");
    assert!(
        shown.contains('\x1b'),
        "no terminal control sequence (the bar was never drawn or cleared): {shown:?}"
    );

    // --quiet: nothing at all, on a terminal or not.
    let quiet = tmp.path().join("quiet");
    let out = cachecore_output(
        &[
            "copy",
            path_str(&plain),
            path_str(&quiet),
            "--all",
            "--quiet",
        ],
        b"",
    );
    assert_cachecore_ok(&out, &["copy"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let quiet2 = tmp.path().join("quiet2");
    let shown = on_a_terminal(&[
        "copy",
        path_str(&plain),
        path_str(&quiet2),
        "--all",
        "--quiet",
    ]);
    assert!(
        shown.trim().is_empty(),
        "--quiet on a terminal showed {shown:?}"
    );
}
