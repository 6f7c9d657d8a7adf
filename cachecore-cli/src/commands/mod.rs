//! One module per command group; each converts arguments, calls the library, prints the result.

mod cache;
mod gc;
pub use cache::Interrupted;
mod key;
#[cfg(all(feature = "mount", target_os = "linux"))]
mod mount;
pub(crate) mod nar;
mod serve;
mod store_path;
mod token;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Nar(cmd) => nar::run(cmd),
        Command::Init {
            store,
            priority,
            no_mass_query,
            update,
            token_file,
        } => cache::init(
            &store,
            priority,
            no_mass_query,
            update,
            token_file.as_deref(),
        ),
        Command::Push(args) => cache::push(args),
        Command::Copy {
            from,
            to,
            paths,
            all,
            recompress,
            level,
            jobs,
            trusted_keys,
            token_file,
            to_token_file,
            encodings,
            output,
        } => cache::copy(
            &from,
            &to,
            &paths,
            all,
            cache::CopySettings {
                recompress: recompress.map(|m| (m, level)),
                encodings: &encodings,
                jobs,
                trusted_keys: &trusted_keys,
                quiet: output.quiet,
                from_token: token_file.as_deref(),
                to_token: to_token_file.as_deref(),
            },
        ),
        Command::Pull {
            store,
            path,
            dest,
            trusted_keys,
            no_check_sigs,
            token,
        } => cache::pull(
            &cache::open_with_token(&store, token.token_file.as_deref())?,
            &path,
            &dest,
            &trusted_keys,
            no_check_sigs,
        ),
        Command::Verify {
            store,
            paths,
            trusted_keys,
            jobs,
            token,
        } => {
            let cache = cache::open_with_token(&store, token.token_file.as_deref())?;
            return cache::verify(&cache, &store, &paths, &trusted_keys, jobs);
        }
        Command::Ls { store, path, token } => cache::ls(
            &cache::open_with_token(&store, token.token_file.as_deref())?,
            path.as_deref(),
        ),
        Command::Cat {
            store,
            path,
            trusted_keys,
            verify,
            token,
        } => cache::cat(
            cache::open_with_token(&store, token.token_file.as_deref())?,
            &path,
            &trusted_keys,
            verify,
        ),
        Command::Info { store, token } => cache::info(&cache::open_with_token(
            &store,
            token.token_file.as_deref(),
        )?),
        Command::Serve(args) => serve::run(*args),
        #[cfg(all(feature = "mount", target_os = "linux"))]
        Command::Mount(args) => return mount::run(args),
        Command::Roots(cmd) => gc::roots(cmd),
        Command::Index(cmd) => gc::index(cmd),
        Command::Gc(args) => return gc::gc(args),
        Command::Key(cmd) => key::run(cmd),
        Command::Sign {
            store,
            paths,
            all,
            key,
            jobs,
            token_file,
            output,
        } => cache::sign(
            &store,
            &paths,
            all,
            &key,
            jobs,
            token_file.as_deref(),
            output.quiet,
        ),
        Command::Token(cmd) => token::run(cmd),
        Command::StorePath {
            path,
            name,
            store_dir,
        } => store_path::run(&path, name, &store_dir),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Opens a file for reading, or stdin for `-`.
pub fn open_input(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin()));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(BufReader::with_capacity(1 << 17, file)))
}

/// Creates `path` with mode 0600 (never replacing a file) and writes `secret` to it, synced; the
/// errors name it as `what`, never its contents.
pub(crate) fn create_secret_file(path: &Path, secret: &[u8], what: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {what} {}", path.display()))?;
    file.write_all(secret)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {what} {}", path.display()))
}
