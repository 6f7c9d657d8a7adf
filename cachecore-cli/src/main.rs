//! `cachecore`: the command-line frontend. It parses arguments, calls the library, and maps errors
//! to one line on stderr and an exit status. All logic lives in the `cachecore` crate.

mod cli;
mod commands;
mod progress;

use std::io;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // One sentence: the context chain joined, outermost first.
            let message: Vec<String> = err.chain().map(|e| e.to_string()).collect();
            eprintln!("cachecore: error: {}", message.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// A reader closed our stdout (`cachecore nar pack x | head`): exit quietly, as `cat` does.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || e.to_string().contains("Broken pipe")
    })
}
