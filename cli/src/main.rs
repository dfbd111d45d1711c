//! `tchprune`: prune a safetensors checkpoint from a declarative plan, inspect it, make the
//! pruning permanent. A thin layer over the library's [`tchprune::plan`] and
//! [`tchprune::checkpoint`]: argument parsing, files, progress and messages live here, pruning
//! does not.

mod args;
mod commands;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the step and the problem, whatever libtorch's message looks like.
            let message = format!("{err:#}");
            let first_line = message.lines().next().unwrap_or_default();
            eprintln!("tchprune: error: {first_line}");
            ExitCode::FAILURE
        }
    }
}
