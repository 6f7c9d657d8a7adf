//! Peak memory (resident set size) of a child, measured by GNU time.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

/// GNU time (`/usr/bin/time`), needed to measure peak memory. Missing is a test failure.
pub fn gnu_time() -> &'static str {
    let path = "/usr/bin/time";
    assert!(
        Path::new(path).exists(),
        "these tests need GNU time at {path} to measure peak memory: apt-get install -y time"
    );
    path
}

/// The peak RSS in KiB that `gnu_time -f %M -o FILE` wrote to `time_output`.
pub fn peak_rss_kib(time_output: &Path) -> u64 {
    let text = fs::read_to_string(time_output).unwrap_or_else(|e| {
        panic!(
            "cannot read GNU time's output {}: {e}",
            time_output.display()
        )
    });
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read GNU time's output: {text:?}"))
}

/// A child run under GNU time; [`PeakRss::kib`] reads its peak once it has exited.
#[derive(Debug)]
pub struct PeakRss {
    file: tempfile::NamedTempFile,
}

impl PeakRss {
    /// `/usr/bin/time -f %M -o FILE PROGRAM`: add arguments to the command, run it, then read
    /// the peak.
    pub fn command(program: impl AsRef<OsStr>) -> (Command, PeakRss) {
        let file = tempfile::NamedTempFile::new().expect("a temporary file for GNU time");
        let mut cmd = Command::new(gnu_time());
        cmd.args(["-f", "%M", "-o"]).arg(file.path()).arg(program);
        (cmd, PeakRss { file })
    }

    /// The child's peak RSS in KiB.
    pub fn kib(&self) -> u64 {
        peak_rss_kib(self.file.path())
    }
}
