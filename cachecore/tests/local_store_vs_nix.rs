//! `cachecore::local_store` against real Nix (Debian's nix-bin, Nix 2.8): closures, path
//! metadata, symlink resolution and build logs must agree with `nix-store -qR` and
//! `nix path-info --json`, from all three sources (the database, a real `nix-daemon` on a
//! socket of the test's own, and the `nix` command), which must also agree with each other
//! field by field and on the closure order. The daemon client is also put before peers that
//! are not daemons or misbehave.
//!
//! Nix must be installed: a missing `nix` or `nix-daemon` fails these tests, it never skips
//! them. Run as root with `NIX_REMOTE=local` (what `.ci/test` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::symlink;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use cachecore::hash::Hash;
use cachecore::local_store::{LocalStore, LocalStoreError, PathInfo, Source};
use cachecore::store_path::{StoreDir, StorePath};
use tempfile::TempDir;

mod common;

use common::wire::{
    read_word, wire_string, words, STDERR_LAST, STDERR_NEXT, WORKER_MAGIC_1, WORKER_MAGIC_2,
};
use common::{
    build_closure_expr, instantiate_thousand_files, nix, nix_command, nonce, tempdir, NixDaemon,
};

fn store_path(full: &str) -> StorePath {
    StoreDir::default()
        .parse_path(full)
        .unwrap_or_else(|e| panic!("{full}: {e}"))
        .to_owned()
}

fn full(p: &StorePath) -> String {
    StoreDir::default().full_path(p)
}

// ---------------------------------------------------------------------------------------------
// The fixture: app -> {liba, libb}, libb -> liba, built once per test binary
// ---------------------------------------------------------------------------------------------

struct Fixture {
    _dir: TempDir,
    /// The directory holding `result` (nix-build's symlink).
    dir: PathBuf,
    app: String,
    drv: String,
}

/// Builds the closure of TESTING-WITH-REAL-PARTS.md with a nonce, so each run really builds
/// (and Nix writes fresh build logs).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempdir();
        let built = build_closure_expr(dir.path(), "cachecore-local", Some(&nonce()));
        Fixture {
            dir: dir.path().to_owned(),
            _dir: dir,
            app: built.app,
            drv: built.drv,
        }
    })
}

fn db_store() -> LocalStore {
    LocalStore::open_with(
        StoreDir::default(),
        Source::Database(Source::default_database()),
    )
    .unwrap()
}

fn command_store() -> LocalStore {
    LocalStore::open_with(StoreDir::default(), Source::NixCommand).unwrap()
}

/// The three sources, the daemon one through `daemon`.
fn all_stores(daemon: &Daemon) -> [(&'static str, LocalStore); 3] {
    [
        ("database", db_store()),
        ("daemon", daemon.store()),
        ("nix command", command_store()),
    ]
}

/// Every source returned the same `PathInfo`s in the same order as the database.
fn assert_sources_agree(results: &[(&str, Vec<PathInfo>)]) {
    let (first, want) = &results[0];
    for (how, got) in &results[1..] {
        assert_eq!(got, want, "{how} and {first} disagree");
    }
}

// ---------------------------------------------------------------------------------------------
// A private Nix daemon
// ---------------------------------------------------------------------------------------------

/// A real `nix-daemon` on a socket of the test's own, and a `LocalStore` reading through it.
struct Daemon(NixDaemon);

impl Daemon {
    fn start() -> Daemon {
        Daemon(NixDaemon::start())
    }

    fn socket(&self) -> &Path {
        self.0.socket()
    }

    fn store(&self) -> LocalStore {
        LocalStore::open_with(
            StoreDir::default(),
            Source::Daemon(self.socket().to_owned()),
        )
        .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: `nix path-info --json`, parsed here independently of the library
// ---------------------------------------------------------------------------------------------

/// `nix path-info --json --recursive [--derivation] PATH`, keyed by path.
fn nix_path_info(path: &str, derivation: bool) -> HashMap<String, serde_json::Value> {
    let mut args = vec!["path-info", "--json", "--recursive"];
    if derivation {
        args.push("--derivation");
    }
    args.push(path);
    let json: serde_json::Value = serde_json::from_str(&nix("nix", &args)).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["path"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

fn assert_matches_nix(how: &str, info: &PathInfo, oracle: &serde_json::Value) {
    let p = full(&info.path);
    assert_eq!(
        info.nar_hash,
        Hash::parse(oracle["narHash"].as_str().unwrap()).unwrap(),
        "{how}: narHash of {p}"
    );
    assert_eq!(
        info.nar_size,
        oracle["narSize"].as_u64().unwrap(),
        "{how}: narSize of {p}"
    );
    let mut want_refs: Vec<String> = oracle["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    want_refs.sort();
    let got_refs: Vec<String> = info.references.iter().map(full).collect();
    assert_eq!(got_refs, want_refs, "{how}: references of {p}");
    assert_eq!(
        info.deriver.as_ref().map(full).as_deref(),
        oracle["deriver"].as_str(),
        "{how}: deriver of {p}"
    );
    assert_eq!(
        info.registration_time,
        oracle["registrationTime"].as_i64().unwrap(),
        "{how}: registrationTime of {p}"
    );
    assert_eq!(
        info.ca.as_deref(),
        oracle["ca"].as_str(),
        "{how}: ca of {p}"
    );
    assert_eq!(
        info.ultimate,
        oracle["ultimate"].as_bool().unwrap_or(false),
        "{how}: ultimate of {p}"
    );
    let want_sigs: Vec<&str> = oracle["signatures"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap()).collect())
        .unwrap_or_default();
    assert_eq!(info.signatures, want_sigs, "{how}: signatures of {p}");
}

fn assert_references_first(how: &str, infos: &[PathInfo]) {
    let position: HashMap<&StorePath, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, info)| (&info.path, i))
        .collect();
    assert_eq!(position.len(), infos.len(), "{how}: a path appears twice");
    for (i, info) in infos.iter().enumerate() {
        for r in info.references_without_self() {
            let j = position
                .get(r)
                .unwrap_or_else(|| panic!("{how}: {r} (a reference of {}) is missing", info.path));
            assert!(
                *j < i,
                "{how}: {} comes before its reference {r}",
                info.path
            );
        }
    }
}

/// Checks `closure([root])` against `nix-store -qR` and `nix path-info --json`.
fn check_closure(root: &str, derivation: bool) {
    let want: BTreeSet<String> = nix("nix-store", &["-qR", root])
        .lines()
        .map(str::to_owned)
        .collect();
    let oracle = nix_path_info(root, derivation);
    assert_eq!(
        oracle.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "oracles disagree"
    );
    let daemon = Daemon::start();
    let mut results = Vec::new();
    for (how, store) in all_stores(&daemon) {
        let infos = store.closure(&[store_path(root)]).unwrap();
        let got: BTreeSet<String> = infos.iter().map(|i| full(&i.path)).collect();
        assert_eq!(got, want, "{how}: closure of {root}");
        assert_eq!(
            infos.len(),
            want.len(),
            "{how}: closure of {root} repeats a path"
        );
        assert_references_first(how, &infos);
        assert_eq!(
            infos.last().map(|i| full(&i.path)).as_deref(),
            Some(root),
            "{how}"
        );
        for info in &infos {
            assert_matches_nix(how, info, &oracle[&full(&info.path)]);
            // path_info agrees with what the closure returned.
            assert_eq!(
                store.path_info(&info.path).unwrap().as_ref(),
                Some(info),
                "{how}"
            );
        }
        results.push((how, infos));
    }
    // The sources agree field by field, and on the order.
    assert_sources_agree(&results);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn closure_of_a_build_matches_nix_store_qr_and_path_info() {
    let fx = fixture();
    check_closure(&fx.app, false);
    // The fixture has real references: app -> liba, libb; libb -> liba.
    let infos = db_store().closure(&[store_path(&fx.app)]).unwrap();
    let names: Vec<&str> = infos.iter().map(|i| i.path.name()).collect();
    assert_eq!(
        names,
        [
            "cachecore-local-liba",
            "cachecore-local-libb",
            "cachecore-local-app"
        ]
    );
    assert_eq!(infos[2].references.len(), 2);
    assert!(infos.iter().all(|i| i.deriver.is_some() && i.ultimate));
}

#[test]
fn closure_of_a_derivation_is_the_drv_closure() {
    let fx = fixture();
    check_closure(&fx.drv, true);
}

#[test]
fn closure_of_several_roots_lists_each_path_once() {
    let fx = fixture();
    let app = db_store().path_info(&store_path(&fx.app)).unwrap().unwrap();
    let mut roots = app.references.clone();
    roots.push(store_path(&fx.app));
    roots.push(store_path(&fx.drv));
    roots.push(store_path(&fx.app));
    let mut want: BTreeSet<String> = nix("nix-store", &["-qR", &fx.app])
        .lines()
        .map(str::to_owned)
        .collect();
    want.extend(
        nix("nix-store", &["-qR", &fx.drv])
            .lines()
            .map(str::to_owned),
    );
    let daemon = Daemon::start();
    let mut results = Vec::new();
    for (how, store) in all_stores(&daemon) {
        let infos = store.closure(&roots).unwrap();
        assert_eq!(infos.len(), want.len(), "{how}");
        assert_eq!(
            infos.iter().map(|i| full(&i.path)).collect::<BTreeSet<_>>(),
            want,
            "{how}"
        );
        assert_references_first(how, &infos);
        results.push((how, infos));
    }
    assert_sources_agree(&results);
}

#[test]
fn resolve_follows_result_symlinks_into_the_store() {
    let fx = fixture();
    let app = store_path(&fx.app);
    // A chain: link2 -> link1 (relative) -> result -> /nix/store/…-app.
    symlink("result", fx.dir.join("link1")).unwrap();
    symlink(fx.dir.join("link1"), fx.dir.join("link2")).unwrap();
    let daemon = Daemon::start();
    for (how, store) in all_stores(&daemon) {
        for arg in [
            fx.dir.join("result"),
            fx.dir.join("link2"),
            fx.dir.join("result/bin/cachecore-local-app"),
            // A symlink inside the store path (bin/link -> ../deps) stays in the same path.
            fx.dir.join("result/bin/link"),
            fx.dir.join("link1/bin/../bin/link"),
            PathBuf::from(&fx.app),
            PathBuf::from(format!("{}/deps", fx.app)),
        ] {
            assert_eq!(
                store.resolve(&arg).unwrap(),
                app,
                "{how}: {}",
                arg.display()
            );
        }
    }
}

#[test]
fn resolve_rejects_paths_outside_the_store_or_not_valid() {
    let dir = tempdir();
    let outside = dir.path().join("x");
    fs::write(&outside, "x").unwrap();
    let not_registered = NEVER_BUILT;
    let dangling = dir.path().join("dangling");
    symlink(not_registered, &dangling).unwrap();
    let daemon = Daemon::start();
    for (how, store) in all_stores(&daemon) {
        let err = store.resolve(&outside).unwrap_err();
        assert!(
            matches!(err, LocalStoreError::NotInStore { .. }),
            "{how}: {err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "{} is not a valid path in the local Nix store",
                outside.display()
            )),
            "{how}: {err}"
        );

        let err = store.resolve(Path::new(not_registered)).unwrap_err();
        assert!(
            matches!(err, LocalStoreError::NotValid { .. }),
            "{how}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("{not_registered} is not a valid path in the local Nix store"),
            "{how}"
        );
        let err = store.resolve(&dangling).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{not_registered} is not a valid path in the local Nix store (resolved from {})",
                dangling.display()
            ),
            "{how}"
        );

        let err = store.resolve(&dir.path().join("missing")).unwrap_err();
        assert!(
            matches!(err, LocalStoreError::Resolve { .. }),
            "{how}: {err:?}"
        );

        let sp = store_path(not_registered);
        assert_eq!(store.path_info(&sp).unwrap(), None, "{how}");
        let err = store.closure(&[sp]).unwrap_err();
        assert!(
            matches!(err, LocalStoreError::NotValid { .. }),
            "{how}: {err:?}"
        );
        assert!(err.to_string().contains(not_registered), "{how}: {err}");
    }
}

#[test]
fn build_log_path_finds_the_log_nix_kept() {
    let fx = fixture();
    let drv = store_path(&fx.drv);
    let base = drv.to_string();
    let want = PathBuf::from(format!(
        "/nix/var/log/nix/drvs/{}/{}.bz2",
        &base[..2],
        &base[2..]
    ));
    let daemon = Daemon::start();
    for (how, store) in all_stores(&daemon) {
        let log = store.build_log_path(&drv);
        assert_eq!(log.as_ref(), Some(&want), "{how}");
        // Given the output path, the deriver's log.
        assert_eq!(
            store.build_log_path(&store_path(&fx.app)).as_ref(),
            Some(&want),
            "{how}"
        );
    }
    // The same log `nix log` prints.
    let mut text = String::new();
    io::Read::read_to_string(&mut bzip2_reader(&want), &mut text).unwrap();
    assert!(text.contains("building cachecore-local-app"), "{text}");
    assert_eq!(text.trim_end(), nix("nix", &["log", &fx.drv]).trim_end());
    let never = store_path("/nix/store/00000000000000000000000000000000-never.drv");
    assert_eq!(db_store().build_log_path(&never), None);
}

fn bzip2_reader(path: &Path) -> Box<dyn io::Read + Send> {
    let file = fs::File::open(path).unwrap();
    cachecore::compression::decompress(cachecore::compression::Compression::Bzip2, file).unwrap()
}

/// Reading works while another connection is in the middle of writing (WAL mode: readers
/// never wait for writers), and while Nix itself builds and registers paths.
#[test]
fn database_reads_while_nix_writes() {
    let fx = fixture();
    // A copy of Nix's database (never a lock on the machine's own), with a writer holding an
    // open transaction that has written pages: with a tiny page cache they spill, which in
    // rollback-journal mode takes the exclusive lock readers wait for. The read runs on
    // another thread while the writer still holds it; it must end without the writer ending.
    let copy_dir = tempdir();
    let copy = copy_dir.path().join("db.sqlite");
    {
        let source = rusqlite::Connection::open_with_flags(
            Source::default_database(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        source
            .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
    }
    let writer = rusqlite::Connection::open(&copy).unwrap();
    let mode: String = writer
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "wal",
        "Nix's database is in WAL mode, and so is its copy"
    );
    writer
        .execute_batch(
            "PRAGMA cache_size=2; BEGIN IMMEDIATE;
             CREATE TABLE cachecore_scratch(x BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO cachecore_scratch SELECT randomblob(4096) FROM n;",
        )
        .unwrap();
    let app = store_path(&fx.app);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let store = LocalStore::open_with(StoreDir::default(), Source::Database(copy)).unwrap();
        let _ = done.send(store.closure(&[app]).map(|infos| infos.len()));
    });
    let read = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("a read waited for a writer holding its transaction");
    assert_eq!(read.unwrap(), 3);
    writer.execute_batch("ROLLBACK").unwrap();
    drop(writer);
    let store = db_store();

    // Nix registering new paths meanwhile (each toFile is a write transaction).
    let dir = tempdir();
    let expr = dir.path().join("many.nix");
    let nonce = nonce();
    fs::write(
        &expr,
        format!(
            r#"derivation {{
  name = "cachecore-local-writes"; system = "x86_64-linux"; builder = "/bin/sh";
  files = builtins.genList (i: builtins.toFile "cachecore-local-w${{toString i}}" "{nonce} ${{toString i}}") 500;
}}"#
        ),
    )
    .unwrap();
    let mut child = nix_command("nix-instantiate")
        .arg(expr.to_str().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("these tests need real Nix (nix-instantiate)");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut reads = 0;
    while child.try_wait().unwrap().is_none() {
        assert_eq!(store.closure(&[store_path(&fx.app)]).unwrap().len(), 3);
        reads += 1;
        assert!(Instant::now() < deadline, "nix-instantiate did not finish");
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(reads > 0);
    // What Nix wrote is visible to the connection that was reading meanwhile.
    let drv = String::from_utf8(out.stdout).unwrap();
    let infos = store.closure(&[store_path(drv.trim())]).unwrap();
    assert_eq!(infos.len(), 501);
    eprintln!("{reads} closure reads while nix-instantiate registered 501 paths");
}

/// A closure of 1,000 paths with real references (`builtins.toFile` files referring to each
/// other; no builds needed) is the same from the database, the daemon and one `nix path-info`
/// process, references first. (How fast each source is: `cargo bench --bench closure`.)
#[test]
fn closure_of_a_thousand_paths_agrees_across_sources() {
    let dir = tempdir();
    let root = instantiate_thousand_files(dir.path());
    let want: BTreeSet<String> = nix("nix-store", &["-qR", &root])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(want.len(), 1001);

    let roots = [store_path(&root)];
    let infos = db_store().closure(&roots).unwrap();
    assert_eq!(
        infos.iter().map(|i| full(&i.path)).collect::<BTreeSet<_>>(),
        want
    );
    assert_references_first("database", &infos);
    let from_nix = command_store().closure(&roots).unwrap();
    assert_eq!(from_nix, infos, "database and nix command disagree");
    let daemon = Daemon::start();
    let from_daemon = daemon.store().closure(&roots).unwrap();
    assert_eq!(from_daemon, infos, "database and daemon disagree");
}

#[test]
fn a_database_that_cannot_be_opened_is_an_error_naming_the_file() {
    // (Which source `open` picks for each NIX_REMOTE, the database included, is
    // open_picks_the_database_then_the_daemon_then_nix.)
    let dir = tempdir();
    let missing = dir.path().join("db.sqlite");
    let err =
        LocalStore::open_with(StoreDir::default(), Source::Database(missing.clone())).unwrap_err();
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
    let not_nix = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&not_nix)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err =
        LocalStore::open_with(StoreDir::default(), Source::Database(not_nix.clone())).unwrap_err();
    assert!(
        matches!(err, LocalStoreError::OpenDatabase { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(not_nix.to_str().unwrap()), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The daemon source: what the daemon says of itself, errors, peers that are not daemons, and
// the choice `LocalStore::open` makes
// ---------------------------------------------------------------------------------------------

const NEVER_BUILT: &str = "/nix/store/00000000000000000000000000000000-cachecore-never-built";

fn open_daemon(socket: &Path) -> Result<LocalStore, LocalStoreError> {
    LocalStore::open_with(StoreDir::default(), Source::Daemon(socket.to_owned()))
}

#[test]
fn the_daemon_says_what_it_is() {
    let daemon = Daemon::start();
    let store = daemon.store();
    assert_eq!(store.source(), Source::Daemon(daemon.socket().to_owned()));
    assert_eq!(
        store.source().to_string(),
        format!("the Nix daemon at {}", daemon.socket().display())
    );
    let info = store.daemon_info().unwrap().unwrap();
    let version = nix("nix-daemon", &["--version"]); // "nix-daemon (Nix) 2.8.0"
    assert_eq!(info.nix_version.as_deref(), version.rsplit(' ').next());
    assert_eq!(info.protocol, (1, 34), "Nix 2.8 speaks protocol 1.34");
    assert_eq!(info.trusted, None, "said only from protocol 1.35 on");
    assert!(db_store().daemon_info().is_none());
}

#[test]
fn a_daemon_error_is_quoted_in_one_sentence() {
    // A store directory the daemon does not have: it answers with an error (STDERR_ERROR in
    // the format of protocol 1.26 and later), coloured as Nix colours paths.
    let daemon = Daemon::start();
    let other = StoreDir::new("/tmp/cachecore-not-the-store");
    let store =
        LocalStore::open_with(other.clone(), Source::Daemon(daemon.socket().to_owned())).unwrap();
    let path = StorePath::from_base_name("00000000000000000000000000000000-x").unwrap();
    let full = other.full_path(&path);
    for _ in 0..2 {
        // The failed connection is dropped and the next call greets the daemon again.
        let err = store.is_valid(&path).unwrap_err();
        assert!(matches!(err, LocalStoreError::Daemon { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "is-valid-path {full} with the Nix daemon at {} failed: the daemon says: \
                 path '{full}' is not in the Nix store",
                daemon.socket().display()
            )
        );
    }
    // The same client still answers queries about paths in its store.
    let fx = fixture();
    let good = daemon.store();
    assert!(good.is_valid(&store_path(&fx.app)).unwrap());
    assert!(!good.is_valid(&store_path(NEVER_BUILT)).unwrap());
}

#[test]
fn a_socket_with_nothing_listening_is_one_clear_sentence() {
    let dir = tempdir();
    let socket = dir.path().join("socket");
    drop(UnixListener::bind(&socket).unwrap()); // the file stays; nobody listens
    let err = open_daemon(&socket).unwrap_err();
    assert!(
        matches!(err, LocalStoreError::DaemonConnect { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to the Nix daemon at {}: Connection refused (os error 111)",
            socket.display()
        )
    );
    let missing = dir.path().join("missing");
    let err = open_daemon(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to the Nix daemon at {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

/// Serves `connections` connections on `socket`, one after the other, with `serve`. A panic in
/// `serve` (a request the test did not expect) surfaces when the handle is joined.
fn fake_daemon(
    socket: &Path,
    connections: usize,
    serve: impl Fn(usize, UnixStream) + Send + 'static,
) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(socket).unwrap();
    thread::spawn(move || {
        for i in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            serve(i, stream);
        }
    })
}

/// The daemon's side of a protocol 1.34 handshake, as Nix 2.8 does it.
fn fake_handshake(s: &mut UnixStream) {
    assert_eq!(read_word(s), WORKER_MAGIC_1, "the client's magic number");
    let mut hello = words(&[WORKER_MAGIC_2, 1 << 8 | 34]);
    hello.extend(wire_string("2.8.0"));
    hello.extend(words(&[STDERR_LAST]));
    s.write_all(&hello).unwrap();
    assert_eq!(read_word(s) >> 8, 1, "the client's protocol major version");
    assert_eq!(read_word(s), 0, "CPU affinity");
    assert_eq!(read_word(s), 0, "reserve space");
}

/// One request: its operation and its store path.
fn read_request(s: &mut UnixStream) -> (u64, String) {
    let op = read_word(s);
    let len = usize::try_from(read_word(s)).unwrap();
    let mut path = vec![0u8; len.next_multiple_of(8)];
    s.read_exact(&mut path).unwrap();
    path.truncate(len);
    (op, String::from_utf8(path).unwrap())
}

#[test]
fn a_peer_that_is_not_a_daemon_is_one_clear_sentence() {
    let dir = tempdir();
    let socket = dir.path().join("socket");
    let server = fake_daemon(&socket, 2, |i, mut s| {
        read_word(&mut s);
        let junk: &[u8] = if i == 0 {
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
        } else {
            b"oix" // three bytes, then hang up
        };
        s.write_all(junk).unwrap();
    });
    let err = open_daemon(&socket).unwrap_err();
    assert!(matches!(err, LocalStoreError::Daemon { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "handshake with the Nix daemon at {} failed: the peer sent {:#018x} where the \
             daemon's magic number 0x6478696f belongs; is something other than a Nix daemon \
             listening there?",
            socket.display(),
            u64::from_le_bytes(*b"SSH-2.0-")
        )
    );
    let err = open_daemon(&socket).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "handshake with the Nix daemon at {} failed: the connection ended before the \
             daemon's greeting (the daemon hangs up on users that allowed-users in nix.conf \
             does not list)",
            socket.display()
        )
    );
    server.join().unwrap();
}

#[test]
fn a_daemon_that_misbehaves_mid_reply_is_one_clear_sentence_then_reconnected() {
    let dir = tempdir();
    let socket = dir.path().join("socket");
    let server = fake_daemon(&socket, 3, |i, mut s| {
        fake_handshake(&mut s);
        let (op, path) = read_request(&mut s);
        assert_eq!(path, NEVER_BUILT);
        match i {
            0 => {
                assert_eq!(op, 26, "QueryPathInfo");
                // Valid, and a deriver 2^40 bytes long (which never comes).
                s.write_all(&words(&[STDERR_LAST, 1, 1 << 40])).unwrap();
            }
            1 => {
                assert_eq!(op, 26, "QueryPathInfo");
                // A log line, then the connection ends in the middle of the reply.
                let mut b = words(&[STDERR_NEXT]);
                b.extend(wire_string("querying"));
                b.extend(words(&[STDERR_LAST, 1]));
                b.extend(&wire_string("")[..8]);
                s.write_all(&b).unwrap();
            }
            _ => {
                assert_eq!(op, 1, "IsValidPath");
                s.write_all(&words(&[STDERR_LAST, 0])).unwrap();
                // Stay until the client hangs up.
                let _ = s.read(&mut [0u8; 1]);
            }
        }
    });
    let store = open_daemon(&socket).unwrap();
    let never = store_path(NEVER_BUILT);
    let err = store.path_info(&never).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "query-path-info {NEVER_BUILT} with the Nix daemon at {} failed: the deriver is \
             1099511627776 bytes long, more than the 4096 allowed",
            socket.display()
        )
    );
    // Each failed connection is dropped; the next call greets the daemon again.
    let err = store.closure(std::slice::from_ref(&never)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "query-path-info {NEVER_BUILT} with the Nix daemon at {} failed: the connection \
             ended in the middle of the NAR hash",
            socket.display()
        )
    );
    assert!(!store.is_valid(&never).unwrap());
    drop(store);
    server.join().unwrap();
}

/// `LocalStore::open` reads `NIX_REMOTE`, `NIX_STATE_DIR` and `NIX_DAEMON_SOCKET_PATH`, which
/// no test may change in this process (tests run on parallel threads and spawn `nix`). Each
/// case runs [`open_probe`] in a child process of this test binary with its own environment.
#[test]
fn open_picks_the_database_then_the_daemon_then_nix() {
    let daemon = Daemon::start();
    let socket = daemon.socket().to_str().unwrap();
    let no_state = tempdir(); // a state directory without a database
    let db = Source::default_database();
    let via_daemon = format!("source: the Nix daemon at {socket}\nvalid: false");
    let db_missing = format!(
        "cannot read the Nix database {}/db/db.sqlite: No such file or directory (os error 2)",
        no_state.path().display()
    );
    // (NIX_REMOTE, NIX_DAEMON_SOCKET_PATH, a readable database?, what the probe prints)
    let cases: Vec<(String, Option<&str>, bool, String)> = vec![
        // The database first whenever it can be read.
        (
            "local".into(),
            Some(socket),
            true,
            format!("source: the Nix database {}\nvalid: false", db.display()),
        ),
        (
            "daemon".into(),
            Some(socket),
            true,
            format!("source: the Nix database {}\nvalid: false", db.display()),
        ),
        ("daemon".into(), Some(socket), false, via_daemon.clone()),
        ("auto".into(), Some(socket), false, via_daemon.clone()),
        (String::new(), Some(socket), false, via_daemon.clone()),
        (format!("unix://{socket}"), None, false, via_daemon.clone()),
        (
            format!("unix://{socket}?max-connections=1"),
            Some("/elsewhere"),
            false,
            via_daemon.clone(),
        ),
        // `local` never means the daemon.
        (
            "local".into(),
            Some(socket),
            false,
            format!(
                "source: `nix path-info`\nerror: cannot run `nix path-info --json <1 path>`: \
                 No such file or directory (os error 2) (and the other sources failed: \
                 {db_missing})"
            ),
        ),
        // Another store: neither the database nor the daemon is this machine's store.
        (
            "ssh://builder".into(),
            Some(socket),
            true,
            "source: `nix path-info`\nerror: cannot run `nix path-info --json <1 path>`: No \
             such file or directory (os error 2) (neither the Nix database nor the daemon was \
             tried: NIX_REMOTE=ssh://builder names another store)"
                .into(),
        ),
        // No daemon there either: `nix`, and when that cannot run, why each source failed.
        (
            "daemon".into(),
            Some("/nonexistent/socket"),
            false,
            format!(
                "source: `nix path-info`\nerror: cannot run `nix path-info --json <1 path>`: \
                 No such file or directory (os error 2) (and the other sources failed: \
                 {db_missing}; cannot connect to the Nix daemon at /nonexistent/socket: No \
                 such file or directory (os error 2))"
            ),
        ),
    ];
    for (remote, socket_var, readable_db, want) in cases {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "open_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHECORE_OPEN_PROBE", "1")
        .env("NIX_REMOTE", &remote)
        // Without a `nix` to run, the `nix path-info` source says why the others failed.
        .env("PATH", "");
        if !readable_db {
            cmd.env("NIX_STATE_DIR", no_state.path());
        } else {
            cmd.env_remove("NIX_STATE_DIR");
        }
        match socket_var {
            Some(s) => cmd.env("NIX_DAEMON_SOCKET_PATH", s),
            None => cmd.env_remove("NIX_DAEMON_SOCKET_PATH"),
        };
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let got: Vec<&str> = stdout
            .lines()
            .filter(|l| {
                l.starts_with("source: ") || l.starts_with("valid: ") || l.starts_with("error: ")
            })
            .collect();
        assert!(
            out.status.success(),
            "NIX_REMOTE={remote:?}: the probe failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            got.join("\n"),
            want,
            "NIX_REMOTE={remote:?} NIX_DAEMON_SOCKET_PATH={socket_var:?}"
        );
    }
}

#[test]
#[ignore = "a helper: open_picks_the_database_then_the_daemon_then_nix runs it in a child \
            process with the environment of each case"]
fn open_probe() {
    assert_eq!(
        std::env::var("CACHECORE_OPEN_PROBE").as_deref(),
        Ok("1"),
        "run by open_picks_the_database_then_the_daemon_then_nix"
    );
    let store = LocalStore::open(StoreDir::default()).unwrap();
    // On a line of its own, after the test harness's "test open_probe ... ".
    println!("\nsource: {}", store.source());
    match store.is_valid(&store_path(NEVER_BUILT)) {
        Ok(valid) => println!("valid: {valid}"),
        Err(e) => println!("error: {e}"),
    }
}
