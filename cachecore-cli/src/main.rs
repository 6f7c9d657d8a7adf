//! `cachecore`: the command-line frontend. It parses arguments, calls the library, and maps errors
//! to one line on stderr and an exit status. All logic lives in the `cachecore` crate.

mod cli;
mod commands;
mod exit;
mod progress;
mod stdout;

use std::process::ExitCode;

use cachecore::untrusted::Untrusted;

fn main() -> ExitCode {
    let matches = <cli::Cli as clap::CommandFactory>::command().get_matches();
    let mut args =
        <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli::pair_upstream_keys(&mut args, &matches);
    let verbose = args.verbose;
    match commands::run(args) {
        Ok(code) => code,
        // A reader closed our stdout (`cachecore nar pack x | head`): exit quietly, as `cat` does.
        Err(_) if stdout::closed() => ExitCode::SUCCESS,
        // Stopped by a signal, after cleaning up: one line, and 130 or 143 as a shell says.
        Err(err) if err.is::<commands::Interrupted>() => {
            eprintln!("cachecore: {err}");
            let status = err
                .downcast_ref::<commands::Interrupted>()
                .map_or(1, |i| i.exit_status);
            ExitCode::from(status)
        }
        // Errors quote what a cache sent (key names, narinfo fields, a server's reason): the
        // line is escaped whole, whichever layer forgot to.
        Err(err) => {
            eprintln!(
                "cachecore: error: {}",
                Untrusted(&cachecore::error::sentence(&*err, verbose))
            );
            exit::code(&err)
        }
    }
}
