//! Progress display: a bar (paths, bytes, rate) on a terminal, plain lines otherwise.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cachecore::ops::Progress;
use cachecore::untrusted::{escape_control, Untrusted};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `1 path`, `2 paths`, `0 paths`: a count and its noun, plural unless the count is 1. Every
/// count in a summary line goes through it.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[derive(Debug)]
pub struct TransferProgress {
    bar: Option<ProgressBar>,
    verb: &'static str,
    quiet: bool,
    /// For an operation that moves no NAR bytes (`sign`): what the planned paths are for
    /// (`to sign`), said instead of the bytes to transfer.
    paths_only: Option<&'static str>,
    /// Paths planned, and paths done, for the bar's message.
    planned: AtomicUsize,
    done: AtomicUsize,
}

impl TransferProgress {
    pub fn new(verb: &'static str, quiet: bool) -> Arc<Self> {
        Self::build(verb, !quiet, quiet)
    }

    /// For an operation on narinfos alone, whose plan is `N paths {todo}, M already {verb}`.
    pub fn paths_only(verb: &'static str, todo: &'static str, quiet: bool) -> Arc<Self> {
        let mut progress = Self::build(verb, !quiet, quiet);
        if let Some(p) = Arc::get_mut(&mut progress) {
            p.paths_only = Some(todo);
        }
        progress
    }

    /// A bar on a terminal, and nothing at all otherwise (for a command whose output is
    /// otherwise silent, such as pull).
    pub fn terminal_only(verb: &'static str) -> Arc<Self> {
        Self::build(verb, true, true)
    }

    fn build(verb: &'static str, bar: bool, quiet: bool) -> Arc<Self> {
        let bar = (bar && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Arc::new(TransferProgress {
            bar,
            verb,
            quiet,
            paths_only: None,
            planned: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        })
    }

    /// One more path is done: updates the bar's count.
    fn count_one(&self, bar: &ProgressBar) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let planned = self.planned.load(Ordering::Relaxed);
        bar.set_message(format!("{done}/{}", count(planned, "path")));
    }

    pub fn finish(&self, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("{summary}");
        }
    }
}

impl Drop for TransferProgress {
    /// An operation that stopped early (an error, a signal) leaves no half-drawn bar behind.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}

impl Progress for TransferProgress {
    fn planned(&self, paths: usize, bytes: u64, skipped: usize) {
        match &self.bar {
            Some(bar) => {
                self.planned.store(paths, Ordering::Relaxed);
                bar.set_length(bytes);
                bar.set_message(format!("0/{}", count(paths, "path")));
            }
            None if !self.quiet && self.paths_only.is_some() => eprintln!(
                "{} {}, {skipped} already {}",
                count(paths, "path"),
                self.paths_only.unwrap_or_default(),
                self.verb
            ),
            None if !self.quiet => {
                eprintln!(
                    "{} to transfer ({} of NAR), {skipped} already there",
                    count(paths, "path"),
                    human_size(bytes)
                )
            }
            None => {}
        }
    }

    fn bytes(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn path_done(&self, path: &str) {
        match &self.bar {
            Some(bar) => {
                bar.println(format!("{} {}", self.verb, Untrusted(path)));
                self.count_one(bar);
            }
            None if !self.quiet => eprintln!("{} {}", self.verb, Untrusted(path)),
            None => {}
        }
    }

    fn message(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(escape_control(text)),
            None if !self.quiet => eprintln!("{}", Untrusted(text)),
            None => {}
        }
    }
}

/// A size for people: `512 B`, `1.5 KiB`, `200.4 MiB`, `3.0 GiB` (binary units, one decimal).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(210_134_630), "200.4 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        assert_eq!(human_size(u64::MAX), "16384.0 PiB");
    }
}

/// The reading phase of `gc`: a bar of narinfos read on a terminal (the push index covers the
/// rest), nothing otherwise.
#[derive(Debug)]
pub struct ReadProgress {
    bar: Option<ProgressBar>,
}

impl ReadProgress {
    pub fn new() -> Arc<Self> {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} narinfos read {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Arc::new(ReadProgress { bar })
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for ReadProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Progress for ReadProgress {
    fn planned(&self, paths: usize, _bytes: u64, indexed: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(paths as u64);
            bar.set_message(format!("({} from the push index)", count(indexed, "path")));
        }
    }

    fn path_done(&self, _key: &str) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }
}
