//! `cachecore key generate|public`.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;

use cachecore::signing::SecretKey;

use crate::cli::KeyCommand;

pub fn run(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Generate { name, out } => generate(&name, out.as_deref()),
        KeyCommand::Public { secret_file } => public(secret_file.as_deref()),
    }
}

fn generate(name: &str, out: Option<&Path>) -> anyhow::Result<()> {
    let key = SecretKey::generate(name)?;
    let secret = key.to_nix_string();
    match out {
        Some(path) => super::create_secret_file(path, secret.as_bytes(), "secret key file")?,
        None => {
            // Nix's key files hold no newline; on a terminal one ends the secret key's line so
            // that the public key (on stderr) does not run on from it.
            let mut out = crate::stdout::stdout();
            out.write_all(secret.as_bytes())?;
            if std::io::stdout().is_terminal() {
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
    eprintln!("{}", key.public_key());
    Ok(())
}

fn public(secret_file: Option<&Path>) -> anyhow::Result<()> {
    let key = match secret_file {
        Some(path) => SecretKey::read_file(path)?,
        None => SecretKey::read_from(std::io::stdin(), "stdin")?,
    };
    crate::stdout::outln!("{}", key.public_key())?;
    Ok(())
}
