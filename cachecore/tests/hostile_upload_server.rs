//! Uploading to an HTTP cache (`CACHECORE_TOKEN`) whose server misbehaves: the answers a
//! client reads are bounded whatever length the server announces, and a presigned URL that
//! cannot be reached sends the object to the server instead, with its length. The server here
//! is a few lines of raw HTTP on a socket, so it can do what no real server would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cachecore::store::objects::WriteMode;
use cachecore::store::{BinaryCache, TOKEN_VAR};

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_length: Option<u64>,
    /// Body bytes read (bodies with a length are read whole; chunked ones are not read).
    body_len: u64,
    /// Bytes of an endless answer written before the client hung up.
    endless_written: u64,
}

/// How the server answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Every answer announces 100 MiB and sends until the client hangs up.
    Endless,
    /// `?upload-url` answers a URL nobody listens on; `PUT`s are read and taken.
    UnreachableBucket,
}

const ENDLESS: u64 = 100 << 20;

/// Endless answers being written now (each is logged when its client has hung up).
static ANSWERING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn serve(mode: Mode) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let log = log.clone();
            std::thread::spawn(move || handle(conn, mode, &log));
        }
    });
    (url, seen)
}

fn handle(conn: TcpStream, mode: Mode, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut content_length = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().ok();
                }
            }
        }
        let mut seen = Seen {
            method: method.clone(),
            path: path.clone(),
            content_length,
            body_len: 0,
            endless_written: 0,
        };
        match mode {
            Mode::Endless => {
                ANSWERING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {ENDLESS}\r\n\r\n",
                    if method == "POST" { 200 } else { 500 }
                );
                if out.write_all(head.as_bytes()).is_ok() {
                    let chunk = vec![b'a'; 64 << 10];
                    while seen.endless_written < ENDLESS && out.write_all(&chunk).is_ok() {
                        seen.endless_written += chunk.len() as u64;
                    }
                }
                log.lock().unwrap().push(seen);
                ANSWERING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            Mode::UnreachableBucket => {
                if let Some(n) = content_length {
                    let mut body = (&mut reader).take(n);
                    seen.body_len = std::io::copy(&mut body, &mut std::io::sink()).unwrap_or(0);
                }
                let body = if path.ends_with("?upload-url") {
                    // Port 1: nothing listens there.
                    "http://127.0.0.1:1/bucket/object?X-Amz-Signature=0".to_owned()
                } else {
                    "stored".to_owned()
                };
                log.lock().unwrap().push(seen);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

/// A streamed NAR's key, as `cachecore push` names one.
fn streamed_key() -> String {
    format!("nar/{}-0123456789abcdef.nar.zst", "1".repeat(52))
}

/// 12 MiB (above the one-request limit, so the upload is streamed), in 1 MiB chunks.
fn twelve_mib() -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::iter((0..12).map(|i| Ok(Bytes::from(vec![i as u8; 1 << 20]))))
}

fn open(url: &str) -> BinaryCache {
    BinaryCache::open_with_env(url, &[(TOKEN_VAR.to_owned(), "t0ken".to_owned())]).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn endless_answers_are_read_only_as_far_as_a_bound() {
    let (url, seen) = serve(Mode::Endless);
    let cache = open(&url);
    let key = streamed_key();
    let result = runtime().block_on(cache.objects().put_stream(
        &key,
        twelve_mib(),
        WriteMode::Overwrite,
    ));
    let err = result.expect_err("an upload the server answered with 500 succeeded");
    assert!(err.to_string().contains(&key), "{err}");
    // The client hung up on every endless answer long before its end: each answer is logged
    // once its writer sees that (a client still reading would keep one going for 100 MiB).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ANSWERING.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "an endless answer is still being read a minute after the upload failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for s in &seen {
        assert!(
            s.endless_written < 32 << 20,
            "the client read {} bytes of an endless answer to {} {}",
            s.endless_written,
            s.method,
            s.path
        );
    }
}

#[test]
fn an_unreachable_bucket_sends_the_object_to_the_server_with_its_length() {
    let (url, seen) = serve(Mode::UnreachableBucket);
    let cache = open(&url);
    let key = streamed_key();
    let written = runtime()
        .block_on(
            cache
                .objects()
                .put_stream(&key, twelve_mib(), WriteMode::Overwrite),
        )
        .unwrap();
    assert_eq!(written.size, 12 << 20);
    let seen = seen.lock().unwrap().clone();
    let put = seen
        .iter()
        .find(|s| s.method == "PUT" && s.path == format!("/{key}"))
        .unwrap_or_else(|| panic!("no PUT of the object reached the server: {seen:?}"));
    assert_eq!(put.content_length, Some(12 << 20), "{seen:?}");
    assert_eq!(put.body_len, 12 << 20);
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.path == format!("/{key}?upload-url")),
        "{seen:?}"
    );
}
