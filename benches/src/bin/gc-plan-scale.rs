//! Plans a GC of N synthetic store paths (a realistic shape: a few hundred "libraries" every
//! path may refer to, chains about 20 deep) and prints the planning time and the peak memory
//! (VmHWM). Reads nothing: this measures the planner, not the scan (one GET per narinfo).
//!
//!   cargo run --release -p cachecore-benches --bin gc-plan-scale -- 1000000

// A benchmark binary: a broken invariant here is a bug to see at once.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use cachecore::gc::{plan, PlanOptions, RootIds, Snapshot};
use cachecore::hash::{Hash, HashAlgo};
use cachecore::narinfo::NarInfo;
use cachecore::store_path::{StoreDir, StorePath};

fn path(i: u64) -> StorePath {
    let mut digest = [0u8; 20];
    digest[..8].copy_from_slice(&i.to_le_bytes());
    digest[19] = 0x5a;
    StorePath::from_parts(digest, "synthetic").expect("a valid store path")
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let libraries = 300.min(n);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let start = Instant::now();
    let mut snapshot = Snapshot::new();
    let dir = StoreDir::default();
    for i in 0..n {
        // References: a few libraries (fan-in) and the path 1..20 before it (depth).
        let mut refs: Vec<StorePath> = (0..3).map(|_| path(next() % libraries)).collect();
        if i > libraries {
            refs.push(path(i - 1 - next() % 20.min(i - libraries)));
        }
        let nar = Hash::digest(HashAlgo::Sha256, &i.to_le_bytes());
        let mut info = NarInfo::new(
            dir.clone(),
            path(i),
            format!("nar/{}.nar.zst", nar.to_nix32()),
            nar,
            1000,
        );
        info.references = refs;
        info.file_size = Some(500);
        snapshot.add_narinfo(&path(i).hash_part(), &info, i, i);
    }
    let built = start.elapsed();
    // Roots: the last 1% of the paths.
    let roots = RootIds {
        live: (n - n / 100..n)
            .filter_map(|i| snapshot.path_id(&path(i).hash_part()))
            .collect(),
        ..RootIds::default()
    };
    let options = PlanOptions {
        older_than: Some(Duration::from_secs(n / 2)),
        ..PlanOptions::default()
    };
    let start = Instant::now();
    let p = plan(&snapshot, &roots, n, &options).expect("roots given");
    let planned = start.elapsed();
    println!(
        "{n} paths: snapshot built in {:.2} s, planned in {:.2} s ({} live, {} narinfos to delete); peak memory {} MiB",
        built.as_secs_f64(),
        planned.as_secs_f64(),
        p.live,
        p.narinfos.len(),
        peak_kib() / 1024
    );
}
