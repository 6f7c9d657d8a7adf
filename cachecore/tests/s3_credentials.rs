//! Where an `s3://` store gets its keys, session token, region and endpoint, through
//! `BinaryCache::open_with_env` with an environment and profile files of the test's own. No S3
//! server is needed: the endpoint is a listener that records each request (its SigV4
//! `Authorization` header names the access key id and the region, `x-amz-security-token` carries
//! the session token) and answers 404.
//!
//! The precedence, as the `open` docs state it:
//! - keys: `?profile=NAME` over `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` over the profile
//!   `AWS_PROFILE` names over the profile `default`;
//! - region: `?region=` over `AWS_REGION` over `AWS_DEFAULT_REGION` over the profile's;
//! - endpoint: `?endpoint=` over `AWS_ENDPOINT_URL` over the profile's `endpoint_url`;
//! - files: `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` over `$HOME/.aws/…`.
#![cfg(feature = "cache")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use cachecore::store::BinaryCache;
use common::capture::{CaptureServer, RequestHead};

/// A home directory with `.aws/credentials` and `.aws/config` (either may be absent).
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(credentials: Option<&str>, config: Option<&str>) -> Home {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".aws")).unwrap();
        if let Some(c) = credentials {
            fs::write(dir.path().join(".aws/credentials"), c).unwrap();
        }
        if let Some(c) = config {
            fs::write(dir.path().join(".aws/config"), c).unwrap();
        }
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn credentials(&self) -> PathBuf {
        self.path().join(".aws/credentials")
    }

    fn config(&self) -> PathBuf {
        self.path().join(".aws/config")
    }

    /// `HOME` set to this directory, the metadata service off, and `vars`.
    fn env(&self, vars: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("HOME".to_owned(), self.path().display().to_string()),
            ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ];
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }
}

/// What a store opened at `url` with `env` sent: opens it and reads `nix-cache-info` once.
/// `Err` with the error's text when opening or the request failed before reaching a server.
fn first_request(
    server: &CaptureServer,
    url: &str,
    env: &[(String, String)],
) -> Result<RequestHead, String> {
    let before = server.requests().len();
    let cache = BinaryCache::open_with_env(url, env).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The listener answers 404, so the read succeeds with "no nix-cache-info".
    let info = rt.block_on(cache.cache_info()).map_err(|e| e.to_string())?;
    assert!(info.is_none(), "{url}: the listener has no nix-cache-info");
    let requests = server.requests();
    requests
        .get(before)
        .cloned()
        .ok_or_else(|| format!("{url}: no request reached {}", server.url()))
}

/// (access key id, region, session token) of the first request.
fn signed_as(head: &RequestHead) -> (String, String, Option<String>) {
    let (key, region) = head
        .sigv4_key_and_region()
        .unwrap_or_else(|| panic!("not signed with SigV4: {head:?}"));
    (
        key,
        region,
        head.header("x-amz-security-token").map(str::to_owned),
    )
}

fn s3_url(server: &CaptureServer, extra: &str) -> String {
    format!("s3://bucket?endpoint={}{extra}", server.url())
}

const CREDS: &str = "\
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = defaultsecret

[ci]
aws_access_key_id = CIKEY
aws_secret_access_key = cisecret
aws_session_token = citoken
";

const CONFIG: &str = "\
[default]
region = default-region

[profile ci]
region = ci-region
";

#[test]
fn environment_keys_are_used_and_win_over_the_default_profile() {
    let server = CaptureServer::start();
    let home = Home::new(Some(CREDS), Some(CONFIG));
    let env = home.env(&[
        ("AWS_ACCESS_KEY_ID", "ENVKEY"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
    ]);
    let head = first_request(&server, &s3_url(&server, ""), &env).unwrap();
    // The keys come from the environment; the default profile still gives the region.
    assert_eq!(
        signed_as(&head),
        ("ENVKEY".into(), "default-region".into(), None)
    );
}

#[test]
fn the_default_profile_is_implicit() {
    let server = CaptureServer::start();
    let home = Home::new(Some(CREDS), Some(CONFIG));
    let head = first_request(&server, &s3_url(&server, ""), &home.env(&[])).unwrap();
    assert_eq!(
        signed_as(&head),
        ("DEFAULTKEY".into(), "default-region".into(), None)
    );
}

#[test]
fn aws_profile_picks_a_profile_with_its_session_token() {
    let server = CaptureServer::start();
    let home = Home::new(Some(CREDS), Some(CONFIG));
    let head = first_request(
        &server,
        &s3_url(&server, ""),
        &home.env(&[("AWS_PROFILE", "ci")]),
    )
    .unwrap();
    assert_eq!(
        signed_as(&head),
        ("CIKEY".into(), "ci-region".into(), Some("citoken".into()))
    );
}

#[test]
fn aws_profile_with_environment_keys_takes_the_keys_from_the_environment() {
    let server = CaptureServer::start();
    let home = Home::new(Some(CREDS), Some(CONFIG));
    let env = home.env(&[
        ("AWS_PROFILE", "ci"),
        ("AWS_ACCESS_KEY_ID", "ENVKEY"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ("AWS_SESSION_TOKEN", "envtoken"),
    ]);
    let head = first_request(&server, &s3_url(&server, ""), &env).unwrap();
    // As with the AWS CLI: keys (and their token) from the environment, the rest from the
    // profile.
    assert_eq!(
        signed_as(&head),
        ("ENVKEY".into(), "ci-region".into(), Some("envtoken".into()))
    );
    // A profile AWS_PROFILE names that does not exist is fine when the environment has keys…
    let env = home.env(&[
        ("AWS_PROFILE", "nowhere"),
        ("AWS_ACCESS_KEY_ID", "ENVKEY"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
    ]);
    let head = first_request(&server, &s3_url(&server, "&region=r"), &env).unwrap();
    assert_eq!(signed_as(&head), ("ENVKEY".into(), "r".into(), None));
    // …and an error naming it and both files when it does not.
    let err = first_request(
        &server,
        &s3_url(&server, ""),
        &home.env(&[("AWS_PROFILE", "nowhere")]),
    )
    .unwrap_err();
    assert!(
        err.contains("profile \"nowhere\"")
            && err.contains(&home.credentials().display().to_string())
            && err.contains(&home.config().display().to_string()),
        "{err}"
    );
}

#[test]
fn a_profile_in_the_url_wins_over_environment_keys() {
    let server = CaptureServer::start();
    let home = Home::new(Some(CREDS), Some(CONFIG));
    let env = home.env(&[
        ("AWS_ACCESS_KEY_ID", "ENVKEY"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ("AWS_PROFILE", "default"),
    ]);
    let head = first_request(&server, &s3_url(&server, "&profile=ci"), &env).unwrap();
    assert_eq!(
        signed_as(&head),
        ("CIKEY".into(), "ci-region".into(), Some("citoken".into()))
    );
    let err = first_request(&server, &s3_url(&server, "&profile=nowhere"), &env).unwrap_err();
    assert!(err.contains("profile \"nowhere\" is in neither"), "{err}");
}

#[test]
fn session_token_from_the_environment() {
    let server = CaptureServer::start();
    let home = Home::new(None, None);
    let env = home.env(&[
        ("AWS_ACCESS_KEY_ID", "ENVKEY"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ("AWS_SESSION_TOKEN", "envtoken"),
    ]);
    let head = first_request(&server, &s3_url(&server, "&region=r"), &env).unwrap();
    assert_eq!(
        signed_as(&head),
        ("ENVKEY".into(), "r".into(), Some("envtoken".into()))
    );
}

#[test]
fn region_precedence() {
    let server = CaptureServer::start();
    let home = Home::new(Some(CREDS), Some(CONFIG));
    let region = |extra: &str, vars: &[(&str, &str)]| {
        signed_as(&first_request(&server, &s3_url(&server, extra), &home.env(vars)).unwrap()).1
    };
    // Both environment variables, in either order: AWS_REGION wins.
    let both = [
        ("AWS_REGION", "env-region"),
        ("AWS_DEFAULT_REGION", "env-default-region"),
    ];
    let both_reversed = [both[1], both[0]];
    assert_eq!(region("&region=url-region", &both), "url-region");
    assert_eq!(region("", &both), "env-region");
    assert_eq!(region("", &both_reversed), "env-region");
    assert_eq!(
        region("", &[("AWS_DEFAULT_REGION", "env-default-region")]),
        "env-default-region"
    );
    assert_eq!(region("", &[]), "default-region");
    // No region anywhere: us-east-1.
    let bare = Home::new(Some(CREDS), None);
    let head = first_request(&server, &s3_url(&server, ""), &bare.env(&[])).unwrap();
    assert_eq!(signed_as(&head).1, "us-east-1");
}

#[test]
fn endpoint_precedence() {
    let url_server = CaptureServer::start();
    let env_server = CaptureServer::start();
    let profile_server = CaptureServer::start();
    let config = format!(
        "[default]\nregion = r\nendpoint_url = {}\n",
        profile_server.url()
    );
    let home = Home::new(Some(CREDS), Some(&config));
    let env_url = env_server.url();
    let with_env = [("AWS_ENDPOINT_URL", env_url.as_str())];
    let count = |s: &CaptureServer| s.requests().len();

    first_request(&url_server, &s3_url(&url_server, ""), &home.env(&with_env)).unwrap();
    assert_eq!(
        (
            count(&url_server),
            count(&env_server),
            count(&profile_server)
        ),
        (1, 0, 0),
        "?endpoint= wins"
    );
    first_request(&env_server, "s3://bucket", &home.env(&with_env)).unwrap();
    assert_eq!(
        (count(&env_server), count(&profile_server)),
        (1, 0),
        "AWS_ENDPOINT_URL over the profile's endpoint_url"
    );
    let head = first_request(&profile_server, "s3://bucket", &home.env(&[])).unwrap();
    assert_eq!(count(&profile_server), 1, "the profile's endpoint_url");
    // A custom endpoint means path-style requests: the bucket is in the path, not the host.
    assert!(head.line.starts_with("GET /bucket/"), "{}", head.line);
    assert_eq!(
        head.header("host"),
        Some(format!("127.0.0.1:{}", profile_server.port).as_str())
    );
}

#[test]
fn credential_and_config_files_from_the_environment() {
    let server = CaptureServer::start();
    let home = Home::new(Some(CREDS), Some(CONFIG));
    let elsewhere = tempfile::tempdir().unwrap();
    let creds = elsewhere.path().join("creds");
    let config = elsewhere.path().join("conf");
    fs::write(
        &creds,
        "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = s\n",
    )
    .unwrap();
    fs::write(&config, "[default]\nregion = file-region\n").unwrap();
    let creds_s = creds.display().to_string();
    let config_s = config.display().to_string();
    let head = first_request(
        &server,
        &s3_url(&server, ""),
        &home.env(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &creds_s),
            ("AWS_CONFIG_FILE", &config_s),
        ]),
    )
    .unwrap();
    assert_eq!(
        signed_as(&head),
        ("FILEKEY".into(), "file-region".into(), None)
    );
    // Only one overridden: the other still comes from $HOME/.aws.
    let head = first_request(
        &server,
        &s3_url(&server, ""),
        &home.env(&[("AWS_CONFIG_FILE", &config_s)]),
    )
    .unwrap();
    assert_eq!(
        signed_as(&head),
        ("DEFAULTKEY".into(), "file-region".into(), None)
    );
    // A named file that does not exist is no profile at all.
    let err = first_request(
        &server,
        &s3_url(&server, ""),
        &home.env(&[
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds"),
            ("AWS_CONFIG_FILE", "/nonexistent/conf"),
        ]),
    )
    .unwrap_err();
    assert!(
        err.contains("no keys for endpoint") && err.contains("/nonexistent/creds"),
        "{err}"
    );
}

#[test]
fn credential_process_and_other_sources_are_refused_by_name() {
    let server = CaptureServer::start();
    for (key, line) in [
        ("credential_process", "credential_process = /bin/get-keys"),
        ("sso_session", "sso_session = corp"),
        ("role_arn", "role_arn = arn:aws:iam::1:role/x"),
    ] {
        let home = Home::new(None, Some(&format!("[profile p]\n{line}\nregion = r\n")));
        let err =
            first_request(&server, &s3_url(&server, "&profile=p"), &home.env(&[])).unwrap_err();
        assert!(
            err.contains(&format!("profile \"p\" gets its keys through {key}"))
                && err.contains("does not support"),
            "{key}: {err}"
        );
        let err = first_request(
            &server,
            &s3_url(&server, ""),
            &home.env(&[("AWS_PROFILE", "p")]),
        )
        .unwrap_err();
        assert!(err.contains(key), "AWS_PROFILE, {key}: {err}");
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn unreadable_profile_files_are_errors_naming_the_file() {
    let server = CaptureServer::start();
    for which in ["credentials", "config"] {
        let home = Home::new(None, None);
        // A directory where the file should be: cannot be read, whoever runs the test (root
        // reads files of any mode).
        let path = home.path().join(".aws").join(which);
        fs::create_dir(&path).unwrap();
        let err = first_request(&server, &s3_url(&server, ""), &home.env(&[])).unwrap_err();
        assert!(
            err.contains(&format!("cannot read {}", path.display())),
            "{which}: {err}"
        );
    }
    assert!(server.requests().is_empty());
}

#[test]
fn a_profile_defined_twice_in_one_file_is_an_error() {
    let server = CaptureServer::start();
    let home = Home::new(
        Some(
            "[ci]\naws_access_key_id = FIRST\naws_secret_access_key = s1\n\n[other]\nx = y\n\n\
             [ci]\naws_access_key_id = SECOND\n",
        ),
        None,
    );
    let err = first_request(
        &server,
        &s3_url(&server, "&profile=ci&region=r"),
        &home.env(&[]),
    )
    .unwrap_err();
    assert!(
        err.contains(&format!(
            "profile \"ci\" is defined twice in {} (lines 1 and 8)",
            home.credentials().display()
        )),
        "{err}"
    );
    // A profile repeated that is not the one used does not matter.
    let head = first_request(&server, &s3_url(&server, "&profile=other&region=r"), &{
        let mut env = home.env(&[]);
        env.push(("AWS_ACCESS_KEY_ID".into(), "ENVKEY".into()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), "s".into()));
        env
    });
    // `other` has no keys and was named in the URL: refused, and not for the duplicate.
    let err = head.unwrap_err();
    assert!(err.contains("has no aws_access_key_id"), "{err}");
}
