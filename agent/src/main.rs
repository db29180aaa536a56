use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    inferscope::cli::main(inferscope::cli::Cli::parse())
}
