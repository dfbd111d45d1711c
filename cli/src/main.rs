//! `tchprune`: prune a safetensors checkpoint from a declarative plan, inspect it, make the
//! pruning permanent. A thin layer over the library's [`tchprune::plan`] and
//! [`tchprune::checkpoint`]: argument parsing, files, progress and messages live here, pruning
//! does not.

/// `println!` that returns the error (a closed pipe, a full disk) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
            .map_err(|error| anyhow::anyhow!("cannot write to the standard output: {error}"))?
    }};
}

mod args;
mod commands;
mod oneshot;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    stop_cleanly_on_signals();
    let cli = args::Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tchprune: error: {}", one_line(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

/// The longest error line printed, in bytes.
const MAX_ERROR_LINE: usize = 4096;

/// `message` as one line: its line breaks written `\n` (a key holding one stays whole and
/// unambiguous), cut at [`MAX_ERROR_LINE`] bytes with a note of how much was left out.
fn one_line(message: &str) -> String {
    let line = message.trim_end().replace('\r', "\\r").replace('\n', "\\n");
    if line.len() <= MAX_ERROR_LINE {
        return line;
    }
    let mut cut = MAX_ERROR_LINE;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} more bytes)", &line[..cut], line.len() - cut)
}

/// The signals that stop a run (their default would end the process): SIGINT, SIGTERM, SIGHUP,
/// SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM.
const STOP_SIGNALS: [i32; 7] = {
    use signal_hook::consts::*;
    [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM]
};

/// A run stopped by a signal ends in exactly one of two ways: the whole output in place and
/// status 0 (the signal came after the output was put in place: the command finishes), or no
/// output and no temporary file, one line, and status 128 + the signal. The decision is
/// [`tchprune::files::stop_outputs`]'s, under the lock that putting an output in place takes.
fn stop_cleanly_on_signals() {
    let Ok(mut signals) = signal_hook::iterator::Signals::new(STOP_SIGNALS) else {
        return;
    };
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let tchprune::files::Stop::Discarded { discarded, guard } =
                tchprune::files::stop_outputs()
            else {
                continue;
            };
            let name = signal_hook::low_level::signal_name(signal).unwrap_or("a signal");
            let discarded = match discarded {
                0 => "",
                _ => "; the output being written was discarded",
            };
            let line = format!("tchprune: stopped by {name}{discarded}\n");
            // SAFETY: writes `line`'s bytes, which outlive the call, to the standard error's
            // descriptor (no lock: the main thread may hold Rust's).
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            // No output may be put in place from here on: the lock is held until the end.
            std::mem::forget(guard);
            // SAFETY: ends the process at once, without destructors or exit handlers, which
            // would run beside the main thread (inside libtorch, maybe).
            unsafe { libc::_exit(128 + signal) }
        }
    });
}
