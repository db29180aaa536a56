//! Where snapshots and finished requests go. A sink reads the model and
//! nothing else: it never reaches back into sources.

mod json;
mod otel;
mod text;

pub use json::{JsonLines, RequestLines};
pub use otel::{
    Export, ExportHealth, OtlpConfig, OtlpProtocol, OtlpSignal, Telemetry, TelemetryConfig, TelemetryError,
    env_value, otlp_timeout, resource,
};
pub use text::Text;

use std::io;

use crate::model::{RequestRecord, Snapshot};

pub trait Sink {
    /// The interval's snapshot, once per interval.
    fn snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()>;

    /// A request, as soon as it finished (it is also counted in the next snapshot).
    fn request(&mut self, _request: &RequestRecord) -> io::Result<()> {
        Ok(())
    }

    /// The pipeline stops: deliver what is still held.
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What `run --output` writes to standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable table per interval.
    Text,
    /// One JSON object per line per interval (schema: docs/output.md).
    Json,
    /// One JSON object per line per finished inference request (schema: docs/output.md).
    Requests,
    /// Nothing on standard output (metrics go to OTLP or Prometheus only).
    None,
}

impl Format {
    /// The sink writing this format to `out`; `None` for [`Format::None`].
    pub fn sink<W: io::Write + 'static>(self, out: W) -> Option<Box<dyn Sink>> {
        Some(match self {
            Format::Text => Box::new(Text::new(out)),
            Format::Json => Box::new(JsonLines::new(out)),
            Format::Requests => Box::new(RequestLines::new(out)),
            Format::None => return None,
        })
    }
}
