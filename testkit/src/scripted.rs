//! An HTTP server whose every answer a function makes: a hostile upstream that invents objects
//! as it is asked for them (narinfos naming ever new references, say), which no directory on
//! disk could hold. HTTP/1.1 with keep-alive, `GET` and `HEAD`; it counts the requests per key.

use std::collections::BTreeMap;
use std::io::{BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What answers one object key (the request path without its leading `/`): its bytes, or
/// `None` for a 404.
pub type Answer = dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync;

/// A server on a port of 127.0.0.1 the kernel picked, answering in threads of its own until the
/// process ends.
#[derive(Clone)]
pub struct ScriptedServer {
    pub port: u16,
    asked: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl ScriptedServer {
    pub fn start(answer: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let asked = Arc::new(Mutex::new(BTreeMap::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let count = asked.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (answer, count) = (answer.clone(), count.clone());
                std::thread::spawn(move || serve(stream, &*answer, &count));
            }
        });
        ScriptedServer { port, asked }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many requests (GET or HEAD) each key got so far.
    pub fn asked(&self) -> BTreeMap<String, u64> {
        self.asked.lock().unwrap().clone()
    }

    /// How many requests keys ending in `suffix` got so far.
    pub fn asked_ending(&self, suffix: &str) -> u64 {
        self.asked()
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Answers requests on one connection until the client closes it or sends garbage.
fn serve(stream: TcpStream, answer: &Answer, asked: &Mutex<BTreeMap<String, u64>>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    // A request body is not expected.
    while let Some(head) = crate::capture::read_head(&mut reader) {
        let mut parts = head.line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, key) = (method.to_owned(), target.trim_start_matches('/').to_owned());
        *asked.lock().unwrap().entry(key.clone()).or_default() += 1;
        let body = answer(&key);
        let (status, body) = match body {
            Some(b) => ("200 OK", b),
            None => ("404 Not Found", Vec::new()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\n\r\n",
            body.len()
        );
        let sent = out
            .write_all(head.as_bytes())
            .and_then(|()| match method.as_str() {
                "HEAD" => Ok(()),
                _ => out.write_all(&body),
            });
        if sent.is_err() {
            return;
        }
    }
}

/// A hostile upstream cache: `nix-cache-info`, and for every `<hash>.narinfo` asked for an
/// unsigned narinfo of `/nix/store/<hash>-evil` naming `references` store paths never named
/// before (`<new hash>-evil`), so that a reader following references never reaches the end.
/// Everything else is a 404.
pub fn inventing_upstream(references: usize) -> ScriptedServer {
    use std::sync::atomic::{AtomicU64, Ordering};
    let next = AtomicU64::new(1);
    ScriptedServer::start(move |key| {
        if key == "nix-cache-info" {
            return Some(b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n".to_vec());
        }
        let hash = key.strip_suffix(".narinfo")?;
        let first = next.fetch_add(references as u64, Ordering::Relaxed);
        let refs: Vec<String> = (first..first + references as u64)
            .map(|n| format!("{}-evil", nix32_of(n)))
            .collect();
        Some(
            format!(
                "StorePath: /nix/store/{hash}-evil\nURL: nar/{hash}.nar\nCompression: none\n\
                 NarHash: sha256:{}\nNarSize: 8\nReferences: {}\n",
                "0".repeat(52),
                refs.join(" ")
            )
            .into_bytes(),
        )
    })
}

/// A 32-character hash part in Nix's base-32 alphabet spelling `n`.
pub fn nix32_of(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut out = vec![b'0'; 32];
    for c in out.iter_mut().rev() {
        *c = ALPHABET[(n % 32) as usize];
        n /= 32;
    }
    String::from_utf8(out).expect("ASCII")
}
