//! Ctrl-C and SIGTERM through the real `cachecore` binary: push (into a directory and into a
//! real S3 server, Garage), pull and copy of a ~200 MB store path stop cleanly — no staging
//! file, no hidden staging directory, no incomplete multipart upload — print one line, exit
//! 130 (SIGINT) or 143 (SIGTERM), and running the same command again finishes the job.
//!
//! Ctrl-C is typed into a pseudo-terminal (Python's `pty` module), as a user would, so the
//! progress bar a terminal gets is drawn and the terminal's line discipline sends SIGINT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::garage::Garage;
use common::*;

const INTERRUPTED: &str = "cachecore: interrupted — run the same command again to finish";

/// Runs argv in a pseudo-terminal; once `trigger` holds (a file matching a glob exists, the
/// output shows a text or matches a regex, or a JSON field an HTTP GET answers is above zero:
/// `("json", "URL TOKEN FIELD")`), types Ctrl-C. Prints JSON: exit status, whether Ctrl-C was
/// typed, the terminal's output.
const PTY_RUNNER: &str = r#"
import glob, json, os, pty, re, select, sys, time, urllib.request

def json_above_zero(spec):
    url, token, field = spec.split(" ")
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return (json.load(r).get(field) or 0) > 0
    except OSError:
        return False

kind, what = sys.argv[1], sys.argv[2]
argv = sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
out, sent, deadline = b"", False, time.time() + 600
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.02)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    if not sent:
        if kind == "glob":
            hit = glob.glob(what)
        elif kind == "regex":
            hit = re.search(what.encode(), out)
        elif kind == "json":
            hit = json_above_zero(what)
        else:
            hit = what.encode() in out
        if hit:
            os.write(fd, b"\x03")
            sent = True
_, status = os.waitpid(pid, 0)
code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
print(json.dumps({"code": code, "sent": sent, "output": out.decode("utf-8", "replace")}))
"#;

struct PtyRun {
    code: i32,
    sent: bool,
    output: String,
}

/// `cachecore ARGS` in a pseudo-terminal, Ctrl-C typed when `trigger` (`("glob", pattern)` or
/// `("text", text)`) holds.
fn cachecore_in_pty(args: &[&str], trigger: (&str, &str), env: &[(String, String)]) -> PtyRun {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(PTY_RUNNER)
        .arg(trigger.0)
        .arg(trigger.1)
        .arg(env!("CARGO_BIN_EXE_cachecore"))
        .args(args)
        .env("NIX_REMOTE", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().cloned());
    let out = run_with_stdin(&mut cmd, b"");
    assert!(
        out.status.success(),
        "the pty runner failed (python3 is needed):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PtyRun {
        code: v["code"].as_i64().unwrap() as i32,
        sent: v["sent"].as_bool().unwrap(),
        output: v["output"].as_str().unwrap().to_owned(),
    }
}

/// The run was interrupted and said so: Ctrl-C typed, exit 130, the line printed once, no
/// panic.
#[track_caller]
fn assert_interrupted(run: &PtyRun, what: &str) {
    assert!(
        run.sent,
        "{what}: finished before Ctrl-C could be typed:\n{}",
        run.output
    );
    assert_eq!(
        run.code, 130,
        "{what}: exit status; output:\n{}",
        run.output
    );
    assert_eq!(
        run.output.matches(INTERRUPTED).count(),
        1,
        "{what}: output:\n{}",
        run.output
    );
    assert!(!run.output.contains("panicked"), "{what}:\n{}", run.output);
}

/// A ~200 MB store path of incompressible data (`nix-store --add`), and its size in bytes.
fn big_store_path(dir: &Path) -> (String, u64) {
    let src = dir.join("cachecore-e2e-big");
    fs::create_dir_all(&src).unwrap();
    let mut file = fs::File::create(src.join("data")).unwrap();
    let chunk = 25 << 20;
    for seed in 0..8u64 {
        file.write_all(&pseudo_random_bytes(chunk, 0x5eed + seed * 7919))
            .unwrap();
    }
    drop(file);
    fs::write(src.join("README"), "a big path\n").unwrap();
    (nix_store_add(&src), 8 * chunk as u64)
}

/// Every file under `dir` (recursively), relative.
fn all_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[track_caller]
fn assert_no_staging_files(cache: &Path) {
    let debris: Vec<String> = all_files(cache)
        .into_iter()
        .filter(|f| f.contains('#'))
        .collect();
    assert!(
        debris.is_empty(),
        "staging files left in {}: {debris:?}",
        cache.display()
    );
}

fn link(dir: &Path, target: &str) -> PathBuf {
    let result = dir.join("result-big");
    std::os::unix::fs::symlink(target, &result).unwrap();
    result
}

#[test]
fn ctrl_c_stops_a_push_into_a_directory_and_a_pull_cleanly() {
    let tmp = tempdir();
    let (big, size) = big_store_path(tmp.path());
    let result = link(tmp.path(), &big);
    let cache = tmp.path().join("cache");

    // Ctrl-C once the large NAR's upload has started (its staging file exists).
    let run = cachecore_in_pty(
        &["push", path_str(&cache), path_str(&result)],
        ("glob", &format!("{}/nar/*#*", cache.display())),
        &[],
    );
    assert_interrupted(&run, "push into a directory");
    assert_no_staging_files(&cache);
    assert!(
        !all_files(&cache).iter().any(|f| f.ends_with(".narinfo")),
        "an interrupted push published a narinfo: {:?}",
        all_files(&cache)
    );
    // Running it again finishes, and leaves nothing else behind.
    let again = cachecore_output(&["push", path_str(&cache), path_str(&result)], b"");
    assert_cachecore_ok(&again, &["push again"]);
    assert_no_staging_files(&cache);
    cachecore_ok(&["verify", path_str(&cache)], b"");

    // Pull: Ctrl-C once the bar shows bytes; no hidden staging directory is left beside DEST.
    let dests = tmp.path().join("dests");
    fs::create_dir_all(&dests).unwrap();
    let dest = dests.join("big");
    let run = cachecore_in_pty(
        &[
            "pull",
            path_str(&cache),
            path_str(&result),
            path_str(&dest),
            "--no-check-sigs",
        ],
        ("text", "MiB/"),
        &[],
    );
    assert_interrupted(&run, "pull");
    assert_eq!(all_files(&dests), Vec::<String>::new(), "pull left debris");
    let again = cachecore_output(
        &[
            "pull",
            path_str(&cache),
            path_str(&result),
            path_str(&dest),
            "--no-check-sigs",
        ],
        b"",
    );
    assert_cachecore_ok(&again, &["pull again"]);
    assert_eq!(fs::metadata(dest.join("data")).unwrap().len(), size);
    assert_eq!(all_files(&dests), vec!["big", "big/README", "big/data"]);
}

/// The number of the bucket's unfinished multipart uploads, from Garage's admin API
/// (`GetBucketInfo`, its `unfinishedMultipartUploads`), with the admin port and token of the
/// test server's own configuration file.
fn incomplete_uploads(garage: &Garage) -> u64 {
    let (url, token) = bucket_info_request(garage);
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()
        .expect("curl is needed");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "GetBucketInfo: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    info["unfinishedMultipartUploads"]
        .as_u64()
        .unwrap_or_else(|| panic!("no unfinishedMultipartUploads in {info}"))
}

/// The admin API's `GetBucketInfo` URL for the test bucket, and the admin token.
fn bucket_info_request(garage: &Garage) -> (String, String) {
    let config = fs::read_to_string(garage.dir().join("garage.toml")).unwrap();
    let admin = config.split("[admin]").nth(1).expect("an [admin] section");
    let value = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or_else(|| panic!("no {key} in [admin]:\n{admin}"))
            .to_owned()
    };
    let (addr, token) = (value("api_bind_addr"), value("admin_token"));
    (
        format!(
            "http://{addr}/v2/GetBucketInfo?globalAlias={}",
            garage.bucket
        ),
        token,
    )
}

#[test]
fn ctrl_c_and_sigterm_stop_a_push_and_a_copy_into_garage_cleanly() {
    let tmp = tempdir();
    let (big, _) = big_store_path(tmp.path());
    let result = link(tmp.path(), &big);
    let garage = Garage::start();
    let url = garage.url("big");
    assert_eq!(incomplete_uploads(&garage), 0);

    // Ctrl-C once the bucket reports the multipart upload begun (observed, not guessed).
    let (info_url, admin_token) = bucket_info_request(&garage);
    let run = cachecore_in_pty(
        &["push", &url, path_str(&result)],
        (
            "json",
            &format!("{info_url} {admin_token} unfinishedMultipartUploads"),
        ),
        &garage.env(),
    );
    assert_interrupted(&run, "push into Garage");
    assert_eq!(
        incomplete_uploads(&garage),
        0,
        "an upload was left unfinished"
    );
    let mut cmd = cachecore_command();
    cmd.args(["push", &url, path_str(&result)])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(garage.env());
    let again = run_with_stdin(&mut cmd, b"");
    assert_cachecore_ok(&again, &["push again"]);

    // SIGTERM (no terminal): copy out of the bucket into a directory, re-compressing (which
    // stages the NAR under a temporary key).
    let copy_dest = tmp.path().join("copy");
    let args = [
        "copy",
        url.as_str(),
        path_str(&copy_dest),
        "--all",
        "--recompress",
        "zstd",
    ];
    let mut child = cachecore_command()
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(garage.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the copy's upload has begun, then SIGTERM.
    let start = std::time::Instant::now();
    while !all_files(&copy_dest).iter().any(|f| f.contains('#')) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "copy finished before SIGTERM"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "copy never started writing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = collect_with_timeout(&mut child, b"", "copy", Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(143),
        "copy after SIGTERM:\n{stderr}"
    );
    assert_eq!(stderr.matches(INTERRUPTED).count(), 1, "{stderr}");
    assert_no_staging_files(&copy_dest);
    assert!(!all_files(&copy_dest)
        .iter()
        .any(|f| f.ends_with(".narinfo")));
    let again: Output = {
        let mut cmd = cachecore_command();
        cmd.args(args)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(garage.env());
        run_with_stdin(&mut cmd, b"")
    };
    assert_cachecore_ok(&again, &["copy again"]);
    assert_no_staging_files(&copy_dest);
    cachecore_ok(&["verify", path_str(&copy_dest)], b"");
}
