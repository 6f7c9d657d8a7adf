//! A private single-node Garage (a real S3-compatible server) per test: temp directories, free
//! ports, a random RPC secret; layout, bucket and key created; killed on drop.
//!
//! Garage cannot bind port 0 and report the port (it logs the configured address), so its four
//! ports come from [`free_ports`](crate::net::free_ports) and a start that lost a port to
//! another test (its log says a listener failed, or it exits) is retried with other ports.
//!
//! The `garage` binary is found as `$GARAGE_BIN`, on `PATH`, or in `~/.cargo/bin`. When it is
//! missing the test fails (it never skips) with the command that installs it: `.ci/garage`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::net::{random_hex32, start_with_free_ports, wait_for_port};

pub const REGION: &str = "garage";

pub struct Garage {
    child: Child,
    bin: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    /// Port of the website endpoint (`[s3_web]`), which serves nothing until `serve_website`.
    web_port: u16,
}

/// Where the garage binary is, or a panic that says how to get it.
pub fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GARAGE_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "GARAGE_BIN={} is not a file; unset it, or run `.ci/garage` to install garage",
            p.display()
        );
        return p;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("garage");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(c) = cargo_home {
        let candidate = c.join("bin/garage");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the S3 tests need the `garage` binary (a real S3-compatible server) and it is not installed: \
         run `.ci/garage` from the repository root (it runs `cargo install garage --locked`, about 10 minutes \
         the first time), or set GARAGE_BIN to its path"
    );
}

impl Garage {
    /// Starts Garage and prepares bucket `nixcache` with a read-write key.
    pub fn start() -> Garage {
        let bin = garage_bin();
        let mut g = start_with_free_ports(4, "garage", |ports| Garage::spawn(&bin, ports));
        g.prepare();
        g
    }

    /// Starts the server on `ports` (RPC, S3, admin, web) and waits until it answers; `Err`
    /// with its log when it could not bind them.
    fn spawn(bin: &Path, ports: &[u16]) -> Result<Garage, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rpc, s3, admin, web) = (ports[0], ports[1], ports[2], ports[3]);
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[s3_web]
bind_addr = "127.0.0.1:{web}"
root_domain = ".web.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
                secret = random_hex32(),
                token = random_hex32(),
            ),
        )
        .expect("write garage.toml");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("log file");
        let log2 = log.try_clone().expect("dup log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut g = Garage {
            child,
            bin: bin.to_owned(),
            config,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "nixcache".to_owned(),
            key_id: String::new(),
            secret: String::new(),
            web_port: web,
        };
        g.wait_until_up()?;
        // The listeners are bound as the server starts, before it answers `garage status`; one
        // that could not bind its port says so in the log.
        wait_for_port(s3, Duration::from_secs(30), "garage S3 API");
        wait_for_port(web, Duration::from_secs(30), "garage website endpoint");
        wait_for_port(admin, Duration::from_secs(30), "garage admin API");
        g.bind_failure()?;
        Ok(g)
    }

    /// `Err(log)` when the log shows a listener that could not bind its port.
    fn bind_failure(&self) -> Result<(), String> {
        let log = self.log_tail();
        if log.contains("Address already in use") || log.contains("server exited with error") {
            return Err(format!("garage could not bind its ports:\n{log}"));
        }
        Ok(())
    }

    /// Lays out the single node, creates the bucket and a read-write key.
    fn prepare(&mut self) {
        let node_id = self.cli_ok(&["node", "id", "-q"]);
        let node = node_id
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.cli_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        self.cli_ok(&["layout", "apply", "--version", "1"]);
        self.cli_retry(&["bucket", "create", "nixcache"]);
        let key = self.cli_ok(&["key", "create", "test-key"]);
        self.key_id = field(&key, "key id").unwrap_or_else(|| panic!("no Key ID in:\n{key}"));
        self.secret =
            field(&key, "secret key").unwrap_or_else(|| panic!("no Secret key in:\n{key}"));
        self.cli_ok(&[
            "bucket", "allow", "--read", "--write", "--owner", "nixcache", "--key", "test-key",
        ]);
    }

    /// `s3://nixcache[/prefix]?endpoint=..&region=garage`
    pub fn url(&self, prefix: &str) -> String {
        let p = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        format!(
            "s3://{}{p}?endpoint={}&region={REGION}",
            self.bucket, self.endpoint
        )
    }

    /// Serves the bucket read-only, without credentials, over Garage's website endpoint, the
    /// way a plain HTTP binary cache is served, and returns its URL: `http://localhost:<port>`.
    ///
    /// The website endpoint picks the bucket from the `Host` header without its port: a host
    /// under `root_domain` names the bucket by its first label, any other host names it whole.
    /// `*.localhost` names do not resolve everywhere, so the bucket gets the global alias
    /// `localhost` and is read at `http://localhost:<port>`.
    pub fn serve_website(&self) -> String {
        self.cli_ok(&["bucket", "website", "--allow", &self.bucket]);
        self.cli_ok(&["bucket", "alias", &self.bucket, "localhost"]);
        format!("http://localhost:{}", self.web_port)
    }

    /// An environment with this Garage's key and nothing else of the caller's AWS setup.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), self.secret.clone()),
            (
                "HOME".to_owned(),
                self.dir.path().join("no-home").display().to_string(),
            ),
        ]
    }

    /// `curl` signing its request for this Garage's S3 API with this Garage's key (curl's own
    /// SigV4), for a request without a body; the caller adds the method and URL.
    fn s3_curl(&self) -> Command {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail-with-body", "-H"])
            // Garage wants the payload's hash said (here: of nothing).
            .arg("x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{REGION}:s3"))
            .arg("--user")
            .arg(format!("{}:{}", self.key_id, self.secret));
        curl
    }

    /// Deletes `key` (`prefix/…` as in [`url`](Self::url)) from the bucket behind every cache's
    /// back.
    pub fn delete_object(&self, key: &str) {
        let out = self
            .s3_curl()
            .args(["-X", "DELETE"])
            .arg(format!("{}/{}/{key}", self.endpoint, self.bucket))
            .output()
            .expect("cannot run curl");
        assert!(
            out.status.success(),
            "curl DELETE {key} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The keys under `prefix` (`prefix/…` as in [`url`](Self::url)), listed behind every
    /// cache's back with S3 ListObjectsV2; at most 1,000.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .s3_curl()
            // The query as SigV4 signs it: sorted, `/` escaped (the prefixes here need no other).
            .arg(format!(
                "{}/{}?list-type=2&prefix={}",
                self.endpoint,
                self.bucket,
                prefix.replace('/', "%2F")
            ))
            .output()
            .expect("cannot run curl");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !body.contains("<IsTruncated>true"),
            "curl ListObjectsV2 {prefix} failed: {body}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        body.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run garage {args:?}: {e}"))
    }

    /// Runs a garage CLI command; panics with its output and the server log if it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        if !out.status.success() {
            panic!(
                "garage {args:?} failed ({}):\n{}{}\n--- server log ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like `cli_ok`, retried for a few seconds (the layout takes a moment to apply).
    fn cli_retry(&self, args: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let out = self.cli(args);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if start.elapsed() > Duration::from_secs(20) {
                return self.cli_ok(args);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `garage status` answers; `Err(log)` when the server exited or could not
    /// bind a port meanwhile.
    fn wait_until_up(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "garage server exited ({status}):\n{}",
                    self.log_tail()
                ));
            }
            self.bind_failure()?;
            if self.cli(&["status"]).status.success() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "garage did not answer `garage status` within 60 s:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `Key ID: GK...` → `GK...` (case-insensitive label; Garage's output format varies a little
/// between versions).
fn field(text: &str, label: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim().eq_ignore_ascii_case(label)).then(|| v.trim().to_owned())
    })
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
