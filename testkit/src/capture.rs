//! An HTTP listener that records the head of every request it gets and answers each with an
//! empty `404 Not Found`: what a client sends (its `Authorization` header, its `Host`, its
//! path), seen without any real server behind it.

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request's head: the request line and the headers (names lower-cased).
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// From an AWS SigV4 `Authorization` header (`Credential=KEY/DATE/REGION/SERVICE/…`): the
    /// access key id and the region.
    pub fn sigv4_key_and_region(&self) -> Option<(String, String)> {
        let auth = self.header("authorization")?;
        let cred = auth.split("Credential=").nth(1)?.split(',').next()?;
        let mut parts = cred.split('/');
        let key = parts.next()?.to_owned();
        let _date = parts.next()?;
        let region = parts.next()?.to_owned();
        Some((key, region))
    }
}

/// A listener on a port of 127.0.0.1 the kernel picked, answering in a thread of its own
/// until the process ends.
#[derive(Debug, Clone)]
pub struct CaptureServer {
    pub port: u16,
    seen: Arc<Mutex<Vec<RequestHead>>>,
}

impl CaptureServer {
    pub fn start() -> CaptureServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = record.clone();
                std::thread::spawn(move || serve(stream, &record));
            }
        });
        CaptureServer { port, seen }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<RequestHead> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads request heads on one connection (keep-alive) and answers each with a 404.
fn serve(stream: std::net::TcpStream, record: &Mutex<Vec<RequestHead>>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(head) = read_head(&mut reader) {
        let body_len = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0usize);
        let mut body = vec![0u8; body_len];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        record.lock().unwrap().push(head);
        if out
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// The next request head on a connection; `None` at its end (or a broken head).
pub(crate) fn read_head(reader: &mut impl BufRead) -> Option<RequestHead> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Some(RequestHead {
        line: line.trim_end().to_owned(),
        headers,
    })
}
