//! Pushing a NAR larger than 4 GiB streams in bounded memory: the target is a peak
//! under 128 MiB for a 4 GiB NAR.
//!
//! The NAR holds a 4 GiB sparse file (cheap on disk, compresses to almost nothing) and 256 MiB of
//! incompressible bytes, which fill the upload pipeline: by design at most (threads + 2) frames
//! of 4 MiB in and out of the compressor, 8 MiB of channel to the uploader and (4 + 1) multipart
//! parts of 10 MiB, about 90 MiB on 2 cores. How full it gets depends on timing, so a run
//! here peaks anywhere from 60 to 80 MiB; `benches/push-vs-nix.sh` measures a fully
//! incompressible 4 GiB NAR (106 MiB seen).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, File};
use std::io::{BufWriter, Write as _};

use common::*;

const PEAK_RSS_LIMIT_KIB: u64 = 128 * 1024;

#[test]
fn pushing_a_nar_over_4_gib_stays_under_128_mib_and_verifies() {
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
    let time_out = tmp.path().join("time");
    let out = std::process::Command::new(gnu_time())
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&time_out)
        .arg(env!("CARGO_BIN_EXE_cachecore"))
        .args(["push", path_str(&cache), "--add", path_str(&src), "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store_path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let time_text = fs::read_to_string(&time_out).unwrap();
    let peak_kib: u64 = time_text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read GNU time's output: {time_text:?}"));
    eprintln!("peak RSS pushing a 4.25 GiB NAR: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < PEAK_RSS_LIMIT_KIB,
        "cachecore push peaked at {} MiB (limit {} MiB)",
        peak_kib / 1024,
        PEAK_RSS_LIMIT_KIB / 1024
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
