//! Writes interval reports for people (text) and for programs (JSON lines).

mod text;

pub use text::write_text;

use std::io::Write;

use serde::Serialize;

use crate::{derive::requests::RequestRecord, join::Report};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable table per interval.
    Text,
    /// One JSON object per line per interval (schema: docs/output.md).
    Json,
    /// One JSON object per line per finished inference request (schema: docs/output.md).
    Requests,
}

pub fn write(out: &mut impl Write, format: Format, report: &Report) -> std::io::Result<()> {
    match format {
        Format::Text => write_text(out, report)?,
        Format::Json | Format::Requests => {
            serde_json::to_writer(&mut *out, report)?;
            writeln!(out)?;
        }
    }
    out.flush()
}

/// One finished request as a JSON line, `time` being when it ended.
pub fn write_request(
    out: &mut impl Write,
    time: std::time::SystemTime,
    r: &RequestRecord,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Line<'a> {
        time: String,
        #[serde(flatten)]
        request: &'a RequestRecord,
    }
    serde_json::to_writer(
        &mut *out,
        &Line {
            time: humantime::format_rfc3339_millis(time).to_string(),
            request: r,
        },
    )?;
    writeln!(out)?;
    out.flush()
}
