//! An HTTP relay in front of a real server that holds the requests a test picks until the test
//! lets them go: a barrier at a step of a client's work that shows only on the wire (a push
//! about to write a narinfo, an upstream about to answer a lookup, a GC about to delete), or the
//! point where a client is killed (`kill -9`) — chosen by what it sends, never by a sleep. The
//! client and the server are the real ones; the relay passes their bytes through unchanged
//! (SigV4-signed S3 requests, which cover the `Host` the client used, stay valid), one
//! connection to the server per client connection, keep-alive included.
//!
//! [`Gate::hold`] says which requests to hold and where ([`Stop`]): before the server sees one
//! (it is not carried out), or after the server answered it (it is carried out; the client has
//! not heard so). [`Gate::wait_held`] waits until as many requests as a step needs are held;
//! [`Gate::release`] lets the oldest one go on; [`Gate::discard`] throws every held one away
//! (for a client killed while held: a request never reaches the server, an answer never reaches
//! the client, and their connections are closed); [`Gate::open`] holds nothing more.
//! [`Gate::requests`] lists every request line seen, in order, for watching a client's progress.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a held request stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Before the server sees it: while held, it is not carried out.
    Request,
    /// After the server answered: it is carried out, and the answer waits.
    Response,
}

/// A request as [`Gate::hold`]'s rule sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// `PUT /bucket/key?x=y HTTP/1.1`
    pub line: &'a str,
    pub method: &'a str,
    /// The target as sent, with its query.
    pub target: &'a str,
    /// The body as text when it is at most [`MATCHED_BODY`] bytes long with a `Content-Length`
    /// (S3's `POST ?delete` names its keys there); empty otherwise.
    pub body: &'a str,
}

/// Bodies up to this size are read whole before a request is matched; a longer one (or a
/// chunked one) is matched by its head alone, and streamed.
pub const MATCHED_BODY: u64 = 64 << 10;

type Rule = Box<dyn FnMut(&Request<'_>) -> Option<Stop> + Send>;

#[derive(Default)]
struct State {
    rule: Option<Rule>,
    /// Held requests, oldest first: (ticket, what [`Gate::wait_held`] shows of it).
    held: VecDeque<(u64, String)>,
    next_ticket: u64,
    /// Held requests the test threw away.
    discarded: Vec<u64>,
    /// Every request line seen, in order.
    seen: Vec<String>,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// A relay on a port of 127.0.0.1 the kernel picked, in threads of its own.
pub struct Gate {
    pub port: u16,
    state: Shared,
}

impl Gate {
    /// Relays to `server` (`127.0.0.1:PORT`), holding nothing until [`Gate::hold`] says what.
    pub fn start(server: &str) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let state: Shared = Arc::default();
        let server = server.to_owned();
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(&server) else {
                    continue;
                };
                let state = shared.clone();
                std::thread::spawn(move || relay(client, upstream, &state));
            }
        });
        Gate { port, state }
    }

    /// From now on, holds at `stop` every request `pick` picks (replacing any earlier rule;
    /// requests held already stay held). A rule that holds one request only counts: `let mut
    /// n = 0; gate.hold(Stop::Request, move |r| is_it(r) && { n += 1; n == 3 })` holds the
    /// third.
    pub fn hold(&self, stop: Stop, mut pick: impl FnMut(&Request<'_>) -> bool + Send + 'static) {
        self.lock().rule = Some(Box::new(move |r| pick(r).then_some(stop)));
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until at least `n` requests are held; each one's line (and, after a line break,
    /// its body when it was read to match it), oldest first. Panics after `timeout` saying
    /// what was seen.
    pub fn wait_held(&self, n: usize, timeout: Duration) -> Vec<String> {
        self.wait_held_while(n, timeout, || true)
            .unwrap_or_else(|| panic!("the gate's client ended before {n} requests were held"))
    }

    /// [`wait_held`](Self::wait_held), giving up with `None` as soon as `alive()` says false
    /// (the client ended first); `alive` is asked every 20 ms.
    pub fn wait_held_while(
        &self,
        n: usize,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Option<Vec<String>> {
        let start = Instant::now();
        let mut state = self.lock();
        loop {
            if state.held.len() >= n {
                return Some(state.held.iter().map(|(_, l)| l.clone()).collect());
            }
            let Some(left) = timeout.checked_sub(start.elapsed()) else {
                let why = format!(
                    "waited {timeout:?} for {n} held requests; held: {:?}; seen: {:#?}",
                    state.held, state.seen
                );
                // Not while holding the lock: the relays and the drop still take it.
                drop(state);
                panic!("{why}");
            };
            drop(state);
            if !alive() {
                let state = self.lock();
                return (state.held.len() >= n)
                    .then(|| state.held.iter().map(|(_, l)| l.clone()).collect());
            }
            state = self.lock();
            state = self
                .state
                .1
                .wait_timeout(state, left.min(Duration::from_millis(20)))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Lets the oldest held request go on (to the server, or its answer to the client); what
    /// [`wait_held`](Self::wait_held) showed of it. Panics when none is held.
    pub fn release(&self) -> String {
        let mut state = self.lock();
        let (_, line) = state.held.pop_front().expect("no request is held");
        self.state.1.notify_all();
        line
    }

    /// Throws every held request away: a request held before the server never reaches it, an
    /// answer held never reaches the client, and their connections are closed (for a client
    /// killed while held, whose request the relay may have read whole). What
    /// [`wait_held`](Self::wait_held) showed of them.
    pub fn discard(&self) -> Vec<String> {
        let mut state = self.lock();
        let held: Vec<(u64, String)> = state.held.drain(..).collect();
        state.discarded.extend(held.iter().map(|(t, _)| *t));
        self.state.1.notify_all();
        held.into_iter().map(|(_, l)| l).collect()
    }

    /// Holds nothing from now on and lets every held request go on.
    pub fn open(&self) {
        let mut state = self.lock();
        state.rule = None;
        state.held.clear();
        self.state.1.notify_all();
    }

    /// Every request line seen so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    /// How many requests are held now.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds `shown` under a new ticket until the test releases or discards it; whether it was
/// released.
fn park(state: &Shared, shown: String) -> bool {
    let mut s = lock(state);
    let ticket = s.next_ticket;
    s.next_ticket += 1;
    s.held.push_back((ticket, shown));
    state.1.notify_all();
    while s.held.iter().any(|(t, _)| *t == ticket) {
        s = state
            .1
            .wait(s)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    !s.discarded.contains(&ticket)
}

/// Passes one client connection's requests to `upstream` (holding those the rule picks) and
/// `upstream`'s bytes back, until either side closes.
fn relay(client: TcpStream, mut upstream: TcpStream, state: &Shared) {
    let (Ok(mut back_from), Ok(mut back_to)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    // The answer to hold next, if one is to be: what the test is shown of its request.
    let hold_answer: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let (state, hold_answer) = (state.clone(), hold_answer.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match back_from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let held = hold_answer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(shown) = held {
                    if !park(&state, shown) {
                        // Discarded: the client never hears the answer.
                        let _ = back_to.shutdown(Shutdown::Both);
                        let _ = back_from.shutdown(Shutdown::Both);
                        return;
                    }
                }
                if back_to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            // Only our side: a client still sending a body it was answered before gets the
            // answer, as from the server itself, not a reset.
            let _ = back_to.shutdown(Shutdown::Write);
        });
    }
    let mut reader = BufReader::new(client);
    while let Some((line, head, body)) = read_head(&mut reader) {
        // A small body is read before the request is matched, and sent after its head.
        let small = match body {
            Body::Length(n) if n <= MATCHED_BODY => {
                let mut bytes = Vec::with_capacity(n as usize);
                if (&mut reader).take(n).read_to_end(&mut bytes).is_err() || bytes.len() as u64 != n
                {
                    break;
                }
                Some(bytes)
            }
            _ => None,
        };
        let text = small
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let stop = {
            let mut s = lock(state);
            s.seen.push(line.clone());
            let mut parts = line.split(' ');
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let request = Request {
                line: &line,
                method,
                target,
                body: &text,
            };
            let stop = s.rule.as_mut().and_then(|rule| rule(&request));
            state.1.notify_all();
            stop
        };
        let shown = if text.is_empty() {
            line.clone()
        } else {
            format!("{line}\n{text}")
        };
        let go_on = match stop {
            Some(Stop::Request) => park(state, shown),
            Some(Stop::Response) => {
                *hold_answer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(shown);
                true
            }
            None => true,
        };
        if !go_on {
            break;
        }
        let sent = match small {
            Some(bytes) => upstream
                .write_all(&head)
                .and_then(|()| upstream.write_all(&bytes)),
            None => upstream
                .write_all(&head)
                .and_then(|()| forward_body(&mut reader, &mut upstream, body)),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Both);
    // What the client still sends goes nowhere, until it hangs up.
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

/// How a request's body ends.
#[derive(Clone, Copy)]
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
