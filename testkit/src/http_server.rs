//! A plain HTTP server for a directory (Python's `http.server`, plus `Range:` support as nginx
//! and S3 have), killed on drop. It binds port 0 and prints the port it got, so no other test
//! can take its port between choosing and binding. It counts what it serves:
//! [`HttpServer::served`] returns the requests and body bytes per object since the last
//! [`HttpServer::reset_counts`].

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `SimpleHTTPRequestHandler` answers `Range: bytes=a-b` with the whole file; real cache servers
/// answer 206 with the slice. This adds that (single ranges only), and nothing else.
const SERVER: &str = r#"
import http.server, json, os, re, sys, threading
COUNTS = {}
LOCK = threading.Lock()
class Counting:
    def __init__(self, f, key): self.f, self.key = f, key
    def read(self, n=-1):
        data = self.f.read(n)
        with LOCK:
            c = COUNTS.setdefault(self.key, [0, 0])
            c[1] += len(data)
        return data
    def close(self): self.f.close()
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/__counts":
            with LOCK: body = json.dumps(COUNTS).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body); return
        if self.path == "/__reset":
            with LOCK: COUNTS.clear()
            self.send_response(204); self.end_headers(); return
        super().do_GET()
    def send_head(self):
        f = self.send_head_uncounted()
        if f is None or self.command != "GET":
            return f
        key = self.path.lstrip("/")
        with LOCK: COUNTS.setdefault(key, [0, 0])[0] += 1
        return Counting(f, key)
    def send_head_uncounted(self):
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if not m or not (m.group(1) or m.group(2)) or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        else:  # bytes=-N: the last N bytes
            start, end = max(size - int(m.group(2)), 0), size - 1
        if start >= size:
            self.send_response(416); self.send_header("Content-Range", f"bytes */{size}"); self.end_headers(); return None
        f = open(path, "rb"); f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        import io
        return io.BytesIO(f.read(end - start + 1))
root = sys.argv[1]
os.chdir(root)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

pub struct HttpServer {
    child: Child,
    pub port: u16,
}

impl HttpServer {
    /// Serves `dir` on a port of 127.0.0.1 the server picked itself.
    pub fn serve(dir: &Path) -> HttpServer {
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start python3's http.server (apt-get install python3): {e}")
            });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            // The receiver may have given up: nothing to do then.
            let _ = tx.send(read.map(|_| line));
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(line)) => line.trim().parse::<u16>().ok(),
            _ => None,
        };
        let mut server = HttpServer {
            child,
            port: port.unwrap_or(0),
        };
        if port.is_none() {
            let status = server.child.try_wait().ok().flatten();
            panic!("python3 http.server did not say which port it listens on (exit: {status:?})");
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Per object key: (GET requests, body bytes sent) since the last reset.
    pub fn served(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        let body = self.control("/__counts");
        let counts: std::collections::BTreeMap<String, (u64, u64)> =
            serde_json::from_str(&body).expect("the server's counts are JSON");
        counts
    }

    /// Starts counting from zero.
    pub fn reset_counts(&self) {
        self.control("/__reset");
    }

    fn control(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 2"), "{head}");
        body.to_owned()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // The server may have died already; killing and reaping it is all that is left to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
