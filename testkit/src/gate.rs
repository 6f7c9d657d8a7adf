//! An HTTP relay in front of a real server that holds the requests a test picks until the test
//! lets them go: a barrier at a step of a client's work that shows only on the wire (a push
//! about to write a narinfo, an upstream about to answer a lookup). The client and the server
//! are the real ones; the relay passes their bytes through unchanged (signed S3 requests stay
//! valid), one connection to the server per client connection, keep-alive included.
//!
//! A held request has been read up to the end of its head and nothing of it has reached the
//! server. [`Gate::wait_held`] waits until as many requests as a step needs are held (no
//! sleeping and hoping); [`Gate::release`] lets the oldest one through; a client killed while
//! its request is held is [`Gate::discard`]ed: nothing of that request reaches the server. [`Gate::requests`] lists
//! every request line seen, in order, for watching a client's progress.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Which requests to hold, by request line (`PUT /bucket/key HTTP/1.1`).
pub type Hold = dyn Fn(&str) -> bool + Send + Sync;

#[derive(Default)]
struct State {
    /// Held requests, oldest first: (ticket, request line).
    held: VecDeque<(u64, String)>,
    next_ticket: u64,
    /// Held requests the test threw away: never sent to the server.
    discarded: Vec<u64>,
    /// Every request line seen, in order.
    seen: Vec<String>,
    /// Nothing is held any more (the test opened the gate, or dropped it).
    open: bool,
}

/// A relay on a port of 127.0.0.1 the kernel picked, in threads of its own.
pub struct Gate {
    pub port: u16,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Gate {
    /// Relays to `server` (`127.0.0.1:PORT`), holding every request whose line `hold` picks.
    pub fn start(server: &str, hold: impl Fn(&str) -> bool + Send + Sync + 'static) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let hold: Arc<Hold> = Arc::new(hold);
        let server = server.to_owned();
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(&server) else {
                    continue;
                };
                let (state, hold) = (shared.clone(), hold.clone());
                std::thread::spawn(move || relay(client, upstream, &state, &*hold));
            }
        });
        Gate { port, state }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until at least `n` requests are held; their lines, oldest first. Panics after
    /// `timeout` saying what was seen.
    pub fn wait_held(&self, n: usize, timeout: Duration) -> Vec<String> {
        self.wait(timeout, &format!("{n} held requests"), |s| {
            (s.held.len() >= n).then(|| s.held.iter().map(|(_, l)| l.clone()).collect())
        })
    }

    /// Waits until `seen` (every request line so far, in order) gives `Some`.
    pub fn wait_seen<T>(
        &self,
        timeout: Duration,
        what: &str,
        seen: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        self.wait(timeout, what, |s| seen(&s.seen))
    }

    fn wait<T>(&self, timeout: Duration, what: &str, ready: impl Fn(&State) -> Option<T>) -> T {
        let (lock, changed) = &*self.state;
        let start = Instant::now();
        let mut state = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(t) = ready(&state) {
                return t;
            }
            let Some(left) = timeout.checked_sub(start.elapsed()) else {
                let why = format!(
                    "waited {timeout:?} for {what}; held: {:?}; seen: {:#?}",
                    state.held, state.seen
                );
                // Not while holding the lock: the relays and the drop still take it.
                drop(state);
                panic!("{why}");
            };
            state = changed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Lets the oldest held request through; its line. Panics when none is held.
    pub fn release(&self) -> String {
        let (lock, changed) = &*self.state;
        let mut state = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, line) = state.held.pop_front().expect("no request is held");
        changed.notify_all();
        line
    }

    /// Throws every held request away: none of it reaches the server, and its connection to the
    /// server is closed (for a client killed while held, whose request the relay may have read
    /// whole). Their lines.
    pub fn discard(&self) -> Vec<String> {
        let (lock, changed) = &*self.state;
        let mut state = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held: Vec<(u64, String)> = state.held.drain(..).collect();
        state.discarded.extend(held.iter().map(|(t, _)| *t));
        changed.notify_all();
        held.into_iter().map(|(_, l)| l).collect()
    }

    /// Holds nothing from now on and lets every held request through.
    pub fn open(&self) {
        let (lock, changed) = &*self.state;
        let mut state = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.open = true;
        state.held.clear();
        changed.notify_all();
    }

    /// Every request line seen so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seen
            .clone()
    }

    /// How many requests are held now.
    pub fn held(&self) -> usize {
        self.state
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .held
            .len()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

/// Passes one client connection's requests to `upstream` (holding those `hold` picks) and
/// `upstream`'s bytes back, until either side closes.
fn relay(client: TcpStream, mut upstream: TcpStream, state: &(Mutex<State>, Condvar), hold: &Hold) {
    let (Ok(mut back_from), Ok(mut back_to)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut back_from, &mut back_to);
        // Only our side: a client still sending a body it was answered before gets the
        // answer, as from the server itself, not a reset.
        let _ = back_to.shutdown(std::net::Shutdown::Write);
    });
    let mut reader = BufReader::new(client);
    while let Some((line, head, body)) = read_head(&mut reader) {
        let (lock, changed) = state;
        {
            let mut s = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.seen.push(line.clone());
            if !s.open && hold(&line) {
                let ticket = s.next_ticket;
                s.next_ticket += 1;
                s.held.push_back((ticket, line.clone()));
                changed.notify_all();
                while s.held.iter().any(|(t, _)| *t == ticket) {
                    s = changed
                        .wait(s)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if s.discarded.contains(&ticket) {
                    break;
                }
            }
            changed.notify_all();
        }
        if upstream.write_all(&head).is_err()
            || forward_body(&mut reader, &mut upstream, body).is_err()
        {
            break;
        }
    }
    let _ = upstream.shutdown(std::net::Shutdown::Both);
    // What the client still sends goes nowhere, until it hangs up.
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

/// How a request's body ends.
enum Body {
    Length(u64),
    Chunked,
}

/// The next request: its line, its head's bytes as sent, and how its body ends; `None` at the
/// connection's end.
fn read_head(reader: &mut impl BufRead) -> Option<(String, Vec<u8>, Body)> {
    let mut head = Vec::new();
    let mut line = String::new();
    let mut body = Body::Length(0);
    loop {
        let start = head.len();
        if reader.read_until(b'\n', &mut head).ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&head[start..])
            .trim_end()
            .to_owned();
        if start == 0 {
            line = text;
            continue;
        }
        if text.is_empty() {
            return Some((line, head, body));
        }
        if let Some((name, value)) = text.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                body = Body::Length(value.parse().ok()?);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                body = Body::Chunked;
            }
        }
    }
}

/// Copies one request body from `from` to `to` as it was sent.
fn forward_body(from: &mut impl BufRead, to: &mut impl Write, body: Body) -> std::io::Result<()> {
    let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    match body {
        Body::Length(n) => {
            if std::io::copy(&mut from.take(n), to)? != n {
                return Err(eof());
            }
        }
        Body::Chunked => loop {
            let mut size_line = Vec::new();
            if from.read_until(b'\n', &mut size_line)? == 0 {
                return Err(eof());
            }
            to.write_all(&size_line)?;
            let size = String::from_utf8_lossy(&size_line);
            let size = size.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut trailer = Vec::new();
                    if from.read_until(b'\n', &mut trailer)? == 0 {
                        return Err(eof());
                    }
                    to.write_all(&trailer)?;
                    if trailer == b"\r\n" || trailer == b"\n" {
                        return Ok(());
                    }
                }
            }
            // The chunk and its CRLF.
            if std::io::copy(&mut from.take(size + 2), to)? != size + 2 {
                return Err(eof());
            }
        },
    }
    Ok(())
}
