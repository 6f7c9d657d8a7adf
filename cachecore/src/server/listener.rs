//! Accepting and keeping connections for [`serve`]: what nginx's `client_header_timeout`,
//! `keepalive_timeout` and `worker_connections` do, for HTTP/1 and HTTP/2 alike.
//!
//! - **Idle connections are closed.** A connection with no request in flight for
//!   [`Connections::idle_timeout`] is closed: a socket that never sends anything, an HTTP/2
//!   connection that sent only its preface and settings, a keep-alive connection between
//!   requests. Idleness is counted in requests, not bytes, so HTTP/2 pings or a trickle of
//!   header bytes do not keep a connection open (headers must also arrive within 30 s).
//! - **Connections are capped** at [`Connections::max_connections`] (by default half the
//!   open-file limit, so that accepting never exhausts the descriptors the store needs). When
//!   the cap is reached, the connection idle the longest is closed to make room, as nginx reuses
//!   keep-alive connections: a pile of idle sockets cannot lock clients out. When every
//!   connection has a request in flight, a new one is answered `503` with `Retry-After` and
//!   closed — an answer, not silence. While those answers are under way (a few at a time),
//!   further connections wait in the kernel's backlog instead of taking descriptors.
//! - **Running out of descriptors** (`accept` failing with `EMFILE`/`ENFILE`) closes an idle
//!   connection and backs off (10 ms doubling to 1 s), with one warning per 10 s rather than one
//!   per attempt.
//!
//! What it costs: one small record per connection in a table scanned when the cap is reached
//! (O(connections) per connection over the cap), and a timer per idle connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

/// How [`serve`] treats connections. `Default`: a 60 s idle timeout, and at most half the
/// process's open-file limit (`ulimit -n`) of connections.
///
/// ```
/// use std::time::Duration;
/// use cachecore::server::Connections;
/// let mut connections = Connections::default();
/// assert_eq!(connections.idle_timeout, Duration::from_secs(60));
/// assert!(connections.max_connections >= 16);
/// connections.max_connections = 1000;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Connections {
    /// A connection with no request in flight for this long is closed: before its first request
    /// and between requests, for HTTP/1 and HTTP/2.
    pub idle_timeout: Duration,
    /// Connections served at once. Over it, the longest-idle connection is closed to make room;
    /// when none is idle, the new connection is answered `503 Service Unavailable`.
    pub max_connections: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
        }
    }
}

/// Half the soft open-file limit, between 16 and 16,384: the other half is left for the files
/// and connections that serving requests opens (store objects, upstreams).
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(limit / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 16_384)
}

/// How long a connection closed for idleness may take to say goodbye (an HTTP/2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long open requests may take to finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Sockets over the cap being answered 503 at once: an eighth of the cap, at least 4 and at most
/// this many; more wait to be accepted. (Each holds a descriptor, so they stay well inside what
/// the cap leaves of the open-file limit.)
const OVERFLOW: usize = 64;
/// How long a connection over the cap waits for the slot of a connection it evicted.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// How long a 503 for a full server waits for the client's request (to read it before closing).
const DRAIN: Duration = Duration::from_millis(250);
/// Seconds in `Retry-After` of a 503 for a full server.
const RETRY_AFTER_SECS: u64 = 2;

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish (for
/// up to 30 s); connections as [`Connections::default`] says. Request headers must arrive within
/// 30 s and fit in 64 KiB.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_with(listener, app, shutdown, Connections::default()).await
}

/// [`serve`] with connections treated as `connections` says.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use cachecore::server::{self, Config, Connections};
/// use cachecore::store::BinaryCache;
/// let app = server::router(BinaryCache::open("/srv/cache")?, Config::default()).await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let mut connections = Connections::default();
/// connections.idle_timeout = Duration::from_secs(15);
/// server::serve_with(listener, app, std::future::pending(), connections).await?;
/// # Ok(()) }
/// ```
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    connections: Connections,
) -> io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        // A peer with a request in flight that stops answering pings is gone.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let max = connections.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        builder,
        app,
        idle_timeout: connections.idle_timeout,
        max,
        slots: Arc::new(Semaphore::new(max)),
        overflow: Arc::new(Semaphore::new((max / 8).clamp(4, OVERFLOW))),
        table: Table::default(),
        stop: watch::channel(false).0,
    });
    let mut shutdown = std::pin::pin!(shutdown);
    let mut exhausted = Exhaustion::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    let Some(wait) = exhausted.failed(&e, &shared.table) else {
                        continue;
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        exhausted.accepted();
        let _ = stream.set_nodelay(true);
        // Placed before the next accept: while the server is full, new connections wait in
        // the kernel's backlog rather than each holding a descriptor here.
        let placed = tokio::select! {
            placed = place(&shared, stream, peer) => placed,
            () = &mut shutdown => break,
        };
        match placed {
            Placed::Slot(registered, stream, slot) => {
                tokio::spawn(connection(registered, stream, peer, slot));
            }
            Placed::TooBusy(stream, seat) => {
                let max = shared.max;
                tokio::spawn(async move {
                    too_busy(stream, max).await;
                    drop(seat);
                });
            }
            Placed::Dropped => {}
        }
    }
    drop(listener);
    shared.stop.send_replace(true);
    // Every connection holds a slot until it ends: all slots back means all closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within 30 s of the shutdown");
    }
    Ok(())
}

/// What every connection task of one [`serve_with`] shares.
struct Shared {
    builder: Builder<TokioExecutor>,
    app: Router,
    idle_timeout: Duration,
    max: usize,
    /// One permit per connection served.
    slots: Arc<Semaphore>,
    /// One permit per connection over the cap being answered 503.
    overflow: Arc<Semaphore>,
    table: Table,
    /// `true` once the server stops.
    stop: watch::Sender<bool>,
}

/// Where an accepted connection goes.
enum Placed {
    /// Served, in a slot of its own.
    Slot(Registered, TcpStream, OwnedSemaphorePermit),
    /// Answered 503, holding one of the seats for that.
    TooBusy(TcpStream, OwnedSemaphorePermit),
    /// Closed without an answer.
    Dropped,
}

/// A slot for a new connection: a free one, else the slot of the longest-idle connection,
/// closed for it (it is free within moments). When every connection has a request in flight
/// (or the evicted one does not let go within [`SLOT_WAIT`]), a seat to answer 503 from:
/// waited for, so that at most an eighth of the cap (between 4 and [`OVERFLOW`]) of such
/// answers are under way.
async fn place(shared: &Arc<Shared>, stream: TcpStream, peer: std::net::SocketAddr) -> Placed {
    let slot = match shared.slots.clone().try_acquire_owned() {
        Ok(slot) => Some(slot),
        Err(_) if shared.table.evict_longest_idle() => {
            tokio::time::timeout(SLOT_WAIT, shared.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        }
        Err(_) => None,
    };
    match slot {
        // Registered at once, so that the next connection over the cap may evict it.
        Some(slot) => Placed::Slot(Registered::new(shared), stream, slot),
        None => {
            tracing::debug!(%peer, "answered 503: every connection is busy");
            match shared.overflow.clone().acquire_owned().await {
                Ok(seat) => Placed::TooBusy(stream, seat),
                // Only if the semaphore were closed, which it never is.
                Err(_) => Placed::Dropped,
            }
        }
    }
}

/// Answers `503` with `Retry-After` on `stream` and closes it, reading (and dropping) what the
/// client sent for up to [`DRAIN`], so that closing with its request unread does not reset the
/// answer away.
async fn too_busy(mut stream: TcpStream, max: usize) {
    let body = format!(
        "this server is busy: all of its {max} connections have a request in flight; retry in a few seconds\n"
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: {RETRY_AFTER_SECS}\r\ncache-control: no-store\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(DRAIN, answer).await;
}

/// Serves one connection until it ends, it is idle for too long or evicted, or the server
/// stops; `_slot` is given back when it ends.
async fn connection(
    registered: Registered,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let shared = &registered.shared;
    let activity = registered.activity.clone();
    let service = Tracking {
        inner: TowerToHyperService::new(shared.app.clone()),
        activity: activity.clone(),
    };
    let conn = shared
        .builder
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut stop = shared.stop.subscribe();
    // Set once the connection was asked to close: until when it may take.
    let mut closing: Option<tokio::time::Instant> = None;
    let result = loop {
        let grace = async {
            match closing {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => break r,
            () = activity.idle_for(shared.idle_timeout), if closing.is_none() => {
                if activity.evicted.load(Ordering::Acquire)
                    && activity.in_flight.load(Ordering::Acquire) == 0
                {
                    // Its slot is wanted now: closed without a goodbye, as a keep-alive
                    // connection may be closed between requests.
                    break Ok(());
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = stop.wait_for(|s| *s), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            () = grace => {
                // A request that started as the connection went idle finishes first.
                if activity.in_flight.load(Ordering::Acquire) == 0 {
                    break Ok(());
                }
                closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The open connections, for eviction.
#[derive(Default)]
struct Table {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Table {
    fn insert(&self) -> Arc<Activity> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            id,
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, activity.clone());
        activity
    }

    /// Asks the connection idle the longest (no request in flight) to close; whether there
    /// was one.
    fn evict_longest_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let longest = open
            .values()
            .filter(|a| {
                a.in_flight.load(Ordering::Acquire) == 0 && !a.evicted.load(Ordering::Acquire)
            })
            .min_by_key(|a| *a.idle_since.lock().unwrap_or_else(|p| p.into_inner()));
        match longest {
            Some(a) => {
                a.evicted.store(true, Ordering::Release);
                a.changed.notify_waiters();
                true
            }
            None => false,
        }
    }
}

/// A connection in the table of its server, removed when this is dropped (when it ends).
struct Registered {
    shared: Arc<Shared>,
    activity: Arc<Activity>,
}

impl Registered {
    fn new(shared: &Arc<Shared>) -> Registered {
        Registered {
            shared: shared.clone(),
            activity: shared.table.insert(),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared
            .table
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.activity.id);
    }
}

/// What a connection is doing: requests in flight, and since when it has had none.
struct Activity {
    id: u64,
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened); meaningful while none is in
    /// flight.
    idle_since: Mutex<Instant>,
    /// Asked to close to make room for another connection.
    evicted: AtomicBool,
    /// Woken when a request starts or ends, or on eviction.
    changed: Notify,
}

impl Activity {
    /// Completes once the connection has had no request in flight for `timeout`, or was
    /// evicted.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before looking, so that a change in between still wakes this.
            changed.as_mut().enable();
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            if self.in_flight.load(Ordering::Acquire) == 0 {
                let since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                let deadline = since + timeout;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.into()) => {}
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One request in flight on a connection, from its head's arrival until its response body
/// was sent (or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_waiters();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
        self.0.changed.notify_waiters();
    }
}

/// The router as a hyper service that counts the requests in flight on its connection.
struct Tracking {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

type TrackedFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracking {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(self.activity.clone());
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Failed `accept`s: backs off while descriptors are exhausted, warning at most once per 10 s.
#[derive(Default)]
struct Exhaustion {
    backoff: Duration,
    /// When the last warning was logged, and the failures since.
    warned: Option<Instant>,
    since_warning: u64,
}

impl Exhaustion {
    const FIRST: Duration = Duration::from_millis(10);
    const LONGEST: Duration = Duration::from_secs(1);
    const WARN_EVERY: Duration = Duration::from_secs(10);

    /// How long to wait after `e` (none: accept again at once), having closed an idle
    /// connection of `table` when descriptors ran out.
    fn failed(&mut self, e: &io::Error, table: &Table) -> Option<Duration> {
        use rustix::io::Errno;
        let exhausted = matches!(
            Errno::from_io_error(e),
            Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
        );
        if !exhausted {
            // A client that gave up before its connection was accepted, and the like.
            tracing::debug!(error = %e, "cannot accept a connection");
            return None;
        }
        table.evict_longest_idle();
        self.since_warning += 1;
        let now = Instant::now();
        if self
            .warned
            .is_none_or(|at| now.duration_since(at) >= Self::WARN_EVERY)
        {
            tracing::warn!(
                error = %e,
                failures = self.since_warning,
                "cannot accept connections: closing the longest-idle connection and retrying (lower --max-connections or raise the open-file limit)"
            );
            self.warned = Some(now);
            self.since_warning = 0;
        }
        self.backoff = (self.backoff * 2).clamp(Self::FIRST, Self::LONGEST);
        Some(self.backoff)
    }

    fn accepted(&mut self) {
        self.backoff = Duration::ZERO;
    }
}
