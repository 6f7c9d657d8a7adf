//! The blocking client in a forked child: the child uses handles the parent opened and used
//! (so the parent's runtime exists, with worker threads that the child does not have, and, on
//! Garage, pooled keep-alive connections driven by tasks on that runtime) and must get correct
//! answers, not a hang. This is what Python's `os.fork()` / multiprocessing does to the bindings.
//!
//! `fork` and `_exit` need `unsafe`: there is no safe way to fork, and spawning a fresh process
//! (`Command`) would not test what a fork leaves behind.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachecore::blocking::BinaryCache;
use cachecore::ops::{NoProgress, PushOptions};
use cachecore::store_path::{StoreDir, StorePath};

/// A tree with a 9 MiB file (a seekable, multi-frame NAR) and a small one.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..9u32 << 20)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    std::fs::write(dir.path().join("big"), big).unwrap();
    std::fs::write(dir.path().join("small"), "hello from the parent\n").unwrap();
    dir
}

/// Everything the child does; an error message on failure.
fn child_work(
    cache: &BinaryCache,
    path: &StorePath,
    big: &mut cachecore::blocking::File,
    expected: &[u8],
) -> Result<(), String> {
    let info = cache
        .narinfo(path)
        .map_err(|e| e.to_string())?
        .ok_or("no narinfo")?;
    if info.store_path != *path {
        return Err("wrong narinfo".into());
    }
    // A file opened by the parent (re-opened here), read in the middle.
    let got = big
        .read_at(5_000_000..5_000_100)
        .map_err(|e| e.to_string())?;
    if got[..] != expected[5_000_000..5_000_100] {
        return Err("wrong bytes from the parent's file handle".into());
    }
    // A new file, read whole.
    let mut small = String::new();
    cache
        .open_file(path, "small")
        .map_err(|e| e.to_string())?
        .read_to_string(&mut small)
        .map_err(|e| e.to_string())?;
    if small != "hello from the parent\n" {
        return Err(format!("wrong small file: {small:?}"));
    }
    // The whole NAR, verified.
    let mut nar = Vec::new();
    cache
        .nar_reader(path)
        .map_err(|e| e.to_string())?
        .read_to_end(&mut nar)
        .map_err(|e| e.to_string())?;
    if nar.len() as u64 != info.nar_size {
        return Err("short NAR".into());
    }
    Ok(())
}

fn fork_and_check(cache: &BinaryCache) {
    let src = tree();
    let expected = std::fs::read(src.path().join("big")).unwrap();
    let (path, _) = cache
        .push_add(
            &StoreDir::default(),
            src.path(),
            "fork-test",
            &PushOptions::default(),
            Arc::new(NoProgress),
        )
        .unwrap();
    // The parent uses everything first: runtime threads started, connections pooled.
    let mut big = cache.open_file(&path, "big").unwrap();
    assert_eq!(big.read_at(0..100).unwrap()[..], expected[..100]);
    assert!(cache.cache_info().unwrap().is_some());

    // SAFETY: the child only runs Rust code of this test and leaves with _exit, never returning
    // into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match child_work(cache, &path, &mut big, &expected) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child: {e}");
                1
            }
        };
        // SAFETY: ends the child without running the parent's destructors or harness.
        unsafe { libc::_exit(code) };
    }
    // The parent: wait up to two minutes; a child stuck on the parent's runtime never ends.
    let start = Instant::now();
    let status = loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child hung using the blocking client");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child failed (status {status:#x}; its stderr is above)"
    );
    // The parent's handles still work.
    assert_eq!(
        big.read_at(9_000_000..9_000_010).unwrap()[..],
        expected[9_000_000..9_000_010]
    );
}

/// Set in the process [`alone`] starts.
const ALONE: &str = "CACHECORE_TEST_FORK_ALONE";

/// Runs `body` — the test `name` — in a process of its own: this test binary again, running
/// that one test on one thread. A `fork` inside the harness, with other tests running on other
/// threads, could inherit a lock one of them holds, and hang for a reason that is not ours.
fn alone(name: &str, body: impl FnOnce()) {
    if std::env::var_os(ALONE).is_some() {
        body();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name}, run alone, failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_forked_child_uses_a_local_directory_cache_opened_by_its_parent() {
    alone(
        "a_forked_child_uses_a_local_directory_cache_opened_by_its_parent",
        || {
            let dir = tempfile::tempdir().unwrap();
            let cache = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
            fork_and_check(&cache);
        },
    );
}

#[test]
fn a_forked_child_uses_a_garage_cache_opened_by_its_parent() {
    alone(
        "a_forked_child_uses_a_garage_cache_opened_by_its_parent",
        || {
            let garage = common::garage::Garage::start();
            let cache = BinaryCache::open_with_env(&garage.url("fork"), &garage.env()).unwrap();
            fork_and_check(&cache);
        },
    );
}
