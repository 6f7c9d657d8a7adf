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
/// flag is dropped or ignored (a broken implementation was run to see it fail, or the test
/// compares a run with the flag against one without, or against the flag's documented
/// default). A new flag needs a row here, naming the test that shows its effect.
///
/// What is checked here is only that the named `#[test]` exists, runs the subcommand and passes
/// the flag (string literals in its body) and asserts something; that the assertion is about
/// the flag's effect is the row's claim, read by a reviewer.
const EFFECTS: &[(&str, &str, &str)] = &[
    ("", "--verbose", "s3_mistakes_get_one_sentence_with_the_fix"),
    (
        "cat",
        "--token-file",
        "http_errors_speak_http_and_every_read_command_takes_a_token_file",
    ),
    (
        "cat",
        "--trusted-key",
        "check_frames_reads_only_signed_frames_serves_no_changed_byte_and_nix_still_substitutes",
    ),
    (
        "cat",
        "--verify",
        "cat_verify_checks_the_whole_nar_before_printing",
    ),
    ("copy", "--all", "copy_jobs_recompress_and_level"),
    (
        "copy",
        "--jobs",
        "verify_jobs_and_copy_jobs_set_how_many_nars_are_read_at_once",
    ),
    (
        "copy",
        "--level",
        "copy_level_sets_the_zstd_level_of_recompressed_nars",
    ),
    (
        "copy",
        "--ls-compression",
        "narinfos_listings_and_logs_stored_as_brotli_are_read_by_nix_and_by_cachecore",
    ),
    (
        "copy",
        "--narinfo-compression",
        "narinfos_listings_and_logs_stored_as_brotli_are_read_by_nix_and_by_cachecore",
    ),
    (
        "copy",
        "--quiet",
        "plain_lines_off_a_terminal_and_a_bar_on_one",
    ),
    ("copy", "--recompress", "copy_jobs_recompress_and_level"),
    (
        "copy",
        "--to-token-file",
        "http_errors_speak_http_and_every_read_command_takes_a_token_file",
    ),
    (
        "copy",
        "--token-file",
        "http_errors_speak_http_and_every_read_command_takes_a_token_file",
    ),
    (
        "copy",
        "--trusted-key",
        "copy_writes_under_its_own_keys_and_only_signed_paths_with_trusted_key",
    ),
    (
        "gc",
        "--allow-empty-roots",
        "gc_collects_a_cache_written_by_nix_copy",
    ),
    (
        "gc",
        "--delete-unparseable",
        "gc_max_size_keeps_the_newest_closures_and_delete_unparseable_deletes_bad_narinfos",
    ),
    (
        "gc",
        "--dry-run",
        "gc_keeps_the_rooted_closure_and_collects_the_rest",
    ),
    (
        "gc",
        "--failed-uploads-older-than",
        "gc_failed_uploads_older_than_sets_when_orphaned_nars_go",
    ),
    ("gc", "--force", "gc_collects_a_cache_written_by_nix_copy"),
    (
        "gc",
        "--grace",
        "gc_keeps_the_rooted_closure_and_collects_the_rest",
    ),
    (
        "gc",
        "--json",
        "gc_keeps_the_rooted_closure_and_collects_the_rest",
    ),
    (
        "gc",
        "--max-size",
        "gc_max_size_keeps_the_newest_closures_and_delete_unparseable_deletes_bad_narinfos",
    ),
    (
        "gc",
        "--older-than",
        "gc_collects_a_cache_written_by_nix_copy",
    ),
    (
        "gc",
        "--only-trashed",
        "roots_host_and_keep_and_gc_only_trashed",
    ),
    (
        "gc",
        "--store-dir",
        "gc_collects_a_cache_written_by_nix_copy",
    ),
    (
        "index rebuild",
        "--jobs",
        "index_rebuild_jobs_sets_how_many_narinfos_are_read_at_once",
    ),
    (
        "info",
        "--token-file",
        "info_and_ls_of_a_serve_url_answer_from_the_server",
    ),
    (
        "init",
        "--no-mass-query",
        "init_writes_priority_and_mass_query",
    ),
    ("init", "--priority", "init_writes_priority_and_mass_query"),
    (
        "init",
        "--token-file",
        "init_of_a_private_server_takes_a_token_file",
    ),
    (
        "init",
        "--update",
        "init_takes_url_settings_and_says_what_an_existing_cache_holds",
    ),
    (
        "key generate",
        "--out",
        "generate_out_writes_a_0600_file_nix_understands",
    ),
    (
        "ls",
        "--token-file",
        "info_and_ls_of_a_serve_url_answer_from_the_server",
    ),
    (
        "mount",
        "--cache-dir",
        "a_cache_written_by_nix_copy_mounts_as_the_store",
    ),
    (
        "mount",
        "--cache-size",
        "a_cache_written_by_nix_copy_mounts_as_the_store",
    ),
    (
        "mount",
        "--no-check-sigs",
        "a_cache_written_by_nix_copy_mounts_as_the_store",
    ),
    (
        "mount",
        "--trusted-key",
        "a_cache_written_by_nix_copy_mounts_as_the_store",
    ),
    ("nar hash", "--bare", "hash_equals_nix_hash"),
    ("nar hash", "--size", "hash_equals_nix_hash"),
    (
        "nar ls",
        "--json",
        "nar_ls_json_equals_the_listing_nix_copy_writes",
    ),
    (
        "pull",
        "--no-check-sigs",
        "pull_no_check_sigs_takes_the_unsigned_path_pull_otherwise_refuses",
    ),
    (
        "pull",
        "--token-file",
        "http_errors_speak_http_and_every_read_command_takes_a_token_file",
    ),
    ("pull", "--trusted-key", "verify_jobs_and_trusted_key_files"),
    (
        "push",
        "--add",
        "push_add_needs_no_nix_and_matches_nix_store_add",
    ),
    (
        "push",
        "--compression",
        "copy_level_sets_the_zstd_level_of_recompressed_nars",
    ),
    (
        "push",
        "--jobs",
        "push_jobs_sets_how_many_nars_upload_at_once",
    ),
    (
        "push",
        "--key",
        "push_add_needs_no_nix_and_matches_nix_store_add",
    ),
    ("push", "--level", "push_level_sets_the_zstd_level"),
    (
        "push",
        "--log-compression",
        "push_log_compression_sets_how_build_logs_are_stored",
    ),
    (
        "push",
        "--logs",
        "push_logs_uploads_build_logs_that_nix_log_reads_from_the_cache",
    ),
    (
        "push",
        "--ls-compression",
        "narinfos_listings_and_logs_stored_as_brotli_are_read_by_nix_and_by_cachecore",
    ),
    (
        "push",
        "--name",
        "pushed_to_garage_and_substituted_by_nix_over_http",
    ),
    (
        "push",
        "--narinfo-compression",
        "narinfos_listings_and_logs_stored_as_brotli_are_read_by_nix_and_by_cachecore",
    ),
    (
        "push",
        "--no-closure",
        "push_no_closure_needs_the_references_there_first",
    ),
    ("push", "--no-listing", "push_no_listing_writes_no_ls"),
    (
        "push",
        "--quiet",
        "push_quiet_prints_nothing_where_a_push_prints_a_line_per_path",
    ),
    (
        "push",
        "--repair",
        "debris_is_reported_and_repair_repushes_damaged_paths",
    ),
    (
        "push",
        "--token-file",
        "cachecore_push_through_serve_needs_no_bucket_credentials_and_the_server_signs",
    ),
    (
        "roots add",
        "--host",
        "roots_host_and_keep_and_gc_only_trashed",
    ),
    (
        "roots add",
        "--keep",
        "roots_host_and_keep_and_gc_only_trashed",
    ),
    (
        "roots list",
        "--json",
        "roots_host_and_keep_and_gc_only_trashed",
    ),
    (
        "roots remove",
        "--host",
        "roots_host_and_keep_and_gc_only_trashed",
    ),
    (
        "roots restore",
        "--host",
        "roots_host_and_keep_and_gc_only_trashed",
    ),
    (
        "roots sync",
        "--gcroots-dir",
        "roots_sync_publishes_a_gcroots_directory_and_trashes_what_left_it",
    ),
    (
        "roots sync",
        "--host",
        "roots_sync_publishes_a_gcroots_directory_and_trashes_what_left_it",
    ),
    (
        "roots sync",
        "--push",
        "roots_sync_publishes_a_gcroots_directory_and_trashes_what_left_it",
    ),
    (
        "roots sync",
        "--watch",
        "roots_sync_watch_follows_root_changes_until_ctrl_c",
    ),
    (
        "serve",
        "--idle-timeout",
        "idle_connections_are_closed_over_http1_and_http2",
    ),
    (
        "serve",
        "--key",
        "cachecore_push_through_serve_needs_no_bucket_credentials_and_the_server_signs",
    ),
    (
        "serve",
        "--listen",
        "serve_listen_sets_the_address_it_listens_on",
    ),
    ("serve", "--log-format", "serve_flags_set_what_they_name"),
    (
        "serve",
        "--max-connections",
        "at_the_connection_cap_idle_sockets_make_room_and_busy_ones_get_a_503",
    ),
    (
        "serve",
        "--max-upload-size",
        "operating_a_server_logs_plainly_listens_by_name_and_counts_every_body",
    ),
    (
        "serve",
        "--nar-cache-dir",
        "serve_reads_files_of_an_xz_nar_from_one_checked_copy",
    ),
    (
        "serve",
        "--nar-cache-size",
        "serve_nar_cache_size_bounds_the_kept_nars",
    ),
    (
        "serve",
        "--no-direct-uploads",
        "cachecore_push_through_serve_needs_no_bucket_credentials_and_the_server_signs",
    ),
    ("serve", "--priority", "serve_flags_set_what_they_name"),
    (
        "serve",
        "--private-reads",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "serve",
        "--public-key",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "serve",
        "--read-token-file",
        "serve_flags_set_what_they_name",
    ),
    (
        "serve",
        "--record-access",
        "serve_record_access_makes_gc_max_size_keep_what_nix_read",
    ),
    (
        "serve",
        "--redirect-nars",
        "with_redirect_nars_nix_downloads_the_nars_from_the_bucket_itself",
    ),
    (
        "serve",
        "--remote-read-ttl",
        "two_servers_on_one_garage_bucket_behave_as_one_cache",
    ),
    (
        "serve",
        "--revoked-tokens",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "serve",
        "--title",
        "a_landing_page_has_a_title_each_key_once_the_counts_age_and_recent_paths",
    ),
    (
        "serve",
        "--token-file",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "serve",
        "--token-secret",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "serve",
        "--upload-jobs",
        "serve_upload_jobs_sets_how_many_uploads_reach_the_bucket_at_once",
    ),
    (
        "serve",
        "--upload-timeout",
        "operating_a_server_logs_plainly_listens_by_name_and_counts_every_body",
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
    (
        "sign",
        "--all",
        "sign_adds_a_signature_to_paths_already_in_a_cache_and_push_counts_those_lacking_it",
    ),
    (
        "sign",
        "--jobs",
        "sign_jobs_sets_how_many_narinfos_are_written_at_once",
    ),
    (
        "sign",
        "--key",
        "sign_adds_a_signature_to_paths_already_in_a_cache_and_push_counts_those_lacking_it",
    ),
    (
        "sign",
        "--quiet",
        "sign_adds_a_signature_to_paths_already_in_a_cache_and_push_counts_those_lacking_it",
    ),
    (
        "sign",
        "--token-file",
        "sign_adds_a_signature_to_paths_already_in_a_cache_and_push_counts_those_lacking_it",
    ),
    (
        "store-path",
        "--name",
        "store_path_with_name_equals_nix_store_add_path_name",
    ),
    (
        "store-path",
        "--store-dir",
        "store_path_store_dir_equals_nix_with_that_store_dir",
    ),
    (
        "token issue",
        "--can",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "token issue",
        "--expires",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "token issue",
        "--name",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "token issue",
        "--prefix",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "token issue",
        "--secret",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "token secret",
        "--out",
        "scoped_tokens_grant_what_they_name_until_they_expire_or_are_revoked",
    ),
    (
        "verify",
        "--jobs",
        "verify_jobs_and_copy_jobs_set_how_many_nars_are_read_at_once",
    ),
    (
        "verify",
        "--token-file",
        "http_errors_speak_http_and_every_read_command_takes_a_token_file",
    ),
    (
        "verify",
        "--trusted-key",
        "verify_jobs_and_trusted_key_files",
    ),
    ("gc", "--why", "gc_why_names_the_root_that_keeps_a_path"),
    (
        "gc",
        "--unused-for",
        "gc_unused_for_keeps_what_was_read_or_pushed_within_it",
    ),
    (
        "gc",
        "--jobs",
        "gc_jobs_and_index_compact_jobs_set_how_many_narinfos_are_read_at_once",
    ),
    (
        "index compact",
        "--jobs",
        "gc_jobs_and_index_compact_jobs_set_how_many_narinfos_are_read_at_once",
    ),
    (
        "mount",
        "--check",
        "check_nar_fetches_the_whole_nar_where_check_frames_fetches_one_frame",
    ),
    (
        "mount",
        "--memory",
        "mount_memory_bounds_the_frames_kept_in_memory",
    ),
    (
        "roots add",
        "--store-dir",
        "roots_store_dir_names_paths_of_another_store_directory",
    ),
    (
        "roots sync",
        "--store-dir",
        "roots_store_dir_names_paths_of_another_store_directory",
    ),
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
    for (i, (path, flag, test)) in EFFECTS.iter().enumerate() {
        let key = ((*path).to_owned(), (*flag).to_owned());
        if !flags.contains(&key) {
            wrong.push(format!(
                "EFFECTS names `cachecore {path} {flag}`, which does not exist"
            ));
        }
        if EFFECTS[..i].iter().any(|(p, f, _)| p == path && f == flag) {
            wrong.push(format!("EFFECTS has `{path} {flag}` twice"));
        }
        // Whether a test body runs the subcommand: its own name as an invocation spells it
        // (`"push"`, or `"ls"` of `nar ls`), or `serve.rs`'s `Serve::start(STORE, FLAGS)`.
        let leaf = path.rsplit(' ').next().unwrap_or("");
        let runs_it = |body: &str| {
            leaf.is_empty()
                || body.lines().any(|l| has_literal(l, leaf))
                || (*path == "serve" && body.contains("Serve::start"))
        };
        match test_body(&sources, test) {
            None => wrong.push(format!(
                "EFFECTS names test {test} for {flag}: no such #[test]"
            )),
            Some((file, body)) if !body.lines().any(|l| has_literal(l, flag)) => {
                wrong.push(format!(
                    "{file}: {test} does not pass {flag}, yet EFFECTS says it shows its effect"
                ))
            }
            Some((file, body)) if !runs_it(&body) => wrong.push(format!(
                "{file}: {test} never runs `{path}`, yet EFFECTS says it shows the effect of \
                     its {flag}"
            )),
            Some((file, body)) if !body.contains("assert") => {
                wrong.push(format!("{file}: {test} asserts nothing"));
            }
            Some(_) => {}
        }
    }
    for (path, flag) in &flags {
        let claimed = EFFECTS.iter().any(|(p, f, _)| p == path && f == flag);
        if !claimed {
            wrong.push(format!(
                "no test is named for the effect of `cachecore {path} {flag}`: add \
                 (\"{path}\", \"{flag}\", \"<test>\") to EFFECTS"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
