//! `tchprune`: prune a safetensors checkpoint from a declarative plan, inspect it, make the
//! pruning permanent. A thin layer over the library's [`tchprune::plan`] and
//! [`tchprune::checkpoint`]: argument parsing, files, progress and messages live here, pruning
//! does not.

mod args;
mod commands;
mod oneshot;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    remove_temporary_files_on_signals();
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

/// A run stopped by SIGINT, SIGTERM or SIGHUP leaves no half-written output behind: the
/// temporary file is removed before the process exits with the signal's status (128 + signal).
fn remove_temporary_files_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let removed = tchprune::files::remove_temporary_files();
            let discarded = if removed > 0 {
                "; the output being written was discarded"
            } else {
                ""
            };
            eprintln!("tchprune: stopped by signal {signal}{discarded}");
            std::process::exit(128 + signal);
        }
    });
}
