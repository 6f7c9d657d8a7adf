//! `cachecore serve` with real clients: Nix substitutes from it (signatures required), uploads to
//! it with `nix copy --to http://…` and a netrc file, and reads a build log from it; curl checks
//! the HTTP semantics (content types, ranges, 304s, refusals, a mid-body store failure that
//! must abort the transfer). Every server binds port 0 and prints its address, so tests never
//! race for ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A running `cachecore serve`, stopped (SIGTERM, then waited for) when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(store: &str, extra: &[&str]) -> Serve {
        Serve::start_with_env(store, extra, &[])
    }

    /// [`start`](Self::start) with `env` added to the environment (a store's credentials).
    fn start_with_env(store: &str, extra: &[&str], env: &[(String, String)]) -> Serve {
        let mut args = vec!["serve", store, "--listen", "127.0.0.1:0"];
        args.extend(extra);
        Serve::spawn(&args, env)
    }

    /// `cachecore ARGS` (`serve …`), which must print the address it listens on.
    fn spawn(args: &[&str], env: &[(String, String)]) -> Serve {
        Serve::spawn_logging_to(args, env, Stdio::inherit())
    }

    /// [`spawn`](Self::spawn) with the server's stderr (its log) sent to `log`.
    fn spawn_logging_to(args: &[&str], env: &[(String, String)], log: Stdio) -> Serve {
        let mut cmd = cachecore_command();
        cmd.args(args).envs(env.iter().cloned()).stderr(log);
        Serve::spawn_command(cmd)
    }

    /// `cmd`, which runs `cachecore serve …` (perhaps through a wrapper such as `prlimit`) and
    /// must print the address it listens on; its log filtered to warnings unless it says
    /// otherwise.
    fn spawn_command(mut cmd: Command) -> Serve {
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start cachecore serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("cachecore serve: listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("cachecore serve printed {line:?} instead of its address")
            })
            .to_owned();
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(40), "cachecore serve");
        if !std::thread::panicking() {
            assert!(
                status.success(),
                "cachecore serve exited with {status} after SIGTERM"
            );
        }
    }
}

/// What curl saw.
#[derive(Debug)]
struct Reply {
    /// curl's exit status (0, or e.g. 18 for a transfer closed short).
    exit: i32,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl -sS URL ARGS…`, whatever its outcome.
fn curl(url: &str, args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let heads = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&heads)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl must be installed");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let headers = fs::read_to_string(&heads)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        exit: out.status.code().unwrap_or(-1),
        status,
        headers,
        body: fs::read(&body).unwrap_or_default(),
    }
}

/// `n` clients GET `url` at once.
fn curl_at_once(url: &str, n: usize) -> Vec<Reply> {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            std::thread::spawn(move || curl(&url, &[]))
        })
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

fn hash_part(store_path: &str) -> &str {
    &store_path.rsplit('/').next().unwrap()[..32]
}

/// A cache directory holding the test closure, pushed and signed by cachecore; returns
/// (cache dir, closure, public key).
fn pushed_cache(tmp: &Path) -> (PathBuf, Vec<String>, String) {
    let closure = build_closure(tmp);
    let (secret, public) = nix_generate_key(tmp, "serve-test-1");
    let cache = tmp.join("cache");
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
    (cache, closure, public)
}

/// `base/name`, created empty: where a server keeps a new cache (`serve` creates no store).
fn new_cache_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn narinfo_field(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        .to_owned()
}

#[test]
fn nix_substitutes_a_closure_and_curl_sees_http_semantics() {
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    let serve = Serve::start(path_str(&cache), &["--public-key", &public]);
    let url = &serve.url;

    // Real Nix, signatures required; refused with another key trusted.
    assert_nix_substitutes(url, tmp.path(), &closure, &public);

    let info = curl(&format!("{url}/nix-cache-info"), &[]);
    assert_eq!(info.status, 200);
    assert_eq!(info.header("content-type"), Some("text/x-nix-cache-info"));
    assert!(
        info.text().contains("StoreDir: /nix/store"),
        "{}",
        info.text()
    );

    let root = closure.last().unwrap();
    let narinfo = curl(&format!("{url}/{}.narinfo", hash_part(root)), &[]);
    assert_eq!(narinfo.status, 200);
    assert_eq!(narinfo.header("content-type"), Some("text/x-nix-narinfo"));
    assert_eq!(
        narinfo.body,
        fs::read(cache.join(format!("{}.narinfo", hash_part(root)))).unwrap()
    );
    let nar_key = narinfo_field(&narinfo.text(), "URL");
    let nar_bytes = fs::read(cache.join(&nar_key)).unwrap();
    assert!(
        nar_bytes.len() > 40,
        "the NAR is too small to test ranges on"
    );

    // A NAR: content type, immutable caching, validators, length.
    let nar = curl(&format!("{url}/{nar_key}"), &[]);
    assert_eq!(nar.status, 200);
    assert_eq!(nar.body, nar_bytes);
    assert_eq!(nar.header("content-type"), Some("application/x-nix-nar"));
    assert_eq!(
        nar.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(nar.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        nar.header("content-length"),
        Some(nar_bytes.len().to_string().as_str())
    );
    let etag = nar.header("etag").expect("an ETag").to_owned();
    let modified = nar
        .header("last-modified")
        .expect("a Last-Modified")
        .to_owned();

    // HEAD: the same headers, no body.
    let head = curl(&format!("{url}/{nar_key}"), &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), nar.header("content-length"));
    assert_eq!(head.header("etag"), Some(etag.as_str()));

    // Conditional GETs.
    let r = curl(
        &format!("{url}/{nar_key}"),
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(r.status, 304, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = curl(
        &format!("{url}/{nar_key}"),
        &["-H", "If-None-Match: \"other\""],
    );
    assert_eq!(r.status, 200);
    let r = curl(
        &format!("{url}/{nar_key}"),
        &["-H", &format!("If-Modified-Since: {modified}")],
    );
    assert_eq!(r.status, 304);
    let r = curl(
        &format!("{url}/{nar_key}"),
        &["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT"],
    );
    assert_eq!(r.status, 200);

    // Ranges: one range is 206 with Content-Range; a suffix; If-Range; unsatisfiable is 416;
    // several ranges get the whole object.
    let n = nar_bytes.len();
    let r = curl(&format!("{url}/{nar_key}"), &["-r", "10-29"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &nar_bytes[10..30]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-29/{n}").as_str())
    );
    assert_eq!(r.header("content-length"), Some("20"));
    let r = curl(&format!("{url}/{nar_key}"), &["-r", "-7"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &nar_bytes[n - 7..]);
    let r = curl(
        &format!("{url}/{nar_key}"),
        &["-r", "5-", "-H", &format!("If-Range: {etag}")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &nar_bytes[5..]);
    let r = curl(
        &format!("{url}/{nar_key}"),
        &["-r", "5-", "-H", "If-Range: \"stale\""],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, nar_bytes);
    let r = curl(&format!("{url}/{nar_key}"), &["-r", &format!("{n}-")]);
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{n}").as_str())
    );
    let r = curl(&format!("{url}/{nar_key}"), &["-r", "0-1,4-5"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, nar_bytes);

    // Absent objects and names outside the layout.
    let absent = format!("{url}/{}.narinfo", "0".repeat(32));
    assert_eq!(curl(&absent, &[]).status, 404);
    assert_eq!(curl(&absent, &["-I"]).status, 404);
    for bad in [
        "/nar/.tmp-1",
        "/etc/passwd",
        "/nar/%2e%2e/nix-cache-info",
        "/gcroots/x",
    ] {
        let r = curl(&format!("{url}{bad}"), &["--path-as-is"]);
        assert_eq!(r.status, 404, "{bad}: {r:?}");
    }
    let r = curl(&format!("{url}/../../etc/passwd"), &["--path-as-is"]);
    assert!(r.status == 404 || r.status == 400, "{r:?}");
    let r = curl(&format!("{url}/nix-cache-info"), &["-X", "DELETE"]);
    assert_eq!(r.status, 405);

    // Without --token-file, uploads are refused.
    let r = curl(
        &format!("{url}/{}.narinfo", "1".repeat(32)),
        &["-X", "PUT", "--data-binary", "x"],
    );
    assert_eq!(r.status, 403, "{r:?}");

    // The landing page, metrics and health.
    let page = curl(&format!("{url}/"), &[]);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.text().contains(&format!("substituters = {url}")),
        "{}",
        page.text()
    );
    assert!(page
        .text()
        .contains(&format!("trusted-public-keys = {public}")));
    let metrics = curl(&format!("{url}/metrics"), &[]);
    assert_eq!(metrics.status, 200);
    let m = metrics.text();
    assert!(
        m.lines().any(|l| l.starts_with(
            "cachecore_serve_requests_total{method=\"GET\",route=\"nar\",status=\"206\"}"
        )),
        "{m}"
    );
    assert!(m.contains("cachecore_serve_request_duration_seconds_bucket{route=\"narinfo\""));
    let health = curl(&format!("{url}/health"), &[]);
    assert_eq!((health.status, health.text().trim()), (200, "ok"));
}

/// (token file, netrc file) for `token`, for a server on 127.0.0.1.
fn credentials(dir: &Path, name: &str, token: &str) -> (PathBuf, PathBuf) {
    let token_file = dir.join(format!("{name}.token"));
    fs::write(&token_file, format!("{token}\n")).unwrap();
    let netrc = dir.join(format!("{name}.netrc"));
    fs::write(
        &netrc,
        format!("machine 127.0.0.1 login nix password {token}\n"),
    )
    .unwrap();
    (token_file, netrc)
}

fn nix_copy_to(
    url: &str,
    netrc: &Path,
    secret: &Path,
    path: &str,
    cache_home: &Path,
) -> std::process::Output {
    let mut cmd = nix_command("nix");
    cmd.env("XDG_CACHE_HOME", cache_home)
        .args(["copy", "--to"])
        .arg(format!(
            "{url}?secret-key={}&compression=zstd",
            secret.display()
        ))
        .arg(path)
        .args(["--option", "netrc-file"])
        .arg(netrc)
        .args(["--option", "substituters", ""]);
    nix_output(&mut cmd, b"")
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn nix_copy_uploads_a_closure_with_a_netrc_token_and_wrong_tokens_store_nothing() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap();
    let (secret, public) = nix_generate_key(tmp.path(), "serve-upload-1");
    let (token_file, netrc) = credentials(tmp.path(), "good", "upload-token-123");
    let (_, wrong_netrc) = credentials(tmp.path(), "wrong", "upload-token-124");
    let cache = new_cache_dir(tmp.path(), "cache");
    let serve = Serve::start(path_str(&cache), &["--token-file", path_str(&token_file)]);

    // A wrong token: Nix fails, nothing is stored.
    let before = files_under(&cache);
    let out = nix_copy_to(
        &serve.url,
        &wrong_netrc,
        &secret,
        root,
        &tmp.path().join("c1"),
    );
    assert!(
        !out.status.success(),
        "nix copy with a wrong token succeeded"
    );
    assert_eq!(
        files_under(&cache),
        before,
        "a refused upload stored something"
    );
    // curl: no token 401 (with a challenge), wrong 403, nothing stored.
    let key = format!("{}/{}.narinfo", serve.url, hash_part(root));
    let r = curl(&key, &["-X", "PUT", "--data-binary", "x"]);
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    let r = curl(
        &key,
        &[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            "-H",
            "Authorization: Bearer nope",
        ],
    );
    assert_eq!(r.status, 403);
    let r = curl(
        &key,
        &[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            "-u",
            "nix:upload-token-12",
        ],
    );
    assert_eq!(r.status, 403);
    assert_eq!(files_under(&cache), before);

    // The right token: the closure is uploaded, and passes verify with the signing key.
    let out = nix_copy_to(&serve.url, &netrc, &secret, root, &tmp.path().join("c2"));
    assert!(
        out.status.success(),
        "nix copy --to {} failed:\n{}",
        serve.url,
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &closure {
        assert!(
            cache.join(format!("{}.narinfo", hash_part(p))).is_file(),
            "{p} missing"
        );
    }
    cachecore_ok(&["verify", path_str(&cache), "--trusted-key", &public], b"");
    // The server wrote a push index entry for each narinfo it took, and released every lease
    // (one per narinfo) it wrote: gc reads every path from the index.
    assert_eq!(files_under(&cache.join("index")).len(), closure.len());
    let leases = cache.join("gcleases");
    assert!(!leases.exists() || files_under(&leases).is_empty());
    let report = cachecore_ok(
        &[
            "gc",
            path_str(&cache),
            "--older-than",
            "1d",
            "--dry-run",
            "--json",
        ],
        b"",
    );
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["from_index"], closure.len(), "{report}");
    // Copying again (everything present) succeeds.
    let out = nix_copy_to(&serve.url, &netrc, &secret, root, &tmp.path().join("c3"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And Nix substitutes what it uploaded.
    assert_nix_substitutes(&serve.url, tmp.path(), &closure, &public);
}

/// `nix copy --to 'http://…?write-nar-listing=1'` sends each path's listing before its NAR and
/// narinfo: the server holds it until the narinfo arrives, checks it against the NAR then, and
/// stores it — every path ends up with the very listing Nix wrote, and the cache verifies,
/// listings included.
#[test]
fn nix_copy_with_listings_stores_the_listings_nix_wrote() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap();
    let (secret, public) = nix_generate_key(tmp.path(), "serve-listing-1");
    let (token_file, netrc) = credentials(tmp.path(), "t", "listing-token-1");
    let cache = new_cache_dir(tmp.path(), "cache");
    let serve = Serve::start(path_str(&cache), &["--token-file", path_str(&token_file)]);
    let mut cmd = nix_command("nix");
    cmd.env("XDG_CACHE_HOME", tmp.path().join("nix-cache"))
        .args(["copy", "--to"])
        .arg(format!(
            "{}?secret-key={}&compression=xz&write-nar-listing=1",
            serve.url,
            secret.display()
        ))
        .arg(root)
        .args(["--option", "netrc-file"])
        .arg(&netrc)
        .args(["--option", "substituters", ""]);
    let out = nix_output(&mut cmd, b"");
    assert!(
        out.status.success(),
        "nix copy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What Nix would have written to a directory cache, for comparison.
    let direct = tmp.path().join("direct");
    let mut cmd = nix_command("nix");
    cmd.env("XDG_CACHE_HOME", tmp.path().join("nix-cache-2"))
        .args(["copy", "--to"])
        .arg(format!(
            "file://{}?compression=xz&write-nar-listing=1",
            direct.display()
        ))
        .arg(root)
        .args(["--option", "substituters", ""]);
    let out = nix_output(&mut cmd, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &closure {
        let ls = format!("{}.ls", hash_part(p));
        assert_eq!(
            fs::read(cache.join(&ls)).ok(),
            Some(fs::read(direct.join(&ls)).unwrap()),
            "{p}: the listing Nix sent was not stored as sent"
        );
    }
    cachecore_ok(&["verify", path_str(&cache), "--trusted-key", &public], b"");
}

#[test]
fn uploads_are_checked_before_they_become_visible() {
    let tmp = tempdir();
    let (source, closure, _public) = pushed_cache(tmp.path());
    let (token_file, _) = credentials(tmp.path(), "t", "tok-abc");
    let cache = new_cache_dir(tmp.path(), "dest");
    let serve = Serve::start(
        path_str(&cache),
        &[
            "--token-file",
            path_str(&token_file),
            "--max-upload-size",
            "1000000",
        ],
    );
    let url = &serve.url;
    let auth = ["-H", "Authorization: Bearer tok-abc"];
    let put = |key: &str, file: &Path| {
        let data = format!("@{}", file.display());
        let mut args = vec!["-X", "PUT", "--data-binary", data.as_str()];
        args.extend(auth);
        curl(&format!("{url}/{key}"), &args)
    };
    let liba = &closure[0];
    let app = closure.last().unwrap();
    let narinfo_key = |p: &str| format!("{}.narinfo", hash_part(p));
    let text = |p: &str| fs::read_to_string(source.join(narinfo_key(p))).unwrap();
    let nar_of = |p: &str| narinfo_field(&text(p), "URL");

    // A narinfo before its NAR: 409, not stored.
    let r = put(&narinfo_key(liba), &source.join(narinfo_key(liba)));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("upload it first"), "{}", r.text());
    // A NAR whose bytes do not hash to its name: 400, nothing at the key.
    let wrong_name = format!("nar/{}.nar.zst", "1".repeat(52));
    let r = put(&wrong_name, &source.join(nar_of(liba)));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("hash to"), "{}", r.text());
    assert!(!cache.join(&wrong_name).exists());
    // Too large: 413.
    let big = tmp.path().join("big");
    fs::write(&big, vec![0u8; 1_000_001]).unwrap();
    let r = put(&format!("nar/{}.nar", "2".repeat(52)), &big);
    assert_eq!(r.status, 413, "{}", r.text());

    // The NAR under its name, then the narinfo: stored. (cachecore names NARs of one frame
    // after their file hash, so the key checks.)
    let r = put(&nar_of(liba), &source.join(nar_of(liba)));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put(&narinfo_key(liba), &source.join(narinfo_key(liba)));
    assert_eq!(r.status, 200, "{}", r.text());
    // Identical again: fine. Different: 409.
    let r = put(&narinfo_key(liba), &source.join(narinfo_key(liba)));
    assert_eq!(r.status, 200, "{}", r.text());
    let altered = tmp.path().join("altered.narinfo");
    fs::write(&altered, text(liba).replace("Sig: ", "Sig: x")).unwrap();
    let r = put(&narinfo_key(liba), &altered);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        fs::read_to_string(cache.join(narinfo_key(liba))).unwrap(),
        text(liba)
    );

    // app's narinfo under liba's... no: under another path's key: StorePath mismatch, 400.
    let r = put(
        &narinfo_key(app),
        &source.join(narinfo_key(closure[1].as_str())),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("StorePath"), "{}", r.text());
    // app before libb: its NAR is present but a reference is not: 409.
    let r = put(&nar_of(app), &source.join(nar_of(app)));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put(&narinfo_key(app), &source.join(narinfo_key(app)));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("reference"), "{}", r.text());
    assert!(!cache.join(narinfo_key(app)).exists());
    // A narinfo whose NarHash lies about its NAR: 400.
    let libb = &closure[1];
    let r = put(&nar_of(libb), &source.join(nar_of(libb)));
    assert_eq!(r.status, 200, "{}", r.text());
    let lying = tmp.path().join("lying.narinfo");
    let nar_hash = narinfo_field(&text(libb), "NarHash");
    let other_hash = narinfo_field(&text(liba), "NarHash");
    fs::write(&lying, text(libb).replace(&nar_hash, &other_hash)).unwrap();
    let r = put(&narinfo_key(libb), &lying);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("NarHash"), "{}", r.text());
    assert!(!cache.join(narinfo_key(libb)).exists());
    // In closure order everything goes in, and the cache verifies.
    for p in [libb, app] {
        let r = put(&narinfo_key(p), &source.join(narinfo_key(p)));
        assert_eq!(r.status, 200, "{p}: {}", r.text());
    }
    cachecore_ok(&["verify", path_str(&cache)], b"");
}

/// A `PUT` sent by hand over a socket, stopped one byte short of its body: the server has
/// read the headers, answered `100 Continue` (so its handler has run up to reading the body)
/// and holds all but the last byte. [`finish`](Self::finish) sends that byte and reads the
/// answer.
struct SlowPut {
    conn: std::net::TcpStream,
    last: u8,
}

impl SlowPut {
    fn start(url: &str, key: &str, token: &str, body: &[u8]) -> SlowPut {
        use std::io::{Read as _, Write as _};
        let addr = url.strip_prefix("http://").unwrap();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "PUT /{key} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        let mut continued = [0u8; 25];
        conn.read_exact(&mut continued).unwrap();
        assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
        let (most, last) = body.split_at(body.len() - 1);
        conn.write_all(most).unwrap();
        conn.flush().unwrap();
        SlowPut {
            conn,
            last: last[0],
        }
    }

    /// (status, body) of the answer once the last byte is sent.
    fn finish(mut self) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        // (No half-close: the server would take it for a client gone mid-request.)
        self.conn.write_all(&[self.last]).unwrap();
        let mut answer = String::new();
        self.conn.read_to_string(&mut answer).unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }
}

/// A leaked upload token must not change what others published. Each way of trying is refused
/// with its status, and the published bytes stay as they were: a listing that does not
/// describe the NAR of a published path without one; a listing planted before the path is
/// pushed (held, never stored, and no obstacle to the push or to the real listing); another
/// NAR under a published NAR's name; a streamed NAR's `PUT` that started before the narinfo
/// naming its key was taken and ends after it (made deterministic by `100 Continue` and a
/// withheld last byte); a different narinfo.
#[test]
fn a_token_holder_cannot_change_what_others_published() {
    let tmp = tempdir();
    let (source, closure, public) = pushed_cache(tmp.path());
    let (token_file, _) = credentials(tmp.path(), "t", "tok-forge");
    let cache = new_cache_dir(tmp.path(), "dest");
    let serve = Serve::start(path_str(&cache), &["--token-file", path_str(&token_file)]);
    let url = &serve.url;
    let put_bytes = |key: &str, bytes: &[u8]| {
        let file = tempfile::NamedTempFile::new_in(tmp.path()).unwrap();
        fs::write(file.path(), bytes).unwrap();
        let data = format!("@{}", file.path().display());
        curl(
            &format!("{url}/{key}"),
            &[
                "-X",
                "PUT",
                "--data-binary",
                &data,
                "-H",
                "Authorization: Bearer tok-forge",
            ],
        )
    };
    let (liba, libb, app) = (&closure[0], &closure[1], &closure[2]);
    let narinfo_key = |p: &str| format!("{}.narinfo", hash_part(p));
    let ls_key = |p: &str| format!("{}.ls", hash_part(p));
    let text = |p: &str| fs::read_to_string(source.join(narinfo_key(p))).unwrap();
    let nar_of = |p: &str| narinfo_field(&text(p), "URL");
    let listing = |p: &str| fs::read(source.join(ls_key(p))).unwrap();
    let forged = |p: &str| {
        String::from_utf8(listing(p))
            .unwrap()
            .replacen(
                r#""entries":{"#,
                r#""entries":{"sudo":{"type":"symlink","target":"/etc/shadow"},"#,
                1,
            )
            .into_bytes()
    };
    let ok = |r: Reply, what: &str| assert_eq!(r.status, 200, "{what}: {}", r.text());
    // liba is published without a listing (as `nix copy` and `push --no-listing` leave it).
    ok(
        put_bytes(&nar_of(liba), &fs::read(source.join(nar_of(liba))).unwrap()),
        "liba's NAR",
    );
    ok(
        put_bytes(&narinfo_key(liba), text(liba).as_bytes()),
        "liba's narinfo",
    );

    // libb's NAR under a streamed key (`cachecore push`'s nar/<NarHash>-<unique>.nar.zst,
    // checked only when the narinfo naming it arrives), named by its narinfo (URL is not
    // signed). Before anything of libb is up, a listing is planted for it, and a slow PUT of
    // other bytes under that key gets as far as its last byte.
    let streamed = format!(
        "nar/{}-0123456789abcdef.nar.zst",
        narinfo_field(&text(libb), "NarHash").trim_start_matches("sha256:")
    );
    let libb_narinfo = text(libb).replace(&nar_of(libb), &streamed);
    let planted = put_bytes(&ls_key(libb), &forged(libb));
    assert_eq!(planted.status, 200, "{}", planted.text());
    assert!(
        planted.text().contains("held until its narinfo arrives"),
        "{}",
        planted.text()
    );
    let libb_nar = fs::read(source.join(nar_of(libb))).unwrap();
    let other_nar = fs::read(source.join(nar_of(liba))).unwrap();
    let slow = SlowPut::start(url, &streamed, "tok-forge", &other_nar);
    ok(put_bytes(&streamed, &libb_nar), "libb's streamed NAR");
    ok(
        put_bytes(&narinfo_key(libb), libb_narinfo.as_bytes()),
        "libb's narinfo",
    );
    let (status, answer) = slow.finish();

    // The slow PUT ended second: refused, libb's NAR unchanged.
    assert_eq!(
        status, 409,
        "the slow PUT replaced a published NAR: {answer}"
    );
    assert!(answer.contains("written once"), "{answer}");
    assert_eq!(fs::read(cache.join(&streamed)).unwrap(), libb_nar);
    // The planted listing was never stored, and the real one is taken now.
    assert!(
        !cache.join(ls_key(libb)).exists(),
        "a planted listing was stored"
    );
    ok(
        put_bytes(&ls_key(libb), &listing(libb)),
        "libb's real listing after its narinfo",
    );
    assert_eq!(fs::read(cache.join(ls_key(libb))).unwrap(), listing(libb));

    // app: a forged and the real listing before its narinfo; the real one is stored with it.
    assert_eq!(put_bytes(&ls_key(app), &forged(app)).status, 200);
    assert_eq!(put_bytes(&ls_key(app), &listing(app)).status, 200);
    assert!(
        !cache.join(ls_key(app)).exists(),
        "a listing was stored before its narinfo"
    );
    ok(
        put_bytes(&nar_of(app), &fs::read(source.join(nar_of(app))).unwrap()),
        "app's NAR",
    );
    ok(
        put_bytes(&narinfo_key(app), text(app).as_bytes()),
        "app's narinfo",
    );
    assert_eq!(fs::read(cache.join(ls_key(app))).unwrap(), listing(app));

    let published = files_under(&cache)
        .into_iter()
        .map(|f| {
            let bytes = fs::read(cache.join(&f)).unwrap();
            (f, bytes)
        })
        .collect::<Vec<_>>();
    let mut other_narinfo = text(liba).replace("Sig: ", "Sig: x");
    other_narinfo.push_str("Deriver: x\n");
    // (what, key, body, status, what the answer says)
    let attempts: [(&str, String, Vec<u8>, u16, &str); 8] = [
        (
            "a forged listing for a published path without one",
            ls_key(liba),
            forged(liba),
            400,
            r#"does not describe the NAR of"#,
        ),
        (
            "another path's listing for it",
            ls_key(liba),
            listing(app),
            400,
            "does not describe the NAR of",
        ),
        (
            "a listing that is not one",
            ls_key(liba),
            b"{}".to_vec(),
            400,
            "not a valid listing",
        ),
        (
            "a different listing for a path that has one",
            ls_key(app),
            forged(app),
            409,
            "never replaced",
        ),
        // (Its name is its hash: the bytes that are there are the ones named; not even read.)
        (
            "other bytes under a published NAR's hash name",
            nar_of(liba),
            libb_nar.clone(),
            200,
            "already present",
        ),
        (
            "other bytes under a published streamed NAR's name",
            streamed.clone(),
            other_nar.clone(),
            409,
            "written once",
        ),
        (
            "a different narinfo",
            narinfo_key(liba),
            other_narinfo.into_bytes(),
            409,
            "never replaced",
        ),
        (
            "the same NAR again",
            nar_of(liba),
            fs::read(source.join(nar_of(liba))).unwrap(),
            200,
            "already present",
        ),
    ];
    for (what, key, body, status, says) in attempts {
        let r = put_bytes(&key, &body);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert!(r.text().contains(says), "{what}: {}", r.text());
    }
    // Nothing changed, nothing was added.
    for (f, bytes) in &published {
        assert_eq!(&fs::read(cache.join(f)).unwrap(), bytes, "{f} changed");
    }
    assert_eq!(
        files_under(&cache).len(),
        published.len(),
        "{:?}",
        files_under(&cache)
    );
    // The real listing of liba is still taken, and the cache verifies, listings included.
    ok(
        put_bytes(&ls_key(liba), &listing(liba)),
        "liba's real listing",
    );
    cachecore_ok(&["verify", path_str(&cache), "--trusted-key", &public], b"");
}

#[test]
fn a_read_token_makes_reads_private_and_nix_reads_with_netrc() {
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    let (read_token, netrc) = credentials(tmp.path(), "r", "read-tok-9");
    let serve = Serve::start(
        path_str(&cache),
        &["--read-token-file", path_str(&read_token)],
    );
    let url = &serve.url;
    let r = curl(&format!("{url}/nix-cache-info"), &[]);
    assert_eq!(r.status, 401);
    let r = curl(&format!("{url}/nix-cache-info"), &["-u", "x:wrong"]);
    assert_eq!(r.status, 403);
    let r = curl(&format!("{url}/nix-cache-info"), &["-u", "x:read-tok-9"]);
    assert_eq!(r.status, 200);
    let health = curl(&format!("{url}/health"), &[]);
    assert_eq!(health.status, 200, "the health check needs no token");

    let root = closure.last().unwrap();
    let fresh = tmp.path().join("fresh");
    let without = nix_copy_from_checking_sigs(url, &fresh, root, &public);
    assert!(
        !without.status.success(),
        "Nix read a private cache without a token"
    );
    let mut cmd = nix_command("nix");
    cmd.env("XDG_CACHE_HOME", tmp.path().join("nix-cache-2"))
        .args(["copy", "--from", url, "--to"])
        .arg(tmp.path().join("fresh2"))
        .arg(root)
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", &public])
        .args(["--option", "substituters", ""])
        .args(["--option", "netrc-file"])
        .arg(&netrc);
    let out = nix_output(&mut cmd, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nix_log_reads_an_uploaded_build_log() {
    let tmp = tempdir();
    let (cache, closure, _) = pushed_cache(tmp.path());
    let (token_file, _) = credentials(tmp.path(), "t", "log-tok");
    let serve = Serve::start(path_str(&cache), &["--token-file", path_str(&token_file)]);
    let root = closure.last().unwrap();
    let deriver = narinfo_field(
        &fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(root)))).unwrap(),
        "Deriver",
    );
    put_log(
        &serve.url,
        &deriver,
        "building the app\nline two of the log\n",
        "log-tok",
        tmp.path(),
    );
    let log = nix_log(&serve.url, root, &tmp.path().join("nix-cache"));
    assert!(log.contains("line two of the log"), "{log}");
}

/// `PUT log/<deriver>` to a server, with an upload token.
fn put_log(url: &str, deriver: &str, text: &str, token: &str, tmp: &Path) {
    let file = tmp.join(format!("log-{deriver}"));
    fs::write(&file, text).unwrap();
    let r = curl(
        &format!("{url}/log/{deriver}"),
        &[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", file.display()),
            "-H",
            &format!("Authorization: Bearer {token}"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An in-memory store whose reads of `nar/` objects fail after `after` bytes, and whose reads
/// of `broken` fail at once: the failures a real backend has mid-transfer and before it.
#[derive(Debug)]
struct Failing {
    inner: object_store::memory::InMemory,
    after: usize,
    broken: String,
}

impl std::fmt::Display for Failing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Failing")
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Failing {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        use futures::StreamExt as _;
        let injected = |what: &str| object_store::Error::Generic {
            store: "Failing",
            source: what.to_owned().into(),
        };
        if location.as_ref() == self.broken && !options.head {
            return Err(injected("the disk is on fire"));
        }
        let mut result = self.inner.get_opts(location, options).await?;
        if !location.as_ref().starts_with("nar/") {
            return Ok(result);
        }
        let payload = std::mem::replace(
            &mut result.payload,
            object_store::GetResultPayload::Stream(futures::stream::empty().boxed()),
        );
        let object_store::GetResultPayload::Stream(stream) = payload else {
            unreachable!("the in-memory store streams")
        };
        let after = self.after;
        let mut sent = 0usize;
        let cut = stream
            .flat_map(move |chunk| {
                let items: Vec<object_store::Result<bytes::Bytes>> = match chunk {
                    Ok(c) if sent + c.len() > after => {
                        let keep = after.saturating_sub(sent);
                        sent = after;
                        vec![
                            Ok(c.slice(..keep)),
                            Err(injected("the backend dropped the connection")),
                        ]
                    }
                    Ok(c) => {
                        sent += c.len();
                        vec![Ok(c)]
                    }
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(items)
            })
            .boxed();
        result.payload = object_store::GetResultPayload::Stream(cut);
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[test]
fn a_store_failure_mid_body_aborts_the_transfer_and_one_before_it_is_an_error_status() {
    use cachecore::server::{self, Config};
    use cachecore::store::{BinaryCache, WriteMode};

    let nar = format!("nar/{}.nar", "3".repeat(52));
    let broken = format!("nar/{}.nar", "4".repeat(52));
    let size = 3 << 20;
    let store = Failing {
        inner: object_store::memory::InMemory::new(),
        after: 1 << 20,
        broken: broken.clone(),
    };
    let cache = BinaryCache::from_object_store(std::sync::Arc::new(store), "failing://", false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = bytes::Bytes::from(pseudo_random_bytes(size, 7));
    rt.block_on(
        cache
            .objects()
            .put(&nar, data.clone(), WriteMode::Overwrite),
    )
    .unwrap();
    rt.block_on(
        cache
            .objects()
            .put(&broken, data.clone(), WriteMode::Overwrite),
    )
    .unwrap();
    let app = rt
        .block_on(server::router(cache, Config::default()))
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(server::serve(listener, app, std::future::pending()));

    // The headers (200, the full length) went out before the store failed: curl must see a
    // failed transfer (18: closed with bytes remaining), not a clean short file.
    let r = curl(&format!("{url}/{nar}"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(
        r.exit, 18,
        "curl exited {} for a transfer cut short",
        r.exit
    );
    assert!(r.body.len() < size);
    assert_eq!(r.body, &data[..r.body.len()]);
    // A range that ends before the failure is whole.
    let r = curl(&format!("{url}/{nar}"), &["-r", "0-999"]);
    assert_eq!((r.status, r.exit), (206, 0));
    assert_eq!(r.body, &data[..1000]);
    // Failing before any byte: an error status, never a 200.
    let r = curl(&format!("{url}/{broken}"), &[]);
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        !r.text().contains("fire"),
        "store errors stay in the server's log: {}",
        r.text()
    );
    let m = curl(&format!("{url}/metrics"), &[]).text();
    assert!(
        m.lines()
            .any(|l| l == "cachecore_serve_aborted_responses_total 1"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == "cachecore_serve_errors_total{class=\"aborted\",route=\"nar\"} 1"),
        "{m}"
    );
}

/// A FIFO at an object's key (anyone who can write into a shared cache directory can put one
/// there) must not freeze the server: opening it for reading would wait for a writer, forever,
/// on the thread that opened it. Every read of it (GET, HEAD, a range, a file under `/serve/`)
/// is answered with an error at once, and `/health` keeps answering between them. curl's time
/// limit turns a hang into a failure.
#[test]
fn a_fifo_at_an_object_key_is_refused_at_once_and_the_server_keeps_answering() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("hello"), b"hello\n").unwrap();
    let cache = tmp.path().join("cache");
    let path = String::from_utf8(cachecore_ok(
        &["push", path_str(&cache), "--add", path_str(&src), "--quiet"],
        b"",
    ))
    .unwrap()
    .trim()
    .to_owned();
    let hash = hash_part(&path).to_owned();
    let narinfo = format!("{hash}.narinfo");
    let listing = format!("{hash}.ls");
    let nar = narinfo_field(&fs::read_to_string(cache.join(&narinfo)).unwrap(), "URL");
    let base = path.rsplit('/').next().unwrap().to_owned();
    let server = Serve::start(path_str(&cache), &[]);
    let limit = ["--max-time", "10"];
    let healthy = |after: &str| {
        let r = curl(&format!("{}/health", server.url), &limit);
        assert_eq!((r.exit, r.status), (0, 200), "/health after {after}: {r:?}");
    };
    // Before: the path is served.
    let r = curl(&format!("{}/serve/{base}/hello", server.url), &limit);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");

    let fifo = |key: &str| {
        fs::remove_file(cache.join(key)).unwrap();
        nix_ok(Command::new("mkfifo").arg(cache.join(key)), b"");
    };
    let refused = |what: &str, r: &Reply| {
        assert_eq!(r.exit, 0, "{what}: curl got no answer in time: {r:?}");
        assert!(r.status >= 500, "{what}: {r:?}");
        healthy(what);
    };
    fifo(&listing);
    let r = curl(&format!("{}/{listing}", server.url), &limit);
    refused("GET of a FIFO listing", &r);
    let r = curl(&format!("{}/serve/{base}/hello", server.url), &limit);
    refused("/serve/ with a FIFO listing", &r);

    fifo(&nar);
    let r = curl(&format!("{}/{nar}", server.url), &limit);
    refused("GET of a FIFO NAR", &r);
    let r = curl(
        &format!("{}/{nar}", server.url),
        &[&limit[..], &["-r", "0-9"]].concat(),
    );
    refused("ranged GET of a FIFO NAR", &r);

    fifo(&narinfo);
    for _ in 0..3 {
        let r = curl(&format!("{}/{narinfo}", server.url), &limit);
        refused("GET of a FIFO narinfo", &r);
    }
    let r = curl(
        &format!("{}/{narinfo}", server.url),
        &[&limit[..], &["-I"]].concat(),
    );
    refused("HEAD of a FIFO narinfo", &r);
    let r = curl(&format!("{}/serve/{base}/hello", server.url), &limit);
    refused("/serve/ with a FIFO narinfo", &r);
}

/// A tree of `files` text-like files of 2 MiB (zstd packs them about 3:1) under `a/`, and
/// `m/needle.txt` (1 KiB) after them in NAR order; returns the needle.
fn big_tree(root: &Path, files: usize) -> Vec<u8> {
    let mut rng = Xorshift::new(0);
    let mut text = |len: usize| text_bytes(&mut rng, len);
    fs::create_dir_all(root.join("a")).unwrap();
    for i in 0..files {
        fs::write(root.join("a").join(format!("lib{i:03}.py")), text(2 << 20)).unwrap();
    }
    fs::create_dir_all(root.join("m/sub")).unwrap();
    let needle = text(1024);
    fs::write(root.join("m/needle.txt"), &needle).unwrap();
    fs::write(root.join("m/page.html"), "<script>alert(1)</script>").unwrap();
    std::os::unix::fs::symlink("needle.txt", root.join("m/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("m/outside")).unwrap();
    needle
}

/// The one NAR object in the cache directory `cache`: its key and size.
fn the_nar_object(cache: &Path) -> (String, u64) {
    let key = files_under(cache)
        .into_iter()
        // Not its signed frame digests (`nar/<hash>.frames`).
        .find(|k| k.starts_with("nar/") && !k.ends_with(".frames"))
        .unwrap();
    let size = fs::metadata(cache.join(&key)).unwrap().len();
    (key, size)
}

/// The bytes of NAR objects `origin` sent since its counts were reset, and all it sent.
fn nar_bytes_served(
    origin: &common::http_server::HttpServer,
) -> (u64, std::collections::BTreeMap<String, (u64, u64)>) {
    let served = origin.served();
    let nar = served
        .iter()
        .filter(|(k, _)| k.starts_with("nar/") && !k.ends_with(".frames"))
        .map(|(_, (_, bytes))| bytes)
        .sum();
    (nar, served)
}

#[test]
fn serve_reads_one_file_out_of_a_large_nar_without_fetching_the_nar() {
    let tmp = tempdir();
    let (tree, cache) = (tmp.path().join("big-tree"), tmp.path().join("cache"));
    let needle = big_tree(&tree, 40);
    let base = push_tree(&cache, &tree, &[]);
    let (nar_object, nar_bytes) = the_nar_object(&cache);

    // The server reads the cache over plain HTTP, from a server that counts what it sends.
    let origin = common::http_server::HttpServer::serve(&cache);
    let serve = Serve::start(&origin.url(), &[]);
    origin.reset_counts();

    let file = curl(&format!("{}/serve/{base}/m/needle.txt", serve.url), &[]);
    assert_eq!(file.status, 200, "{}", file.text());
    assert_eq!(file.body, needle);
    assert_eq!(
        file.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(file.header("content-length"), Some("1024"));
    let (fetched, served) = nar_bytes_served(&origin);
    assert!(
        fetched * 10 < nar_bytes,
        "the server fetched {fetched} of the NAR's {nar_bytes} bytes to serve a 1 KiB file: {served:?}"
    );

    // The large NAR itself (streamed by push, so named nar/<NarHash>-<unique>.nar.zst) is
    // served whole, as the narinfo names it.
    let narinfo = curl(&format!("{}/{}.narinfo", serve.url, &base[..32]), &[]);
    assert_eq!(narinfo.status, 200, "{}", narinfo.text());
    let url = narinfo_field(&narinfo.text(), "URL");
    assert_eq!(url, nar_object);
    let nar = curl(&format!("{}/{url}", serve.url), &[]);
    assert_eq!(
        (nar.status, nar.body.len() as u64),
        (200, nar_bytes),
        "{}",
        nar.text()
    );

    // A directory: a redirect to its URL with a slash, then an index linking its entries.
    let dir = curl(&format!("{}/serve/{base}/m", serve.url), &[]);
    assert_eq!(dir.status, 302);
    assert_eq!(dir.header("location"), Some(&*format!("/serve/{base}/m/")));
    let index = curl(&format!("{}/serve/{base}/m/", serve.url), &[]);
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for entry in [
        "href=\"needle.txt\"",
        "href=\"sub/\"",
        "1024 bytes",
        "→ /etc/passwd",
    ] {
        assert!(
            index.text().contains(entry),
            "no {entry} in the index:\n{}",
            index.text()
        );
    }

    // Symlinks: inside the path a redirect, outside the store a 404.
    let link = curl(&format!("{}/serve/{base}/m/link", serve.url), &[]);
    assert_eq!(
        (link.status, link.header("location")),
        (302, Some(&*format!("/serve/{base}/m/needle.txt")))
    );
    assert_eq!(
        curl(&format!("{}/serve/{base}/m/outside", serve.url), &[]).status,
        404
    );

    // HTML out of a store path is sandboxed: no script runs with the server's origin.
    let page = curl(&format!("{}/serve/{base}/m/page.html", serve.url), &[]);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-security-policy"), Some("sandbox"));

    // Absent files and paths, and names that are no store path, are 404s with a reason.
    for (what, status) in [
        (format!("/serve/{base}/m/absent"), 404),
        (format!("/serve/{base}/m/../../etc/passwd"), 404),
        (
            "/serve/00000000000000000000000000000000-absent/x".to_owned(),
            404,
        ),
        ("/serve/not-a-store-path".to_owned(), 404),
    ] {
        let r = curl(&format!("{}{what}", serve.url), &["--path-as-is"]);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert!(!r.text().trim().is_empty(), "{what}: no reason given");
    }
}

/// The value of the Prometheus sample `name{labels}` on a server's /metrics (0 when absent).
fn metric(url: &str, sample: &str) -> u64 {
    let page = curl(&format!("{url}/metrics"), &[]);
    page.text()
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Eight clients ask `proxy` for `key` (missing from its store) while `gate` holds the
/// upstream's answer to the lookup: only once all eight wait is the answer let go. While they
/// wait, one fill runs and the upstream was asked once; then all eight get the narinfo, and one
/// lookup hit is counted.
fn eight_clients_share_one_fill(proxy: &Serve, gate: &common::gate::Gate, key: &str) {
    let url = format!("{}/{key}", proxy.url);
    let clients = std::thread::spawn(move || curl_at_once(&url, 8));
    gate.wait_held(1, Duration::from_secs(60));
    let started = std::time::Instant::now();
    while metric(&proxy.url, "cachecore_serve_upstream_waiting_requests") < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(60) && !clients.is_finished(),
            "eight clients did not all wait for the fill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        metric(&proxy.url, "cachecore_serve_upstream_fills_running"),
        1,
        "eight waiting requests, one fill"
    );
    assert_eq!(gate.held(), 1, "the upstream was asked more than once");
    gate.open();
    for r in clients.join().unwrap() {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let hits = r#"cachecore_serve_upstream_lookups_total{result="hit",upstream="0"}"#;
    assert_eq!(metric(&proxy.url, hits), 1, "one fill for eight requests");
    assert_eq!(
        metric(&proxy.url, "cachecore_serve_upstream_waiting_requests"),
        0
    );
}

#[test]
fn a_pull_through_proxy_fills_from_its_upstream_checks_it_and_outlives_it() {
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    let root = closure.last().unwrap();
    let upstream = Serve::start(path_str(&cache), &[]);
    // The upstream's answer to the root's narinfo is held until the test lets it go.
    let lookup = format!("GET /{}.narinfo ", hash_part(root));
    let gate = common::gate::Gate::start(upstream.url.strip_prefix("http://").unwrap());
    gate.hold(common::gate::Stop::Request, move |r| {
        r.line.starts_with(&lookup)
    });
    let local = new_cache_dir(tmp.path(), "proxy-store");
    let proxy = Serve::start(
        path_str(&local),
        &["--upstream", &gate.url(), "--upstream-key", &public],
    );

    // Eight clients ask for the root's narinfo at once: one fill, from the upstream.
    eight_clients_share_one_fill(&proxy, &gate, &format!("{}.narinfo", hash_part(root)));

    // What was stored is the whole closure, checked: cachecore verify agrees.
    cachecore_ok(&["verify", path_str(&local), "--trusted-key", &public], b"");

    // Real Nix substitutes through the proxy, signatures required.
    let first = tmp.path().join("first");
    fs::create_dir_all(&first).unwrap();
    assert_nix_substitutes(&proxy.url, &first, &closure, &public);

    // A path the upstream lacks is a 404, and a miss in the metrics.
    let absent = curl(
        &format!("{}/00000000000000000000000000000000.narinfo", proxy.url),
        &[],
    );
    assert_eq!(absent.status, 404);
    let misses = r#"cachecore_serve_upstream_lookups_total{result="miss",upstream="0"}"#;
    assert!(metric(&proxy.url, misses) >= 1);

    // The upstream stops: what the proxy holds is still served, to Nix too.
    drop(upstream);
    let second = tmp.path().join("second");
    fs::create_dir_all(&second).unwrap();
    assert_nix_substitutes(&proxy.url, &second, &closure, &public);
    let down = curl(
        &format!("{}/11111111111111111111111111111111.narinfo", proxy.url),
        &[],
    );
    assert_eq!(
        down.status,
        404,
        "an upstream that is down is a miss: {}",
        down.text()
    );
}

/// An upstream that does not answer within `--upstream-timeout` is a miss: the client gets a
/// 404 after the timeout (held by a gate, the upstream's answer never comes in time), marked
/// `no-cache` so no CDN answers with it without asking again, and counted as an error of that upstream. The 404 is not
/// remembered: once the upstream answers, the next request fills the path, and the narinfo is
/// served with `max-age=300`.
#[test]
fn an_upstream_that_times_out_is_a_miss_and_the_404_is_not_kept() {
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    let root = closure.last().unwrap();
    let upstream = Serve::start(path_str(&cache), &[]);
    let lookup = format!("GET /{}.narinfo ", hash_part(root));
    let gate = common::gate::Gate::start(upstream.url.strip_prefix("http://").unwrap());
    gate.hold(common::gate::Stop::Request, move |r| {
        r.line.starts_with(&lookup)
    });
    let local = new_cache_dir(tmp.path(), "proxy-store");
    let proxy = Serve::start(
        path_str(&local),
        &[
            "--upstream",
            &gate.url(),
            "--upstream-key",
            &public,
            "--upstream-timeout",
            "1",
        ],
    );
    let url = format!("{}/{}.narinfo", proxy.url, hash_part(root));
    let started = std::time::Instant::now();
    let missed = curl(&url, &[]);
    assert_eq!(missed.status, 404, "{}", missed.text());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "answered before the upstream timed out"
    );
    assert_eq!(
        gate.held(),
        1,
        "the upstream was asked, and has not answered"
    );
    // No cache may answer with it without asking again.
    assert_eq!(missed.header("cache-control"), Some("no-cache"));
    let errors = r#"cachecore_serve_upstream_lookups_total{result="error",upstream="0"}"#;
    assert_eq!(metric(&proxy.url, errors), 1, "the timeout is counted");

    // The upstream answers again: once its back-off (2 s after a failure) is over, the same
    // request is filled, not answered from a kept 404.
    gate.open();
    let filled = loop {
        let r = curl(&url, &[]);
        if r.status != 404 || started.elapsed() > Duration::from_secs(60) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(filled.status, 200, "{}", filled.text());
    assert_eq!(filled.header("cache-control"), Some("public, max-age=300"));
    let hits = r#"cachecore_serve_upstream_lookups_total{result="hit",upstream="0"}"#;
    assert_eq!(metric(&proxy.url, hits), 1);
}

#[test]
fn a_proxy_stores_nothing_from_an_upstream_signed_by_a_key_it_does_not_trust() {
    let tmp = tempdir();
    let (cache, closure, _public) = pushed_cache(tmp.path());
    let (_, other) = nix_generate_key(tmp.path(), "not-the-signer-1");
    let upstream = Serve::start(path_str(&cache), &[]);
    let local = new_cache_dir(tmp.path(), "proxy-store");
    let proxy = Serve::start(
        path_str(&local),
        &["--upstream", &upstream.url, "--upstream-key", &other],
    );
    let r = curl(
        &format!(
            "{}/{}.narinfo",
            proxy.url,
            hash_part(closure.last().unwrap())
        ),
        &[],
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let errors = r#"cachecore_serve_upstream_lookups_total{result="error",upstream="0"}"#;
    assert_eq!(metric(&proxy.url, errors), 1);
    let stored: Vec<String> = files_under(&local)
        .into_iter()
        .filter(|f| f != "nix-cache-info")
        .collect();
    assert!(stored.is_empty(), "the proxy stored {stored:?}");

    // Without any upstream key, serve refuses to start, saying why.
    let out = cachecore_output(
        &["serve", path_str(&local), "--upstream", &upstream.url],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no trusted key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn each_upstream_is_checked_against_the_keys_given_after_it() {
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    let (_, other) = nix_generate_key(tmp.path(), "not-the-signer-2");
    let first = Serve::start(path_str(&cache), &[]);
    let second = Serve::start(path_str(&cache), &[]);
    let local = new_cache_dir(tmp.path(), "proxy-store");
    // The same cache twice: through the first with a key that did not sign it, through the
    // second with the one that did.
    let proxy = Serve::start(
        path_str(&local),
        &[
            "--upstream",
            &first.url,
            "--upstream-key",
            &other,
            "--upstream",
            &second.url,
            "--upstream-key",
            &public,
        ],
    );
    let root = closure.last().unwrap();
    let r = curl(&format!("{}/{}.narinfo", proxy.url, hash_part(root)), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = r#"cachecore_serve_upstream_lookups_total{result="error",upstream="0"}"#;
    let filled = r#"cachecore_serve_upstream_lookups_total{result="hit",upstream="1"}"#;
    assert_eq!(metric(&proxy.url, refused), 1, "the first upstream's key");
    assert_eq!(metric(&proxy.url, filled), 1, "the second upstream's key");
    cachecore_ok(&["verify", path_str(&local), "--trusted-key", &public], b"");

    // An upstream with no key of its own (a key before every --upstream is everyone's).
    let out = cachecore_output(
        &[
            "serve",
            path_str(&local),
            "--upstream",
            &first.url,
            "--upstream-key",
            &public,
            "--upstream",
            &second.url,
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("--upstream {} has no trusted key", second.url)),
        "{stderr}"
    );
}

/// `cachecore ARGS` with `garage`'s credentials, which must succeed.
fn on_garage_ok(garage: &common::garage::Garage, args: &[&str]) {
    let out = cachecore_command()
        .args(args)
        .envs(garage.env())
        .output()
        .unwrap();
    assert_cachecore_ok(&out, args);
}

#[test]
fn two_servers_on_one_garage_bucket_behave_as_one_cache() {
    let garage = common::garage::Garage::start();
    let store = garage.url("replicas");
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap();
    let (secret, public) = nix_generate_key(tmp.path(), "serve-replicas-1");
    let (token_file, netrc) = credentials(tmp.path(), "good", "replica-token-1");
    let token = ["--token-file", path_str(&token_file)];
    let a = Serve::start_with_env(&store, &token, &garage.env());
    let b = Serve::start_with_env(&store, &token, &garage.env());

    // Uploaded through one, read through the other, by real Nix.
    let out = nix_copy_to(&a.url, &netrc, &secret, root, &tmp.path().join("c1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nix_substitutes(&b.url, tmp.path(), &closure, &public);
    // Uploading again through the other one is accepted (identical objects) and changes nothing.
    let out = nix_copy_to(&b.url, &netrc, &secret, root, &tmp.path().join("c2"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    on_garage_ok(&garage, &["verify", &store, "--trusted-key", &public]);

    // A narinfo deleted behind the servers' backs: one that read it lately answers it from
    // memory for --remote-read-ttl seconds, one started with 0 asks the bucket every time.
    let listen = ["--listen", "127.0.0.1:0"];
    let c = Serve::spawn(
        &[
            "serve",
            &store,
            listen[0],
            listen[1],
            "--remote-read-ttl",
            "0",
        ],
        &garage.env(),
    );
    let d = Serve::spawn(
        &[
            "serve",
            &store,
            listen[0],
            listen[1],
            "--remote-read-ttl",
            "600",
        ],
        &garage.env(),
    );
    let narinfo = format!("{}.narinfo", hash_part(root));
    let kept = curl(&format!("{}/{narinfo}", d.url), &[]);
    assert_eq!(kept.status, 200);
    assert_eq!(curl(&format!("{}/{narinfo}", c.url), &[]).status, 200);
    garage.delete_object(&format!("replicas/{narinfo}"));
    let again = curl(&format!("{}/{narinfo}", d.url), &[]);
    assert_eq!((again.status, &again.body), (200, &kept.body));
    // A conditional GET or a HEAD sees the same kept object, not the bucket's answer.
    let etag = kept.header("etag").unwrap();
    let if_none = format!("If-None-Match: {etag}");
    let conditional = curl(&format!("{}/{narinfo}", d.url), &["-H", &if_none]);
    assert_eq!(conditional.status, 304, "{}", conditional.text());
    let head = curl(&format!("{}/{narinfo}", d.url), &["-I"]);
    assert_eq!((head.status, head.header("etag")), (200, Some(etag)));
    assert_eq!(curl(&format!("{}/{narinfo}", c.url), &[]).status, 404);
}

#[test]
fn serve_flags_set_what_they_name() {
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    let (_, reader_netrc) = credentials(tmp.path(), "reader", "read-token-1");
    let read_token = tmp.path().join("reader.token");
    let (write_token, _) = credentials(tmp.path(), "writer", "write-token-1");
    let log = tmp.path().join("serve.log");
    let upstream = Serve::start(path_str(&cache), &[]);
    let serve = Serve::spawn_logging_to(
        &[
            "serve",
            path_str(&new_cache_dir(tmp.path(), "proxy")),
            "--listen",
            "127.0.0.1:0",
            "--priority",
            "7",
            "--public-key",
            &public,
            "--read-token-file",
            path_str(&read_token),
            "--token-file",
            path_str(&write_token),
            "--max-upload-size",
            "1000",
            "--upload-jobs",
            "1",
            "--upload-timeout",
            "5",
            "--log-format",
            "json",
            "--upstream",
            &upstream.url,
            "--upstream-key",
            &public,
            "--upstream-timeout",
            "3",
        ],
        &[("RUST_LOG".to_owned(), "info".to_owned())],
        Stdio::from(fs::File::create(&log).unwrap()),
    );
    let url = &serve.url;
    let auth = ["-u", "nix:read-token-1"];
    // --read-token-file: reads need the token.
    assert_eq!(curl(&format!("{url}/nix-cache-info"), &[]).status, 401);
    // --priority: announced in nix-cache-info.
    let info = curl(&format!("{url}/nix-cache-info"), &auth);
    assert!(info.text().contains("Priority: 7"), "{}", info.text());
    // --public-key: on the landing page, as the nix.conf line.
    let page = curl(&format!("{url}/"), &auth);
    assert!(page.text().contains(&public), "{}", page.text());
    // --upstream/--upstream-key: the proxy fills from it; Nix reads through it with netrc.
    let root = closure.last().unwrap();
    let r = curl(&format!("{url}/{}.narinfo", hash_part(root)), &auth);
    assert_eq!(r.status, 200, "{}", r.text());
    let out = nix_output(
        nix_command("nix")
            // Its own narinfo cache: one shared between runs could answer without asking.
            .env("XDG_CACHE_HOME", tmp.path().join("path-info-cache"))
            .args(["path-info", "--store"])
            .arg(url)
            .arg(root)
            .args(["--option", "netrc-file"])
            .arg(&reader_netrc),
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --max-upload-size: a larger NAR upload is refused before it is stored.
    let big = format!("{url}/nar/{}.nar", "1".repeat(52));
    let r = curl(
        &big,
        &[
            "-X",
            "PUT",
            "--data-binary",
            &"x".repeat(2000),
            "-u",
            "nix:write-token-1",
        ],
    );
    assert_eq!(r.status, 413, "{}", r.text());
    // --upload-timeout: an upload that sends no body is given up (408), not waited for.
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    use std::io::{Read as _, Write as _};
    write!(
        s,
        "PUT /nar/{}.nar HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer write-token-1\r\nContent-Length: 100\r\n\r\n",
        "0".repeat(52)
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // --upload-jobs 1 is accepted (the 413 and the 408 above each held its one slot in
    // turn); that a second upload queues behind a first is not asserted here.
    // --log-format json: one JSON object per request on stderr.
    drop(serve);
    let text = fs::read_to_string(&log).unwrap();
    let requests: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("cachecore::serve::request"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(requests.len() >= 6, "{text}");
    assert!(
        requests.iter().any(|r| r["fields"]["status"] == 413),
        "{text}"
    );
}

#[test]
fn cachecore_push_through_serve_needs_no_bucket_credentials_and_the_server_signs() {
    let garage = common::garage::Garage::start();
    let store = garage.url("through-serve");
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    // A path whose NAR (random bytes, 24 MiB) streams in one chunked PUT of several parts.
    let big_dir = tmp.path().join("push-through-serve-big");
    fs::create_dir(&big_dir).unwrap();
    fs::write(big_dir.join("blob"), pseudo_random_bytes(24 << 20, 0x5e12e)).unwrap();
    let big = nix_store_add(&big_dir);
    let (secret, public) = nix_generate_key(tmp.path(), "serve-signs-1");
    let (token_file, _) = credentials(tmp.path(), "good", "push-token-1");
    let (wrong_token, _) = credentials(tmp.path(), "wrong", "push-token-2");
    // Only the server holds the bucket's credentials and the signing key.
    let serve = Serve::spawn(
        &[
            "serve",
            &store,
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            path_str(&token_file),
            "--key",
            path_str(&secret),
        ],
        &garage.env(),
    );
    let landing = curl(&format!("{}/", serve.url), &[]);
    assert!(
        landing.text().contains(&public),
        "the landing page does not show the server's public key"
    );

    // `cachecore push SERVER PATHS --token-file TOKEN`: its stderr, and whether it succeeded.
    let push = |paths: &[&str], token: &Path| {
        let mut args = vec!["push", serve.url.as_str()];
        args.extend(paths);
        args.extend(["--token-file", path_str(token)]);
        let out = cachecore_output(&args, b"");
        (
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    };
    let app = closure.last().unwrap().as_str();

    // A wrong token: one sentence that says so, and nothing in the bucket.
    let (stderr, ok) = push(&[&big], &wrong_token);
    assert!(!ok, "a push with a wrong token succeeded");
    assert!(
        stderr.contains("HTTP 403: the token offered for uploading is wrong"),
        "{stderr}"
    );
    let narinfo = curl(&format!("{}/{}.narinfo", serve.url, hash_part(&big)), &[]);
    assert_eq!(narinfo.status, 404, "a refused push published {big}");

    // The right token: unsigned by the client, signed by the server, substituted by Nix.
    let (stderr, ok) = push(&[app, &big], &token_file);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sent unsigned; the server signed them with its key {public}"
        )),
        "{stderr}"
    );
    assert_nix_substitutes(&serve.url, tmp.path(), &closure, &public);
    // The big path is content-addressed (nix-store --add), which Nix takes without a
    // signature: it is substituted, and its narinfo carries the server's signature.
    let res = nix_copy_from_checking_sigs(&serve.url, &tmp.path().join("big-store"), &big, &public);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let narinfo = curl(&format!("{}/{}.narinfo", serve.url, hash_part(&big)), &[]);
    assert!(
        narinfo.text().contains("Sig: serve-signs-1:"),
        "{}",
        narinfo.text()
    );
    on_garage_ok(&garage, &["verify", &store, "--trusted-key", &public]);
    // The big NAR went straight to the bucket by a presigned URL: the server took only the
    // small ones' bytes.
    let nar_bytes = r#"cachecore_serve_upload_body_bytes_total{route="nar"}"#;
    let through_server = metric(&serve.url, nar_bytes);
    assert!(
        through_server < 1 << 20,
        "{through_server} NAR bytes went through the server"
    );
    // Pushing again finds everything there.
    let (stderr, ok) = push(&[app, &big], &token_file);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("0 paths to transfer"), "{stderr}");

    // --no-direct-uploads: a large NAR's bytes go through the server (one chunked PUT).
    let other_dir = tmp.path().join("push-through-serve-big-2");
    fs::create_dir(&other_dir).unwrap();
    fs::write(
        other_dir.join("blob"),
        pseudo_random_bytes(16 << 20, 0x5e12f),
    )
    .unwrap();
    let other = nix_store_add(&other_dir);
    let relay = Serve::spawn(
        &[
            "serve",
            &store,
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            path_str(&token_file),
            "--key",
            path_str(&secret),
            "--no-direct-uploads",
        ],
        &garage.env(),
    );
    let out = cachecore_output(
        &[
            "push",
            &relay.url,
            &other,
            "--token-file",
            path_str(&token_file),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(metric(&relay.url, nar_bytes) >= 16 << 20);
    let res =
        nix_copy_from_checking_sigs(&serve.url, &tmp.path().join("other-store"), &other, &public);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

/// `chromium --headless ARGS URL` (Debian's Chromium, as root: no sandbox); its stdout and
/// stderr (where `--enable-logging=stderr` puts the page's console).
fn chromium_output(args: &[&str], url: &str, profile: &Path) -> (String, String) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("these tests need Chromium (apt-get install -y chromium): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium {args:?} {url} failed:\n{stderr}"
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// [`chromium_output`]'s stdout.
fn chromium(args: &[&str], url: &str, profile: &Path) -> String {
    chromium_output(args, url, profile).0
}

/// The text of `<pre id="nix-conf">…</pre>` in a DOM, with its entities decoded.
fn nix_conf_block(dom: &str) -> String {
    let start = dom
        .find("<pre id=\"nix-conf\">")
        .unwrap_or_else(|| panic!("no nix.conf block in the page:\n{dom}"))
        + "<pre id=\"nix-conf\">".len();
    let len = dom[start..].find("</pre>").unwrap();
    dom[start..start + len]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[test]
fn the_landing_page_renders_in_chromium_and_its_nix_conf_lines_work() {
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    let serve = Serve::start(path_str(&cache), &["--public-key", &public]);
    let page = format!("{}/", serve.url);
    // The totals are counted in the background: wait until the page shows them.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !curl(&page, &[]).text().contains("id=\"paths\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the landing page never showed its totals"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // What a browser renders: the nix.conf lines, the key, the totals.
    let profile = tmp.path().join("chromium-profile");
    let dom = chromium(&["--dump-dom"], &page, &profile);
    let conf = nix_conf_block(&dom);
    assert_eq!(
        conf,
        format!(
            "extra-substituters = {}\nextra-trusted-public-keys = {public}\n",
            serve.url
        ),
        "the nix.conf lines the page shows"
    );
    assert!(
        dom.contains(&format!(
            "extra-substituters = [ \"{}\" ];\n  extra-trusted-public-keys = [ \"{public}\" ];",
            serve.url
        )),
        "the NixOS snippet: {dom}"
    );
    // Pasted into a Nix that has cache.nixos.org, the lines add to it rather than replace it.
    let with_nixos_org = tmp.path().join("nix-conf-with-cache-nixos-org");
    fs::create_dir(&with_nixos_org).unwrap();
    fs::write(
        with_nixos_org.join("nix.conf"),
        format!("substituters = https://cache.nixos.org\ntrusted-public-keys = cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\n{conf}"),
    )
    .unwrap();
    let mut show = nix_command("nix");
    show.env("NIX_CONF_DIR", &with_nixos_org).arg("show-config");
    let shown = String::from_utf8_lossy(&nix_output(&mut show, b"").stdout).into_owned();
    let setting = |name: &str| {
        shown
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        setting("substituters").contains("https://cache.nixos.org")
            && setting("substituters").contains(&serve.url),
        "{shown}"
    );
    assert!(
        setting("trusted-public-keys").contains("cache.nixos.org-1:")
            && setting("trusted-public-keys").contains(&public),
        "{shown}"
    );
    assert!(
        dom.contains(&format!("<td id=\"paths\">{}</td>", closure.len())),
        "{dom}"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("landing-page.png");
    let _ = fs::remove_file(&shot);
    chromium(
        &[
            "--window-size=1024,900",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
        &profile,
    );
    let png = fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "the screenshot is not a rendered page ({} bytes)",
        png.len()
    );
    println!("landing page screenshot: {}", shot.display());

    // The lines, pasted into a nix.conf, make Nix substitute the closure (signatures
    // required) into a fresh store.
    let conf_dir = tmp.path().join("nix-conf");
    fs::create_dir(&conf_dir).unwrap();
    let system_conf = fs::read_to_string("/etc/nix/nix.conf").unwrap_or_default();
    fs::write(
        conf_dir.join("nix.conf"),
        format!("{system_conf}\n{conf}require-sigs = true\n"),
    )
    .unwrap();
    let fresh = tmp.path().join("pasted-store");
    let mut build = nix_command("nix");
    build
        .env("NIX_CONF_DIR", &conf_dir)
        .env("XDG_CACHE_HOME", tmp.path().join("pasted-cache"))
        .args(["build", "--no-link", "--store"])
        .arg(&fresh)
        .arg(closure.last().unwrap());
    let out = nix_output(&mut build, b"");
    assert!(
        out.status.success(),
        "nix build with the pasted lines failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &closure {
        let info = nix_path_info(Some(&fresh), p);
        assert!(info["narHash"].is_string(), "{p} was not substituted");
    }
}

#[test]
fn with_redirect_nars_nix_downloads_the_nars_from_the_bucket_itself() {
    let garage = common::garage::Garage::start();
    let store = garage.url("redirects");
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    on_garage_ok(
        &garage,
        &["copy", path_str(&cache), &store, "--all", "--quiet"],
    );
    let serve = Serve::spawn(
        &[
            "serve",
            &store,
            "--listen",
            "127.0.0.1:0",
            "--redirect-nars",
        ],
        &garage.env(),
    );
    assert_nix_substitutes(&serve.url, tmp.path(), &closure, &public);
    // Nix read the narinfos from the server and every NAR from the bucket.
    let sent = |route: &str| {
        let sample = format!("cachecore_serve_response_body_bytes_total{{route=\"{route}\"}}");
        metric(&serve.url, &sample)
    };
    assert!(sent("narinfo") > 0);
    assert_eq!(sent("nar"), 0, "NAR bytes went through the server");

    // What curl sees: an uncacheable 307 to a presigned URL of the NAR; followed, it gives the
    // NAR, and ranges of it.
    let root = closure.last().unwrap();
    let info = curl(&format!("{}/{}.narinfo", serve.url, hash_part(root)), &[]).text();
    let nar = format!("{}/{}", serve.url, narinfo_field(&info, "URL"));
    let r = curl(&nar, &[]);
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let location = r.header("location").unwrap();
    assert!(
        location.contains("/nixcache/redirects/nar/") && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let whole = curl(&nar, &["-L"]);
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.body.len().to_string(),
        narinfo_field(&info, "FileSize")
    );
    let part = curl(&nar, &["-L", "-r", "2-9"]);
    assert_eq!((part.status, &part.body[..]), (206, &whole.body[2..10]));

    // A store that cannot sign URLs cannot redirect: refused at startup, in one sentence.
    let out = cachecore_output(
        &[
            "serve",
            path_str(&cache),
            "--listen",
            "127.0.0.1:0",
            "--redirect-nars",
        ],
        b"",
    );
    let error = assert_clean_error(&out, "serve --redirect-nars on a directory");
    assert!(error.contains("cannot sign URLs"), "{error}");
}

/// `cachecore push DIR --add TREE ARGS…`; the base name (`<hash>-<name>`) of the path pushed.
fn push_tree(cache: &Path, tree: &Path, extra: &[&str]) -> String {
    let mut args = vec!["push", path_str(cache), "--add", path_str(tree), "--quiet"];
    args.extend(extra);
    let out = String::from_utf8(cachecore_ok(&args, b"")).unwrap();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("/nix/store/"))
        .unwrap_or_else(|| panic!("push --add printed no store path: {out}"))
        .to_owned()
}

/// `name` with every byte but unreserved characters as `%XX`, as a browser sends a path segment.
fn url_segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn directory_redirects_and_index_links_encode_names_once() {
    let tmp = tempdir();
    let (tree, cache) = (tmp.path().join("tree"), tmp.path().join("cache"));
    // Names a URL must escape: a space, `%` (which must not become `%25` twice), `#` and `?`
    // (which would end the path), non-ASCII.
    let names = ["my dir", "100% #1?x=y", "ünï cödé", "a%20b"];
    for (i, name) in names.iter().enumerate() {
        fs::create_dir_all(tree.join(name).join("in side")).unwrap();
        fs::write(tree.join(name).join("f #1.txt"), format!("file {i}\n")).unwrap();
    }
    let base = push_tree(&cache, &tree, &[]);
    let serve = Serve::start(path_str(&cache), &[]);
    for (i, name) in names.iter().enumerate() {
        let dir_url = format!("{}/serve/{base}/{}", serve.url, url_segment(name));
        // The redirect names the same directory, with a slash.
        let r = curl(&dir_url, &[]);
        assert_eq!(r.status, 302, "{name:?}: {}", r.text());
        let location = r.header("location").unwrap().to_owned();
        assert_eq!(
            location,
            format!("/serve/{base}/{}/", url_segment(name)),
            "{name:?}"
        );
        // Followed by curl, it lands on the index.
        let index = curl(&dir_url, &["-L"]);
        assert_eq!(index.status, 200, "{name:?} → {location}: {}", index.text());
        assert!(
            index.text().contains("f #1.txt"),
            "{name:?}: {}",
            index.text()
        );
        // Every link of the index resolves, relative to the index's URL, to what it names.
        let file = curl(&format!("{dir_url}/f%20%231.txt"), &[]);
        assert_eq!(
            (file.status, file.text()),
            (200, format!("file {i}\n")),
            "{name:?}"
        );
        for href in ["f%20%231.txt", "in%20side/"] {
            assert!(
                index.text().contains(&format!("href=\"{href}\"")),
                "{name:?}: no link {href}: {}",
                index.text()
            );
            let linked = curl(&format!("{}{location}{href}", serve.url), &["-L"]);
            assert_eq!(linked.status, 200, "{name:?}/{href}: {}", linked.text());
        }
    }
}

#[test]
fn serve_reads_a_path_without_a_listing_once_not_once_a_request() {
    let tmp = tempdir();
    let (tree, cache) = (tmp.path().join("big-tree"), tmp.path().join("cache"));
    let needle = big_tree(&tree, 20);
    // As `nix copy` leaves a path: no `.ls`, so the listing must come from the NAR.
    let base = push_tree(&cache, &tree, &["--no-listing"]);
    assert!(
        !files_under(&cache).iter().any(|k| k.ends_with(".ls")),
        "{:?}",
        files_under(&cache)
    );
    let (_, nar_bytes) = the_nar_object(&cache);

    let origin = common::http_server::HttpServer::serve(&cache);
    let serve = Serve::start(&origin.url(), &[]);
    origin.reset_counts();
    let needle_url = format!("{}/serve/{base}/m/needle.txt", serve.url);
    // Four requests at once (one read of the NAR serves them all), then more, one by one.
    for r in curl_at_once(&needle_url, 4) {
        assert_eq!((r.status, &r.body), (200, &needle), "{}", r.text());
    }
    let r = curl(&needle_url, &[]);
    assert_eq!((r.status, &r.body), (200, &needle), "{}", r.text());
    let index = curl(&format!("{}/serve/{base}/m/", serve.url), &[]);
    assert_eq!(index.status, 200, "{}", index.text());
    assert!(index.text().contains("needle.txt"), "{}", index.text());

    // The NAR read whole once (for its listing), plus the frames holding the file each time:
    // each frame is about a tenth of the object.
    let (fetched, served) = nar_bytes_served(&origin);
    assert!(
        fetched >= nar_bytes && fetched < 2 * nar_bytes,
        "six requests fetched {fetched} bytes of a {nar_bytes}-byte NAR: {served:?}"
    );
}

/// An xz NAR cannot be read at random: without a kept copy, every request for a file
/// decompresses it from its start (a 10 KB `.nar.xz` unpacking to 64 MiB cost 0.2 s of CPU a
/// request). /serve/ fetches it once for its listing and once, checked, into its NAR cache, and
/// reads files from there.
#[test]
fn serve_reads_files_of_an_xz_nar_from_one_checked_copy() {
    let tmp = tempdir();
    let (tree, cache) = (tmp.path().join("big-tree"), tmp.path().join("cache"));
    let needle = big_tree(&tree, 4);
    let base = push_tree(&cache, &tree, &["--no-listing", "--compression", "xz"]);
    let (key, nar_bytes) = the_nar_object(&cache);
    assert!(key.ends_with(".nar.xz"), "{key}");

    let origin = common::http_server::HttpServer::serve(&cache);
    let kept = tmp.path().join("kept-nars");
    let serve = Serve::spawn(
        &[
            "serve",
            &origin.url(),
            "--listen",
            "127.0.0.1:0",
            "--nar-cache-dir",
            path_str(&kept),
            "--nar-cache-size",
            "64000000",
        ],
        &[],
    );
    origin.reset_counts();
    let needle_url = format!("{}/serve/{base}/m/needle.txt", serve.url);
    for r in curl_at_once(&needle_url, 4) {
        assert_eq!((r.status, &r.body), (200, &needle), "{}", r.text());
    }
    for _ in 0..4 {
        let r = curl(&needle_url, &[]);
        assert_eq!((r.status, &r.body), (200, &needle), "{}", r.text());
    }
    // Twice the NAR (listing, kept copy) and each request's look for a seek table at its end;
    // read from its start each time, it would be eight times.
    let (fetched, served) = nar_bytes_served(&origin);
    assert!(
        fetched < 3 * nar_bytes,
        "eight requests fetched {fetched} bytes of a {nar_bytes}-byte NAR: {served:?}"
    );
    let kept_files: Vec<_> = fs::read_dir(&kept).unwrap().flatten().collect();
    assert_eq!(kept_files.len(), 1, "{kept_files:?}");
}

#[test]
fn pages_load_nothing_frame_nowhere_and_no_body_is_sniffed() {
    let tmp = tempdir();
    let (tree, cache) = (tmp.path().join("tree"), tmp.path().join("cache"));
    fs::create_dir_all(tree.join("share")).unwrap();
    fs::write(tree.join("share/a.txt"), "a\n").unwrap();
    let base = push_tree(&cache, &tree, &[]);
    // A build log that looks like HTML: served as text, and said to be text only.
    let drv = format!("{}-x.drv", &base[..32]);
    fs::create_dir_all(cache.join("log")).unwrap();
    fs::write(
        cache.join("log").join(&drv),
        "<html><script>alert(document.domain)</script>\n",
    )
    .unwrap();
    let serve = Serve::start(path_str(&cache), &[]);

    // The pages the server writes: nothing loads or runs, no one frames them.
    for page in [
        format!("{}/", serve.url),
        format!("{}/serve/{base}/", serve.url),
    ] {
        let r = curl(&page, &[]);
        assert_eq!(r.status, 200, "{page}: {}", r.text());
        let csp = r.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ] {
            assert!(csp.contains(directive), "{page}: CSP {csp:?}");
        }
        assert!(!csp.contains("unsafe"), "{page}: CSP {csp:?}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{page}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{page}"
        );
        // Chromium renders them with the policy, and reports nothing it refused.
        let (dom, console) = chromium_output(
            &["--enable-logging=stderr", "--v=0", "--dump-dom"],
            &page,
            &tmp.path().join("chromium"),
        );
        assert!(dom.contains("</h1>"), "{page}: {dom}");
        assert!(
            !console.contains("Content Security Policy") && !console.contains("Refused"),
            "{page}: Chromium refused part of the page:\n{console}"
        );
    }

    // Logs and answers that echo the path asked for: text, and to be taken as text.
    for (what, status) in [
        (format!("/log/{drv}"), 200),
        ("/%3Cscript%3Ealert(1)%3C/script%3E".to_owned(), 404),
        (
            format!("/serve/{base}/%3Cscript%3Ealert(1)%3C/script%3E"),
            404,
        ),
        (
            "/serve/%3Cimg%20src=x%20onerror=alert(1)%3E".to_owned(),
            404,
        ),
        (format!("/{}.narinfo%3Cb%3E", &base[..32]), 404),
    ] {
        let r = curl(&format!("{}{what}", serve.url), &[]);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{what}"
        );
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
    }
}

#[test]
fn credentials_in_store_urls_never_reach_a_message() {
    let tmp = tempdir();
    let port = common::net::free_port(); // nothing listens there
    let aws = [
        ("AWS_ACCESS_KEY_ID", "GKtest"),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret-we-look-for"),
    ];
    // Every spelling the URL parser takes: a password, a user name alone (a token), both
    // inside endpoint=, with or without its scheme, a parameter no store URL has, a fragment.
    let urls = [
        format!("http://user:SEKRET1@127.0.0.1:{port}/"),
        format!("https://SEKRET2@127.0.0.1:{port}/nix"),
        format!("s3://bucket?endpoint=http://key:SEKRET3@127.0.0.1:{port}&region=garage"),
        format!("s3://bucket?endpoint=http://SEKRET4@127.0.0.1:{port}&region=garage"),
        format!("s3://bucket?endpoint=key:SEKRET5@127.0.0.1:{port}&region=garage"),
        "s3://bucket?aws_secret_access_key=SEKRET6&region=garage".to_owned(),
        format!("http://127.0.0.1:{port}/?token=SEKRET7"),
        format!("http://u:SEKRET8@127.0.0.1:{port}/#x"),
        format!("s3://bucket?endpoint=http%3A%2F%2Fk%3ASEKRET9%40127.0.0.1%3A{port}&region=garage"),
    ];
    for url in &urls {
        for args in [
            vec!["ls", url.as_str()],
            vec!["info", url.as_str(), "--verbose"],
        ] {
            let out = cachecore_command()
                .args(&args)
                .envs(aws)
                .env("RUST_LOG", "debug")
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{args:?}: {all}");
            assert_no_panic(&out, &args.join(" "));
            assert!(
                !all.contains("SEKRET"),
                "{args:?} shows a credential:\n{all}"
            );
        }
    }

    // Credentials in an http(s):// URL are sent as basic auth (as Nix's netrc does): a cache
    // that needs a read token reads with it in the URL, and refuses a wrong one unshown.
    let cache = tmp.path().join("private");
    let tree = tmp.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), "a\n").unwrap();
    let base = push_tree(&cache, &tree, &[]);
    let (token_file, _) = credentials(tmp.path(), "reader", "SEKRET-READ");
    let private = Serve::start(
        path_str(&cache),
        &["--read-token-file", path_str(&token_file)],
    );
    let with = |user_pass: &str| private.url.replacen("://", &format!("://{user_pass}@"), 1);
    let file = format!("{base}/a");
    assert_eq!(
        cachecore_str(&["cat", &with("nix:SEKRET-READ"), &file]),
        "a"
    );
    let out = cachecore_output(&["cat", &with("nix:SEKRET-WRONG"), &file, "--verbose"], b"");
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && shown.contains("nix:***@"),
        "{shown}"
    );
    assert!(!shown.contains("SEKRET"), "{shown}");

    // A server whose upstream URL carries credentials: not in its log, its answers, its pages.
    let log_path = tmp.path().join("serve.log");
    let log = fs::File::create(&log_path).unwrap();
    let (_, public) = nix_generate_key(tmp.path(), "upstream-1");
    let upstream = format!("http://proxy-user:SEKRET10@127.0.0.1:{port}/");
    let serve = Serve::spawn_logging_to(
        &[
            "serve",
            path_str(&new_cache_dir(tmp.path(), "proxy")),
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--upstream-key",
            &public,
        ],
        &[("RUST_LOG".to_owned(), "debug".to_owned())],
        Stdio::from(log),
    );
    let mut seen = String::new();
    for what in [
        "/".to_owned(),
        "/00000000000000000000000000000000.narinfo".to_owned(),
        "/serve/00000000000000000000000000000000-x/y".to_owned(),
        "/metrics".to_owned(),
    ] {
        let r = curl(&format!("{}{what}", serve.url), &[]);
        seen.push_str(&format!(
            "{what}: {} {:?}\n{}\n",
            r.status,
            r.headers,
            r.text()
        ));
    }
    drop(serve);
    seen.push_str(&fs::read_to_string(&log_path).unwrap());
    assert!(
        seen.contains(&format!("proxy-user:***@127.0.0.1:{port}")),
        "the upstream was never asked:\n{seen}"
    );
    assert!(
        !seen.contains("SEKRET"),
        "the server shows a credential:\n{seen}"
    );
}

// ---------------------------------------------------------------------------------------------
// Connections: idle ones are closed, their number is capped, descriptors never run out
// ---------------------------------------------------------------------------------------------

/// A raw TCP connection to a server started by [`Serve`].
fn connect(serve: &Serve) -> std::net::TcpStream {
    std::net::TcpStream::connect(serve.url.trim_start_matches("http://")).unwrap()
}

/// Reads `stream` (dropping what arrives) until the server closes it: how long that took, or
/// `None` when it was still open after `limit`.
fn closed_within(mut stream: &std::net::TcpStream, limit: Duration) -> Option<Duration> {
    use std::io::Read as _;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(start.elapsed())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading from the server: {e}"),
        }
    }
}

/// The HTTP/2 connection preface and an empty SETTINGS frame: all that a client that never
/// sends a request says.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn idle_connections_are_closed_over_http1_and_http2() {
    let tmp = tempdir();
    let cache = new_cache_dir(tmp.path(), "cache");
    let args = [
        "serve",
        path_str(&cache),
        "--listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "2",
    ];
    let serve = Serve::spawn(&args, &[]);
    let limit = Duration::from_secs(10);
    // A socket that never sends anything.
    let mut silent = connect(&serve);
    // An HTTP/2 connection that only said hello.
    let mut h2 = connect(&serve);
    std::io::Write::write_all(&mut h2, H2_PREFACE_AND_SETTINGS).unwrap();
    // A keep-alive connection after one request.
    let mut kept = connect(&serve);
    std::io::Write::write_all(&mut kept, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    for (what, stream) in [
        ("a silent socket", &mut silent),
        ("an HTTP/2 connection without a request", &mut h2),
        ("an idle keep-alive connection", &mut kept),
    ] {
        let took = closed_within(stream, limit)
            .unwrap_or_else(|| panic!("{what} was still open after {limit:?}"));
        // Closed for idleness (2 s, plus 1 s for an HTTP/2 goodbye), not at once.
        assert!(
            took < Duration::from_secs(5),
            "{what} closed after {took:?}"
        );
    }
    let health = curl(&format!("{}/health", serve.url), &[]);
    assert_eq!(health.status, 200);
}

#[test]
fn at_the_connection_cap_idle_sockets_make_room_and_busy_ones_get_a_503() {
    let tmp = tempdir();
    let (token, _) = credentials(tmp.path(), "writer", "write-token-2");
    let cache = new_cache_dir(tmp.path(), "cache");
    let serve = Serve::spawn(
        &[
            "serve",
            path_str(&cache),
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "4",
            "--idle-timeout",
            "600",
            "--token-file",
            path_str(&token),
        ],
        &[],
    );
    // Fifty sockets that send nothing, far over the cap of 4: the longest-idle ones are closed
    // to make room, and requests are still answered at once.
    let idle: Vec<_> = (0..50).map(|_| connect(&serve)).collect();
    let start = std::time::Instant::now();
    let health = curl(&format!("{}/health", serve.url), &["--max-time", "10"]);
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let closed = idle
        .iter()
        .filter(|s| closed_within(s, Duration::from_millis(500)).is_some())
        .count();
    assert!(closed >= 46, "only {closed} of 50 idle sockets were closed");
    drop(idle);
    drop(serve);

    // Four uploads in flight, each stalled after 3 bytes: every connection is busy, so a fifth
    // is answered 503 with Retry-After (rather than nothing) and closed. (A server of its own:
    // no idle socket of the above is left for the fifth to take the place of.)
    let serve = Serve::spawn(
        &[
            "serve",
            path_str(&cache),
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "4",
            "--token-file",
            path_str(&token),
        ],
        &[],
    );
    let uploads: Vec<_> = (0..4)
        .map(|i| {
            let mut s = connect(&serve);
            let put = format!(
                "PUT /log/{}-stalled-{i}.drv HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer write-token-2\r\nContent-Length: 100000\r\n\r\nabc",
                "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz"
            );
            std::io::Write::write_all(&mut s, put.as_bytes()).unwrap();
            s
        })
        .collect();
    // The server reads the four request heads (loopback: well within a second).
    std::thread::sleep(Duration::from_secs(1));
    let mut fifth = connect(&serve);
    std::io::Write::write_all(&mut fifth, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Read::read_to_string(&mut fifth, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("\r\nretry-after: 2\r\n"), "{answer}");
    assert!(answer.contains("all of its 4 connections"), "{answer}");
    let busy = curl(&format!("{}/health", serve.url), &["--max-time", "10"]);
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("2"));

    // The uploads give up: their slots are free again.
    drop(uploads);
    wait_until("the server answers again", Duration::from_secs(10), || {
        (curl(&format!("{}/health", serve.url), &["--max-time", "5"]).status == 200).then_some(())
    });
}

#[test]
fn with_a_low_open_file_limit_piled_up_idle_sockets_do_not_stop_requests() {
    let tmp = tempdir();
    let log = tmp.path().join("serve.log");
    // 64 descriptors: the default cap is half of them, 32 connections.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", "--"])
        .arg(env!("CARGO_BIN_EXE_cachecore"))
        .args([
            "serve",
            path_str(&new_cache_dir(tmp.path(), "cache")),
            "--listen",
            "127.0.0.1:0",
        ])
        .stderr(fs::File::create(&log).unwrap());
    let serve = Serve::spawn_command(cmd);
    let idle: Vec<_> = (0..250).map(|_| connect(&serve)).collect();
    for _ in 0..5 {
        let health = curl(&format!("{}/health", serve.url), &["--max-time", "10"]);
        assert_eq!(health.status, 200, "{}", health.text());
    }
    let open = fs::read_dir(format!("/proc/{}/fd", serve.child.id()))
        .unwrap()
        .count();
    assert!(open < 64, "the server holds {open} descriptors");
    drop(idle);
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("Too many open files"),
        "the server ran out of descriptors:\n{text}"
    );
}

#[test]
fn a_proxy_refuses_an_upstream_inventing_references_after_one_narinfo() {
    let tmp = tempdir();
    let public = cachecore::signing::SecretKey::generate("trusted-2")
        .unwrap()
        .public_key()
        .to_string();
    let evil = scripted::inventing_upstream(5_000);
    let local = new_cache_dir(tmp.path(), "proxy-store");
    let proxy = Serve::start(
        path_str(&local),
        &["--upstream", &evil.url(), "--upstream-key", &public],
    );
    let start = std::time::Instant::now();
    let r = curl(
        &format!("{}/{}.narinfo", proxy.url, scripted::nix32_of(0)),
        &["--max-time", "20"],
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let errors = r#"cachecore_serve_upstream_lookups_total{result="error",upstream="0"}"#;
    assert_eq!(metric(&proxy.url, errors), 1);
    // The lookup and the copy's first read: no reference of an unsigned narinfo is followed.
    let read = evil.asked_ending(".narinfo");
    assert!(read <= 2, "{read} narinfos read from the upstream");
    let status = fs::read_to_string(format!("/proc/{}/status", proxy.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 100 << 10,
        "the proxy's peak RSS is {peak_kib} KiB"
    );
    let stored: Vec<String> = files_under(&local)
        .into_iter()
        .filter(|f| f != "nix-cache-info")
        .collect();
    assert!(stored.is_empty(), "the proxy stored {stored:?}");
}

#[test]
fn a_presigned_upload_url_cannot_replace_the_nar_it_was_asked_for() {
    let garage = common::garage::Garage::start();
    let store = garage.url("direct-urls");
    let tmp = tempdir();
    let (token_file, _) = credentials(tmp.path(), "push", "direct-token-1");
    let (secret, public) = nix_generate_key(tmp.path(), "direct-signs-1");
    let dir = tmp.path().join("direct-url-path");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("data"), pseudo_random_bytes(1 << 20, 0xd1ec7)).unwrap();
    let path = nix_store_add(&dir);
    // The path's narinfo and NAR as cachecore writes them, renamed as a streaming push names
    // its NARs (after the NarHash, with a unique suffix).
    let local = tmp.path().join("local");
    cachecore_ok(&["push", path_str(&local), &path, "--quiet"], b"");
    let narinfo = fs::read_to_string(local.join(format!("{}.narinfo", hash_part(&path)))).unwrap();
    let url = narinfo_field(&narinfo, "URL");
    let good = fs::read(local.join(&url)).unwrap();
    let nar_hash = narinfo_field(&narinfo, "NarHash");
    let nar_key = format!(
        "nar/{}-0123456789abcdef.nar.zst",
        nar_hash.strip_prefix("sha256:").unwrap()
    );
    assert!(url.ends_with(".nar.zst"), "{url}");
    let narinfo = narinfo.replace(&format!("URL: {url}"), &format!("URL: {nar_key}"));

    let serve = Serve::start_with_env(
        &store,
        &[
            "--token-file",
            path_str(&token_file),
            "--key",
            path_str(&secret),
        ],
        &garage.env(),
    );
    let bearer = "Authorization: Bearer direct-token-1";
    let asked = curl(
        &format!("{}/{nar_key}?upload-url", serve.url),
        &["-X", "POST", "-H", bearer],
    );
    assert_eq!(asked.status, 200, "{}", asked.text());
    let presigned = asked.text();
    let put_file = |file: &Path| {
        let r = curl(
            presigned.trim(),
            &[
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", path_str(file)),
            ],
        );
        assert_eq!(
            r.status,
            200,
            "the bucket refused a PUT by the presigned URL: {}",
            r.text()
        );
    };
    let good_file = tmp.path().join("good.nar.zst");
    fs::write(&good_file, &good).unwrap();
    // Another NAR of the same size: one byte flipped.
    let evil_file = tmp.path().join("evil.nar.zst");
    let mut evil = good.clone();
    let middle = evil.len() / 2;
    evil[middle] ^= 0x55;
    fs::write(&evil_file, &evil).unwrap();
    let narinfo_file = tmp.path().join("narinfo");
    fs::write(&narinfo_file, &narinfo).unwrap();
    let put_narinfo = || {
        curl(
            &format!("{}/{}.narinfo", serve.url, hash_part(&path)),
            &[
                "-X",
                "PUT",
                "-H",
                bearer,
                "--data-binary",
                &format!("@{}", path_str(&narinfo_file)),
            ],
        )
    };

    // Wrong bytes by the URL: the server hashes them before it takes the narinfo, refuses it,
    // and leaves the key free for the right bytes.
    put_file(&evil_file);
    let refused = put_narinfo();
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("does not match its NAR"),
        "{}",
        refused.text()
    );
    assert_eq!(curl(&format!("{}/{nar_key}", serve.url), &[]).status, 404);
    put_file(&good_file);
    let taken = put_narinfo();
    assert!(taken.status / 100 == 2, "{} {}", taken.status, taken.text());

    // The URL is still valid for an hour, and the bucket takes what is sent by it.
    put_file(&evil_file);

    let served = curl(&format!("{}/{nar_key}", serve.url), &[]);
    assert_eq!(served.status, 200);
    assert!(
        served.body == good,
        "the presigned URL replaced the published NAR"
    );
    on_garage_ok(&garage, &["verify", &store, "--trusted-key", &public]);
    let res =
        nix_copy_from_checking_sigs(&serve.url, &tmp.path().join("nix-store"), &path, &public);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

/// `nix log --store URL PATH`, with no other substituter: its stdout, or a panic with stderr.
fn nix_log(url: &str, path: &str, xdg: &Path) -> String {
    let mut cmd = nix_command("nix");
    cmd.env("XDG_CACHE_HOME", xdg)
        .args(["log", "--store", url, path])
        .args(["--option", "substituters", ""]);
    let out = nix_output(&mut cmd, b"");
    assert!(
        out.status.success(),
        "nix log from {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nix store ls --store URL PATH/SUB`: its stdout, or a panic with stderr.
fn nix_store_ls(url: &str, path: &str, xdg: &Path) -> String {
    let mut cmd = nix_command("nix");
    cmd.env("XDG_CACHE_HOME", xdg)
        .args(["store", "ls", "--store", url, path]);
    let out = nix_output(&mut cmd, b"");
    assert!(
        out.status.success(),
        "nix store ls from {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn narinfos_listings_and_logs_stored_encoded_are_read_by_nix_and_by_cachecore() {
    let garage = common::garage::Garage::start();
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap().as_str();
    let (secret, public) = nix_generate_key(tmp.path(), "encoded-1");
    let plain_store = garage.url("encoded");
    let store =
        format!("{plain_store}&narinfo-compression=zstd&ls-compression=zstd&log-compression=zstd");
    on_garage_ok(
        &garage,
        &["push", &store, root, "--key", path_str(&secret), "--quiet"],
    );
    let (token_file, _) = credentials(tmp.path(), "enc", "encoded-token");
    let serve = Serve::start_with_env(
        &store,
        &["--token-file", path_str(&token_file)],
        &garage.env(),
    );
    // A build log, sent plain, stored encoded as the store URL says.
    let deriver = narinfo_field(
        &curl(&format!("{}/{}.narinfo", serve.url, hash_part(root)), &[]).text(),
        "Deriver",
    );
    let log = "building the app\nline two of the log\n".repeat(50);
    put_log(&serve.url, &deriver, &log, "encoded-token", tmp.path());

    // What is stored is zstd: a client that accepts it gets it as stored, one that does not
    // gets it decoded; both told the answer varies with Accept-Encoding.
    for key in [
        format!("{}.narinfo", hash_part(root)),
        format!("{}.ls", hash_part(root)),
        format!("log/{deriver}"),
    ] {
        let url = format!("{}/{key}", serve.url);
        let plain = curl(&url, &[]);
        assert_eq!(plain.status, 200, "{key}: {}", plain.text());
        assert_eq!(plain.header("content-encoding"), None, "{key}");
        assert_eq!(plain.header("vary"), Some("Accept-Encoding"), "{key}");
        let packed = curl(&url, &["-H", "Accept-Encoding: br, zstd"]);
        assert_eq!(packed.header("content-encoding"), Some("zstd"), "{key}");
        assert!(packed.body.len() < plain.body.len(), "{key}");
        assert_eq!(
            {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut cachecore::compression::decompress(
                        cachecore::compression::Compression::Zstd,
                        &packed.body[..],
                    )
                    .unwrap(),
                    &mut out,
                )
                .unwrap();
                out
            },
            plain.body,
            "{key}"
        );
        // A range of an encoded object is answered whole (it would count encoded bytes).
        let ranged = curl(&url, &["-H", "Range: bytes=0-9"]);
        assert_eq!(
            (ranged.status, ranged.body.len()),
            (200, plain.body.len()),
            "{key}"
        );
    }

    // Real Nix, through serve and straight from Garage's website endpoint (which hands the
    // stored Content-Encoding on): substitutes with signatures required, lists, reads the log.
    let website = garage.serve_website();
    let website_cache = format!("{website}/encoded");
    for (i, url) in [serve.url.as_str(), website_cache.as_str()]
        .iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("nix-{i}"));
        fs::create_dir(&dir).unwrap();
        assert_nix_substitutes(url, &dir, &closure, &public);
        let listed = nix_store_ls(url, &format!("{root}/bin"), &dir.join("xdg"));
        assert!(
            !listed.trim().is_empty(),
            "nix store ls from {url} listed nothing"
        );
        let log = nix_log(url, root, &dir.join("xdg-log"));
        assert!(log.contains("line two of the log"), "{url}: {log}");
    }

    // cachecore reads it back, from the bucket and through serve.
    on_garage_ok(&garage, &["verify", &store, "--trusted-key", &public]);
    on_garage_ok(&garage, &["verify", &plain_store, "--trusted-key", &public]);
    let ls = cachecore_output(&["ls", &serve.url, root], b"");
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );

    // Uploads sent encoded (cachecore push with the same settings: Content-Encoding on each
    // PUT) are decoded for the checks and stored encoded. (Nix 2.8 takes these settings for
    // an http:// store but sends plain bytes: checked with a capturing server.)
    let second = garage.url("encoded-by-upload");
    let up = Serve::start_with_env(
        &second,
        &["--token-file", path_str(&token_file)],
        &garage.env(),
    );
    let to = format!("{}?ls-compression=zstd&narinfo-compression=zstd", up.url);
    let pushed = cachecore_output(
        &[
            "push",
            &to,
            root,
            "--key",
            path_str(&secret),
            "--token-file",
            path_str(&token_file),
        ],
        b"",
    );
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    for key in [
        format!("{}.narinfo", hash_part(root)),
        format!("{}.ls", hash_part(root)),
    ] {
        let packed = curl(
            &format!("{}/{key}", up.url),
            &["-H", "Accept-Encoding: zstd"],
        );
        assert_eq!(
            packed.header("content-encoding"),
            Some("zstd"),
            "{key}: {}",
            packed.text()
        );
    }
    on_garage_ok(&garage, &["verify", &second, "--trusted-key", &public]);
    on_garage_ok(&garage, &["ls", &second, root]);
}

#[test]
fn narinfos_listings_and_logs_stored_as_brotli_are_read_by_nix_and_by_cachecore() {
    // Nix's own suggestion for logs is `log-compression=br`; its S3 store writes br too.
    let garage = common::garage::Garage::start();
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap().as_str();
    let (secret, public) = nix_generate_key(tmp.path(), "brotli-1");
    let store = format!(
        "{}&narinfo-compression=br&ls-compression=br&log-compression=br",
        garage.url("brotli")
    );
    on_garage_ok(
        &garage,
        &["push", &store, root, "--key", path_str(&secret), "--quiet"],
    );
    let website = format!("{}/brotli", garage.serve_website());
    let narinfo = curl(
        &format!("{website}/{}.narinfo", hash_part(root)),
        &["-H", "Accept-Encoding: br"],
    );
    assert_eq!(narinfo.header("content-encoding"), Some("br"));
    assert!(!narinfo.text().contains("StorePath:"), "stored compressed");
    // Real Nix decodes it: substitutes with signatures required and lists a directory.
    let dir = tmp.path().join("nix");
    fs::create_dir(&dir).unwrap();
    assert_nix_substitutes(&website, &dir, &closure, &public);
    let listed = nix_store_ls(&website, &format!("{root}/bin"), &dir.join("xdg"));
    assert!(!listed.trim().is_empty(), "nix store ls listed nothing");
    // cachecore reads it back from the bucket and through serve (decoded for curl, which
    // does not ask for br).
    on_garage_ok(&garage, &["verify", &store, "--trusted-key", &public]);
    on_garage_ok(&garage, &["ls", &store, root]);
    let serve = Serve::start_with_env(&store, &[], &garage.env());
    let plain = curl(&format!("{}/{}.narinfo", serve.url, hash_part(root)), &[]);
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.text().contains(&format!("StorePath: {root}")));

    // The same settings as options, over the URL's: push sets them, copy changes them.
    let encoding_of = |prefix: &str, key: &str| {
        let url = format!("{}/{prefix}/{key}", garage.serve_website());
        let answer = curl(&url, &["-H", "Accept-Encoding: br, zstd"]);
        assert_eq!(answer.status, 200, "{url}");
        answer.header("content-encoding").map(str::to_owned)
    };
    let narinfo_key = format!("{}.narinfo", hash_part(root));
    let ls_key = format!("{}.ls", hash_part(root));
    let by_options = garage.url("by-options");
    on_garage_ok(
        &garage,
        &[
            "push",
            &format!("{by_options}&ls-compression=br"),
            root,
            "--narinfo-compression",
            "br",
            "--ls-compression",
            "zstd",
            "--quiet",
        ],
    );
    assert_eq!(
        encoding_of("by-options", &narinfo_key).as_deref(),
        Some("br")
    );
    assert_eq!(encoding_of("by-options", &ls_key).as_deref(), Some("zstd"));
    let copied = garage.url("copied-plain");
    on_garage_ok(
        &garage,
        &[
            "copy",
            &store,
            &format!("{copied}&ls-compression=br"),
            "--all",
            "--ls-compression",
            "none",
            "--narinfo-compression",
            "zstd",
            "--quiet",
        ],
    );
    assert_eq!(
        encoding_of("copied-plain", &narinfo_key).as_deref(),
        Some("zstd")
    );
    assert_eq!(encoding_of("copied-plain", &ls_key), None);
    on_garage_ok(&garage, &["verify", &copied, "--trusted-key", &public]);
    // A local directory cannot keep them: refused with the reason, nothing created.
    let local = tmp.path().join("local");
    let out = cachecore_output(
        &["push", path_str(&local), root, "--log-compression", "br"],
        b"",
    );
    let line = assert_clean_error(&out, "push --log-compression to a directory");
    assert!(
        line.contains("--log-compression needs a store that keeps each object's Content-Encoding"),
        "{line}"
    );
    assert!(!local.exists());
}

/// `cachecore ARGS`, which must fail with one line; returns (exit status, the line).
fn failing(args: &[&str]) -> (i32, String) {
    let out = cachecore_output(args, b"");
    let line = assert_clean_error(&out, &args.join(" "));
    (out.status.code().unwrap(), line)
}

#[test]
fn http_errors_speak_http_and_every_read_command_takes_a_token_file() {
    let tmp = tempdir();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), "a\n").unwrap();
    let cache = tmp.path().join("cache");
    let base = push_tree(&cache, &tree, &[]);
    let path = format!("/nix/store/{base}");
    let (token, netrc) = credentials(tmp.path(), "push", "PUSH-TOKEN-1");
    let (read_token, _) = credentials(tmp.path(), "read", "READ-TOKEN-1");
    let private = Serve::start(
        path_str(&cache),
        &[
            "--token-file",
            path_str(&token),
            "--read-token-file",
            path_str(&read_token),
        ],
    );
    let url = private.url.as_str();

    // An upload without its token: what to give.
    let (code, line) = failing(&["push", url, "--add", path_str(&tree)]);
    assert!(
        line.contains(
            "this server takes uploads with a token: --token-file FILE or CACHECORE_TOKEN"
        ),
        "{line}"
    );
    assert_eq!(code, 3, "{line}");
    for args in [&["push", "--help"][..], &["--help"]] {
        let help = cachecore_str(args);
        assert!(!help.contains("read-only http"), "{help}");
        assert!(help.contains("takes uploads"), "{help}");
    }

    // Private reads without the token: the server's reason and the token's flags, no S3 advice;
    // with --token-file, every read command works.
    let dest = tmp.path().join("pulled");
    let copied = tmp.path().join("copied");
    let file = format!("{base}/a");
    let reads: Vec<Vec<&str>> = vec![
        vec!["verify", url, &path],
        vec!["ls", url, &path],
        vec!["cat", url, &file],
        vec!["pull", url, &path, path_str(&dest), "--no-check-sigs"],
        vec!["copy", url, path_str(&copied), &path, "--quiet"],
    ];
    for args in &reads {
        let (code, line) = failing(args);
        assert!(
            line.contains("reading this cache needs a token")
                && line.contains("--token-file FILE or CACHECORE_TOKEN")
                && !line.contains("access key"),
            "{}: {line}",
            args[0]
        );
        assert_eq!(code, 3, "{line}");
        let mut with = args.clone();
        with.extend(["--token-file", path_str(&read_token)]);
        cachecore_ok(&with, b"");
    }
    assert_eq!(fs::read_to_string(dest.join("a")).unwrap(), "a\n");
    assert!(copied.join(format!("{}.narinfo", &base[..32])).is_file());
    // And copy into it with its upload token, while the source read needs the read token.
    let other = tmp.path().join("other-tree");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("o"), "o\n").unwrap();
    let other_base = push_tree(&copied, &other, &[]);
    let out = cachecore_output(&["copy", path_str(&copied), url, "--all"], b"");
    assert!(assert_clean_error(&out, "copy without a token")
        .contains("--token-file FILE or CACHECORE_TOKEN"));
    cachecore_ok(
        &[
            "copy",
            path_str(&copied),
            url,
            "--all",
            "--to-token-file",
            path_str(&token),
            "--quiet",
        ],
        b"",
    );
    assert!(cache
        .join(format!("{}.narinfo", &other_base[..32]))
        .is_file());

    // A wrong path in the URL: where no cache is, and the server's reason never cut.
    let sub = format!("{url}/sub");
    for args in [
        vec![
            "push",
            &sub,
            "--add",
            path_str(&tree),
            "--token-file",
            path_str(&token),
        ],
        vec!["verify", &sub, "--token-file", path_str(&read_token)],
    ] {
        let (code, line) = failing(&args);
        assert!(
            line.contains(&format!("no binary cache at {sub} (nix-cache-info: 404)")),
            "{line}"
        );
        assert_eq!(code, 4, "{line}");
    }
    // A server's reason is quoted whole (it was cut at 64 characters).
    let out = cachecore_command()
        .args(["init", url, "--priority", "10", "--update"])
        .env("CACHECORE_TOKEN", "PUSH-TOKEN-1")
        .output()
        .unwrap();
    let line = assert_clean_error(&out, "init --update through serve");
    assert!(
        line.ends_with(
            "nix-cache-info is present with other contents; objects of a cache are never replaced"
        ),
        "{line}"
    );

    // https:// to plain HTTP, a refused connection and S3 without endpoint=.
    let (_, line) = failing(&["verify", &url.replacen("http://", "https://", 1)]);
    assert!(
        line.contains("the server answered in plain HTTP, not TLS; use http://"),
        "{line}"
    );
    let (_, line) = failing(&["verify", &format!("http://127.0.0.1:{}", free_port())]);
    assert!(
        line.contains("connection refused") && !line.contains("endpoint="),
        "{line}"
    );
    let out = cachecore_command()
        .args(["info", "s3://no-such-bucket-cachecore"])
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let line = assert_clean_error(&out, "info s3:// without endpoint=");
    assert!(
        line.contains("no endpoint= was given, so AWS itself was asked"),
        "{line}"
    );

    // Nix with a netrc line naming host:port sends no token; the 401 says netrc's rule.
    let public = Serve::start(path_str(&cache), &["--token-file", path_str(&token)]);
    let host_port = public.url.strip_prefix("http://").unwrap();
    fs::write(
        &netrc,
        format!("machine {host_port} password PUSH-TOKEN-1\n"),
    )
    .unwrap();
    let other = tmp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("b"), format!("{host_port}\n")).unwrap();
    let added = nix_store_add(&other);
    let (secret, _) = nix_generate_key(tmp.path(), "netrc-1");
    let out = nix_copy_to(
        &public.url,
        &netrc,
        &secret,
        &added,
        &tmp.path().join("xdg"),
    );
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("HOST without the port"), "{shown}");
}

#[test]
fn operating_a_server_logs_plainly_listens_by_name_and_counts_every_body() {
    let tmp = tempdir();
    let cache = new_cache_dir(tmp.path(), "cache");
    let (token, _) = credentials(tmp.path(), "push", "OPS-TOKEN-1");
    let log_path = tmp.path().join("serve.log");
    let serve = Serve::spawn_logging_to(
        &[
            "serve",
            path_str(&cache),
            "--listen",
            "localhost:0",
            "--token-file",
            path_str(&token),
            "--max-upload-size",
            "1K",
            "--upload-timeout",
            "2",
        ],
        &[("RUST_LOG".to_owned(), "info".to_owned())],
        Stdio::from(fs::File::create(&log_path).unwrap()),
    );
    let url = serve.url.as_str();

    // Sizes as people write them: 1K is 1024 bytes.
    let nar = format!("{url}/nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar");
    let body = tmp.path().join("body");
    fs::write(&body, vec![b'x'; 1025]).unwrap();
    let auth = ["-H", "Authorization: Bearer OPS-TOKEN-1"];
    let mut args = auth.to_vec();
    args.extend(["-T", path_str(&body)]);
    assert_eq!(curl(&nar, &args).status, 413);
    let out = cachecore_output(
        &["serve", path_str(&cache), "--max-upload-size", "16X"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use K, M, G or T"));

    // Every route's body is counted.
    let landing = curl(&format!("{url}/"), &[]);
    let info = curl(&format!("{url}/nix-cache-info"), &[]);
    assert_eq!((landing.status, info.status), (200, 200));
    let sent = |route: &str| {
        metric(
            url,
            &format!("cachecore_serve_response_body_bytes_total{{route=\"{route}\"}}"),
        )
    };
    assert!(
        sent("landing") >= landing.body.len() as u64,
        "{}",
        sent("landing")
    );
    assert_eq!(sent("cache_info"), info.body.len() as u64);

    // An upload abandoned mid-body is logged.
    {
        use std::io::Write as _;
        let addr = url.strip_prefix("http://").unwrap();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        write!(
            conn,
            "PUT /nar/0w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer OPS-TOKEN-1\r\nContent-Length: 1000\r\n\r\nnix-archive-1"
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = fs::read_to_string(&log_path).unwrap();
        if log.contains("upload abandoned mid-body") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains("upload abandoned mid-body"), "{log}");
    assert!(log.contains("cachecore::serve::request"), "{log}");
    // A log file gets no terminal colours.
    assert!(!log.contains('\x1b'), "{log:?}");
    drop(serve);

    // An IPv6 wildcard address.
    let any6 = Serve::spawn(&["serve", path_str(&cache), "--listen", "[::]:0"], &[]);
    let port = any6.url.rsplit(':').next().unwrap();
    assert_eq!(
        curl(&format!("http://127.0.0.1:{port}/nix-cache-info"), &[]).status,
        200
    );
}

#[test]
fn info_and_ls_of_a_serve_url_answer_from_the_server() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    for name in ["one", "two"] {
        let tree = tmp.path().join(name);
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join(name), name).unwrap();
        push_tree(&cache, &tree, &[]);
    }
    let (read_token, _) = credentials(tmp.path(), "read", "LIST-TOKEN-1");
    let serve = Serve::start(
        path_str(&cache),
        &["--read-token-file", path_str(&read_token)],
    );
    for command in ["info", "ls"] {
        let here = cachecore_str(&[command, path_str(&cache)]);
        let served = cachecore_str(&[command, &serve.url, "--token-file", path_str(&read_token)]);
        assert_eq!(served, here, "`{command}` of the server's URL");
    }
    assert!(cachecore_str(&["info", path_str(&cache)]).contains("Paths: 2"));
    let (code, line) = failing(&["ls", &serve.url]);
    assert_eq!(code, 3, "{line}");
}

#[test]
fn the_server_says_whether_it_signs_and_refuses_a_key_with_nothing_to_sign() {
    let tmp = tempdir();
    let cache = new_cache_dir(tmp.path(), "cache");
    let (token, _) = credentials(tmp.path(), "push", "SIGN-TOKEN-1");
    let (secret, public) = nix_generate_key(tmp.path(), "team-sign-1");
    // A key with no token: nothing to sign.
    let out = cachecore_output(
        &["serve", path_str(&cache), "--key", path_str(&secret)],
        b"",
    );
    let line = assert_clean_error(&out, "serve --key without --token-file");
    assert!(
        line.contains("without --token-file this server takes none"),
        "{line}"
    );
    // A stored nix-cache-info claiming a key is not passed on.
    fs::write(
        cache.join("nix-cache-info"),
        "StoreDir: /nix/store\nCachecoreSigningKey: forged-1:AAAA\n",
    )
    .unwrap();

    let tree = tmp.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("t"), "t\n").unwrap();
    let push = |url: &str, what: &str| {
        fs::write(tree.join("t"), what).unwrap();
        let out = cachecore_output(
            &[
                "push",
                url,
                "--add",
                path_str(&tree),
                "--token-file",
                path_str(&token),
            ],
            b"",
        );
        assert_cachecore_ok(&out, &["push"]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A token and no key: a warning at start, and the client says the server does not sign.
    let log = tmp.path().join("unsigned.log");
    let unsigned = Serve::spawn_logging_to(
        &[
            "serve",
            path_str(&cache),
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            path_str(&token),
        ],
        &[],
        Stdio::from(fs::File::create(&log).unwrap()),
    );
    let info = curl(&format!("{}/nix-cache-info", unsigned.url), &[]).text();
    assert!(!info.contains("CachecoreSigningKey"), "{info}");
    let stderr = push(&unsigned.url, "one");
    assert!(
        stderr.contains("the server does not sign (it runs without --key)"),
        "{stderr}"
    );
    drop(unsigned);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("uploads are stored unsigned unless the clients sign them"),
        "{logged}"
    );

    // With its key: nix-cache-info names it, and the client says which.
    let signing = Serve::start(
        path_str(&cache),
        &["--token-file", path_str(&token), "--key", path_str(&secret)],
    );
    let info = curl(&format!("{}/nix-cache-info", signing.url), &[]).text();
    assert!(
        info.contains(&format!("CachecoreSigningKey: {public}\n")),
        "{info}"
    );
    assert!(!info.contains("forged"), "{info}");
    let stderr = push(&signing.url, "two");
    assert!(
        stderr.contains(&format!("the server signed them with its key {public}")),
        "{stderr}"
    );
}

/// Nix's narinfo disk cache (`~/.cache/nix/binary-cache-v6.sqlite`) keeps the unsigned narinfo
/// `nix copy --to` uploaded, for `narinfo-cache-positive-ttl` (30 days): the same machine then
/// refuses the server-signed path. What the README and the landing page say about it holds:
/// the positive TTL set to 0 makes Nix ask the server again and take its signed narinfo.
#[test]
fn nix_keeps_the_unsigned_narinfo_it_uploaded_until_its_positive_ttl_is_zero() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let app = closure.last().unwrap();
    let cache = new_cache_dir(tmp.path(), "cache");
    let (token, netrc) = credentials(tmp.path(), "push", "TTL-TOKEN-1");
    let (secret, public) = nix_generate_key(tmp.path(), "ttl-sign-1");
    let serve = Serve::start(
        path_str(&cache),
        &["--token-file", path_str(&token), "--key", path_str(&secret)],
    );
    let xdg = tmp.path().join("xdg");
    let nix = |args: &[&str]| {
        let mut cmd = nix_command("nix");
        cmd.env("XDG_CACHE_HOME", &xdg)
            .args(args)
            .args(["--option", "netrc-file", path_str(&netrc)])
            .args(["--option", "substituters", ""]);
        nix_output(&mut cmd, b"")
    };
    let out = nix(&["copy", "--to", &serve.url, app]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from = |store: &str, extra: &[&str]| {
        let mut args = vec!["copy", "--from", &serve.url, "--to", store, app];
        args.extend([
            "--option",
            "require-sigs",
            "true",
            "--option",
            "trusted-public-keys",
            &public,
        ]);
        args.extend(extra);
        nix(&args)
    };
    let kept = from(path_str(&tmp.path().join("store-1")), &[]);
    let shown = String::from_utf8_lossy(&kept.stderr);
    assert!(
        !kept.status.success() && shown.contains("lacks a valid signature"),
        "{shown}"
    );
    let fresh = from(
        path_str(&tmp.path().join("store-2")),
        &["--option", "narinfo-cache-positive-ttl", "0"],
    );
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    // The landing page says so.
    let landing = curl(&format!("{}/", serve.url), &[]).text();
    assert!(
        landing.contains("--option narinfo-cache-positive-ttl 0")
            && landing.contains("cachecore push"),
        "{landing}"
    );
    // Its netrc line names the host without the port, as netrc wants.
    assert!(
        landing.contains("machine 127.0.0.1 password TOKEN"),
        "{landing}"
    );
}

/// The README's post-build-hook, with this server's URL and token: every path Nix builds is
/// pushed through serve as the build finishes.
#[test]
fn a_post_build_hook_pushes_every_path_nix_builds() {
    let tmp = tempdir();
    let cache = tmp.path().join("hooked");
    cachecore_ok(&["init", path_str(&cache)], b"");
    let (token_file, _) = credentials(tmp.path(), "hook", "hook-token-1");
    let serve = Serve::start(path_str(&cache), &["--token-file", path_str(&token_file)]);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_cachecore"));
    let hook = tmp.path().join("push-to-cache");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -eu\nset -f # $OUT_PATHS is a space-separated list of store paths\npaths=${{OUT_PATHS:-}}\n[ -n \"$paths\" ] || paths=$(nix-store --query --outputs \"$DRV_PATH\")\nexec {} push {} $paths --token-file {} --quiet\n",
            bin.display(),
            serve.url,
            token_file.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let expr = tmp.path().join("hooked.nix");
    fs::write(&expr, closure_expr("cachecore-hooked", Some(&nonce()))).unwrap();
    let out = nix_output(
        nix_command("nix-build")
            .arg(&expr)
            .arg("--no-out-link")
            .args(["--option", "substituters", ""])
            .args(["--option", "post-build-hook"])
            .arg(&hook),
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let closure: Vec<String> = nix("nix-store", &["-qR", &app])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(closure.len(), 3, "{closure:?}");
    for path in &closure {
        let r = curl(&format!("{}/{}.narinfo", serve.url, hash_part(path)), &[]);
        assert_eq!(
            r.status,
            200,
            "{path} was not pushed by the hook: {}",
            r.text()
        );
    }
}

/// Waits until `file` (a server's log) contains `text`; its contents then.
fn wait_for_log(file: &Path, text: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let logged = fs::read_to_string(file).unwrap_or_default();
        if logged.contains(text) {
            return logged;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log never said {text:?}:\n{logged}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A proxy checks its upstreams at startup: one warning for one that is not a binary cache,
/// one for one that cannot be reached — and that one is skipped (a miss answered at once, no
/// connection retries) until its backoff ends, then asked again, and used once it answers.
#[test]
fn a_proxy_warns_about_bad_upstreams_at_startup_and_skips_a_down_one_until_it_answers() {
    let tmp = tempdir();
    let (cache, closure, public) = pushed_cache(tmp.path());
    let root = closure.last().unwrap();
    // Not a cache: a web server with no nix-cache-info.
    let web_root = new_cache_dir(tmp.path(), "just-a-website");
    fs::write(web_root.join("index.html"), "<p>hello</p>\n").unwrap();
    let website = common::http_server::HttpServer::serve(&web_root);
    // Down: a port nothing listens on (yet).
    let port = free_port();
    let down_url = format!("http://127.0.0.1:{port}");
    let local = new_cache_dir(tmp.path(), "proxy-store");
    let log = tmp.path().join("proxy.log");
    let proxy = Serve::spawn_logging_to(
        &[
            "serve",
            path_str(&local),
            "--listen",
            "127.0.0.1:0",
            // Before every --upstream: the key of all of them.
            "--upstream-key",
            &public,
            "--upstream",
            &website.url(),
            "--upstream",
            &down_url,
        ],
        &[],
        Stdio::from(fs::File::create(&log).unwrap()),
    );
    wait_for_log(
        &log,
        &format!("upstream {} is not a binary cache", website.url()),
    );
    let logged = wait_for_log(&log, &format!("upstream {down_url} cannot be reached"));
    assert!(
        logged.contains("skipped for 2 s, then asked again"),
        "{logged}"
    );

    // A miss while it is skipped (2 s from the warning) costs no connection attempts (about
    // 1 s of retries each before).
    let url = format!("{}/{}.narinfo", proxy.url, hash_part(root));
    let skipped = r#"cachecore_serve_upstream_lookups_total{result="skipped",upstream="1"}"#;
    let started = std::time::Instant::now();
    let r = curl(&url, &[]);
    let took = started.elapsed();
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        took < Duration::from_millis(500),
        "a miss took {took:?} while its upstream was skipped"
    );
    assert_eq!(metric(&proxy.url, skipped), 1);

    // It comes up: after the backoff the next miss asks it again, and is filled from it.
    let _upstream = Serve::spawn(
        &[
            "serve",
            path_str(&cache),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = curl(&url, &[]);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never asked its upstream again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let hits = r#"cachecore_serve_upstream_lookups_total{result="hit",upstream="1"}"#;
    assert_eq!(metric(&proxy.url, hits), 1);
    wait_for_log(&log, "upstream answers again");
    cachecore_ok(&["verify", path_str(&local), "--trusted-key", &public], b"");
}

/// `nix build --no-link --store STORE PATH` with the system's nix.conf plus `conf` (lines
/// pasted from a landing page), which also configures cache.nixos.org, signatures required.
fn substitute_with_pasted_lines(tmp: &Path, name: &str, conf: &str, path: &str) -> PathBuf {
    let conf_dir = tmp.join(format!("{name}-conf"));
    fs::create_dir(&conf_dir).unwrap();
    let system_conf = fs::read_to_string("/etc/nix/nix.conf").unwrap_or_default();
    fs::write(
        conf_dir.join("nix.conf"),
        format!("{system_conf}\nsubstituters = https://cache.nixos.org\ntrusted-public-keys = cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\n{conf}require-sigs = true\nconnect-timeout = 2\n"),
    )
    .unwrap();
    let fresh = tmp.join(format!("{name}-store"));
    let mut build = nix_command("nix");
    build
        .env("NIX_CONF_DIR", &conf_dir)
        .env("XDG_CACHE_HOME", tmp.join(format!("{name}-cache")))
        .args(["build", "--no-link", "--store"])
        .arg(&fresh)
        .arg(path);
    let out = nix_output(&mut build, b"");
    assert!(
        out.status.success(),
        "nix build with the pasted lines failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fresh
}

/// A proxy's landing page, in Chromium: its --title, each signing key once (its own and its
/// upstream's, by name with what it signs; in full only in the lines to paste), how old its
/// counts are, and a link to the recently pushed paths, which link to their files. Its lines,
/// pasted beside cache.nixos.org, make Nix substitute what the proxy serves.
#[test]
fn a_landing_page_has_a_title_each_key_once_the_counts_age_and_recent_paths() {
    let tmp = tempdir();
    let (cache, closure, upstream_key) = pushed_cache(tmp.path());
    let root = closure.last().unwrap();
    let upstream = Serve::start(path_str(&cache), &[]);
    let (own_secret, own_key) = nix_generate_key(tmp.path(), "team-proxy-1");
    let (token, _) = credentials(tmp.path(), "proxy", "PROXY-TOKEN-1");
    let local = new_cache_dir(tmp.path(), "proxy-store");
    let proxy = Serve::spawn(
        &[
            "serve",
            path_str(&local),
            "--listen",
            "127.0.0.1:0",
            "--title",
            "Team <frontend> cache",
            "--key",
            path_str(&own_secret),
            "--public-key",
            &own_key,
            "--token-file",
            path_str(&token),
            "--upstream",
            &upstream.url,
            "--upstream-key",
            &upstream_key,
        ],
        &[],
    );
    // Filled through the proxy before the page counts.
    let r = curl(&format!("{}/{}.narinfo", proxy.url, hash_part(root)), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let page = format!("{}/", proxy.url);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !curl(&page, &[]).text().contains("id=\"paths\"") {
        assert!(std::time::Instant::now() < deadline, "no totals shown");
        std::thread::sleep(Duration::from_millis(100));
    }

    let profile = tmp.path().join("chromium-profile");
    let dom = chromium(&["--dump-dom"], &page, &profile);
    assert!(
        dom.contains("<title>Team &lt;frontend&gt; cache — ")
            && dom.contains("<h1 id=\"title\">Team &lt;frontend&gt; cache</h1>"),
        "{dom}"
    );
    let conf = nix_conf_block(&dom);
    assert_eq!(
        conf,
        format!(
            "extra-substituters = {}\nextra-trusted-public-keys = {own_key} {upstream_key}\n",
            proxy.url
        )
    );
    for key in [&own_key, &upstream_key] {
        // Once in the nix.conf lines, once in the NixOS snippet, nowhere else.
        assert_eq!(dom.matches(key.as_str()).count(), 2, "{key} in {dom}");
    }
    assert!(
        dom.contains("<li><code>team-proxy-1</code>: this server signs every upload with it</li>"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "<li><code>serve-test-1</code>: signs the paths this proxy fetches from {}</li>",
            upstream.url
        )),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("<td id=\"paths\">{}</td>", closure.len())),
        "{dom}"
    );
    let counted = dom
        .split("<p id=\"counted\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no age of the counts: {dom}"));
    assert!(
        counted.starts_with("Counted ") && counted.contains(" ago"),
        "{counted}"
    );
    assert!(counted.contains("<a href=\"/serve/\">"), "{counted}");

    // The recent paths, each a link to its files.
    let recent = chromium(&["--dump-dom"], &format!("{}/serve/", proxy.url), &profile);
    for p in &closure {
        let base = p.rsplit('/').next().unwrap();
        assert!(
            recent.contains(&format!("<a href=\"{base}/\">{base}</a>")),
            "{base} in {recent}"
        );
    }
    let base = root.rsplit('/').next().unwrap();
    let files = curl(&format!("{}/serve/{base}/", proxy.url), &[]);
    assert_eq!(files.status, 200, "{}", files.text());

    // Pasted beside cache.nixos.org, the lines make Nix substitute through the proxy.
    let fresh = substitute_with_pasted_lines(tmp.path(), "pasted", &conf, root);
    for p in &closure {
        assert!(nix_path_info(Some(&fresh), p)["narHash"].is_string(), "{p}");
    }
}

/// `cachecore sign` adds a key's signature to paths already in a cache — a directory, and
/// through `cachecore serve` with its token — once: again, it writes nothing. A push with
/// `--key` that finds paths present without that key's signature says how many, and the
/// `sign` command that fixes it.
#[test]
fn sign_adds_a_signature_to_paths_already_in_a_cache_and_push_counts_those_lacking_it() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap();
    let n = closure.len();
    let cache = tmp.path().join("cache");
    cachecore_ok(&["push", path_str(&cache), root, "--quiet"], b"");
    let (a_secret, a_public) = nix_generate_key(tmp.path(), "team-a-1");

    let out = cachecore_output(
        &["push", path_str(&cache), root, "--key", path_str(&a_secret)],
        b"",
    );
    assert_cachecore_ok(&out, &["push"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: {n} paths already in {} are not signed by this push's key",
            path_str(&cache)
        )) && stderr.contains(&format!(
            "`cachecore sign {} {root} --key {}`",
            path_str(&cache),
            path_str(&a_secret)
        )),
        "{stderr}"
    );

    let signed = |args: &[&str]| {
        let out = cachecore_output(args, b"");
        assert_cachecore_ok(&out, args);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = signed(&["sign", path_str(&cache), root, "--key", path_str(&a_secret)]);
    assert!(
        first.starts_with(&format!("{n} paths to sign, 0 already signed\n"))
            && first.contains(&format!("signed {root}\n"))
            && first.ends_with(&format!(
                "{n} paths signed with team-a-1, 0 already signed by it, in {}\n",
                path_str(&cache)
            )),
        "{first}"
    );
    cachecore_ok(
        &["verify", path_str(&cache), "--trusted-key", &a_public],
        b"",
    );
    let narinfo = |p: &str| fs::read(cache.join(format!("{}.narinfo", hash_part(p)))).unwrap();
    let before: Vec<Vec<u8>> = closure.iter().map(|p| narinfo(p)).collect();
    let again = signed(&[
        "sign",
        path_str(&cache),
        "--all",
        "--key",
        path_str(&a_secret),
        "--jobs",
        "2",
    ]);
    assert!(
        again.contains(&format!(
            "0 paths signed with team-a-1, {n} already signed by it"
        )),
        "{again}"
    );
    let after: Vec<Vec<u8>> = closure.iter().map(|p| narinfo(p)).collect();
    assert_eq!(before, after, "signing again changed a narinfo");
    let quiet_push = cachecore_output(
        &["push", path_str(&cache), root, "--key", path_str(&a_secret)],
        b"",
    );
    assert!(
        !String::from_utf8_lossy(&quiet_push.stderr).contains("not signed by this push's key"),
        "{}",
        String::from_utf8_lossy(&quiet_push.stderr)
    );

    // Through a server, with its upload token: a second key; the first one's signatures stay.
    // The server takes signatures by the keys it announces (--public-key).
    let (token, _) = credentials(tmp.path(), "sign", "SIGN-THROUGH-SERVE-1");
    let (b_secret, b_public) = nix_generate_key(tmp.path(), "team-b-1");
    let serve = Serve::start(
        path_str(&cache),
        &["--token-file", path_str(&token), "--public-key", &b_public],
    );
    let (c_secret, _) = nix_generate_key(tmp.path(), "team-c-1");
    let out = cachecore_output(
        &[
            "sign",
            &serve.url,
            root,
            "--key",
            path_str(&c_secret),
            "--token-file",
            path_str(&token),
            "--quiet",
        ],
        b"",
    );
    let line = assert_clean_error(&out, "a signature by a key the server does not announce");
    assert!(
        line.contains("only signatures can be added to it, by a key this server announces (serve --public-key KEY), and the one by \"team-c-1\" is not: nothing was changed"),
        "{line}"
    );
    let out = cachecore_output(
        &["sign", &serve.url, "--all", "--key", path_str(&b_secret)],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "no token: refused");
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(
        line.contains("--token-file FILE or CACHECORE_TOKEN"),
        "{line}"
    );
    let through = signed(&[
        "sign",
        &serve.url,
        "--all",
        "--key",
        path_str(&b_secret),
        "--token-file",
        path_str(&token),
        "--quiet",
    ]);
    assert!(through.is_empty(), "--quiet: {through}");
    cachecore_ok(
        &["verify", path_str(&cache), "--trusted-key", &a_public],
        b"",
    );
    cachecore_ok(
        &["verify", path_str(&cache), "--trusted-key", &b_public],
        b"",
    );
    let substituted = tmp.path().join("substituted");
    fs::create_dir_all(&substituted).unwrap();
    assert_nix_substitutes(&serve.url, &substituted, &closure, &b_public);
    // The server adds signatures and nothing else: a narinfo changed otherwise is refused.
    let h = hash_part(root);
    let text = String::from_utf8(narinfo(root)).unwrap();
    let changed = text.replace("NarSize: ", "NarSize: 1");
    let r = curl(
        &format!("{}/{h}.narinfo", serve.url),
        &[
            "-X",
            "PUT",
            "--data-binary",
            &changed,
            "-H",
            "Authorization: Bearer SIGN-THROUGH-SERVE-1",
        ],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(narinfo(root), text.as_bytes());
}

/// The `cachecore token issue` output: (token, id).
fn issue_token(secret: &Path, name: &str, can: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "token",
        "issue",
        "--secret",
        path_str(secret),
        "--name",
        name,
        "--can",
        can,
    ];
    args.extend(extra);
    if !extra.contains(&"--expires") {
        args.extend(["--expires", "30d"]);
    }
    let out = cachecore_output(&args, b"");
    assert_cachecore_ok(&out, &args);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = stderr
        .strip_prefix("token ")
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no id in {stderr:?}"))
        .to_owned();
    assert!(!stderr.contains(&token), "the token on stderr: {stderr}");
    (token, id)
}

/// Scoped tokens (`token issue`, `serve --token-secret`): each grants what it names — read,
/// push (real `nix copy --to` and substitution through netrc), sign — to no more; one for
/// another store, an expired one and a revoked one (by id, by name, the list re-read while the
/// server runs) are refused, each with one sentence naming the token by its name; the old
/// shared --token-file keeps working. No token ever appears in the server's log, its metrics,
/// its landing page, its refusals or a client's error.
#[test]
fn scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap();
    let cache = new_cache_dir(tmp.path(), "cache");
    let secret = tmp.path().join("token-secret");
    cachecore_ok(&["token", "secret", "--out", path_str(&secret)], b"");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&secret).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let again = cachecore_output(&["token", "secret", "--out", path_str(&secret)], b"");
    assert!(
        !again.status.success(),
        "an existing secret was overwritten"
    );

    let (ci, _) = issue_token(&secret, "ci-frontend", "push", &[]);
    let (alice, _) = issue_token(&secret, "alice", "read", &[]);
    let (signer, _) = issue_token(&secret, "release-signer", "sign", &[]);
    let (leaked, leaked_id) = issue_token(&secret, "leaked-ci", "push", &[]);
    let (intern, _) = issue_token(&secret, "intern", "read,push", &[]);
    let (team_b, _) = issue_token(&secret, "team-b", "push", &["--prefix", "/srv/team-b/"]);
    let (short, _) = issue_token(&secret, "short-lived", "read", &["--expires", "1s"]);
    let (mine, _) = issue_token(
        &secret,
        "team-a",
        "read",
        &["--prefix", path_str(&tmp.path().join("ca"))],
    );
    let bad = cachecore_output(
        &[
            "token",
            "issue",
            "--secret",
            path_str(&secret),
            "--name",
            "x y",
            "--can",
            "read",
            "--expires",
            "1d",
            "--prefix",
            "/srv/",
        ],
        b"",
    );
    assert_clean_error(&bad, "a name with a space");
    let tokens = [
        &ci, &alice, &signer, &leaked, &intern, &team_b, &short, &mine,
    ];

    let revoked = tmp.path().join("revoked");
    fs::write(&revoked, "# revoked tokens\n").unwrap();
    let (key, public) = nix_generate_key(tmp.path(), "team-scoped-1");
    let (other_key, other_public) = nix_generate_key(tmp.path(), "release-1");
    let (old_token, old_netrc) = credentials(tmp.path(), "old", "OLD-SHARED-TOKEN-1");
    let log = tmp.path().join("serve.log");
    let serve = Serve::spawn_logging_to(
        &[
            "serve",
            path_str(&cache),
            "--listen",
            "127.0.0.1:0",
            "--token-secret",
            path_str(&secret),
            "--revoked-tokens",
            path_str(&revoked),
            "--private-reads",
            "--key",
            path_str(&key),
            "--token-file",
            path_str(&old_token),
            "--public-key",
            &other_public,
        ],
        &[("RUST_LOG".to_owned(), "info".to_owned())],
        Stdio::from(fs::File::create(&log).unwrap()),
    );
    let url = serve.url.clone();
    let info = format!("{url}/nix-cache-info");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let mut answers = Vec::new();
    let mut get = |token: Option<&str>| {
        let r = match token {
            Some(t) => curl(&info, &["-H", &bearer(t)]),
            None => curl(&info, &[]),
        };
        answers.push(r.text());
        (r.status, r.text())
    };
    assert_eq!(get(None).0, 401, "reads are private");
    assert_eq!(get(Some(&alice)).0, 200);
    assert_eq!(get(Some(&mine)).0, 200, "a token for this store's prefix");
    let (status, why) = get(Some(&team_b));
    assert_eq!(status, 403);
    assert_eq!(
        why,
        "the token \"team-b\" is for stores under /srv/team-b/, and this server serves another\n"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let (status, why) = get(Some(&short));
    assert_eq!(status, 403);
    assert!(
        why.starts_with("the token \"short-lived\" expired at "),
        "{why}"
    );
    // A token of another secret, and one with its last character changed.
    let other_secret = tmp.path().join("other-secret");
    cachecore_ok(&["token", "secret", "--out", path_str(&other_secret)], b"");
    let (foreign, _) = issue_token(&other_secret, "ci-frontend", "push", &[]);
    let (status, why) = get(Some(&foreign));
    assert_eq!(status, 403);
    assert_eq!(
        why,
        "the token offered was not issued with this server's --token-secret\n"
    );
    let mut tampered = ci.clone();
    let last = if tampered.ends_with('A') { "B" } else { "A" };
    tampered.replace_range(tampered.len() - 1.., last);
    assert_eq!(get(Some(&tampered)).0, 403);

    // Real Nix: uploads with the push token in its netrc; the read token may not upload.
    let netrc = |name: &str, token: &str| credentials(tmp.path(), name, token).1;
    let refused = nix_copy_to(
        &url,
        &netrc("alice", &alice),
        &key,
        root,
        &tmp.path().join("x1"),
    );
    assert!(!refused.status.success(), "a read token uploaded");
    assert!(files_under(&cache).iter().all(|f| !f.ends_with(".narinfo")));
    let copied = nix_copy_to(&url, &netrc("ci", &ci), &key, root, &tmp.path().join("x2"));
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    // Real Nix substitutes with the read token (signatures required: the server's key).
    let mut cmd = nix_command("nix");
    cmd.env("XDG_CACHE_HOME", tmp.path().join("nix-cache-read"))
        .args(["copy", "--from", &url, "--to"])
        .arg(tmp.path().join("fresh"))
        .arg(root)
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", &public])
        .args(["--option", "substituters", ""])
        .args(["--option", "netrc-file"])
        .arg(netrc("alice-read", &alice));
    let out = nix_output(&mut cmd, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // cachecore with each token: a read token cannot push; a push token cannot sign; the sign
    // token signs and cannot push.
    let token_file = |name: &str, token: &str| credentials(tmp.path(), name, token).0;
    let tree = tmp.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    let push_with = |file: &Path, what: &str| {
        fs::write(tree.join("t"), what).unwrap();
        let args = [
            "push",
            &url,
            "--add",
            path_str(&tree),
            "--token-file",
            path_str(file),
        ];
        cachecore_output(&args, b"")
    };
    let sign_with = |file: &Path| {
        let args = [
            "sign",
            &url,
            root,
            "--key",
            path_str(&other_key),
            "--token-file",
            path_str(file),
        ];
        cachecore_output(&args, b"")
    };
    let mut client_errors = Vec::new();
    let mut refused = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        client_errors.push(stderr.clone());
        stderr
    };
    let stderr = refused(push_with(&token_file("alice-file", &alice), "scoped\n"));
    assert!(
        stderr.contains("the token \\\"alice\\\" may only read this cache, not upload")
            || stderr.contains("the token \"alice\" may only read this cache, not upload"),
        "{stderr}"
    );
    let stderr = refused(sign_with(&token_file("ci-file", &ci)));
    assert!(
        stderr.contains("ci-frontend") && stderr.contains("not sign"),
        "{stderr}"
    );
    let signer_file = token_file("signer-file", &signer);
    let out = sign_with(&signer_file);
    assert!(out.status.success(), "{out:?}");
    cachecore_ok(
        &["verify", path_str(&cache), "--trusted-key", &other_public],
        b"",
    );
    let stderr = refused(push_with(&signer_file, "scoped\n"));
    assert!(
        stderr.contains("release-signer") && stderr.contains("not push"),
        "{stderr}"
    );

    // Revoked while the server runs: by id, then by name.
    let leaked_file = token_file("leaked-file", &leaked);
    assert!(push_with(&leaked_file, "one\n").status.success());
    fs::write(
        &revoked,
        format!("# revoked tokens\n{leaked_id} # leaked in a CI log\n"),
    )
    .unwrap();
    let intern_file = token_file("intern-file", &intern);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, why) = get(Some(&leaked));
        if status == 403 {
            assert_eq!(
                why,
                format!("the token \"leaked-ci\" (id {leaked_id}) is revoked on this server\n")
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never revoked");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = push_with(&intern_file, "two\n");
    assert!(out.status.success(), "another token stays good: {out:?}");
    fs::write(&revoked, format!("{leaked_id}\nintern\n")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(Some(&intern)).0, 403, "revoked by name");
    assert_eq!(get(Some(&ci)).0, 200, "the others stay good");

    // The shared token of --token-file keeps working, for Nix's netrc too.
    assert!(push_with(&old_token, "three\n").status.success());
    let out = nix_copy_to(&url, &old_netrc, &key, root, &tmp.path().join("x3"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No token anywhere: log, metrics, landing page, refusals, client errors (nor the MAC or
    // payload parts of one).
    let metrics = curl(&format!("{url}/metrics"), &["-H", &bearer(&ci)]).text();
    let landing = curl(&format!("{url}/"), &["-H", &bearer(&ci)]).text();
    assert!(landing.contains("extra-substituters"), "{landing}");
    drop(serve);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("/nix-cache-info"),
        "the request log: {logged}"
    );
    for t in tokens.into_iter().chain([&foreign, &tampered]) {
        let (signed, mac) = t.rsplit_once('.').unwrap();
        let payload = signed.rsplit('.').next().unwrap();
        for part in [t.as_str(), mac, payload] {
            for (what, text) in [
                ("log", &logged),
                ("metrics", &metrics),
                ("landing page", &landing),
            ]
            .into_iter()
            .chain(answers.iter().map(|a| ("a refusal", a)))
            .chain(client_errors.iter().map(|e| ("a client's error", e)))
            {
                assert!(!text.contains(part), "a token in the {what}: {text}");
            }
        }
    }
}

/// `init` of a `cachecore serve` whose reads are private takes the token as the other commands
/// do.
#[test]
fn init_of_a_private_server_takes_a_token_file() {
    let tmp = tempdir();
    let cache = new_cache_dir(tmp.path(), "cache");
    let (token, _) = credentials(tmp.path(), "init", "INIT-TOKEN-1");
    let serve = Serve::start(
        path_str(&cache),
        &[
            "--token-file",
            path_str(&token),
            "--read-token-file",
            path_str(&token),
        ],
    );
    let out = cachecore_output(&["init", &serve.url], b"");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // Private reads with no token at all: no one could read.
    let out = cachecore_output(&["serve", path_str(&cache), "--private-reads"], b"");
    let line = assert_clean_error(&out, "--private-reads without a token");
    assert!(line.contains("without a token no one could read"), "{line}");
    let out = cachecore_output(&["init", &serve.url, "--token-file", path_str(&token)], b"");
    assert_cachecore_ok(&out, &["init"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("StoreDir: /nix/store\n"),
        "{out:?}"
    );
}

/// `cachecore sign` on an S3 bucket (Garage): the store kind `serve` most often fronts.
#[test]
fn sign_adds_a_signature_to_paths_in_a_garage_bucket() {
    let tmp = tempdir();
    let closure = build_closure(tmp.path());
    let root = closure.last().unwrap();
    let garage = common::garage::Garage::start();
    let store = garage.url("signed-later");
    on_garage_ok(&garage, &["push", &store, root, "--quiet"]);
    let (secret, public) = nix_generate_key(tmp.path(), "bucket-1");
    let unsigned = cachecore_command()
        .args(["verify", &store, "--trusted-key", &public])
        .envs(garage.env())
        .output()
        .unwrap();
    assert_eq!(unsigned.status.code(), Some(1), "{unsigned:?}");
    on_garage_ok(
        &garage,
        &[
            "sign",
            &store,
            "--all",
            "--key",
            path_str(&secret),
            "--quiet",
        ],
    );
    on_garage_ok(&garage, &["verify", &store, "--trusted-key", &public]);
}

/// `--upload-jobs N`: at most N uploads are carried out at once, the others wait for a slot.
/// The server's writes to the bucket (Garage) pass a gate that holds them: with `--upload-jobs
/// 2` and four uploads sent at once, two reach the bucket and two wait (the server's own gauge
/// says so) — and while they wait, no third write reaches the bucket; letting one write go lets
/// exactly one waiting upload in. With `--upload-jobs 4`, all four reach the bucket at once.
/// A server ignoring the flag (its default is 8) lets all four through in the first case.
#[test]
fn serve_upload_jobs_sets_how_many_uploads_reach_the_bucket_at_once() {
    let garage = common::garage::Garage::start();
    let tmp = tempdir();
    let (token, _) = credentials(tmp.path(), "uploader", "UPLOAD-JOBS-1");
    for jobs in [2usize, 4] {
        let store = garage.url(&format!("upload-jobs-{jobs}"));
        on_garage_ok(&garage, &["init", &store]);
        let gate = common::gate::Gate::start(garage.endpoint.strip_prefix("http://").unwrap());
        gate.hold(common::gate::Stop::Request, |r| {
            r.method == "PUT" && r.target.contains("/log/")
        });
        let gated = store.replace(&garage.endpoint, &gate.url());
        let jobs_arg = jobs.to_string();
        let serve = Serve::spawn(
            &[
                "serve",
                &gated,
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                path_str(&token),
                "--upload-jobs",
                &jobs_arg,
            ],
            &garage.env(),
        );
        let gauge = |name: &str| metric(&serve.url, &format!("cachecore_serve_{name}"));
        let uploads: Vec<_> = (0..4)
            .map(|i| {
                let url = format!(
                    "{}/log/{}-upload-jobs-{i}.drv",
                    serve.url, "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz"
                );
                std::thread::spawn(move || {
                    curl(
                        &url,
                        &[
                            "-X",
                            "PUT",
                            "--data-binary",
                            &format!("log {i}\n"),
                            "-H",
                            "Authorization: Bearer UPLOAD-JOBS-1",
                        ],
                    )
                })
            })
            .collect();
        let limit = Duration::from_secs(60);
        let waiting = 4 - jobs.min(4);
        gate.wait_held(jobs.min(4), limit);
        wait_until("the other uploads wait for a slot", limit, || {
            (gauge("upload_waiting_requests") == waiting as u64).then_some(())
        });
        // Those waiting hold no slot: nothing more can reach the bucket.
        assert_eq!(gauge("uploads_running"), jobs.min(4) as u64);
        assert_eq!(gate.held(), jobs.min(4), "{:#?}", gate.requests());
        if waiting > 0 {
            // One write done: one waiting upload takes its slot, and only one.
            gate.release();
            wait_until("a waiting upload takes the free slot", limit, || {
                (gauge("upload_waiting_requests") == waiting as u64 - 1).then_some(())
            });
            gate.wait_held(jobs, limit);
            assert_eq!(gate.held(), jobs, "{:#?}", gate.requests());
            assert_eq!(gauge("uploads_running"), jobs as u64);
        }
        gate.open();
        for upload in uploads {
            let r = upload.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(gauge("uploads_running"), 0);
        assert_eq!(gauge("upload_waiting_requests"), 0);
    }
}

/// A NAR the server takes itself (`--no-direct-uploads`, or one over 5 GiB, which no presigned
/// PUT can carry) goes to the bucket in parts: S3 takes at most 5 GiB in one PUT. The server
/// streams every NAR of at least `MULTIPART_THRESHOLD` bytes (10 MiB, far below 5 GiB) as a
/// multipart upload; this NAR is over twice that, so that without moving 5 GiB the test sees,
/// at a relay in front of Garage, the upload created, three parts or more, the upload
/// completed — and no single PUT of the NAR's key. A server sending NARs in one PUT would fail
/// here (and, over 5 GiB, at S3).
#[test]
fn serve_sends_a_nar_above_the_multipart_threshold_to_the_bucket_in_parts() {
    const _: () = assert!(cachecore::store::MULTIPART_THRESHOLD < 5 << 30);
    let garage = common::garage::Garage::start();
    let tmp = tempdir();
    let store = garage.url("parts");
    on_garage_ok(&garage, &["init", &store]);
    // Holding nothing: it only records what the server sends.
    let relay = common::gate::Gate::start(garage.endpoint.strip_prefix("http://").unwrap());
    let relayed = store.replace(&garage.endpoint, &relay.url());
    let (token, _) = credentials(tmp.path(), "parts", "PARTS-TOKEN-1");
    let serve = Serve::spawn(
        &[
            "serve",
            &relayed,
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            path_str(&token),
            "--no-direct-uploads",
        ],
        &garage.env(),
    );
    let big = tmp.path().join("parts-big");
    fs::create_dir(&big).unwrap();
    let size = 2 * cachecore::store::MULTIPART_THRESHOLD + 1;
    fs::write(big.join("blob"), pseudo_random_bytes(size, 0x9a27)).unwrap();
    let out = cachecore_output(
        &[
            "push",
            &serve.url,
            "--add",
            path_str(&big),
            "--compression",
            "none",
            "--token-file",
            path_str(&token),
        ],
        b"",
    );
    assert_cachecore_ok(&out, &["push through serve"]);
    let path = String::from_utf8(out.stdout).unwrap();
    let info = curl(
        &format!("{}/{}.narinfo", serve.url, hash_part(path.trim())),
        &[],
    );
    assert_eq!(info.status, 200, "{}", info.text());
    let nar_key = format!("/parts/{}", narinfo_field(&info.text(), "URL"));
    let nar_size: usize = narinfo_field(&info.text(), "NarSize").parse().unwrap();
    assert!(nar_size > size, "{nar_size}");
    let to_nar: Vec<String> = relay
        .requests()
        .into_iter()
        .filter(|l| l.split(' ').nth(1).is_some_and(|t| t.contains(&nar_key)))
        .collect();
    let count = |method: &str, query: &str| {
        to_nar
            .iter()
            .filter(|l| l.starts_with(method) && l.split(' ').nth(1).unwrap().contains(query))
            .count()
    };
    assert_eq!(count("POST ", "?uploads"), 1, "{to_nar:#?}");
    assert!(count("PUT ", "partNumber=") >= 3, "{to_nar:#?}");
    assert_eq!(count("POST ", "uploadId="), 1, "{to_nar:#?}");
    assert!(
        !to_nar
            .iter()
            .any(|l| l.starts_with("PUT ") && !l.contains("partNumber=")),
        "the NAR was sent in one PUT: {to_nar:#?}"
    );
    // What arrived in the bucket is the NAR: it verifies.
    on_garage_ok(&garage, &["verify", &store, path.trim()]);
}

/// `sign --jobs N` writes N narinfos at once: through a server, with every narinfo write held
/// at a gate in front of it, `--jobs 12` has twelve under way — more than the default 8 allows.
#[test]
fn sign_jobs_sets_how_many_narinfos_are_written_at_once() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    for i in 0..14 {
        let tree = tmp.path().join(format!("sign-jobs-{i}"));
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("f"), format!("{i}\n")).unwrap();
        push_tree(&cache, &tree, &[]);
    }
    let (secret, public) = nix_generate_key(tmp.path(), "sign-jobs-1");
    let (token, _) = credentials(tmp.path(), "signer", "SIGN-JOBS-1");
    let serve = Serve::start(
        path_str(&cache),
        &["--token-file", path_str(&token), "--public-key", &public],
    );
    let gate = common::gate::Gate::start(serve.url.strip_prefix("http://").unwrap());
    gate.hold(common::gate::Stop::Request, |r| {
        r.method == "PUT" && r.target.ends_with(".narinfo")
    });
    let mut child = cachecore_command()
        .args([
            "sign",
            &gate.url(),
            "--all",
            "--key",
            path_str(&secret),
            "--token-file",
            path_str(&token),
            "--jobs",
            "12",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let held = gate.wait_held(12, Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    gate.discard();
    assert_eq!(
        held.len(),
        12,
        "`sign --jobs 12` wrote more narinfos at once than it allows: {held:#?}"
    );
}

/// `--listen ADDR`: the server listens there and nowhere else. 127.0.0.2 is a loopback address
/// no default would pick; the port is the kernel's choice (0).
#[test]
fn serve_listen_sets_the_address_it_listens_on() {
    let tmp = tempdir();
    let cache = new_cache_dir(tmp.path(), "cache");
    let serve = Serve::spawn(&["serve", path_str(&cache), "--listen", "127.0.0.2:0"], &[]);
    let port = serve
        .url
        .strip_prefix("http://127.0.0.2:")
        .unwrap_or_else(|| panic!("listening on {}", serve.url));
    assert_ne!(port, "0");
    assert_eq!(
        curl(&format!("{}/nix-cache-info", serve.url), &[]).status,
        200
    );
    // Not on 127.0.0.1 at that port (curl's status 000: nothing answered).
    let elsewhere = curl(&format!("http://127.0.0.1:{port}/nix-cache-info"), &[]);
    assert_eq!(elsewhere.status, 0, "{}", elsewhere.text());
}

/// `push --logs --log-compression METHOD` stores each build log compressed with METHOD, as its
/// `Content-Encoding` (which the bucket hands on); without the option, as the store URL says.
#[test]
fn push_log_compression_sets_how_build_logs_are_stored() {
    let garage = common::garage::Garage::start();
    let tmp = tempdir();
    let n = nonce();
    let built = nix_build_scripts(
        tmp.path(),
        &[(
            "cachecore-log-compression",
            format!("echo log-compression-{n}; echo {n} > $out"),
        )],
    );
    let drv = nix("nix-store", &["-qd", &built[0]]);
    let drv_name = drv.rsplit('/').next().unwrap();
    let encoding_of = |prefix: &str| {
        let url = format!("{}/{prefix}/log/{drv_name}", garage.serve_website());
        let answer = curl(&url, &["-H", "Accept-Encoding: br, zstd"]);
        assert_eq!(answer.status, 200, "{url}");
        answer.header("content-encoding").map(str::to_owned)
    };
    for (prefix, option, expected) in [
        ("logs-br", Some("br"), Some("br")),
        ("logs-zstd", Some("zstd"), Some("zstd")),
        ("logs-plain", None, None),
    ] {
        let store = garage.url(prefix);
        let mut args = vec!["push", &store, &built[0], "--logs", "--quiet"];
        if let Some(method) = option {
            args.extend(["--log-compression", method]);
        }
        on_garage_ok(&garage, &args);
        assert_eq!(encoding_of(prefix).as_deref(), expected, "{prefix}");
    }
}

/// `--nar-cache-size BYTES` bounds what `--nar-cache-dir` keeps: with room for less than one
/// NAR, reading files of two xz paths leaves at most one kept (the one read last); with the
/// default (1 GiB), both stay.
#[test]
fn serve_nar_cache_size_bounds_the_kept_nars() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let mut bases = Vec::new();
    for name in ["kept-one", "kept-two"] {
        let tree = tmp.path().join(name);
        big_tree(&tree, 1);
        // Another NAR for each (not one object shared by both).
        fs::write(tree.join("which"), name).unwrap();
        bases.push(push_tree(
            &cache,
            &tree,
            &["--no-listing", "--compression", "xz"],
        ));
    }
    let origin = common::http_server::HttpServer::serve(&cache);
    for (size, most) in [(Some("1"), 1), (None, 2)] {
        let kept = tmp
            .path()
            .join(format!("kept-{}", size.unwrap_or("default")));
        let mut args = vec![
            "serve".to_owned(),
            origin.url(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--nar-cache-dir".to_owned(),
            path_str(&kept).to_owned(),
        ];
        if let Some(size) = size {
            args.extend(["--nar-cache-size".to_owned(), size.to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let serve = Serve::spawn(&args, &[]);
        for base in &bases {
            let r = curl(&format!("{}/serve/{base}/which", serve.url), &[]);
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.text(), &base[33..], "{base}");
        }
        drop(serve);
        let files = fs::read_dir(&kept).map_or(0, |d| d.count());
        if most == 1 {
            assert!(files <= 1, "--nar-cache-size 1 kept {files} NARs");
        } else {
            assert_eq!(files, 2, "the default size kept {files} NARs");
        }
    }
}
