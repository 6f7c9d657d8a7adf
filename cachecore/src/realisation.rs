//! Realisations (`realisations/<drv hash>!<output>.doi`): which store path a content-addressed
//! derivation output resolved to.
//!
//! ```
//! use cachecore::realisation::Realisation;
//! // As `nix copy` writes it for a content-addressed derivation (Nix 2.8).
//! let json = r#"{"dependentRealisations":{},"id":"sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out","outPath":"aghv8shzw76p3aakd1zl1scsx4l5xf6l-ca-thing","signatures":[]}"#;
//! let r = Realisation::parse(json).unwrap();
//! assert_eq!(r.id.output, "out");
//! assert_eq!(r.to_json(), json);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::store_path::StorePath;

/// A bad realisation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("realisation JSON, line {line} column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
}

/// `<drv output hash>!<output name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DrvOutput {
    pub drv_hash: Hash,
    pub output: String,
}

impl DrvOutput {
    /// Parses `<hash>!<output>`, the hash in any spelling [`Hash::parse`] reads.
    ///
    /// ```
    /// use cachecore::realisation::DrvOutput;
    /// let id = DrvOutput::parse("sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out").unwrap();
    /// assert_eq!(id.output, "out");
    /// assert_eq!(id.to_string(), "sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out");
    /// assert!(DrvOutput::parse("sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf").is_err()); // no output name
    /// assert!(DrvOutput::parse("sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, String> {
        let (hash, output) = s
            .split_once('!')
            .ok_or_else(|| format!("{s:?} has no `!<output>`"))?;
        if output.is_empty() {
            return Err(format!("{s:?} has an empty output name"));
        }
        let drv_hash = Hash::parse(hash).map_err(|e| e.to_string())?;
        Ok(DrvOutput {
            drv_hash,
            output: output.to_owned(),
        })
    }
}

impl fmt::Display for DrvOutput {
    /// `<algo>:<hex>!<output>`: Nix spells this hash in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}!{}",
            self.drv_hash.algo(),
            self.drv_hash.to_hex(),
            self.output
        )
    }
}

impl Serialize for DrvOutput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DrvOutput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DrvOutput::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn ser_path<S: serde::Serializer>(p: &StorePath, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

fn de_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StorePath, D::Error> {
    let s = String::deserialize(d)?;
    StorePath::from_base_name(&s).map_err(serde::de::Error::custom)
}

/// One realisation, as Nix serialises it (keys in Nix's order; unknown keys kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Realisation {
    #[serde(rename = "dependentRealisations", default)]
    pub dependent_realisations: BTreeMap<String, String>,
    pub id: DrvOutput,
    #[serde(
        rename = "outPath",
        serialize_with = "ser_path",
        deserialize_with = "de_path"
    )]
    pub out_path: StorePath,
    #[serde(default)]
    pub signatures: Vec<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Realisation {
    /// Parses a realisation from Nix's JSON.
    ///
    /// ```
    /// use cachecore::realisation::Realisation;
    /// let json = r#"{"dependentRealisations":{},"id":"sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out","outPath":"aghv8shzw76p3aakd1zl1scsx4l5xf6l-ca-thing","signatures":[]}"#;
    /// let r = Realisation::parse(json).unwrap();
    /// assert_eq!(r.out_path.name(), "ca-thing");
    /// assert_eq!(r.id.output, "out");
    /// assert!(r.signatures.is_empty());
    /// assert!(Realisation::parse("{").is_err());
    /// ```
    pub fn parse(json: &str) -> Result<Self, ParseError> {
        serde_json::from_str(json).map_err(|e| ParseError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    /// Compact JSON, as Nix writes it.
    ///
    /// ```
    /// use cachecore::realisation::Realisation;
    /// let json = r#"{"dependentRealisations":{},"id":"sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out","outPath":"aghv8shzw76p3aakd1zl1scsx4l5xf6l-ca-thing","signatures":[]}"#;
    /// let mut r = Realisation::parse(json).unwrap();
    /// assert_eq!(r.to_json(), json);
    /// r.signatures.push("cache.example.org-1:c2ln".into());
    /// assert!(r.to_json().ends_with(r#""signatures":["cache.example.org-1:c2ln"]}"#));
    /// ```
    pub fn to_json(&self) -> String {
        // Serializing plain strings and maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_written_round_trips() {
        let json = include_str!("../testdata/nix-2.8.doi");
        let r = Realisation::parse(json).unwrap();
        assert_eq!(r.out_path.name(), "ca-thing");
        assert_eq!(r.to_json(), json);
        assert_eq!(DrvOutput::parse(&r.id.to_string()).unwrap(), r.id);
    }

    #[test]
    fn bad_input() {
        assert!(Realisation::parse("{").is_err());
        assert!(Realisation::parse(r#"{"id":"x","outPath":"y"}"#).is_err());
        let e = Realisation::parse(
            r#"{"id":"sha256:1mf4m5z4dmrcxx3c8hq1dbzz3jzsjzxqh2xk2kl1sq9q1hl2xgq0","outPath":"y"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no `!<output>`"), "{e}");
    }
}
