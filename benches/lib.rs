//! Benchmarks live in `benches/` and `src/bin/`; this library holds what the GC scale binaries
//! share: synthetic store paths, and the CPU time and peak memory of the process.

use cachecore::store_path::StorePath;

/// Synthetic store path number `i` (named `synthetic`).
///
/// # Panics
///
/// Never: the name is valid.
#[allow(clippy::expect_used)]
pub fn synthetic_path(i: u64) -> StorePath {
    let mut digest = [0u8; 20];
    digest[..8].copy_from_slice(&i.to_le_bytes());
    digest[19] = 0x5a;
    StorePath::from_parts(digest, "synthetic").expect("a valid store path")
}

/// CPU time (user + system, every thread) this process has used, in seconds (clock ticks of
/// 1/100 s, as Linux reports them): on a loaded machine, what the work costs without waiting
/// for a core.
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: field 14 (utime) and 15 (stime) of the line.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// The peak resident memory (VmHWM) of this process, in KiB.
pub fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
