//! Plans a GC of N synthetic store paths from the push index, as `gc` does: index objects
//! (as `index compact` writes them, 100,000 entries each) are parsed straight into the
//! snapshot, each entry is checked against its listed narinfo, the NARs are added as listed,
//! and the plan is made. Prints the time to build the snapshot, the planning time and the peak
//! memory (VmHWM) of the whole process. The graph is realistic: a few hundred "libraries"
//! every path may refer to (fan-in), and a chain about 20 deep. Reads nothing from a store:
//! the requests a real cache costs are in the README's GC section.
//!
//!   cargo run --release -p cachecore-benches --bin gc-plan-scale -- 1000000

// A benchmark binary: a broken invariant here is a bug to see at once.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use cachecore::gc::{plan, PlanOptions, RootIds, Snapshot};
use cachecore::store::index::INDEX_HEADER;
use cachecore::store_path::StorePath;

fn path(i: u64) -> StorePath {
    cachecore_benches::synthetic_path(i)
}

/// Its NAR's key: 52 characters of the nix32 alphabet, as a compressed NAR's file hash has.
fn nar_key(i: u64) -> String {
    format!(
        "nar/{}{}.nar.zst",
        path(i).hash_part(),
        path(!i).hash_part()[..20].to_owned()
    )
}

use cachecore_benches::{cpu_secs, peak_kib};

/// Entries a compacted index object holds.
const PER_OBJECT: u64 = 100_000;

fn main() {
    use std::fmt::Write as _;
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
    let written_ms = n * 1000;
    let mut snapshot = Snapshot::new();
    let mut building = Duration::ZERO;
    let mut building_cpu = 0.0;
    let mut index_bytes = 0usize;
    let mut start = 0;
    while start < n {
        let end = (start + PER_OBJECT).min(n);
        // One index object, as a compaction writes it (not timed: the store's bytes).
        let mut body = format!("{INDEX_HEADER}\n");
        for i in start..end {
            // References: a few libraries (fan-in) and a path 1..20 before it (depth).
            let mut refs: Vec<u64> = (0..3).map(|_| next() % libraries).collect();
            if i > libraries {
                refs.push(i - 1 - next() % 20.min(i - libraries));
            }
            let refs: Vec<String> = refs.iter().map(|&r| path(r).to_string()).collect();
            let _ = writeln!(
                body,
                "{}\t{}\t1000\t500\t{i}\t{}\t-\t{}",
                path(i),
                nar_key(i),
                i * 1000,
                refs.join(" ")
            );
        }
        index_bytes += body.len();
        let (t, c) = (Instant::now(), cpu_secs());
        let bad = snapshot
            .add_index_object(body.as_bytes(), written_ms)
            .expect("a valid index object");
        assert!(bad.is_empty(), "{bad:?}");
        building += t.elapsed();
        building_cpu += cpu_secs() - c;
        start = end;
    }
    // The listing, a page of keys at a time (the keys made untimed, as a store's listing
    // parses them): each narinfo confirms its entry (scan interns its hash part as it lists),
    // each NAR is listed.
    let mut start = 0;
    while start < n {
        let end = (start + PER_OBJECT).min(n);
        let page: Vec<(String, String)> = (start..end)
            .map(|i| (path(i).hash_part(), nar_key(i)))
            .collect();
        let (t, c) = (Instant::now(), cpu_secs());
        for (i, (hash, nar)) in (start..end).zip(&page) {
            let id = snapshot.intern_path(hash).expect("a hash part");
            assert!(snapshot.confirm_indexed(id, i * 1000, i));
            snapshot.add_nar_object(nar, 500, i, i);
        }
        building += t.elapsed();
        building_cpu += cpu_secs() - c;
        start = end;
    }
    let (t, c) = (Instant::now(), cpu_secs());
    snapshot.drop_unconfirmed();
    building += t.elapsed();
    building_cpu += cpu_secs() - c;
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
    let (t, c) = (Instant::now(), cpu_secs());
    let p = plan(&snapshot, &roots, n, &options).expect("roots given");
    let (planned, planned_cpu) = (t.elapsed(), cpu_secs() - c);
    println!(
        "{n} paths from {} MiB of push index: snapshot built in {:.2} s ({:.2} s CPU), planned in {:.2} s ({:.2} s CPU) ({} live, {} narinfos to delete); peak memory {} MiB",
        index_bytes >> 20,
        building.as_secs_f64(),
        building_cpu,
        planned.as_secs_f64(),
        planned_cpu,
        p.live,
        p.narinfos.len(),
        peak_kib() / 1024
    );
}
