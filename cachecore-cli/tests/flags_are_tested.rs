//! Every flag of every subcommand is run by some test: the flags are read from the CLI's own
//! definition (`cli.rs`, through clap's `CommandFactory`), and each must appear in the test
//! sources (`cachecore-cli/tests/*.rs`) near an invocation of its subcommand. A new flag without
//! a test fails here, naming the subcommand and the flag.
//!
//! "Near" is literal: within [`WINDOW`] lines after a string literal holding the subcommand's
//! name (`"push"`), a string literal holding the flag (`"--level"`, or `"--level=…"`). That is
//! how every test here spells an invocation (`&["push", url, "--level", "19"]`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;
// `cli.rs` names the exit statuses' help text.
#[allow(dead_code)]
#[path = "../src/exit.rs"]
mod exit;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use clap::CommandFactory as _;

/// How many lines after the subcommand's name its flags may be.
const WINDOW: usize = 40;

/// Flags clap adds by itself.
const BUILT_IN: &[&str] = &["help", "version"];

/// (subcommand path such as `nar ls`, leaf name, long flag) for every flag of every
/// subcommand.
fn all_flags() -> Vec<(String, String, String)> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String, String)>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                if !BUILT_IN.contains(&long) {
                    out.push((
                        path.to_owned(),
                        cmd.get_name().to_owned(),
                        format!("--{long}"),
                    ));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = if path.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{path} {}", sub.get_name())
            };
            walk(sub, &sub_path, out);
        }
    }
    let mut out = Vec::new();
    walk(&cli::Cli::command(), "", &mut out);
    out
}

/// The test sources other than this file: (file name, lines).
fn test_sources() -> Vec<(String, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "flags_are_tested.rs")
            {
                let text = fs::read_to_string(&path).unwrap();
                files.push((
                    path.display().to_string(),
                    text.lines().map(str::to_owned).collect(),
                ));
            }
        }
    }
    files
}

/// Whether `line` holds a string literal that is `word` or starts with `word=`.
fn has_literal(line: &str, word: &str) -> bool {
    line.contains(&format!("\"{word}\"")) || line.contains(&format!("\"{word}="))
}

/// Whether some source has `"--flag"` within [`WINDOW`] lines after `"leaf"` (anywhere, for a
/// flag of `cachecore` itself, which comes before any subcommand).
fn exercised(sources: &[(String, Vec<String>)], path: &str, leaf: &str, flag: &str) -> bool {
    if path.is_empty() {
        return sources
            .iter()
            .any(|(_, lines)| lines.iter().any(|l| has_literal(l, flag)));
    }
    sources.iter().any(|(_, lines)| {
        lines.iter().enumerate().any(|(i, line)| {
            has_literal(line, leaf)
                && lines[i..(i + WINDOW).min(lines.len())]
                    .iter()
                    .any(|l| has_literal(l, flag))
        })
    })
}

#[test]
fn the_cli_definition_is_read() {
    let flags = all_flags();
    // A few that exist today, so the walk cannot silently find nothing.
    for (sub, flag) in [
        ("push", "--no-closure"),
        ("copy", "--recompress"),
        ("nar ls", "--json"),
        ("key generate", "--out"),
    ] {
        assert!(
            flags.iter().any(|(p, _, f)| p == sub && f == flag),
            "the walk of the CLI definition did not find `cachecore {sub} {flag}`: {flags:?}"
        );
    }
}

#[test]
fn every_flag_is_used_by_a_test() {
    let sources = test_sources();
    assert!(sources.len() > 3, "no test sources found");
    let mut untested = BTreeSet::new();
    for (path, leaf, flag) in all_flags() {
        if !exercised(&sources, &path, &leaf, &flag) {
            untested.insert(format!("`cachecore {path} {flag}`"));
        }
    }
    assert!(
        untested.is_empty(),
        "no test runs these flags (a test must pass the flag as a string literal within {WINDOW} \
         lines after the subcommand's name, e.g. `&[\"push\", url, \"--level\", \"19\"]`):\n  {}",
        untested.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}
