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
        } => cache::init(&store, priority, no_mass_query, update),
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
            output,
        } => cache::copy(
            &from,
            &to,
            &paths,
            all,
            cache::CopySettings {
                recompress: recompress.map(|m| (m, level)),
                jobs,
                trusted_keys: &trusted_keys,
                quiet: output.quiet,
            },
        ),
        Command::Pull {
            store,
            path,
            dest,
            trusted_keys,
            no_check_sigs,
        } => cache::pull(&store, &path, &dest, &trusted_keys, no_check_sigs),
        Command::Verify {
            store,
            paths,
            trusted_keys,
            jobs,
        } => {
            return cache::verify(&store, &paths, &trusted_keys, jobs);
        }
        Command::Ls { store, path } => cache::ls(&store, path.as_deref()),
        Command::Cat {
            store,
            path,
            trusted_keys,
            verify,
        } => cache::cat(&store, &path, &trusted_keys, verify),
        Command::Info { store } => cache::info(&store),
        Command::Serve(args) => serve::run(args),
        #[cfg(all(feature = "mount", target_os = "linux"))]
        Command::Mount(args) => return mount::run(args),
        Command::Roots(cmd) => gc::roots(cmd),
        Command::Index(cmd) => gc::index(cmd),
        Command::Gc(args) => return gc::gc(args),
        Command::Key(cmd) => key::run(cmd),
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
