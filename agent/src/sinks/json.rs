//! JSON lines: one snapshot, or one finished request, per line (docs/output.md).

use std::io::{self, Write};

use serde::Serialize;

use super::Sink;
use crate::model::{RequestRecord, Snapshot};

/// `--output json`: one [`Snapshot`] per line.
pub struct JsonLines<W: Write>(W);

/// `--output requests`: one [`RequestRecord`] per line.
pub struct RequestLines<W: Write>(W);

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self(out)
    }
}

impl<W: Write> RequestLines<W> {
    pub fn new(out: W) -> Self {
        Self(out)
    }
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    out.flush()
}

impl<W: Write> Sink for JsonLines<W> {
    fn snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        write_line(&mut self.0, snapshot)
    }
}

impl<W: Write> Sink for RequestLines<W> {
    fn snapshot(&mut self, _: &Snapshot) -> io::Result<()> {
        Ok(())
    }

    fn request(&mut self, request: &RequestRecord) -> io::Result<()> {
        write_line(&mut self.0, request)
    }
}
