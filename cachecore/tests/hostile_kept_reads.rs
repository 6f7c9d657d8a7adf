//! Small objects read from a remote store are kept in memory for a while
//! (`Objects::set_remote_ttl`, `serve --remote-read-ttl`): what a misbehaving server sends must
//! never be kept. The server is raw HTTP on a socket, so it can send a body shorter than it
//! announced, which no real server would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cachecore::store::{BinaryCache, Objects, ReadRange};
use futures::TryStreamExt as _;

const GOOD: &[u8] = b"StorePath: good\n";

/// Answers every GET: the first announces `GOOD`'s length, sends half and hangs up; the later
/// ones send `GOOD`, or 100 KiB for `/big`. Counts the requests.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                request.push_str(&line);
            }
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let body: Vec<u8> = if request.starts_with("GET /big ") {
                vec![b'x'; 100 << 10]
            } else {
                GOOD.to_vec()
            };
            let sent = if n == 0 {
                &body[..body.len() / 2]
            } else {
                &body[..]
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(sent);
        }
    });
    (url, count)
}

async fn read(o: &Objects, key: &str) -> Result<Bytes, String> {
    let object = o
        .get(key, ReadRange::All)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("missing")?;
    let chunks: Vec<Bytes> = object.body.try_collect().await.map_err(|e| e.to_string())?;
    Ok(Bytes::from(chunks.concat()))
}

#[tokio::test]
async fn a_short_body_is_never_kept_and_a_whole_one_is() {
    let (url, count) = serve();
    let cache = BinaryCache::open(&url).unwrap();
    let o = cache.objects();
    o.set_remote_ttl(Duration::from_secs(600));

    // Half the announced body, then the connection closes: an error, and nothing kept.
    let first = read(o, "a.narinfo").await;
    assert!(first.is_err(), "a short body was read as {first:?}");
    // So the next read asks the server again, and gets (and keeps) the whole object.
    assert_eq!(read(o, "a.narinfo").await.unwrap(), GOOD);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(read(o, "a.narinfo").await.unwrap(), GOOD);
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "a kept object was asked for again"
    );

    // Objects over 64 KiB stream from the server every time.
    for _ in 0..2 {
        assert_eq!(read(o, "big").await.unwrap().len(), 100 << 10);
    }
    assert_eq!(count.load(Ordering::SeqCst), 4);
}
