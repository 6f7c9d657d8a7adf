//! A TCP proxy in front of an HTTP/1.1 server (Garage, say) that forwards every request and
//! response byte for byte, and holds one chosen request — before it reaches the server, or
//! after the server carried it out but before its answer reaches the client — until the test
//! says. A test kills the client (`kill -9`) while the request is held, and so stops it at a
//! point chosen by what it sends, not by a sleep.
//!
//! The proxy reads the head of each request to know where requests begin (`Content-Length`
//! bodies; a chunked body ends the matching on its connection). It does not change a byte, so
//! SigV4 signatures (which cover the `Host` the client used, the proxy's) stay valid.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where a held request stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Before the server sees it: the request is not carried out.
    Request,
    /// After the server answered: the request is carried out, the client never hears so.
    Response,
}

type Matcher = Box<dyn Fn(&str, &str, &str) -> bool + Send>;

/// Bodies up to this size are read whole before a request is matched (S3's `POST ?delete`
/// names its keys in its body); a longer one is matched by its head alone.
const MATCHED_BODY: u64 = 64 << 10;

struct Rule {
    matches: Matcher,
    /// Matching requests to let through before the one held.
    skip: usize,
    hold: Hold,
}

#[derive(Default)]
struct State {
    rule: Option<Rule>,
    /// The request line (and body) held, once one is.
    held: Option<String>,
    /// Bumped by [`HoldingProxy::release`]: held connections drop.
    generation: u64,
    /// Every request line seen, in order.
    seen: Vec<String>,
}

/// A proxy on a port of 127.0.0.1 the kernel picked, forwarding to `upstream` in threads of its
/// own until the process ends.
#[derive(Clone)]
pub struct HoldingProxy {
    pub port: u16,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl HoldingProxy {
    /// Forwards connections to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let shared = state.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let state = shared.clone();
                std::thread::spawn(move || connection(client, server, state));
            }
        });
        HoldingProxy { port, state }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Holds the request after the `skip` first ones for which `matches(method, path, body)`
    /// holds (the path as sent, with its query; the body as text when at most 64 KiB, else
    /// empty), as `hold` says. Replaces any earlier rule.
    pub fn hold(
        &self,
        matches: impl Fn(&str, &str, &str) -> bool + Send + 'static,
        skip: usize,
        hold: Hold,
    ) {
        let mut s = self.lock();
        s.rule = Some(Rule {
            matches: Box::new(matches),
            skip,
            hold,
        });
        s.held = None;
    }

    /// Waits until a request is held and returns its request line and (when matched by it)
    /// body, a line break between; `None` when `gone()` says
    /// the client ended first or `limit` passed.
    pub fn wait_held(&self, limit: Duration, mut gone: impl FnMut() -> bool) -> Option<String> {
        let start = Instant::now();
        let (lock, cvar) = &*self.state;
        let mut s = lock.lock().unwrap();
        loop {
            if let Some(line) = &s.held {
                return Some(line.clone());
            }
            if start.elapsed() > limit {
                return None;
            }
            drop(s);
            if gone() {
                return self.lock().held.clone();
            }
            s = lock.lock().unwrap();
            s = cvar.wait_timeout(s, Duration::from_millis(20)).unwrap().0;
        }
    }

    /// Drops the held connection (its request never sent, or its answer never delivered) and
    /// the rule: everything after goes through.
    pub fn release(&self) {
        let mut s = self.lock();
        s.rule = None;
        s.held = None;
        s.generation += 1;
        self.state.1.notify_all();
    }

    /// Every request line forwarded or held so far.
    pub fn seen(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap()
    }
}

/// Blocks until [`HoldingProxy::release`] moves the generation past `generation`.
fn park(state: &(Mutex<State>, Condvar), generation: u64) {
    let (lock, cvar) = state;
    let mut s = lock.lock().unwrap();
    while s.generation == generation {
        s = cvar.wait(s).unwrap();
    }
}

fn connection(mut client: TcpStream, server: TcpStream, state: Arc<(Mutex<State>, Condvar)>) {
    let hold_response = Arc::new(Mutex::new(None::<(String, u64)>));
    let (Ok(mut server_read), Ok(client_write)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let back = {
        let (state, hold_response) = (state.clone(), hold_response.clone());
        let mut client_write = client_write;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match server_read.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some((line, generation)) = hold_response.lock().unwrap().take() {
                    {
                        let mut s = state.0.lock().unwrap();
                        s.held = Some(line);
                        state.1.notify_all();
                    }
                    park(&state, generation);
                    break;
                }
                if client_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = client_write.shutdown(Shutdown::Both);
        })
    };
    let mut server = server;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // Bytes of the current request's body still to forward; `None` once a body's length is
    // unknown (everything after is forwarded as it comes).
    let mut body_left: Option<u64> = Some(0);
    'read: loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            match body_left {
                None => {
                    if server.write_all(&pending).is_err() {
                        break 'read;
                    }
                    pending.clear();
                    continue 'read;
                }
                Some(left) if left > 0 => {
                    let take = (left.min(pending.len() as u64)) as usize;
                    if server.write_all(&pending[..take]).is_err() {
                        break 'read;
                    }
                    pending.drain(..take);
                    body_left = Some(left - take as u64);
                    if pending.is_empty() {
                        continue 'read;
                    }
                }
                Some(_) => {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue 'read;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    let line = head.lines().next().unwrap_or("").to_owned();
                    let mut parts = line.split(' ');
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let header = |name: &str| {
                        head.lines().skip(1).find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_owned())
                        })
                    };
                    let chunked =
                        header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
                    let length: u64 = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let head_len = end + 4;
                    let body = if !chunked && length <= MATCHED_BODY {
                        let whole = head_len + length as usize;
                        if pending.len() < whole {
                            continue 'read; // the rest of the body first
                        }
                        String::from_utf8_lossy(&pending[head_len..whole]).into_owned()
                    } else {
                        String::new()
                    };
                    let verdict = {
                        let mut s = state.0.lock().unwrap();
                        s.seen.push(line.clone());
                        let generation = s.generation;
                        match s.rule.as_mut() {
                            Some(rule) if (rule.matches)(method, path, &body) => {
                                if rule.skip > 0 {
                                    rule.skip -= 1;
                                    None
                                } else {
                                    let hold = rule.hold;
                                    s.rule = None;
                                    Some((hold, generation))
                                }
                            }
                            _ => None,
                        }
                    };
                    // What `wait_held` returns: the request line, and the body matched.
                    let line = format!("{line}\n{body}");
                    match verdict {
                        Some((Hold::Request, generation)) => {
                            {
                                let mut s = state.0.lock().unwrap();
                                s.held = Some(line);
                                state.1.notify_all();
                            }
                            park(&state, generation);
                            break 'read;
                        }
                        Some((Hold::Response, generation)) => {
                            *hold_response.lock().unwrap() = Some((line, generation));
                        }
                        None => {}
                    }
                    if server.write_all(&pending[..head_len]).is_err() {
                        break 'read;
                    }
                    pending.drain(..head_len);
                    body_left = if chunked { None } else { Some(length) };
                    if pending.is_empty() {
                        continue 'read;
                    }
                }
            }
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
    let _ = back.join();
}
