//! A plain HTTP server for a directory (Python's `http.server`, plus `Range:` support as nginx
//! and S3 have), killed on drop. It binds port 0 and prints the port it got, so no other test
//! can take its port between choosing and binding.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
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
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // The server may have died already; killing and reaping it is all that is left to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
