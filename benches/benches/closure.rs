//! How fast `LocalStore::closure` is from each source, against one `nix path-info --recursive`
//! process (what a user would otherwise run), on two 1,000-path closures written with
//! `builtins.toFile` (no builds): a graph (file i refers to i-1 and i/2) and a chain (each file
//! refers to the one before: one round trip per path through the daemon, the worst case for it;
//! the closure `push-vs-nix.sh` pushes).
//!
//! `cargo bench --bench closure` (real Nix needed: root, `NIX_REMOTE=local`). Prints the best
//! of 5 runs after a warm-up for each source. These figures were assertions in the tests once
//! (the database under 100 ms, the daemon under 1 s); on a shared machine they belong here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cachecore::local_store::{LocalStore, Source};
use cachecore::store_path::{StoreDir, StorePath};
use cachecore_testkit::{instantiate_thousand_files, nix, nix_command, nix_ok, tempdir, NixDaemon};

/// Runs `f` once to warm up, then `runs` times; returns its last result and the shortest time.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut out = f();
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed());
    }
    (out, best)
}

fn store_path(full: &str) -> StorePath {
    StoreDir::default().parse_path(full).unwrap().to_owned()
}

fn chain(dir: &Path) -> String {
    let expr = dir.join("chain.nix");
    fs::write(
        &expr,
        r#"let step = prev: i: builtins.toFile "cachecore-bench-${toString i}" "${toString i} ${prev}";
in builtins.foldl' step "start" (builtins.genList (i: i) 1000)
"#,
    )
    .unwrap();
    let out = nix(
        "nix-instantiate",
        &["--eval", "--read-write-mode", expr.to_str().unwrap()],
    );
    out.trim_matches('"')
        .split(' ')
        .next_back()
        .unwrap()
        .to_owned()
}

fn measure(label: &str, root: &str, daemon: &NixDaemon) {
    let roots = [store_path(root)];
    let db = LocalStore::open_with(
        StoreDir::default(),
        Source::Database(Source::default_database()),
    )
    .unwrap();
    let (from_db, db_time) = best_of(5, || db.closure(&roots).unwrap());
    let through = || {
        LocalStore::open_with(
            StoreDir::default(),
            Source::Daemon(daemon.socket().to_owned()),
        )
        .unwrap()
    };
    let store = through();
    let (from_daemon, daemon_time) = best_of(5, || store.closure(&roots).unwrap());
    assert_eq!(
        from_daemon, from_db,
        "{label}: database and daemon disagree"
    );
    let (_, connect_time) = best_of(5, through);
    let cmd = LocalStore::open_with(StoreDir::default(), Source::NixCommand).unwrap();
    let (from_cmd, cmd_time) = best_of(5, || cmd.closure(&roots).unwrap());
    assert_eq!(
        from_cmd, from_db,
        "{label}: database and nix command disagree"
    );
    let (_, nix_time) = best_of(5, || {
        nix_ok(
            nix_command("nix").args(["path-info", "--json", "--recursive", root]),
            b"",
        )
    });
    let ratio = |t: Duration| nix_time.as_secs_f64() / t.as_secs_f64();
    println!(
        "{label} ({} paths): database {db_time:.1?} ({:.1}x nix path-info), daemon on an open \
         connection {daemon_time:.1?} ({:.1}x), connecting to the daemon {connect_time:.1?}, \
         through one nix path-info process {cmd_time:.1?} ({:.1}x); nix path-info --json \
         --recursive itself {nix_time:.1?}",
        from_db.len(),
        ratio(db_time),
        ratio(daemon_time),
        ratio(cmd_time),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too (quickly enough).
    let dir = tempdir();
    let daemon = NixDaemon::start();
    measure("graph", &instantiate_thousand_files(dir.path()), &daemon);
    measure("chain", &chain(dir.path()), &daemon);
}
