//! `refwatch`: runs a program with librefwatch.so preloaded, and reads what
//! it wrote. It never links the library.

mod check;
mod cli;
mod run;
mod signals;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::parse(std::env::args_os()) {
        cli::Command::Run(options) => run::run(options),
        cli::Command::Check { file } => check::check(&file),
    }
}
