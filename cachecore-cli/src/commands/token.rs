//! `cachecore token secret|issue`: scoped tokens for `cachecore serve --token-secret`.

use std::path::Path;

use anyhow::Context as _;
use cachecore::server::{Grant, TokenSecret};

use crate::cli::TokenCommand;
use crate::stdout::outln;

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Secret { out } => secret(&out),
        TokenCommand::Issue {
            secret,
            name,
            can,
            prefix,
            expires,
        } => {
            let grant = Grant::new(&name, can, prefix, expires).map_err(anyhow::Error::msg)?;
            let token = read_secret(&secret)?.issue(&grant);
            outln!("{}", token.as_str())?;
            let expiry = grant.expiry();
            let scope = grant
                .prefix
                .as_ref()
                .map(|p| format!(", on stores under {p}"))
                .unwrap_or_default();
            eprintln!(
                "token {} for {:?}: may {}{scope}; expires {expiry}. To revoke it, add its id {} (or its name, to revoke every token of that name) to the servers' --revoked-tokens file.",
                grant.id,
                grant.name,
                grant.rights(),
                grant.id
            );
            Ok(())
        }
    }
}

/// The secret of `--secret FILE`/`--token-secret FILE`, with the file named in errors.
pub(super) fn read_secret(path: &Path) -> anyhow::Result<TokenSecret> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token secret file {}", path.display()))?,
    );
    TokenSecret::parse(&text).with_context(|| format!("token secret file {}", path.display()))
}

fn secret(out: &Path) -> anyhow::Result<()> {
    super::create_secret_file(out, TokenSecret::generate().as_bytes(), "token secret file")
}
