//! Server-sent events and newline-delimited JSON: the two ways inference
//! servers stream tokens over HTTP/1.1. Both split a byte stream into records
//! that arrive in pieces.

/// Splits an SSE body into the `data` of each event (lines joined with `\n`).
#[derive(Debug, Default)]
pub struct SseSplitter {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseSplitter {
    pub fn feed(&mut self, bytes: &[u8], mut event: impl FnMut(&[u8])) {
        for_each_line(&mut self.line, bytes, |line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.has_data {
                    event(&self.data);
                }
                self.data.clear();
                self.has_data = false;
            } else if let Some(value) = line.strip_prefix(b"data:") {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data
                    .extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
                self.has_data = true;
            }
            // Comments (":") and other fields (event, id, retry) carry no tokens.
        });
    }

    /// Bytes of the stream were lost: drop the partial event rather than glue halves.
    pub fn gap(&mut self) {
        self.line.clear();
        self.data.clear();
        self.has_data = false;
    }

    /// The data of `bytes` if it is exactly one whole event of one `data`
    /// line and nothing is pending: what `feed` would hand out, read in place.
    pub fn whole_event<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        if !self.line.is_empty() || self.has_data {
            return None;
        }
        let line = bytes.strip_suffix(b"\n\n")?;
        if line.last() == Some(&b'\r') || memchr::memchr(b'\n', line).is_some() {
            return None;
        }
        let value = line.strip_prefix(b"data:")?;
        Some(value.strip_prefix(b" ").unwrap_or(value))
    }
}

/// Calls `f` with each complete line (without its `\n`), keeping the unfinished
/// tail in `partial` for the next call. Whole lines inside `bytes` are not copied.
fn for_each_line(partial: &mut Vec<u8>, bytes: &[u8], mut f: impl FnMut(&[u8])) {
    let mut rest = bytes;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        if partial.is_empty() {
            f(&rest[..i]);
        } else {
            partial.extend_from_slice(&rest[..i]);
            f(partial);
            partial.clear();
        }
        rest = &rest[i + 1..];
    }
    partial.extend_from_slice(rest);
}

/// Splits an NDJSON body into lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    line: Vec<u8>,
}

impl LineSplitter {
    pub fn feed(&mut self, bytes: &[u8], mut record: impl FnMut(&[u8])) {
        for_each_line(&mut self.line, bytes, |line| {
            if !line.iter().all(u8::is_ascii_whitespace) {
                record(line);
            }
        });
    }

    pub fn gap(&mut self) {
        self.line.clear();
    }

    /// The record of `bytes` if it is exactly one whole line and nothing is
    /// pending: what `feed` would hand out, read in place.
    pub fn whole_line<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        if !self.line.is_empty() {
            return None;
        }
        let line = bytes.strip_suffix(b"\n")?;
        let one_record = memchr::memchr(b'\n', line).is_none() && !line.iter().all(u8::is_ascii_whitespace);
        one_record.then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_feeds_are_reassembled() {
        let stream =
            b"data: {\"a\":1}\n\n: keep-alive\n\nevent: x\ndata: one\ndata: two\r\n\r\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut s = SseSplitter::default();
            let mut got = Vec::new();
            s.feed(&stream[..split], |e| got.push(e.to_vec()));
            s.feed(&stream[split..], |e| got.push(e.to_vec()));
            assert_eq!(
                got,
                [b"{\"a\":1}".to_vec(), b"one\ntwo".to_vec(), b"[DONE]".to_vec()],
                "split {split}"
            );
        }
    }

    #[test]
    fn ndjson_lines_come_out_whole() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.feed(b"{\"response\":\"a\"}\n{\"resp", |l| got.push(l.to_vec()));
        s.feed(b"onse\":\"b\"}\n\n", |l| got.push(l.to_vec()));
        assert_eq!(
            got,
            [b"{\"response\":\"a\"}".to_vec(), b"{\"response\":\"b\"}".to_vec()]
        );
    }
}
