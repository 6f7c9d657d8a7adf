//! Pushing a NAR larger than 4 GiB streams in memory bounded by push's configuration, whatever
//! the machine's core count.
//!
//! The NAR holds a 4 GiB sparse file (cheap on disk, compresses to almost nothing) and 256 MiB of
//! incompressible bytes, which fill the upload pipeline. What the pipeline may hold is set by
//! configuration, not by the machine: at most `(threads + 2)` zstd frames in and out of the
//! compressor, with `threads` capped at `NarCompression::MAX_DEFAULT_THREADS` whatever
//! the core count; the bridge to the uploader (8 chunks of 1 MiB); and the multipart upload's
//! parts in flight (`PARTS_IN_FLIGHT + 1` parts of 10 MiB). The test asserts the peak stays under
//! the sum of those plus the process's own baseline. How full the pipeline gets depends on
//! timing (runs here peak at 60 to 80 MiB on 2 cores); `benches/push-vs-nix.sh` measures a fully
//! incompressible 4 GiB NAR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, File};
use std::io::{BufWriter, Write as _};

use common::*;

use cachecore::compression::NarCompression;
use cachecore::ops::PushOptions;
use cachecore::seekable::DEFAULT_FRAME_SIZE;

const MIB: u64 = 1 << 20;
/// The bridge from the packing thread to the uploader: 8 chunks of 1 MiB (`ops/pipe.rs`).
const BRIDGE: u64 = 8 * MIB;
/// A multipart upload holds at most `PARTS_IN_FLIGHT + 1` parts of `PART_SIZE` (4 + 1 parts of
/// 10 MiB, `store/mod.rs`).
const MULTIPART: u64 = 5 * 10 * MIB;
/// The binary, its runtime, its allocator's slack and the NAR's listing: measured at about
/// 20 MiB when pushing a small path.
const BASELINE: u64 = 24 * MIB;

/// The most a push of one large NAR may hold, from its configuration alone.
fn configured_bound() -> u64 {
    let threads = PushOptions::default().compression.threads as u64;
    assert!(
        threads <= NarCompression::MAX_DEFAULT_THREADS as u64,
        "the default compression threads ({threads}) are not capped"
    );
    let frames = (NarCompression::MAX_DEFAULT_THREADS as u64 + 2) * DEFAULT_FRAME_SIZE as u64;
    frames + BRIDGE + MULTIPART + BASELINE
}

#[test]
fn pushing_a_nar_over_4_gib_stays_within_the_configured_bound_and_verifies() {
    let bound_kib = configured_bound() / 1024;
    let tmp = tempdir();
    let src = tmp.path().join("big");
    fs::create_dir(&src).unwrap();
    let holes = File::create(src.join("holes")).unwrap();
    holes.set_len((4 << 30) + 12_345).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&holes, b"data past 4 GiB", 1 << 32).unwrap();
    let mut noise = BufWriter::new(File::create(src.join("noise")).unwrap());
    for seed in 0..256u64 {
        noise
            .write_all(&pseudo_random_bytes(1 << 20, seed + 1))
            .unwrap();
    }
    noise.flush().unwrap();
    drop(noise);

    let cache = tmp.path().join("cache");
    let (mut cmd, peak) = PeakRss::command(env!("CARGO_BIN_EXE_cachecore"));
    let out = run_with_stdin(
        cmd.args(["push", path_str(&cache), "--add", path_str(&src), "--quiet"]),
        b"",
    );
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store_path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let peak_kib = peak.kib();
    eprintln!("peak RSS pushing a 4.25 GiB NAR: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < bound_kib,
        "cachecore push peaked at {} MiB, over the {} MiB its configuration allows",
        peak_kib / 1024,
        bound_kib / 1024
    );

    // The NAR is whole: its size is past 4 GiB, and verify re-reads it against both hashes.
    let info = cachecore_str(&["info", path_str(&cache)]);
    assert!(info.contains("Paths: 1\n"), "{info}");
    let verify = cachecore_output(&["verify", path_str(&cache), &store_path], b"");
    let report = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success()
            && report.contains("1 path verified")
            && report.contains("no problems"),
        "verify: {report}"
    );
    let narinfo = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .unwrap();
    let nar_size: u64 = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("NarSize: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(nar_size > (4 << 30) + (256 << 20), "{narinfo}");
}
