//! The `nix path-info` source: for users who can reach neither the Nix database nor the
//! daemon socket. A whole closure costs one `nix path-info --json --recursive` process (two when
//! the roots mix `.drv` files and other paths), never one process per path.

use std::collections::HashSet;
use std::process::Command;

use super::{LocalStoreError, PathInfo};
use crate::hash::Hash;
use crate::store_path::{StoreDir, StorePath};

/// Runs `nix` for one [`super::LocalStore`]: its store directory, and why the other sources
/// were not used (said when `nix` cannot be run either).
pub(super) struct NixCommand<'a> {
    pub store_dir: &'a StoreDir,
    pub fallback: Option<&'a str>,
}

impl NixCommand<'_> {
    /// Runs `nix path-info --json` on `paths` (with `--recursive` for a closure). `.drv` paths
    /// must be named with `--derivation` (else Nix means their outputs) and other paths without
    /// it (else Nix means their derivers), so mixed lists take two processes.
    pub(super) fn nix_path_info(
        &self,
        paths: &[StorePath],
        recursive: bool,
    ) -> Result<Vec<PathInfo>, LocalStoreError> {
        let (drvs, others): (Vec<&StorePath>, Vec<&StorePath>) =
            paths.iter().partition(|p| p.name().ends_with(".drv"));
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (group, derivation) in [(drvs, true), (others, false)] {
            if group.is_empty() {
                continue;
            }
            for info in self.run_nix_path_info(&group, recursive, derivation)? {
                if seen.insert(info.path.clone()) {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }

    fn run_nix_path_info(
        &self,
        paths: &[&StorePath],
        recursive: bool,
        derivation: bool,
    ) -> Result<Vec<PathInfo>, LocalStoreError> {
        let mut cmd = Command::new("nix");
        cmd.args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
        ]);
        // Substituting a missing path is not ours to do: report it as not valid instead.
        cmd.arg("--offline");
        if recursive {
            cmd.arg("--recursive");
        }
        if derivation {
            cmd.arg("--derivation");
        }
        cmd.arg("--");
        for p in paths {
            cmd.arg(self.store_dir.full_path(p));
        }
        let command = format!(
            "nix path-info --json{}{} <{} path{}>",
            if recursive { " --recursive" } else { "" },
            if derivation { " --derivation" } else { "" },
            paths.len(),
            if paths.len() == 1 { "" } else { "s" },
        );
        let output = cmd.output().map_err(|source| LocalStoreError::SpawnNix {
            command: command.clone(),
            source,
            fallback: self.fallback.map(str::to_owned),
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            // Nix 2.8 says "path '…' is not valid" for an invalid root under --recursive.
            if let Some(p) = paths.iter().find(|p| {
                stderr.contains(&format!(
                    "path '{}' is not valid",
                    self.store_dir.full_path(p)
                ))
            }) {
                return Err(LocalStoreError::NotValid {
                    path: self.store_dir.full_path(p),
                    arg: None,
                });
            }
            return Err(LocalStoreError::NixFailed {
                command,
                status: output.status,
                stderr,
            });
        }
        let records: Vec<JsonPathInfo> =
            serde_json::from_slice(&output.stdout).map_err(|e| LocalStoreError::NixOutput {
                command: command.clone(),
                reason: e.to_string(),
            })?;
        let mut infos = Vec::with_capacity(records.len());
        for r in records {
            infos.push(self.info_from_json(r, &command, recursive)?);
        }
        Ok(infos.into_iter().flatten().collect())
    }

    /// One `nix path-info` record; `Ok(None)` for an invalid path outside a closure query.
    fn info_from_json(
        &self,
        r: JsonPathInfo,
        command: &str,
        recursive: bool,
    ) -> Result<Option<PathInfo>, LocalStoreError> {
        let record_path = r.path.clone();
        let bad = |reason: String| LocalStoreError::BadRecord {
            source_name: format!("`{command}`"),
            path: record_path.clone(),
            reason,
        };
        let path = self.parse_full(&r.path).map_err(&bad)?;
        if r.valid == Some(false) {
            return if recursive {
                Err(LocalStoreError::NotValid {
                    path: r.path,
                    arg: None,
                })
            } else {
                Ok(None)
            };
        }
        let nar_hash = r
            .nar_hash
            .as_deref()
            .ok_or_else(|| bad("no narHash".into()))
            .and_then(|h| Hash::parse(h).map_err(|e| bad(e.to_string())))?;
        let mut references = r
            .references
            .iter()
            .map(|p| self.parse_full(p).map_err(&bad))
            .collect::<Result<Vec<_>, _>>()?;
        references.sort();
        let deriver = match r.deriver.as_deref() {
            None | Some("") => None,
            Some(d) => Some(self.parse_full(d).map_err(&bad)?),
        };
        Ok(Some(PathInfo {
            path,
            nar_hash,
            nar_size: r.nar_size.unwrap_or(0),
            references,
            deriver,
            registration_time: r.registration_time.unwrap_or(0),
            signatures: r.signatures,
            ca: r.ca.filter(|c| !c.is_empty()),
            ultimate: r.ultimate.unwrap_or(false),
        }))
    }

    fn parse_full(&self, full: &str) -> Result<StorePath, String> {
        self.store_dir
            .parse_path(full)
            .map(|p| p.to_owned())
            .map_err(|e| e.to_string())
    }
}

/// `nix path-info --json` record, Nix 2.8 spelling.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonPathInfo {
    path: String,
    valid: Option<bool>,
    nar_hash: Option<String>,
    nar_size: Option<u64>,
    #[serde(default)]
    references: Vec<String>,
    deriver: Option<String>,
    registration_time: Option<i64>,
    #[serde(default)]
    signatures: Vec<String>,
    ca: Option<String>,
    ultimate: Option<bool>,
}
