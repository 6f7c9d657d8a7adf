//! `cachecore key generate|public`.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use cachecore::signing::SecretKey;

use crate::cli::KeyCommand;

pub fn run(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Generate { name, out } => generate(&name, out.as_deref()),
        KeyCommand::Public { secret_file } => public(secret_file.as_deref()),
    }
}

fn generate(name: &str, out: Option<&Path>) -> anyhow::Result<()> {
    let key = SecretKey::generate(name).with_context(|| format!("cannot generate key {name:?}"))?;
    let secret = key.to_nix_string();
    match out {
        Some(path) => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create secret key file {}", path.display()))?;
            file.write_all(secret.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write secret key file {}", path.display()))?;
        }
        None => {
            let mut out = crate::stdout::stdout();
            out.write_all(secret.as_bytes())?;
            out.flush()?;
        }
    }
    eprintln!("{}", key.public_key());
    Ok(())
}

fn public(secret_file: Option<&Path>) -> anyhow::Result<()> {
    let mut text = zeroize::Zeroizing::new(String::new());
    let source = match secret_file {
        Some(path) => {
            let mut f = std::fs::File::open(path)
                .with_context(|| format!("cannot open secret key file {}", path.display()))?;
            f.read_to_string(&mut text)
                .with_context(|| format!("cannot read secret key file {}", path.display()))?;
            path.display().to_string()
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the secret key from stdin")?;
            "stdin".to_owned()
        }
    };
    let key = SecretKey::parse(&text).with_context(|| format!("secret key from {source}"))?;
    crate::stdout::outln!("{}", key.public_key())?;
    Ok(())
}
