//! `cachecore::local_store` against real Nix (Debian's nix-bin, Nix 2.8): closures, path
//! metadata, symlink resolution and build logs must agree with `nix-store -qR` and
//! `nix path-info --json`, from both sources (the database and the `nix` command).
//!
//! Nix must be installed: a missing `nix` fails these tests, it never skips them. Run as root
//! with `NIX_REMOTE=local` (what `.ci/test` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachecore::hash::Hash;
use cachecore::local_store::{LocalStore, LocalStoreError, PathInfo, Source};
use cachecore::store_path::{StoreDir, StorePath};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Running Nix
// ---------------------------------------------------------------------------------------------

fn nix_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("NIX_REMOTE", "local");
    if program == "nix" {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd
}

/// Runs a Nix program that must succeed and returns its stdout without the final newline.
/// A missing program fails the test with a clear message.
fn nix(program: &str, args: &[&str]) -> String {
    let out = match nix_command(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "these tests need real Nix, but `{program}` was not found on PATH ({e}); \
             install it with `apt-get install -y nix-bin` (Debian's Nix 2.8)"
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    };
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end_matches('\n')
        .to_owned()
}

/// A fresh world-readable directory under /tmp (Nix builders run as nixbld users).
fn tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("cachecore-local-")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

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
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let expr = dir.path().join("closure.nix");
        fs::write(
            &expr,
            format!(
                r#"let mk = name: deps: derivation {{
  inherit name; system = "x86_64-linux"; builder = "/bin/sh";
  nonce = "{nonce}";
  args = [ "-c" ''
    /bin/mkdir -p $out/bin
    for d in ${{toString deps}}; do echo "$d" >> $out/deps; done
    echo ${{name}} > $out/bin/${{name}}; /bin/chmod +x $out/bin/${{name}}
    /bin/ln -s ../deps $out/bin/link
    echo building ${{name}}
  '' ]; }};
  a = mk "cachecore-local-liba" []; b = mk "cachecore-local-libb" [ a ];
in mk "cachecore-local-app" [ a b ]
"#
            ),
        )
        .unwrap();
        fs::set_permissions(&expr, fs::Permissions::from_mode(0o644)).unwrap();
        let expr_s = expr.to_str().unwrap();
        let result = dir.path().join("result");
        let app = nix(
            "nix-build",
            &[
                expr_s,
                "-o",
                result.to_str().unwrap(),
                "--option",
                "substituters",
                "",
            ],
        );
        let drv = nix("nix-instantiate", &[expr_s]);
        Fixture {
            dir: dir.path().to_owned(),
            _dir: dir,
            app,
            drv,
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

fn both_stores() -> [(&'static str, LocalStore); 2] {
    [("database", db_store()), ("nix command", command_store())]
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
    let mut results = Vec::new();
    for (how, store) in both_stores() {
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
        results.push(infos);
    }
    // The two sources agree field by field, and on the order.
    assert_eq!(results[0], results[1], "database and nix command disagree");
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
    let mut results = Vec::new();
    for (how, store) in both_stores() {
        let infos = store.closure(&roots).unwrap();
        assert_eq!(infos.len(), want.len(), "{how}");
        assert_eq!(
            infos.iter().map(|i| full(&i.path)).collect::<BTreeSet<_>>(),
            want,
            "{how}"
        );
        assert_references_first(how, &infos);
        results.push(infos);
    }
    assert_eq!(results[0], results[1], "database and nix command disagree");
}

#[test]
fn resolve_follows_result_symlinks_into_the_store() {
    let fx = fixture();
    let app = store_path(&fx.app);
    // A chain: link2 -> link1 (relative) -> result -> /nix/store/…-app.
    symlink("result", fx.dir.join("link1")).ok();
    symlink(fx.dir.join("link1"), fx.dir.join("link2")).ok();
    for (how, store) in both_stores() {
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
    let not_registered = "/nix/store/00000000000000000000000000000000-cachecore-never-built";
    let dangling = dir.path().join("dangling");
    symlink(not_registered, &dangling).unwrap();
    for (how, store) in both_stores() {
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
    for (how, store) in both_stores() {
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

/// Reading works while another connection holds Nix's write lock (WAL mode: readers never wait
/// for writers), and while Nix itself builds and registers paths.
#[test]
fn database_reads_while_nix_writes() {
    let fx = fixture();
    let db = Source::default_database();
    let writer = rusqlite::Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let store = db_store();
    let infos = store.closure(&[store_path(&fx.app)]).unwrap();
    assert_eq!(infos.len(), 3);
    writer.execute_batch("ROLLBACK").unwrap();
    drop(writer);

    // Nix registering new paths meanwhile (each toFile is a write transaction).
    let dir = tempdir();
    let expr = dir.path().join("many.nix");
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
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
    let deadline = Instant::now() + Duration::from_secs(60);
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
/// other; no builds needed) comes back in well under 100 ms from the database, and from one
/// `nix path-info` process otherwise.
#[test]
fn closure_of_a_thousand_paths_is_fast() {
    let dir = tempdir();
    let expr = dir.path().join("thousand.nix");
    // File i refers to i-1 and i/2 (a lazy list refers to itself, so each file is made once);
    // a derivation refers to the last one. `nix-instantiate` (not `--eval`, which is read-only)
    // writes the files and the .drv: a closure of 1,001 paths.
    fs::write(
        &expr,
        r#"let
  n = 1000;
  files = builtins.genList (i: builtins.toFile "cachecore-local-k${toString i}"
    (if i == 0 then "leaf"
     else "${builtins.elemAt files (i - 1)} ${builtins.elemAt files (i / 2)}")) n;
in derivation {
  name = "cachecore-local-thousand"; system = "x86_64-linux"; builder = "/bin/sh";
  last = builtins.elemAt files (n - 1);
}
"#,
    )
    .unwrap();
    let root = nix("nix-instantiate", &[expr.to_str().unwrap()]);
    let want: BTreeSet<String> = nix("nix-store", &["-qR", &root])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(want.len(), 1001);

    let store = db_store();
    let roots = [store_path(&root)];
    store.closure(&roots).unwrap(); // warm the page cache and statement cache
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let infos = store.closure(&roots).unwrap();
        best = best.min(t.elapsed());
        assert_eq!(infos.len(), 1001);
    }
    let infos = store.closure(&roots).unwrap();
    assert_eq!(
        infos.iter().map(|i| full(&i.path)).collect::<BTreeSet<_>>(),
        want
    );
    assert_references_first("database", &infos);

    let t = Instant::now();
    let from_nix = command_store().closure(&roots).unwrap();
    let nix_time = t.elapsed();
    assert_eq!(from_nix, infos, "database and nix command disagree");
    eprintln!("closure of 1001 paths: database {best:?}, one nix path-info process {nix_time:?}");
    assert!(
        best < Duration::from_millis(100),
        "closure of 1000 paths took {best:?}"
    );
}

#[test]
fn open_prefers_the_database_and_errors_name_the_file() {
    // As root with NIX_REMOTE=local the database is readable, so open() uses it.
    if matches!(std::env::var("NIX_REMOTE").as_deref(), Ok("local") | Err(_)) {
        let store = LocalStore::open(StoreDir::default()).unwrap();
        assert_eq!(store.source(), Source::Database(Source::default_database()));
    }
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
