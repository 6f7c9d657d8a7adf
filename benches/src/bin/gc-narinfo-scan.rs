//! Reads a local-directory cache of N synthetic store paths for GC with no push index, as
//! `cachecore gc` reads a cache written by plain `nix copy`: one listing of every key, then
//! every narinfo read and parsed (16 at a time) into the snapshot, then the plan. The cache
//! (a narinfo of 3 references and a small NAR per path, `nix-cache-info`) is written first,
//! untimed, into DIR (a fresh directory under the system's temporary directory without one,
//! removed afterwards); its files are then in the page cache, so this is the scan's own cost,
//! not the disk's. Prints wall and CPU time (user + system, every thread) of the scan and of
//! the plan, and the peak memory (VmHWM) of the process.
//!
//!   cargo run --release -p cachecore-benches --bin gc-narinfo-scan -- 100000 [DIR]

// A benchmark binary: a broken invariant here is a bug to see at once.
#![allow(clippy::expect_used)]

use std::time::{Instant, SystemTime};

use cachecore::gc::{plan, scan, PlanOptions, RootIds};
use cachecore::hash::{Hash, HashAlgo};
use cachecore::narinfo::NarInfo;
use cachecore::store::BinaryCache;
use cachecore::store_path::{StoreDir, StorePath};

fn path(i: u64) -> StorePath {
    cachecore_benches::synthetic_path(i)
}

fn main() {
    use cachecore_benches::{cpu_secs, peak_kib};
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let (dir, remove) = match args.next() {
        Some(d) => (std::path::PathBuf::from(d), false),
        None => {
            let unique = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            (
                std::env::temp_dir().join(format!("gc-narinfo-scan-{unique}")),
                true,
            )
        }
    };
    std::fs::create_dir_all(dir.join("nar")).expect("the cache directory");
    let store_dir = StoreDir::default();
    std::fs::write(
        dir.join("nix-cache-info"),
        format!(
            "StoreDir: {}\nWantMassQuery: 1\nPriority: 40\n",
            store_dir.as_str()
        ),
    )
    .expect("nix-cache-info");
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let libraries = 300.min(n);
    for i in 0..n {
        let nar_hash = Hash::digest(HashAlgo::Sha256, &i.to_le_bytes());
        let nar = format!("nar/{}.nar", nar_hash.to_nix32());
        let mut info = NarInfo::new(store_dir.clone(), path(i), nar.clone(), nar_hash, 1000);
        info.compression = Some("none".to_owned());
        info.file_size = Some(1000);
        let mut refs: Vec<StorePath> = (0..2).map(|_| path(next() % libraries)).collect();
        if i > libraries {
            refs.push(path(i - 1 - next() % 20.min(i - libraries)));
        }
        refs.sort();
        refs.dedup();
        info.references = refs;
        std::fs::write(
            dir.join(format!("{}.narinfo", path(i).hash_part())),
            info.to_string(),
        )
        .expect("a narinfo");
        std::fs::write(dir.join(&nar), b"x").expect("a NAR");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let cache = BinaryCache::open(dir.to_str().expect("a UTF-8 directory")).expect("the cache");
    let (t, c) = (Instant::now(), cpu_secs());
    let scanned = runtime
        .block_on(scan(&cache, &store_dir, 16))
        .expect("the scan");
    let (scan_wall, scan_cpu) = (t.elapsed(), cpu_secs() - c);
    assert_eq!(scanned.from_narinfos as u64, n, "every narinfo read");
    // Roots: the last 1% of the paths (their closures stay).
    let roots = RootIds {
        live: (n - n / 100..n)
            .filter_map(|i| scanned.snapshot.path_id(&path(i).hash_part()))
            .collect(),
        ..RootIds::default()
    };
    let now = cachecore::gc::roots::unix_secs(SystemTime::now());
    let (t, c) = (Instant::now(), cpu_secs());
    let p = plan(&scanned.snapshot, &roots, now, &PlanOptions::default()).expect("a plan");
    let (plan_wall, plan_cpu) = (t.elapsed(), cpu_secs() - c);
    println!(
        "{n} paths from narinfos alone (no push index), local directory: scan {:.2} s ({:.2} s CPU), plan {:.2} s ({:.2} s CPU) ({} live, {} narinfos to delete); peak memory {} MiB",
        scan_wall.as_secs_f64(),
        scan_cpu,
        plan_wall.as_secs_f64(),
        plan_cpu,
        p.live,
        p.narinfos.len(),
        peak_kib() / 1024
    );
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
