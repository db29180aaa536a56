//! The `inferscope` command line: one module per command.

mod check;
mod diagnose;
mod run;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "inferscope",
    version,
    about = "Watch GPU inference servers from the kernel, with no change to them"
)]
pub struct Cli {
    /// Log verbosity: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "warn", value_parser = |s: &str| s.parse::<log::LevelFilter>().map_err(|_| "expected error, warn, info, debug or trace"))]
    log: log::LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report per-process GPU activity every interval.
    Run(Box<run::RunArgs>),
    /// Findings grounded in the measured figures: live, or over a saved `run --output json` stream.
    Diagnose(Box<diagnose::DiagnoseArgs>),
    /// Check what this host supports, and whether the agent can run here.
    Check,
}

pub fn main(cli: Cli) -> ExitCode {
    init_logging(cli.log);
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Diagnose(args) => diagnose::diagnose(*args),
        Command::Check => check::check(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("inferscope: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Durations as `500ms`, `2s`, `1m`, or plain seconds (`0.5`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn init_logging(level: log::LevelFilter) {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level() && m.target().starts_with("inferscope")
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!("inferscope {}: {}", r.level().as_str().to_lowercase(), r.args());
            }
        }
        fn flush(&self) {}
    }
    log::set_max_level(level);
    let _ = log::set_logger(&Stderr);
}
