use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cmk_guard::cli::run(cmk_guard::cli::Cli::parse())
}
