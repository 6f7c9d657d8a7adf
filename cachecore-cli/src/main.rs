//! `cachecore`: the command-line frontend. It parses arguments, calls the library, and maps errors
//! to one line on stderr and an exit status. All logic lives in the `cachecore` crate.

mod cli;
mod commands;
mod exit;
mod progress;
mod stdout;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(code) => code,
        // A reader closed our stdout (`cachecore nar pack x | head`): exit quietly, as `cat` does.
        Err(_) if stdout::closed() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cachecore: error: {}", one_sentence(&err));
            exit::code(&err)
        }
    }
}

/// The context chain joined, outermost first, leaving out a cause whose text the message
/// before it already quotes (many errors print their source inside their own message).
fn one_sentence(err: &anyhow::Error) -> String {
    let mut sentence = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if sentence.contains(&text) {
            continue;
        }
        if !sentence.is_empty() {
            sentence.push_str(": ");
        }
        sentence.push_str(&text);
    }
    sentence
}
