//! A plain HTTP server for a directory (Python's `http.server`, plus `Range:` support as nginx
//! and S3 have), killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `SimpleHTTPRequestHandler` answers `Range: bytes=a-b` with the whole file; real cache servers
/// answer 206 with the slice. This adds that (single ranges only), and nothing else.
const SERVER: &str = r#"
import http.server, os, re, sys
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def send_head(self):
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if not m or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
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
port, root = int(sys.argv[1]), sys.argv[2]
os.chdir(root)
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

pub struct HttpServer {
    child: Child,
    pub port: u16,
}

impl HttpServer {
    /// Serves `dir` on a free port of 127.0.0.1.
    pub fn serve(dir: &Path) -> HttpServer {
        let port = super::free_port();
        let child = Command::new("python3")
            .args(["-c", SERVER, &port.to_string()])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start python3's http.server (apt-get install python3): {e}")
            });
        let mut server = HttpServer { child, port };
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("python3 http.server exited at once: {status}");
        }
        super::wait_for_port(port, Duration::from_secs(20), "python3 http.server");
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
