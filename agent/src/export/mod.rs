//! Writes interval reports for people (text) and for programs (JSON lines).

mod text;

pub use text::write_text;

use std::io::Write;

use crate::join::Report;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable table per interval.
    Text,
    /// One JSON object per line per interval (schema: docs/output.md).
    Json,
}

pub fn write(out: &mut impl Write, format: Format, report: &Report) -> std::io::Result<()> {
    match format {
        Format::Text => write_text(out, report)?,
        Format::Json => {
            serde_json::to_writer(&mut *out, report)?;
            writeln!(out)?;
        }
    }
    out.flush()
}
