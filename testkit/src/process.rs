//! Running children: stdin fed and stdout/stderr read from threads (a child that does not read
//! its input cannot deadlock the test), with a time limit so a hung child fails the test instead
//! of hanging it; and waiting on a condition instead of sleeping.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a child may run before [`run_with_stdin`] kills it and fails the test.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(300);

/// `program arg…`, quoted for a shell, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

/// `a` as a shell word: bare when it is plain, else single-quoted.
pub fn shell_quote(a: &OsStr) -> String {
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

/// Runs `cmd` with `stdin`, whatever its exit status, within [`DEFAULT_LIMIT`].
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    run_within(cmd, stdin, DEFAULT_LIMIT)
}

/// Runs `cmd` with `stdin`, whatever its exit status; kills it and fails the test after `limit`.
pub fn run_within(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    collect_with_timeout(&mut child, stdin, &what, limit)
}

/// Feeds `stdin` to a child spawned with piped stdin, stdout and stderr, collects its output,
/// and waits for it, failing the test after `limit`.
pub fn collect_with_timeout(
    child: &mut Child,
    stdin: &[u8],
    what: &str,
    limit: Duration,
) -> Output {
    let input = child.stdin.take().expect("stdin piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let mut input = input;
        // The child may exit without reading everything: a broken pipe is fine here.
        let _ = input.write_all(&data);
    });
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).map(|_| v)
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        stderr.read_to_end(&mut v).map(|_| v)
    });
    let status = wait_with_timeout(child, limit, what);
    let stdout = out_reader
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("`{what}`: reading its stdout: {e}"));
    let stderr = err_reader
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("`{what}`: reading its stderr: {e}"));
    writer.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Waits for `child`, killing it and failing the test after `limit`.
pub fn wait_with_timeout(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            // Killing a child that exits meanwhile is fine; the test fails either way.
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {limit:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` until it returns `Some`, failing the test with `what` after `limit`.
/// The way to wait for something to happen, instead of sleeping and hoping it did.
#[track_caller]
pub fn wait_until<T>(what: &str, limit: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = condition() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "waited {limit:?} for {what}, in vain"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
