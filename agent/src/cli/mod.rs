//! The `inferscope` command line: one module per command.

mod check;
mod diagnose;
mod mcp;
mod profile;
mod record;
mod run;
mod top;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "inferscope",
    version = env!("INFERSCOPE_VERSION"),
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
    /// Measure and export: GPU activity per process, requests per server, devices and pods, every interval.
    Run(Box<run::RunArgs>),
    /// Findings grounded in the measured figures: live, or over a saved `run --output json` stream.
    Diagnose(Box<diagnose::DiagnoseArgs>),
    /// Sampled CPU stacks of GPU processes and servers, as a flame graph or folded stacks.
    Profile(Box<profile::ProfileArgs>),
    /// A self-contained HTML report: findings, figures over time, tables (live, or from a saved stream).
    Record(Box<record::RecordArgs>),
    /// A live view of inference servers and GPU processes in the terminal.
    Top(Box<top::TopArgs>),
    /// A Model Context Protocol server over standard input and output, for assistants: live figures and diagnoses.
    Mcp(Box<mcp::McpArgs>),
    /// Check what this host supports, and whether the agent can run here.
    Check,
}

pub fn main(cli: Cli) -> ExitCode {
    init_logging(cli.log);
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Diagnose(args) => diagnose::diagnose(*args),
        Command::Top(args) => top::top(*args),
        Command::Record(args) => record::record(*args),
        Command::Profile(args) => profile::profile(*args),
        Command::Mcp(args) => mcp::mcp(*args),
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

/// Most log lines held back while a full-screen view owns the terminal.
const MAX_HELD_LOG: usize = 1000;

/// Log lines held back while a full-screen view owns the terminal; `None`: to stderr.
static HELD_LOG: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

fn init_logging(level: log::LevelFilter) {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level() && m.target().starts_with("inferscope")
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                let line = format!("inferscope {}: {}", r.level().as_str().to_lowercase(), r.args());
                match HELD_LOG.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    Some(held) => {
                        // The newest are kept: a warning repeated for hours is not all worth holding.
                        if held.len() == MAX_HELD_LOG {
                            held.remove(0);
                        }
                        held.push(line);
                    }
                    None => eprintln!("{line}"),
                }
            }
        }
        fn flush(&self) {}
    }
    log::set_max_level(level);
    let _ = log::set_logger(&Stderr);
}

/// From now on log lines are held (a full-screen view would be torn by them).
fn hold_log() {
    HELD_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Vec::new);
}

/// The latest held line, for a status bar.
fn latest_log() -> Option<String> {
    HELD_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()?
        .last()
        .cloned()
}

/// Writes the held lines to stderr and logs there again.
fn release_log() {
    for line in HELD_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default()
    {
        eprintln!("{line}");
    }
}
