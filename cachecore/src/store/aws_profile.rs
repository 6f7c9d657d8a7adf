//! Named AWS profiles from `~/.aws/credentials` and `~/.aws/config`, read the way the AWS CLI does
//! for the simple case: static keys (`aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token`), `region` and `endpoint_url`.
//!
//! Profiles that get their keys some other way (`credential_process`, SSO, `role_arn`) are
//! refused with a message saying so, rather than silently falling back to other credentials.
//! `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` override the two paths.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The parts of one profile cachecore uses.
#[derive(Default)]
pub(crate) struct AwsProfile {
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<Zeroizing<String>>,
    pub(crate) session_token: Option<Zeroizing<String>>,
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    /// Keys naming a credential source we do not implement (`credential_process`, `sso_*`, ...).
    pub(crate) unsupported: Vec<String>,
}

impl fmt::Debug for AwsProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsProfile")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "******"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "******"),
            )
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .finish()
    }
}

impl AwsProfile {
    pub(crate) fn has_keys(&self) -> bool {
        self.access_key_id.is_some() && self.secret_access_key.is_some()
    }
}

/// Where the two files are.
#[derive(Debug, Clone)]
pub(crate) struct ProfileFiles {
    pub(crate) credentials: PathBuf,
    pub(crate) config: PathBuf,
}

impl ProfileFiles {
    /// From `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE` and `$HOME/.aws` in `env`.
    pub(crate) fn from_env(env: &[(String, String)]) -> Self {
        let get = |key: &str| {
            env.iter()
                .rev()
                .find(|(k, v)| k == key && !v.is_empty())
                .map(|(_, v)| PathBuf::from(v))
        };
        let home = get("HOME").unwrap_or_default();
        let credentials =
            get("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| home.join(".aws/credentials"));
        let config = get("AWS_CONFIG_FILE").unwrap_or_else(|| home.join(".aws/config"));
        ProfileFiles {
            credentials,
            config,
        }
    }

    /// Loads profile `name`; `Ok(None)` when neither file has it. A file that exists but cannot
    /// be read is an error.
    pub(crate) fn load(&self, name: &str) -> Result<Option<AwsProfile>, String> {
        let creds = read_optional(&self.credentials)?;
        let config = read_optional(&self.config)?;
        self.load_texts(creds.as_deref(), config.as_deref(), name)
    }

    /// [`load`](Self::load) from the two files' contents (`None`: that file does not exist).
    pub(crate) fn load_texts(
        &self,
        creds: Option<&str>,
        config: Option<&str>,
        name: &str,
    ) -> Result<Option<AwsProfile>, String> {
        let mut profile = AwsProfile::default();
        let mut found = false;
        // ~/.aws/config names sections `[profile NAME]`, except `[default]`.
        if let Some(text) = config {
            let wanted = if name == "default" {
                vec!["default".to_owned(), "profile default".to_owned()]
            } else {
                vec![format!("profile {name}")]
            };
            if let Some(fields) = section(text, &wanted, name, &self.config)? {
                found = true;
                apply(&mut profile, fields);
            }
        }
        // ~/.aws/credentials names sections `[NAME]`; its keys win over the config file's.
        if let Some(text) = creds {
            if let Some(fields) = section(text, &[name.to_owned()], name, &self.credentials)? {
                found = true;
                apply(&mut profile, fields);
            }
        }
        Ok(found.then_some(profile))
    }

    /// `<credentials> or <config>` (or `nor`, after "neither").
    pub(crate) fn describe(&self, conjunction: &str) -> String {
        format!(
            "{} {conjunction} {}",
            self.credentials.display(),
            self.config.display()
        )
    }
}

/// The fuzz target `aws_profile`'s entry: profile `name` from the two files' contents, as its
/// access key id (`Some(None)`: a profile without one).
#[cfg(fuzzing)]
pub(crate) fn fuzz_load(
    creds: Option<&str>,
    config: Option<&str>,
    name: &str,
) -> Result<Option<Option<String>>, String> {
    let files = ProfileFiles {
        credentials: PathBuf::from("credentials"),
        config: PathBuf::from("config"),
    };
    files
        .load_texts(creds, config, name)
        .map(|p| p.map(|p| p.access_key_id))
}

fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn apply(profile: &mut AwsProfile, fields: Vec<(String, String)>) {
    for (k, v) in fields {
        match k.as_str() {
            "aws_access_key_id" => profile.access_key_id = Some(v),
            "aws_secret_access_key" => profile.secret_access_key = Some(Zeroizing::new(v)),
            "aws_session_token" => profile.session_token = Some(Zeroizing::new(v)),
            "region" => profile.region = Some(v),
            "endpoint_url" => profile.endpoint_url = Some(v),
            "credential_process"
            | "role_arn"
            | "source_profile"
            | "sso_session"
            | "sso_start_url"
            | "web_identity_token_file" => profile.unsupported.push(k),
            _ => {}
        }
    }
}

/// The `key = value` lines of the section whose name is one of `names` (INI as the AWS tools
/// write it: `#`/`;` comments, indented lines belong to a nested block and are skipped).
///
/// A profile whose section appears twice in one file is an error naming both lines: the AWS
/// CLI refuses such a file, and other tools disagree on which one counts.
fn section(
    text: &str,
    names: &[String],
    profile: &str,
    file: &Path,
) -> Result<Option<Vec<(String, String)>>, String> {
    let mut inside = false;
    let mut found_at: Option<usize> = None;
    let mut fields = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let nested = raw.starts_with([' ', '\t']);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                inside = false;
                continue;
            };
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            inside = names.contains(&name);
            if inside {
                if let Some(first) = found_at {
                    return Err(format!(
                        "profile {profile:?} is defined twice in {} (lines {} and {})",
                        file.display(),
                        first + 1,
                        i + 1
                    ));
                }
                found_at = Some(i);
            }
            continue;
        }
        if !inside || nested {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            fields.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok(found_at.map(|_| fields))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn files(creds: &str, config: &str) -> (tempfile::TempDir, ProfileFiles) {
        let dir = tempfile::tempdir().unwrap();
        let f = ProfileFiles {
            credentials: dir.path().join("credentials"),
            config: dir.path().join("config"),
        };
        std::fs::write(&f.credentials, creds).unwrap();
        std::fs::write(&f.config, config).unwrap();
        (dir, f)
    }

    #[test]
    fn reads_keys_region_and_endpoint() {
        let (_d, f) = files(
            "[default]\naws_access_key_id = AKD\naws_secret_access_key = SD\n\n# c\n[garage]\naws_access_key_id=GK1\naws_secret_access_key = sec ret\n",
            "[default]\nregion = us-west-2\n[profile garage]\nregion = garage\nendpoint_url = http://127.0.0.1:3900\ns3 =\n  addressing_style = path\n",
        );
        let p = f.load("garage").unwrap().unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("GK1"));
        assert_eq!(p.secret_access_key.as_ref().unwrap().as_str(), "sec ret");
        assert_eq!(p.region.as_deref(), Some("garage"));
        assert_eq!(p.endpoint_url.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(!format!("{p:?}").contains("sec ret"));
        let d = f.load("default").unwrap().unwrap();
        assert_eq!(d.access_key_id.as_deref(), Some("AKD"));
        assert_eq!(d.region.as_deref(), Some("us-west-2"));
        assert!(f.load("nope").unwrap().is_none());
    }

    #[test]
    fn notes_unsupported_sources() {
        let (_d, f) = files("", "[profile sso]\nsso_session = x\nregion = eu-west-1\n");
        let p = f.load("sso").unwrap().unwrap();
        assert!(!p.has_keys());
        assert_eq!(p.unsupported, vec!["sso_session".to_owned()]);
    }

    #[test]
    fn missing_files_are_no_profile() {
        let f = ProfileFiles {
            credentials: "/nonexistent/credentials".into(),
            config: "/nonexistent/config".into(),
        };
        assert!(f.load("default").unwrap().is_none());
    }
}
