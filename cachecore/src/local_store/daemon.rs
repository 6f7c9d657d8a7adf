//! A client of the Nix daemon's worker protocol over its unix socket: the source for users who
//! cannot read the Nix database (non-root users of a multi-user install).
//!
//! Only what reading metadata needs is spoken: the handshake, `IsValidPath` and
//! `QueryPathInfo`, each answered after a run of log messages (the "stderr" messages: log
//! lines, activities, results) that ends with `LAST` or `ERROR`. A closure is walked
//! breadth-first with `QueryPathInfo`; the requests for each level of the walk are written
//! together and their replies read in order (pipelining), so a wide closure costs a few round
//! trips rather than one per path. One connection is kept per [`super::LocalStore`] and made
//! again after any error, since an error can leave replies unread on it.
//!
//! Protocol versions 1.10 to 1.35 are spoken; a newer daemon speaks 1.35 to us. Tested
//! against Nix 2.8's daemon (1.34), and the other versions' differences with hand-made replies.
//! The `SetOptions` request a Nix client sends first is left out: queries do not depend on it.
//!
//! Everything the daemon sends is read with a bound ([`super::wire`]); a misbehaving peer gets
//! an error naming the socket, the operation and what was wrong, never a panic.

use std::collections::{HashSet, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::wire::{
    put_bytes, put_u64, read_bool, read_count, read_string, read_strings, read_u64, WireError,
};
use super::{LocalStoreError, PathInfo};
use crate::hash::{Hash, HashAlgo};
use crate::store_path::{StoreDir, StorePath};

/// What a client sends first ("cxin" on the wire).
const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// What the daemon answers ("oixd" on the wire).
const WORKER_MAGIC_2: u64 = 0x6478_696f;
/// The version this client speaks: 1.35 (a newer daemon steps down to it).
const CLIENT_MINOR: u64 = 35;
const PROTOCOL_MAJOR: u64 = 1;
/// The oldest version spoken: 1.10, the oldest Nix's own client accepts.
const MIN_MINOR: u64 = 10;

const OP_IS_VALID_PATH: u64 = 1;
const OP_QUERY_PATH_INFO: u64 = 26;

const STDERR_NEXT: u64 = 0x6f6c_6d67;
const STDERR_READ: u64 = 0x6461_7461;
const STDERR_WRITE: u64 = 0x6461_7416;
const STDERR_LAST: u64 = 0x616c_7473;
const STDERR_ERROR: u64 = 0x6378_7470;
const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
const STDERR_RESULT: u64 = 0x5253_4c54;

/// Bounds on what the daemon may send. Store paths are far below PATH_MAX; the others are
/// generous for what Nix writes there.
const MAX_PATH: usize = 4096;
const MAX_HASH: usize = 256;
const MAX_REFERENCES: usize = 1 << 20;
const MAX_SIGNATURES: usize = 4096;
const MAX_SIGNATURE: usize = 64 * 1024;
const MAX_CA: usize = 64 * 1024;
const MAX_MESSAGE: usize = 1 << 20;
const MAX_FIELDS: usize = 1024;
const MAX_TRACES: usize = 1024;
const MAX_VERSION: usize = 1024;
/// An error message is cut here when quoted in ours.
const MAX_QUOTED: usize = 2000;

/// Requests written before their replies are read: small enough that the batch fits in the
/// socket's buffer at once, so writing it never waits on the daemon (which may itself be
/// waiting for us to read its replies).
const PIPELINE_REQUESTS: usize = 128;
const PIPELINE_BYTES: usize = 32 * 1024;

/// How long one read or write may wait. The daemon answers queries from its database in
/// milliseconds; a minute of silence means it is stuck or is not a daemon.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong while talking to the daemon (the socket and the operation are in
/// [`LocalStoreError::Daemon`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonProblem {
    /// The connection ended or was reset.
    #[error("{0}")]
    Closed(String),
    #[error("no answer within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// Reading or writing failed (`what`: "reading the NAR hash", "sending a request").
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// The peer sent something the protocol does not allow (or a version it does not cover).
    #[error("{0}")]
    Protocol(String),
    /// The daemon reported an error (quoted without its terminal escapes).
    #[error("the daemon says: {0}")]
    Remote(String),
}

impl From<WireError> for DaemonProblem {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated { .. } => DaemonProblem::Closed(e.to_string()),
            WireError::Io { what, source } => io_problem(format!("reading {what}"), source),
            other => DaemonProblem::Protocol(other.to_string()),
        }
    }
}

fn io_problem(what: String, source: io::Error) -> DaemonProblem {
    match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => DaemonProblem::TimedOut(IO_TIMEOUT),
        // Said in words: "Broken pipe" in an error reads like a closed stdout to the CLI.
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => {
            DaemonProblem::Closed(format!("the daemon closed the connection ({what})"))
        }
        _ => DaemonProblem::Io { what, source },
    }
}

/// What the daemon said of itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DaemonInfo {
    /// The protocol version in use (major, minor): the lower of the daemon's and ours.
    pub protocol: (u64, u64),
    /// The daemon's Nix version (sent from protocol 1.33 on).
    pub nix_version: Option<String>,
    /// Whether the daemon trusts this user (sent from protocol 1.35 on; `None`: not said).
    pub trusted: Option<bool>,
}

/// A reply to `QueryPathInfo`, as sent (before store paths and the hash are parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WirePathInfo {
    pub deriver: String,
    pub nar_hash: String,
    pub references: Vec<String>,
    pub registration_time: u64,
    pub nar_size: u64,
    pub ultimate: bool,
    pub signatures: Vec<String>,
    pub ca: String,
}

/// One connection past the handshake.
#[derive(Debug)]
pub(crate) struct Connection<S> {
    io: BufReader<S>,
    /// The protocol minor version both sides speak: the lower of the two.
    minor: u64,
    /// The daemon's Nix version (sent from protocol 1.33).
    daemon_version: Option<String>,
    /// Whether the daemon trusts this user (sent from protocol 1.35).
    trusted: Option<bool>,
}

impl<S: Read + Write> Connection<S> {
    /// Greets the daemon: magic numbers, versions, the obsolete CPU-affinity and
    /// reserve-space words the version asks for, then the daemon's log messages up to `LAST`.
    pub(crate) fn handshake(stream: S) -> Result<Self, DaemonProblem> {
        let mut conn = Connection {
            io: BufReader::new(stream),
            minor: 0,
            daemon_version: None,
            trusted: None,
        };
        let mut hello = Vec::with_capacity(8);
        put_u64(&mut hello, WORKER_MAGIC_1);
        conn.send(&hello)?;
        let magic = match read_u64(&mut conn.io, "the daemon's magic number") {
            Err(WireError::Truncated { .. }) => {
                return Err(DaemonProblem::Closed(
                    "the connection ended before the daemon's greeting (the daemon hangs up \
                     on users that allowed-users in nix.conf does not list)"
                        .into(),
                ))
            }
            other => other?,
        };
        if magic != WORKER_MAGIC_2 {
            return Err(DaemonProblem::Protocol(format!(
                "the peer sent {magic:#018x} where the daemon's magic number \
                 {WORKER_MAGIC_2:#x} belongs; is something other than a Nix daemon listening \
                 there?"
            )));
        }
        let version = read_u64(&mut conn.io, "the daemon's protocol version")?;
        let (major, minor) = (version >> 8, version & 0xff);
        if major != PROTOCOL_MAJOR || minor < MIN_MINOR {
            return Err(DaemonProblem::Protocol(format!(
                "the daemon speaks protocol version {}, and this client speaks \
                 {PROTOCOL_MAJOR}.{MIN_MINOR} to {PROTOCOL_MAJOR}.{CLIENT_MINOR}",
                if version <= 0xffff {
                    format!("{major}.{minor}")
                } else {
                    format!("{version:#x}")
                }
            )));
        }
        conn.minor = minor.min(CLIENT_MINOR);
        let mut reply = Vec::with_capacity(24);
        put_u64(&mut reply, PROTOCOL_MAJOR << 8 | CLIENT_MINOR);
        if conn.minor >= 14 {
            put_u64(&mut reply, 0); // no CPU affinity (obsolete)
        }
        if conn.minor >= 11 {
            put_u64(&mut reply, 0); // do not reserve space (obsolete)
        }
        conn.send(&reply)?;
        if conn.minor >= 33 {
            conn.daemon_version = Some(read_string(
                &mut conn.io,
                "the daemon's Nix version",
                MAX_VERSION,
            )?);
        }
        if conn.minor >= 35 {
            conn.trusted = match read_u64(&mut conn.io, "the daemon's trust in this user")? {
                0 => None,
                1 => Some(true),
                2 => Some(false),
                n => {
                    return Err(DaemonProblem::Protocol(format!(
                        "the daemon sent {n} where 0, 1 or 2 (its trust in this user) belongs"
                    )))
                }
            };
        }
        conn.process_stderr()?;
        Ok(conn)
    }

    /// The protocol minor version in use.
    pub(crate) fn minor(&self) -> u64 {
        self.minor
    }

    pub(crate) fn info(&self) -> DaemonInfo {
        DaemonInfo {
            protocol: (PROTOCOL_MAJOR, self.minor),
            nix_version: self.daemon_version.clone(),
            trusted: self.trusted,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), DaemonProblem> {
        let stream = self.io.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(|e| io_problem("sending a request".into(), e))
    }

    /// Reads the daemon's log messages until `LAST` (the reply follows) or `ERROR`.
    fn process_stderr(&mut self) -> Result<(), DaemonProblem> {
        let r = &mut self.io;
        loop {
            match read_u64(r, "a log message")? {
                STDERR_LAST => return Ok(()),
                STDERR_NEXT => {
                    read_string(r, "a log line", MAX_MESSAGE)?;
                }
                STDERR_ERROR => return Err(read_error(r, self.minor)?),
                STDERR_START_ACTIVITY => {
                    read_u64(r, "an activity id")?;
                    read_u64(r, "an activity's verbosity")?;
                    read_u64(r, "an activity's type")?;
                    read_string(r, "an activity's text", MAX_MESSAGE)?;
                    read_fields(r)?;
                    read_u64(r, "an activity's parent")?;
                }
                STDERR_STOP_ACTIVITY => {
                    read_u64(r, "an activity id")?;
                }
                STDERR_RESULT => {
                    read_u64(r, "an activity id")?;
                    read_u64(r, "a result's type")?;
                    read_fields(r)?;
                }
                STDERR_READ => {
                    return Err(DaemonProblem::Protocol(
                        "the daemon asked for data (STDERR_READ), and no request of this \
                         client sends any"
                            .into(),
                    ))
                }
                STDERR_WRITE => {
                    return Err(DaemonProblem::Protocol(
                        "the daemon sent data for a sink (STDERR_WRITE), and no request of \
                         this client expects any"
                            .into(),
                    ))
                }
                other => {
                    return Err(DaemonProblem::Protocol(format!(
                        "the daemon sent {other:#x} where a log message (STDERR_*) belongs"
                    )))
                }
            }
        }
    }

    /// `IsValidPath`.
    pub(crate) fn is_valid_path(&mut self, full_path: &str) -> Result<bool, DaemonProblem> {
        let mut req = Vec::new();
        put_u64(&mut req, OP_IS_VALID_PATH);
        put_bytes(&mut req, full_path.as_bytes());
        self.send(&req)?;
        self.process_stderr()?;
        Ok(read_bool(&mut self.io, "the validity")?)
    }

    /// `QueryPathInfo`; `None` when the path is not valid. Before protocol 1.17 the daemon
    /// answers an invalid path with an error, so validity is asked first there.
    pub(crate) fn query_path_info(
        &mut self,
        full_path: &str,
    ) -> Result<Option<WirePathInfo>, DaemonProblem> {
        if self.minor < 17 && !self.is_valid_path(full_path)? {
            return Ok(None);
        }
        let mut req = Vec::new();
        put_query_path_info(&mut req, full_path);
        self.send(&req)?;
        self.read_path_info_reply()
    }

    /// Sends requests written with [`put_query_path_info`] (their replies are read in order
    /// with [`Self::read_path_info_reply`]).
    pub(crate) fn send_requests(&mut self, requests: &[u8]) -> Result<(), DaemonProblem> {
        self.send(requests)
    }

    /// The reply to one `QueryPathInfo`.
    pub(crate) fn read_path_info_reply(&mut self) -> Result<Option<WirePathInfo>, DaemonProblem> {
        self.process_stderr()?;
        let r = &mut self.io;
        if self.minor >= 17 && !read_bool(r, "the validity")? {
            return Ok(None);
        }
        let deriver = read_string(r, "the deriver", MAX_PATH)?;
        let nar_hash = read_string(r, "the NAR hash", MAX_HASH)?;
        let references = read_strings(
            r,
            "the reference list",
            "a reference",
            MAX_REFERENCES,
            MAX_PATH,
        )?;
        let registration_time = read_u64(r, "the registration time")?;
        let nar_size = read_u64(r, "the NAR size")?;
        let (mut ultimate, mut signatures, mut ca) = (false, Vec::new(), String::new());
        if self.minor >= 16 {
            ultimate = read_bool(r, "the ultimate flag")?;
            signatures = read_strings(
                r,
                "the signature list",
                "a signature",
                MAX_SIGNATURES,
                MAX_SIGNATURE,
            )?;
            ca = read_string(r, "the content address", MAX_CA)?;
        }
        Ok(Some(WirePathInfo {
            deriver,
            nar_hash,
            references,
            registration_time,
            nar_size,
            ultimate,
            signatures,
            ca,
        }))
    }
}

/// Appends one `QueryPathInfo` request to `req`.
pub(crate) fn put_query_path_info(req: &mut Vec<u8>, full_path: &str) {
    put_u64(req, OP_QUERY_PATH_INFO);
    put_bytes(req, full_path.as_bytes());
}

/// The fields of an activity or a result: each an integer or a string.
fn read_fields(r: &mut impl Read) -> Result<(), DaemonProblem> {
    let count = read_count(r, "an activity's fields", MAX_FIELDS)?;
    for _ in 0..count {
        match read_u64(r, "a field's type")? {
            0 => {
                read_u64(r, "an integer field")?;
            }
            1 => {
                read_string(r, "a string field", MAX_MESSAGE)?;
            }
            t => {
                return Err(DaemonProblem::Protocol(format!(
                    "the daemon sent a field of type {t}, where 0 (integer) or 1 (string) belongs"
                )))
            }
        }
    }
    Ok(())
}

/// The body of `STDERR_ERROR`: from protocol 1.26 a structured error (type, level, name,
/// message, position, traces); before, a message and an exit status.
fn read_error(r: &mut impl Read, minor: u64) -> Result<DaemonProblem, DaemonProblem> {
    if minor < 26 {
        let message = read_string(r, "an error message", MAX_MESSAGE)?;
        read_u64(r, "an error's exit status")?;
        return Ok(DaemonProblem::Remote(printable(&message)));
    }
    let kind = read_string(r, "an error's type", MAX_MESSAGE)?;
    if kind != "Error" {
        return Err(DaemonProblem::Protocol(format!(
            "the daemon sent an error of type {:?} where \"Error\" belongs",
            printable(&kind)
        )));
    }
    read_u64(r, "an error's verbosity")?;
    read_string(r, "an error's name", MAX_MESSAGE)?; // no longer used by Nix
    let message = read_string(r, "an error message", MAX_MESSAGE)?;
    let no_position = |r: &mut _| -> Result<(), DaemonProblem> {
        match read_u64(r, "an error position")? {
            0 => Ok(()),
            n => Err(DaemonProblem::Protocol(format!(
                "the daemon sent an error position ({n}), which the protocol has no room for"
            ))),
        }
    };
    no_position(r)?;
    let traces = read_count(r, "an error's traces", MAX_TRACES)?;
    let mut text = printable(&message);
    for _ in 0..traces {
        no_position(r)?;
        let trace = read_string(r, "an error trace", MAX_MESSAGE)?;
        text.push_str("; ");
        text.push_str(&printable(&trace));
    }
    Ok(DaemonProblem::Remote(cut(text)))
}

/// `s` without terminal escapes (Nix colours the paths in its messages) or other control
/// characters, on one line and at most [`MAX_QUOTED`] characters long.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_QUOTED));
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte in @..~; other escapes: ESC and one character.
            if chars.next_if_eq(&'[').is_some() {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c.is_control() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    cut(out.trim().to_owned())
}

fn cut(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(MAX_QUOTED) {
        s.truncate(i);
        s.push('…');
    }
    s
}

/// The daemon source of a [`super::LocalStore`]: the socket and one connection to it.
#[derive(Debug)]
pub(super) struct DaemonClient {
    socket: PathBuf,
    conn: Mutex<Option<Connection<UnixStream>>>,
}

impl DaemonClient {
    /// Connects and shakes hands (so a socket nobody answers on fails here).
    pub(super) fn open(socket: PathBuf) -> Result<Self, LocalStoreError> {
        let conn = connect(&socket)?;
        Ok(DaemonClient {
            socket,
            conn: Mutex::new(Some(conn)),
        })
    }

    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the daemon said in the handshake (connecting again if the connection was dropped).
    pub(super) fn info(&self) -> Result<DaemonInfo, LocalStoreError> {
        self.with_connection(|conn| Ok(conn.info()))
    }

    /// Runs `f` on the connection, connecting first if there is none. Any error drops the
    /// connection: replies to requests already sent may be left unread on it.
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection<UnixStream>) -> Result<T, LocalStoreError>,
    ) -> Result<T, LocalStoreError> {
        // A panic while holding the lock leaves at worst a connection in an unknown state;
        // it is dropped below on the next error, and requests are idempotent.
        let mut slot = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let conn = match &mut *slot {
            Some(conn) => conn,
            None => slot.insert(connect(&self.socket)?),
        };
        let result = f(conn);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    fn error(&self, op: String) -> impl FnOnce(DaemonProblem) -> LocalStoreError + '_ {
        move |problem| LocalStoreError::Daemon {
            socket: self.socket.clone(),
            op,
            problem,
        }
    }

    pub(super) fn is_valid(
        &self,
        store_dir: &StoreDir,
        path: &StorePath,
    ) -> Result<bool, LocalStoreError> {
        let full = store_dir.full_path(path);
        self.with_connection(|conn| {
            conn.is_valid_path(&full)
                .map_err(self.error(format!("is-valid-path {full}")))
        })
    }

    pub(super) fn path_info(
        &self,
        store_dir: &StoreDir,
        path: &StorePath,
    ) -> Result<Option<PathInfo>, LocalStoreError> {
        let full = store_dir.full_path(path);
        self.with_connection(|conn| {
            conn.query_path_info(&full)
                .map_err(self.error(format!("query-path-info {full}")))
        })?
        .map(|wire| self.to_info(store_dir, path.clone(), &full, wire))
        .transpose()
    }

    /// The paths of the closure of `roots`, each once, in no particular order.
    pub(super) fn closure(
        &self,
        store_dir: &StoreDir,
        roots: &[StorePath],
    ) -> Result<Vec<PathInfo>, LocalStoreError> {
        self.with_connection(|conn| {
            let mut seen: HashSet<StorePath> = HashSet::new();
            let mut queue: VecDeque<StorePath> = VecDeque::new();
            for root in roots {
                if seen.insert(root.clone()) {
                    queue.push_back(root.clone());
                }
            }
            let mut infos = Vec::new();
            while !queue.is_empty() {
                // One batch of requests, then their replies in order.
                let mut batch: Vec<(StorePath, String)> = Vec::new();
                let mut requests = Vec::new();
                while batch.len() < PIPELINE_REQUESTS && requests.len() < PIPELINE_BYTES {
                    let Some(path) = queue.pop_front() else { break };
                    let full = store_dir.full_path(&path);
                    if conn.minor() < 17
                        && !conn
                            .is_valid_path(&full)
                            .map_err(self.error(format!("is-valid-path {full}")))?
                    {
                        return Err(LocalStoreError::NotValid {
                            path: full,
                            arg: None,
                        });
                    }
                    put_query_path_info(&mut requests, &full);
                    batch.push((path, full));
                }
                conn.send_requests(&requests).map_err(self.error(format!(
                    "query-path-info ({} paths from {})",
                    batch.len(),
                    batch.first().map_or("", |(_, f)| f.as_str())
                )))?;
                for (path, full) in batch {
                    let wire = conn
                        .read_path_info_reply()
                        .map_err(self.error(format!("query-path-info {full}")))?
                        .ok_or_else(|| LocalStoreError::NotValid {
                            path: full.clone(),
                            arg: None,
                        })?;
                    let info = self.to_info(store_dir, path, &full, wire)?;
                    for r in &info.references {
                        if seen.insert(r.clone()) {
                            queue.push_back(r.clone());
                        }
                    }
                    infos.push(info);
                }
            }
            Ok(infos)
        })
    }

    fn to_info(
        &self,
        store_dir: &StoreDir,
        path: StorePath,
        full: &str,
        wire: WirePathInfo,
    ) -> Result<PathInfo, LocalStoreError> {
        let bad = |reason: String| LocalStoreError::BadRecord {
            source_name: format!("the Nix daemon at {}", self.socket.display()),
            path: full.to_owned(),
            reason,
        };
        let parse = |p: &str| {
            store_dir
                .parse_path(p)
                .map(|p| p.to_owned())
                .map_err(|e| bad(e.to_string()))
        };
        // Nix sends the NAR hash as bare hex; accept `algo:digest` too.
        let nar_hash = if wire.nar_hash.contains(':') {
            Hash::parse(&wire.nar_hash)
        } else {
            Hash::parse_digest(HashAlgo::Sha256, &wire.nar_hash)
        }
        .map_err(|e| bad(e.to_string()))?;
        let mut references = wire
            .references
            .iter()
            .map(|r| parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        references.sort();
        let deriver = match wire.deriver.as_str() {
            "" => None,
            d => Some(parse(d)?),
        };
        let registration_time = i64::try_from(wire.registration_time).map_err(|_| {
            bad(format!(
                "registration time {} is out of range",
                wire.registration_time
            ))
        })?;
        Ok(PathInfo {
            path,
            nar_hash,
            nar_size: wire.nar_size,
            references,
            deriver,
            registration_time,
            signatures: wire.signatures,
            ca: Some(wire.ca).filter(|c| !c.is_empty()),
            ultimate: wire.ultimate,
        })
    }
}

fn connect(socket: &Path) -> Result<Connection<UnixStream>, LocalStoreError> {
    let connect_error = |cause: io::Error| LocalStoreError::DaemonConnect {
        socket: socket.to_owned(),
        cause,
    };
    let stream = UnixStream::connect(socket).map_err(connect_error)?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(connect_error)?;
    Connection::handshake(stream).map_err(|problem| LocalStoreError::Daemon {
        socket: socket.to_owned(),
        op: "handshake".into(),
        problem,
    })
}

/// The fuzz target `daemon`'s entry: a whole conversation with a peer that says `peer` — the
/// handshake, then `IsValidPath` twice, `QueryPathInfo`, and a batch of two path-info queries,
/// each going on after the one before failed. Panics (a fuzz finding) if an error's message is
/// not one line.
#[cfg(fuzzing)]
pub(crate) fn fuzz_conversation(peer: &[u8]) {
    struct Peer<'a>(&'a [u8]);
    impl Read for Peer<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Write for Peer<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    fn one_line<T>(r: Result<T, DaemonProblem>) -> Option<T> {
        r.map_err(|e| {
            let text = e.to_string();
            assert!(
                !text.contains('\n'),
                "a daemon error of more than one line: {text:?}"
            );
        })
        .ok()
    }
    const PATH: &str = "/nix/store/fs8bajs33aqk7cqm4lcxbnzlzdnyhwic-app";
    let Some(mut conn) = one_line(Connection::handshake(Peer(peer))) else {
        return;
    };
    let _ = conn.info();
    one_line(conn.is_valid_path(PATH));
    one_line(conn.is_valid_path(PATH));
    one_line(conn.query_path_info(PATH));
    let mut batch = Vec::new();
    put_query_path_info(&mut batch, PATH);
    put_query_path_info(&mut batch, PATH);
    if one_line(conn.send_requests(&batch)).is_some() {
        one_line(conn.read_path_info_reply());
        one_line(conn.read_path_info_reply());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that has said `input` in advance and records what it is told.
    #[derive(Debug)]
    struct Duplex {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    use cachecore_testkit::wire::words;

    fn s(b: &mut Vec<u8>, text: &str) {
        put_bytes(b, text.as_bytes());
    }

    /// The daemon's side of a handshake at protocol `1.minor`, ending with `LAST`.
    fn server_hello(minor: u64) -> Vec<u8> {
        let mut b = words(&[WORKER_MAGIC_2, 1 << 8 | minor]);
        if minor >= 33 {
            s(&mut b, "2.8.0");
        }
        if minor >= 35 {
            put_u64(&mut b, 1);
        }
        put_u64(&mut b, STDERR_LAST);
        b
    }

    fn connect_to(input: Vec<u8>) -> Result<Connection<Duplex>, DaemonProblem> {
        Connection::handshake(Duplex {
            input: io::Cursor::new(input),
            output: Vec::new(),
        })
    }

    /// The error the daemon's side `b` (a greeting and a reply) gives to `IsValidPath`.
    fn reply_err(b: Vec<u8>) -> DaemonProblem {
        connect_to(b).unwrap().is_valid_path(PATH).unwrap_err()
    }

    const PATH: &str = "/nix/store/00000000000000000000000000000000-x";
    const HASH_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn path_info_reply(b: &mut Vec<u8>, minor: u64) {
        if minor >= 17 {
            put_u64(b, 1);
        }
        s(b, "/nix/store/11111111111111111111111111111111-x.drv");
        s(b, HASH_HEX);
        put_u64(b, 2);
        s(b, PATH);
        s(b, "/nix/store/22222222222222222222222222222222-y");
        put_u64(b, 1_700_000_000);
        put_u64(b, 1234);
        if minor >= 16 {
            put_u64(b, 1);
            put_u64(b, 1);
            s(b, "cache.example:c2ln");
            s(b, "");
        }
    }

    #[test]
    fn handshake_sends_the_fields_the_version_asks_for() {
        // (daemon minor, the words after our magic and version)
        for (minor, extra) in [
            (10, vec![]),
            (11, vec![0]),
            (14, vec![0, 0]),
            (34, vec![0, 0]),
            (35, vec![0, 0]),
            (40, vec![0, 0]),
        ] {
            let mut hello = server_hello(minor);
            if minor > CLIENT_MINOR {
                // A newer daemon steps down to our version: what it sends is what 1.35 has.
                hello = server_hello(CLIENT_MINOR);
                hello[8..16].copy_from_slice(&(1u64 << 8 | minor).to_le_bytes());
            }
            let conn = connect_to(hello).unwrap();
            assert_eq!(conn.minor(), minor.min(CLIENT_MINOR));
            let mut want = words(&[WORKER_MAGIC_1, 1 << 8 | CLIENT_MINOR]);
            want.extend(words(&extra));
            assert_eq!(conn.io.get_ref().output, want, "1.{minor}");
            let info = conn.info();
            assert_eq!(
                info.nix_version.as_deref(),
                (minor >= 33).then_some("2.8.0"),
                "1.{minor}"
            );
            assert_eq!(info.trusted, (minor >= 35).then_some(true), "1.{minor}");
        }
    }

    #[test]
    fn handshake_refuses_strangers_clearly() {
        let err = connect_to(b"HTTP/1.1 400 Bad Request\r\n".to_vec()).unwrap_err();
        assert!(matches!(err, DaemonProblem::Protocol(_)), "{err}");
        assert!(err.to_string().contains("magic number"), "{err}");
        let err = connect_to(Vec::new()).unwrap_err();
        assert!(matches!(err, DaemonProblem::Closed(_)), "{err}");
        assert!(err.to_string().contains("allowed-users"), "{err}");
        for version in [1 << 8 | 9, 2 << 8 | 30, u64::MAX] {
            let err = connect_to(words(&[WORKER_MAGIC_2, version])).unwrap_err();
            assert!(err.to_string().contains("protocol version"), "{err}");
        }
        // Cut short anywhere in the greeting.
        let hello = server_hello(35);
        for cut in 1..hello.len() {
            let err = connect_to(hello[..cut].to_vec()).unwrap_err();
            assert!(matches!(err, DaemonProblem::Closed(_)), "{cut}: {err}");
        }
        let mut hello = server_hello(35);
        let at = hello.len() - 16;
        hello[at..at + 8].copy_from_slice(&7u64.to_le_bytes());
        let err = connect_to(hello).unwrap_err();
        assert!(err.to_string().contains("trust"), "{err}");
    }

    #[test]
    fn log_messages_are_read_past_and_unknown_ones_refused() {
        let mut b = server_hello(34);
        put_u64(&mut b, STDERR_NEXT);
        s(&mut b, "warning: something");
        put_u64(&mut b, STDERR_START_ACTIVITY);
        b.extend(words(&[7, 3, 100]));
        s(&mut b, "querying info");
        put_u64(&mut b, 2);
        b.extend(words(&[0, 42, 1]));
        s(&mut b, "a field");
        put_u64(&mut b, 0);
        b.extend(words(&[STDERR_RESULT, 7, 101, 1, 0, 5]));
        b.extend(words(&[STDERR_STOP_ACTIVITY, 7, STDERR_LAST]));
        path_info_reply(&mut b, 34);
        let mut conn = connect_to(b).unwrap();
        let info = conn.query_path_info(PATH).unwrap().unwrap();
        assert_eq!(info.nar_size, 1234);
        assert_eq!(info.references.len(), 2);
        assert_eq!(info.signatures, ["cache.example:c2ln"]);
        assert!(info.ultimate);
        assert!(conn.io.fill_buf_is_empty());

        for (tag, want) in [
            (STDERR_READ, "STDERR_READ"),
            (STDERR_WRITE, "STDERR_WRITE"),
            (0x1234, "0x1234"),
        ] {
            let mut b = server_hello(34);
            put_u64(&mut b, tag);
            let err = reply_err(b);
            assert!(matches!(err, DaemonProblem::Protocol(_)), "{err}");
            assert!(err.to_string().contains(want), "{err}");
        }
        let mut b = server_hello(34);
        b.extend(words(&[STDERR_RESULT, 1, 2, 1, 9]));
        let err = reply_err(b);
        assert!(err.to_string().contains("type 9"), "{err}");
        let mut b = server_hello(34);
        b.extend(words(&[STDERR_RESULT, 1, 2, u64::MAX]));
        let err = reply_err(b);
        assert!(err.to_string().contains("more than the 1024"), "{err}");
    }

    #[test]
    fn errors_in_both_formats_are_quoted_without_escapes() {
        // From 1.26: type, level, name, message, position, traces.
        let mut b = server_hello(34);
        put_u64(&mut b, STDERR_ERROR);
        s(&mut b, "Error");
        put_u64(&mut b, 0);
        s(&mut b, "Error");
        s(
            &mut b,
            "path '\u{1b}[35;1m/nix/store/x\u{1b}[0m' is not in the Nix store\n",
        );
        put_u64(&mut b, 0);
        put_u64(&mut b, 1);
        put_u64(&mut b, 0);
        s(&mut b, "while doing something");
        let err = connect_to(server_hello(34)).unwrap().is_valid_path(PATH);
        assert!(err.is_err(), "no reply at all");
        let err = connect_to(b).unwrap().is_valid_path(PATH).unwrap_err();
        assert!(matches!(err, DaemonProblem::Remote(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "the daemon says: path '/nix/store/x' is not in the Nix store; while doing something"
        );
        // Before 1.26: message and exit status.
        let mut b = server_hello(25);
        put_u64(&mut b, STDERR_ERROR);
        s(&mut b, "old-style failure");
        put_u64(&mut b, 1);
        let err = reply_err(b);
        assert_eq!(err.to_string(), "the daemon says: old-style failure");
        // An error with a position the protocol has no room for.
        let mut b = server_hello(34);
        put_u64(&mut b, STDERR_ERROR);
        s(&mut b, "Error");
        put_u64(&mut b, 0);
        s(&mut b, "Error");
        s(&mut b, "m");
        put_u64(&mut b, 1);
        let err = reply_err(b);
        assert!(matches!(err, DaemonProblem::Protocol(_)), "{err}");
    }

    #[test]
    fn path_info_replies_by_version() {
        // 1.34: validity flag, then everything.
        let mut b = server_hello(34);
        put_u64(&mut b, STDERR_LAST);
        put_u64(&mut b, 0); // not valid
        let mut conn = connect_to(b).unwrap();
        assert_eq!(conn.query_path_info(PATH).unwrap(), None);
        let mut req = words(&[OP_QUERY_PATH_INFO]);
        s(&mut req, PATH);
        assert!(conn.io.get_ref().output.ends_with(&req));

        // 1.16: no validity flag (asked with IsValidPath first), but ultimate, sigs and ca.
        let mut b = server_hello(16);
        b.extend(words(&[STDERR_LAST, 1, STDERR_LAST]));
        path_info_reply(&mut b, 16);
        let mut conn = connect_to(b).unwrap();
        let info = conn.query_path_info(PATH).unwrap().unwrap();
        assert!(info.ultimate);
        let mut b = server_hello(16);
        b.extend(words(&[STDERR_LAST, 0]));
        let mut conn = connect_to(b).unwrap();
        assert_eq!(conn.query_path_info(PATH).unwrap(), None);

        // 1.15: none of those.
        let mut b = server_hello(15);
        b.extend(words(&[STDERR_LAST, 1, STDERR_LAST]));
        path_info_reply(&mut b, 15);
        let mut conn = connect_to(b).unwrap();
        let info = conn.query_path_info(PATH).unwrap().unwrap();
        assert!(!info.ultimate && info.signatures.is_empty() && info.ca.is_empty());
        assert_eq!(info.registration_time, 1_700_000_000);
    }

    #[test]
    fn path_info_replies_cut_short_or_over_long_are_errors() {
        let mut whole = Vec::new();
        put_u64(&mut whole, STDERR_LAST);
        path_info_reply(&mut whole, 34);
        for cut in 0..whole.len() {
            let mut b = server_hello(34);
            b.extend_from_slice(&whole[..cut]);
            let mut conn = connect_to(b).unwrap();
            let err = conn.query_path_info(PATH).unwrap_err();
            assert!(matches!(err, DaemonProblem::Closed(_)), "{cut}: {err}");
            assert!(
                err.to_string()
                    .starts_with("the connection ended in the middle of"),
                "{err}"
            );
        }
        // A reference count, a signature and a deriver far beyond any real one.
        let mut b = server_hello(34);
        b.extend(words(&[STDERR_LAST, 1]));
        s(&mut b, "");
        s(&mut b, HASH_HEX);
        put_u64(&mut b, u64::MAX);
        let err = connect_to(b).unwrap().query_path_info(PATH).unwrap_err();
        assert!(matches!(err, DaemonProblem::Protocol(_)), "{err}");
        assert!(
            err.to_string()
                .contains("the reference list has 18446744073709551615 entries"),
            "{err}"
        );
        let mut b = server_hello(34);
        b.extend(words(&[STDERR_LAST, 1, 1 << 50]));
        let err = connect_to(b).unwrap().query_path_info(PATH).unwrap_err();
        assert!(
            err.to_string()
                .contains("the deriver is 1125899906842624 bytes long"),
            "{err}"
        );
    }

    /// A fuzz loop over whole daemon conversations: a valid transcript (greeting, log lines, an
    /// activity, a reply to `IsValidPath`, an error, a path-info reply) with random bytes flipped,
    /// words replaced by extreme values, and cuts. Whatever the daemon says, the client answers
    /// with a value or an error, never a panic, and never allocates what a length claims.
    #[test]
    fn mangled_conversations_are_errors_never_panics() {
        for minor in [10, 16, 17, 25, 26, 34, 35] {
            let mut t = server_hello(minor);
            put_u64(&mut t, STDERR_NEXT);
            s(&mut t, "building...");
            t.extend(words(&[STDERR_START_ACTIVITY, 7, 0, 0]));
            s(&mut t, "copying");
            t.extend(words(&[0, 0, STDERR_STOP_ACTIVITY, 7, STDERR_LAST, 1]));
            put_u64(&mut t, STDERR_ERROR);
            if minor >= 26 {
                s(&mut t, "Error");
                put_u64(&mut t, 0);
                s(&mut t, "Error");
                s(&mut t, "path is not valid");
                t.extend(words(&[0, 0]));
            } else {
                s(&mut t, "path is not valid");
                put_u64(&mut t, 1);
            }
            if minor < 17 {
                // Before 1.17 path info is asked after `IsValidPath`.
                t.extend(words(&[STDERR_LAST, 1]));
            }
            put_u64(&mut t, STDERR_LAST);
            path_info_reply(&mut t, minor);
            let mut clean = connect_to(t.clone()).unwrap();
            assert!(clean.is_valid_path(PATH).unwrap(), "minor {minor}");
            assert!(clean.is_valid_path(PATH).is_err(), "minor {minor}");
            assert!(clean.query_path_info(PATH).is_ok(), "minor {minor}");
            let mut reached_the_end = 0;
            let extremes = [
                0,
                1,
                u64::MAX,
                1 << 40,
                STDERR_NEXT,
                STDERR_ERROR,
                STDERR_READ,
                STDERR_RESULT,
                STDERR_LAST,
            ];
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ minor;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for _ in 0..3_000 {
                let mut b = t.clone();
                for _ in 0..1 + next() % 4 {
                    if b.is_empty() {
                        break;
                    }
                    let at = (next() % b.len() as u64) as usize;
                    match next() % 3 {
                        0 => b[at] ^= 1 << (next() % 8),
                        1 => {
                            let w = at & !7;
                            let v = extremes[(next() % extremes.len() as u64) as usize];
                            if w + 8 <= b.len() {
                                b[w..w + 8].copy_from_slice(&v.to_le_bytes());
                            }
                        }
                        _ => b.truncate(at),
                    }
                }
                if let Ok(mut conn) = connect_to(b) {
                    let _ = conn.is_valid_path(PATH);
                    let _ = conn.is_valid_path(PATH);
                    if conn.query_path_info(PATH).is_ok() {
                        reached_the_end += 1;
                    }
                }
            }
            // The mangling must leave some conversations whole enough to test the later replies.
            assert!(reached_the_end > 100, "minor {minor}: {reached_the_end}");
        }
    }

    #[test]
    fn printable_strips_escapes_and_control_characters() {
        assert_eq!(
            printable("\u{1b}[31;1merror:\u{1b}[0m a\n\tb\u{7}"),
            "error: a b"
        );
        assert_eq!(printable("x\u{1b}]"), "x");
        let long = "é".repeat(3 * MAX_QUOTED);
        assert_eq!(printable(&long).chars().count(), MAX_QUOTED + 1);
    }

    trait FillBufIsEmpty {
        fn fill_buf_is_empty(&mut self) -> bool;
    }

    impl<R: Read> FillBufIsEmpty for BufReader<R> {
        fn fill_buf_is_empty(&mut self) -> bool {
            io::BufRead::fill_buf(self)
                .map(|b| b.is_empty())
                .unwrap_or(false)
        }
    }
}
