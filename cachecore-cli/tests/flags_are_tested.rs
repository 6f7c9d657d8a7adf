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

// ---------------------------------------------------------------------------------------------
// Effects: a flag passed by a test is not a flag whose effect a test asserts
// ---------------------------------------------------------------------------------------------

/// (subcommand path, flag, test): `test` asserts what the flag changes — it fails when the
/// flag is dropped or ignored (a broken implementation was run to see it fail). A new flag
/// needs a row here, naming the test that shows its effect.
const EFFECTS: &[(&str, &str, &str)] = &[
    (
        "push",
        "--jobs",
        "push_jobs_sets_how_many_nars_upload_at_once",
    ),
    (
        "serve",
        "--upstream",
        "a_pull_through_proxy_fills_from_its_upstream_checks_it_and_outlives_it",
    ),
    (
        "serve",
        "--upstream-key",
        "a_proxy_stores_nothing_from_an_upstream_signed_by_a_key_it_does_not_trust",
    ),
    (
        "serve",
        "--upstream-timeout",
        "an_upstream_that_times_out_is_a_miss_and_the_404_is_not_kept",
    ),
    ("gc", "--why", "gc_why_names_the_root_that_keeps_a_path"),
];

/// Flags of the CLI as it was when [`EFFECTS`] was started, which some test passes (see
/// [`every_flag_is_used_by_a_test`]) but for which no test is yet recorded as asserting the
/// effect. The list may only shrink: a flag moves to [`EFFECTS`] with the test that shows its
/// effect; a flag added since must go to [`EFFECTS`] directly.
const EFFECT_NOT_RECORDED: &[(&str, &str)] = &[
    ("gc", "--unused-for"),
    ("roots sync", "--watch"),
    ("serve", "--record-access"),
    ("init", "--token-file"),
    ("serve", "--private-reads"),
    ("serve", "--revoked-tokens"),
    ("serve", "--title"),
    ("serve", "--token-secret"),
    ("sign", "--all"),
    ("sign", "--jobs"),
    ("sign", "--key"),
    ("sign", "--quiet"),
    ("sign", "--token-file"),
    ("token issue", "--can"),
    ("token issue", "--expires"),
    ("token issue", "--name"),
    ("token issue", "--prefix"),
    ("token issue", "--secret"),
    ("token secret", "--out"),
    ("copy", "--log-compression"),
    ("copy", "--ls-compression"),
    ("copy", "--narinfo-compression"),
    ("push", "--log-compression"),
    ("push", "--ls-compression"),
    ("push", "--narinfo-compression"),
    ("", "--verbose"),
    ("cat", "--token-file"),
    ("cat", "--trusted-key"),
    ("cat", "--verify"),
    ("copy", "--all"),
    ("copy", "--jobs"),
    ("copy", "--level"),
    ("copy", "--quiet"),
    ("copy", "--recompress"),
    ("copy", "--to-token-file"),
    ("copy", "--token-file"),
    ("copy", "--trusted-key"),
    ("gc", "--allow-empty-roots"),
    ("gc", "--delete-unparseable"),
    ("gc", "--dry-run"),
    ("gc", "--failed-uploads-older-than"),
    ("gc", "--force"),
    ("gc", "--grace"),
    ("gc", "--jobs"),
    ("gc", "--json"),
    ("gc", "--max-size"),
    ("gc", "--older-than"),
    ("gc", "--only-trashed"),
    ("gc", "--store-dir"),
    ("index compact", "--jobs"),
    ("index rebuild", "--jobs"),
    ("info", "--token-file"),
    ("init", "--no-mass-query"),
    ("init", "--priority"),
    ("init", "--update"),
    ("key generate", "--out"),
    ("ls", "--token-file"),
    ("mount", "--cache-dir"),
    ("mount", "--cache-size"),
    ("mount", "--check"),
    ("mount", "--memory"),
    ("mount", "--no-check-sigs"),
    ("mount", "--trusted-key"),
    ("nar hash", "--bare"),
    ("nar hash", "--size"),
    ("nar ls", "--json"),
    ("pull", "--no-check-sigs"),
    ("pull", "--token-file"),
    ("pull", "--trusted-key"),
    ("push", "--add"),
    ("push", "--compression"),
    ("push", "--key"),
    ("push", "--level"),
    ("push", "--logs"),
    ("push", "--name"),
    ("push", "--no-closure"),
    ("push", "--no-listing"),
    ("push", "--quiet"),
    ("push", "--repair"),
    ("push", "--token-file"),
    ("roots add", "--host"),
    ("roots add", "--keep"),
    ("roots add", "--store-dir"),
    ("roots list", "--json"),
    ("roots remove", "--host"),
    ("roots restore", "--host"),
    ("roots sync", "--gcroots-dir"),
    ("roots sync", "--host"),
    ("roots sync", "--push"),
    ("roots sync", "--store-dir"),
    ("serve", "--idle-timeout"),
    ("serve", "--key"),
    ("serve", "--listen"),
    ("serve", "--log-format"),
    ("serve", "--max-connections"),
    ("serve", "--max-upload-size"),
    ("serve", "--nar-cache-dir"),
    ("serve", "--nar-cache-size"),
    ("serve", "--no-direct-uploads"),
    ("serve", "--priority"),
    ("serve", "--public-key"),
    ("serve", "--read-token-file"),
    ("serve", "--redirect-nars"),
    ("serve", "--remote-read-ttl"),
    ("serve", "--token-file"),
    ("serve", "--upload-jobs"),
    ("serve", "--upload-timeout"),
    ("store-path", "--name"),
    ("store-path", "--store-dir"),
    ("verify", "--jobs"),
    ("verify", "--token-file"),
    ("verify", "--trusted-key"),
];

/// The body of `#[test] fn name()` in the test sources: (file, body), braces matched outside
/// string and character literals and comments.
fn test_body<'a>(sources: &'a [(String, Vec<String>)], name: &str) -> Option<(&'a str, String)> {
    for (file, lines) in sources {
        let text = lines.join("\n");
        let Some(at) = text.find(&format!("fn {name}()")) else {
            continue;
        };
        let before = &text[..at];
        if !before.trim_end().ends_with("#[test]") {
            continue;
        }
        let open = at + text[at..].find('{')?;
        let bytes = text.as_bytes();
        let (mut depth, mut i) = (0usize, open);
        while i < bytes.len() {
            match bytes[i] {
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    i += text[i..].find('\n').unwrap_or(text.len() - i);
                    continue;
                }
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                }
                b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some((file, text[open..=i].to_owned()));
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    None
}

#[test]
fn every_flag_names_the_test_that_asserts_its_effect() {
    let sources = test_sources();
    let flags: BTreeSet<(String, String)> = all_flags()
        .into_iter()
        .map(|(path, _, flag)| (path, flag))
        .collect();
    let mut wrong = Vec::new();
    for (path, flag, test) in EFFECTS {
        let key = ((*path).to_owned(), (*flag).to_owned());
        if !flags.contains(&key) {
            wrong.push(format!(
                "EFFECTS names `cachecore {path} {flag}`, which does not exist"
            ));
        }
        match test_body(&sources, test) {
            None => wrong.push(format!(
                "EFFECTS names test {test} for {flag}: no such #[test]"
            )),
            Some((file, body)) if !body.lines().any(|l| has_literal(l, flag)) => {
                wrong.push(format!(
                    "{file}: {test} does not pass {flag}, yet EFFECTS says it shows its effect"
                ))
            }
            Some((file, body)) if !body.contains("assert") => {
                wrong.push(format!("{file}: {test} asserts nothing"));
            }
            Some(_) => {}
        }
        if EFFECT_NOT_RECORDED.contains(&(path, flag)) {
            wrong.push(format!(
                "`{path} {flag}` is in EFFECTS: take it out of EFFECT_NOT_RECORDED"
            ));
        }
    }
    for (path, flag) in &flags {
        let claimed = EFFECTS.iter().any(|(p, f, _)| p == path && f == flag);
        let listed = EFFECT_NOT_RECORDED.contains(&(path.as_str(), flag.as_str()));
        if !claimed && !listed {
            wrong.push(format!(
                "no test is named for the effect of `cachecore {path} {flag}`: add \
                 (\"{path}\", \"{flag}\", \"<test>\") to EFFECTS"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
